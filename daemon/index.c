/* index.c: to be written */

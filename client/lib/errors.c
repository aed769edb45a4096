/* errors.c: to be written */

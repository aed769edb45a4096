/* common.c: to be written */

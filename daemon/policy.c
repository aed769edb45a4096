/* policy.c: to be written */

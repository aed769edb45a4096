/*
 * ckptd.h - process-wide facts owned by main.c.
 */
#ifndef CKPTD_CKPTD_H
#define CKPTD_CKPTD_H

#include <stdint.h>

/* Seconds since the daemon started. */
double ckptd_uptime_secs(void);
/* The staging memory budget (--memory-budget). */
uint64_t ckptd_memory_budget(void);
void ckptd_set_memory_budget(uint64_t budget);

#endif

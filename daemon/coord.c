/*
 * coord.c - the choice of the coordinator of distributed steps (coord.h).
 */
#include "coord.h"

static const struct coord_ops *COORD = &coord_local_ops;

int
coord_init(struct event_base *base, const struct coord_conf *cf, ckd_err *e)
{
	if (cf == NULL || cf->etcd == NULL || cf->etcd[0] == '\0') {
		COORD = &coord_local_ops;
		return 0;
	}
	return coord_etcd_init(base, cf, &COORD, e);
}

const struct coord_ops *
coord(void)
{
	return COORD;
}

void
coord_shutdown(void)
{
	COORD->shutdown();
	COORD = &coord_local_ops;
}

/*
 * preempt.c - announce that the node is going down (ckptctl preempt);
 * managers ask with ckpt_reached_preemption (manager.c).
 */
#include "internal.h"

CKPT_API int
ckpt_preempt(ckpt_client *c)
{
	Ckpt__Request req = CKPT__REQUEST__INIT;
	Ckpt__Preempt p = CKPT__PREEMPT__INIT;
	Ckpt__Response *resp;
	int r;

	if (c == NULL)
		return CKPT_EINVAL;
	req.op_case = CKPT__REQUEST__OP_PREEMPT;
	req.preempt = &p;
	if ((r = cl_rpc(c, NULL, &req, &resp)) != 0)
		return r;
	ckpt__response__free_unpacked(resp, NULL);
	return 0;
}

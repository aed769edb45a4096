/*
 * backend.c - which backend keeps a root, decided from the root's name
 * (contract: backend.h).
 */
#include <string.h>

#include "backend.h"

/* The S3 backend is in its own library (with libcurl): a program without
 * it has no s3:// roots. */
#pragma weak backend_s3

/* Longest scheme named back in an error. */
#define BACKEND_SCHEME_MAX 32

const struct store_backend *
store_backend_for(const char *root, ckd_err *e)
{
	const char *sep;
	size_t n;

	if (root != NULL && root[0] == '/')
		return &backend_posix;
	if (root != NULL && strncmp(root, "s3://", 5) == 0 &&
	    &backend_s3 != NULL)
		return &backend_s3;
	if (root != NULL && (sep = strstr(root, "://")) != NULL) {
		n = (size_t)(sep - root);
		if (n > BACKEND_SCHEME_MAX)
			n = BACKEND_SCHEME_MAX;
		err_set(e, CKPT_EINVAL, "unsupported storage scheme "
		    "\"%.*s://\" in checkpoint root (this ckptd keeps roots "
		    "on a local filesystem%s)", (int)n, root,
		    &backend_s3 != NULL ? " and in s3://bucket/prefix" :
		    ": an absolute path");
		return NULL;
	}
	err_set(e, CKPT_EINVAL, "the checkpoint directory must be an absolute "
	    "path");
	return NULL;
}

/*
 * ckpt_limits.h - the wire's own limits: every bound on what one peer may
 * send the other, in one place. ckptd enforces them on every request
 * (daemon/savecheck.c, daemon/wirecheck.c, policy.c, restore.c); libckpt
 * checks them before sending, so that a request the daemon would refuse
 * fails early with the same message.
 *
 * A request over a limit is refused with CKPT_ETOOBIG (sizes, counts) or
 * CKPT_EINVAL (malformed values) and a message naming the limit; the
 * connection stays open and nothing is written. Limits on a frame itself
 * (length, fds) close the connection: the stream cannot be resynchronized.
 *
 * Changing a limit is a protocol change only when it is lowered (an older
 * peer could send what a newer one refuses).
 */
#ifndef CKPT_LIMITS_H
#define CKPT_LIMITS_H

/* Bytes of one frame on the wire (the 4-byte length prefix excluded). */
#define CKPT_MAX_FRAME (16u * 1024 * 1024)
/* File descriptors one frame may carry (SCM_RIGHTS). A Save carries
 * exactly one (the staging memfd), a RestoreReply one per data file. */
#define CKPT_MAX_FDS 64

/* Items in one Save, names in Restore.items and ManagerOptions.item_names. */
#define CKPT_MAX_ITEMS 1024
/* Bytes of an item name (a directory name: no '/', not empty, not "." or
 * "..", not starting with '.'). */
#define CKPT_MAX_ITEM_NAME 255
/* Leaves in one item, and in all items of one Save together. */
#define CKPT_MAX_LEAVES_PER_ITEM (1u << 19)
#define CKPT_MAX_LEAVES_PER_SAVE (1u << 20)
/* Dimensions of one array leaf (the public CKPT_MAX_NDIM of ckpt.h). */
#define CKPT_WIRE_MAX_NDIM 32
/* Elements of one leaf's path, and bytes of one dict key in it. */
#define CKPT_MAX_DEPTH 256
#define CKPT_MAX_KEY 1024
/* Bytes of a leaf's path joined with '.' (list indices in decimal):
 * its safetensors tensor name, which also gets room for a "~N" suffix
 * under the 1024 bytes a reader accepts. */
#define CKPT_MAX_JOINED_PATH 1000
/* Bytes of a leaf's client-defined tag. */
#define CKPT_MAX_TAG 64
/* Bytes of one JSON or text document: a JSON / proto item, metrics,
 * custom metadata, root metadata. Restore reads documents up to this size,
 * so a save never writes one that cannot be read back. */
#define CKPT_MAX_DOC (8u * 1024 * 1024)
/* Bytes of any string on the wire is at most CKPT_MAX_DOC; every string
 * must be valid UTF-8 without NUL bytes (daemon/wirecheck.c). */
/* Nodes of one save_policy or preservation list. */
#define CKPT_MAX_POLICY_NODES 1024
/* Steps in one step list (save_on_steps, SPECIFIC_STEPS, CUSTOM_STEPS). */
#define CKPT_MAX_STEPS_LIST (1u << 20)
/* Nesting of protobuf messages in one request: Request > Save > Item >
 * Leaf > PathElem is 5; no message is recursive. */
#define CKPT_MAX_NESTING 8

#endif

"""Legacy helpers (Orbax's ocp.checkpoint_utils). Restore arguments are
not needed with ckpt: pass the abstract tree to StandardRestore."""


def construct_restore_args(target, sharding_tree=None, set_global_shape=True):
    """Returns `target` unchanged (ckpt reads dtype/shape from the target)."""
    return target

"""Legacy helpers (Orbax's ocp.checkpoint_utils). Restore arguments are
not needed with ckpt: pass the abstract tree to StandardRestore."""

from typing import Any, TypeVar

_T = TypeVar('_T')


def construct_restore_args(target: _T, sharding_tree: Any = None,
                           set_global_shape: bool = True) -> _T:
    """Returns `target` unchanged (ckpt reads dtype/shape from the target)."""
    return target

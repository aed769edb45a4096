"""Process identity of a distributed job (many processes, one step).

    import ckpt
    ckpt.distributed.initialize()      # torch/jax.distributed, else RANK/...
    ckpt.distributed.process_index(), ckpt.distributed.process_count()

Every CheckpointManager opened afterwards is one rank of the job: each rank
calls save(step, args) with its part (ckpt.Shard pieces of global arrays;
plain leaves are replicated and written once, by the primary host), and
the step commits once every rank's part is durable. Without initialize(),
the first manager takes the identity from torch.distributed when it is
initialized, else from jax.distributed when it is, else from
RANK/WORLD_SIZE, else it is process 0 of 1.
"""

import os
import threading
from typing import Optional, Tuple

__all__ = ['initialize', 'process_index', 'process_count', 'is_initialized']

_lock = threading.Lock()
_identity: Optional[Tuple[int, int]] = None


def _from_torch() -> Optional[Tuple[int, int]]:
    import sys
    torch = sys.modules.get('torch')
    if torch is None:
        return None
    dist = getattr(torch, 'distributed', None)
    try:
        if dist is None or not dist.is_available() or \
                not dist.is_initialized():
            return None
        return int(dist.get_rank()), int(dist.get_world_size())
    except (RuntimeError, ValueError):
        return None


def _from_jax() -> Optional[Tuple[int, int]]:
    """jax.distributed's identity once jax.distributed.initialize() ran
    (read from its state: asking jax.process_count() would start jax's
    backend, which must not happen before that call)."""
    import sys
    jax = sys.modules.get('jax')
    if jax is None:
        return None
    mod = sys.modules.get('jax._src.distributed')
    gs = getattr(mod, 'global_state', None)
    if gs is None or getattr(gs, 'client', None) is None:
        return None
    try:
        pid, n = int(gs.process_id), int(gs.num_processes)
    except (TypeError, ValueError, AttributeError):
        return None
    return (pid, n) if n >= 1 else None


def _env_int(name: str) -> Optional[int]:
    v = os.environ.get(name)
    if v is None or v.strip() == '':
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError('$%s is not an integer: %r' % (name, v)) from None


def _detect() -> Tuple[int, int]:
    got = _from_torch() or _from_jax()
    if got is not None:
        return got
    rank, world = _env_int('RANK'), _env_int('WORLD_SIZE')
    if world is not None:
        return (rank if rank is not None else 0), world
    return 0, 1


def _check(index: int, count: int) -> Tuple[int, int]:
    if isinstance(index, bool) or isinstance(count, bool):
        raise TypeError('process_index and process_count must be int')
    index, count = int(index), int(count)
    if count < 1:
        raise ValueError('process_count must be >= 1, got %d' % count)
    if not 0 <= index < count:
        raise ValueError('process_index must be in [0, %d), got %d'
                         % (count, index))
    return index, count


def initialize(process_index: Optional[int] = None,
               process_count: Optional[int] = None) -> None:
    """Set this process's rank and the job's number of processes.

    Arguments left None are taken from torch.distributed when it is
    initialized, else from jax.distributed when it is, else from $RANK /
    $WORLD_SIZE, else 0 / 1. Calling it
    again replaces the identity (for managers opened afterwards)."""
    global _identity
    det_index, det_count = _detect() if (process_index is None or
                                         process_count is None) else (0, 1)
    index = det_index if process_index is None else process_index
    count = det_count if process_count is None else process_count
    ident = _check(index, count)
    with _lock:
        _identity = ident


def is_initialized() -> bool:
    """Whether initialize() was called."""
    return _identity is not None


def _current() -> Tuple[int, int]:
    ident = _identity
    if ident is not None:
        return ident
    return _check(*_detect())


def process_index() -> int:
    """This process's rank (0 in a single-process job)."""
    return _current()[0]


def process_count() -> int:
    """The number of processes of the job (1 when not distributed)."""
    return _current()[1]

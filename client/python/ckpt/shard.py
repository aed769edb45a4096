"""ckpt.Shard: this process's piece of a global array (distributed steps)."""

from typing import Any, Sequence, Tuple

__all__ = ['Shard']


def _ints(v: Any, what: str) -> Tuple[int, ...]:
    try:
        out = tuple(int(d) for d in v)
    except TypeError:
        raise TypeError('%s must be a sequence of ints, got %r'
                        % (what, v)) from None
    if any(isinstance(d, bool) for d in v):
        raise TypeError('%s must be a sequence of ints, got %r' % (what, v))
    return out


class Shard:
    """The piece of a global array of shape `global_shape` that starts at
    `offsets` (one per dimension) and holds `data` (a numpy array or a
    torch CPU tensor; its shape is the piece's shape).

    Saving: a leaf that is a Shard (or a list of Shards: several pieces of
    one array) is this rank's part of that global array; the pieces every
    rank saves must cover it exactly, without overlap; a rank holding no
    piece of it hands an empty list there. ArraySave takes a Shard (or a
    list) as well, as Orbax's ArraySave takes a sharded array. Restoring:
    a Shard
    target, e.g. Shard(np.empty(shape, dtype), global_shape, offsets), is
    filled from whichever saved pieces overlap it (casting to its dtype)
    and returned as a Shard; a plain array target of the global shape (or
    no target) gets the whole array; an empty list there (a rank that
    wants no piece of the array) gives an empty list back, and none of
    the array is read."""

    __slots__ = ('data', 'global_shape', 'offsets')

    def __init__(self, data: Any, global_shape: Sequence[int],
                 offsets: Sequence[int]) -> None:
        """Check the piece: as many offsets as dimensions (at least one),
        and the piece inside the global shape."""
        if not (hasattr(data, 'shape') and hasattr(data, 'dtype')):
            raise TypeError('Shard data must be a numpy array or a torch '
                            'tensor, got %s' % type(data).__name__)
        shape = tuple(int(d) for d in data.shape)
        gs = _ints(global_shape, 'global_shape')
        off = _ints(offsets, 'offsets')
        if not shape:
            raise ValueError('a Shard holds at least one dimension; save '
                             'a scalar as a plain (replicated) leaf')
        if len(gs) != len(shape) or len(off) != len(shape):
            raise ValueError(
                'Shard of shape %s: global_shape %s and offsets %s must '
                'have %d dimensions' % (shape, gs, off, len(shape)))
        for d in range(len(shape)):
            if gs[d] < 0 or off[d] < 0 or off[d] + shape[d] > gs[d]:
                raise ValueError(
                    'Shard of shape %s at offsets %s lies outside the '
                    'global shape %s (dimension %d)' % (shape, off, gs, d))
        self.data = data
        self.global_shape = gs
        self.offsets = off

    @property
    def shape(self) -> Tuple[int, ...]:
        """The piece's shape (that of its data)."""
        return tuple(int(d) for d in self.data.shape)

    @property
    def dtype(self) -> Any:
        """The dtype of its data."""
        return self.data.dtype

    def slices(self) -> Tuple[slice, ...]:
        """Where the piece lies in the global array, as index slices."""
        return tuple(slice(o, o + n) for o, n in zip(self.offsets,
                                                     self.shape))

    def __repr__(self) -> str:
        return 'Shard(shape=%s, dtype=%s, global_shape=%s, offsets=%s)' % (
            self.shape, self.dtype, self.global_shape, self.offsets)

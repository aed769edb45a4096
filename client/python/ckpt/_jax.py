"""jax.Array leaves and restore targets (single process).

jax is never imported here: a tree can only hold jax arrays, or ask for
them, once the program has imported jax itself, so sys.modules tells.

Save: the host copy of an array is assembled from its addressable shards
(one copy per distinct shard, replicas skipped) into one C-contiguous
numpy array, which libckpt then streams; nothing goes through Python
lists. A fully replicated array is one shard's copy.

Restore into a target given as jax.Array or jax.ShapeDtypeStruct(shape,
dtype, sharding=...): the restored host array (restored straight into
our buffer, or viewed in the mapped checkpoint) is cast to the target's
dtype and put on each device of the target's sharding, a device_put of
that device's slice, so a checkpoint saved with one layout restores into
any other (resharding). Without a sharding the array goes to jax's
default device. Multi-process placement (shards owned by other
processes) is not handled here.
"""

import sys

import numpy as np

TAG_JAX = 'jax'
_TAG_MAX = 64  # libckpt's limit on a leaf tag


def is_tag(tag):
    return tag == TAG_JAX or (tag or '').startswith(TAG_JAX + ':')


def sharding_tag(x):
    """The leaf tag of a saved jax.Array: 'jax', or 'jax:SHAPE:AXES:SPEC'
    for a NamedSharding over a mesh of jax.devices() in order (e.g.
    'jax:4x2:x,y:x.' is P('x', None) on a 4x2 mesh), so that a restore
    without a target puts the array back in the same layout, as Orbax does.
    """
    jax = _jax()
    sh = getattr(x, 'sharding', None)
    if not isinstance(sh, jax.sharding.NamedSharding):
        return TAG_JAX
    mesh = sh.mesh
    devs = list(np.asarray(mesh.devices).ravel())
    if devs != list(jax.devices())[:len(devs)]:
        return TAG_JAX
    dims = []
    for d in tuple(sh.spec):
        if d is None:
            dims.append('')
        elif isinstance(d, str):
            dims.append(d)
        else:
            dims.append('+'.join(d))
    tag = '%s:%s:%s:%s' % (TAG_JAX, 'x'.join(str(n) for n in
                                             mesh.devices.shape),
                           ','.join(mesh.axis_names), '.'.join(dims))
    if len(tag) > _TAG_MAX or any(c in n for n in mesh.axis_names
                                  for c in ':,.+'):
        return TAG_JAX
    return tag


def _sharding_from_tag(tag):
    jax = _jax()
    try:
        _, shape, axes, spec = tag.split(':')
        shape = tuple(int(n) for n in shape.split('x'))
        axes = tuple(axes.split(','))
        n = int(np.prod(shape))
        if n > jax.device_count():
            return None
        mesh = jax.sharding.Mesh(
            np.array(jax.devices()[:n]).reshape(shape), axes)
        dims = [None if d == '' else (tuple(d.split('+')) if '+' in d
                                      else d)
                for d in (spec.split('.') if spec else [])]
        return jax.sharding.NamedSharding(mesh,
                                          jax.sharding.PartitionSpec(*dims))
    except (ValueError, TypeError):
        return None


def _jax():
    return sys.modules.get('jax')


def loaded():
    """True once the program has imported jax."""
    return _jax() is not None


def is_array(x):
    """True for a concrete jax.Array (not a tracer)."""
    jax = _jax()
    return jax is not None and isinstance(x, jax.Array) and hasattr(
        x, 'addressable_shards')


def is_target(x):
    """True for a leaf that asks for a jax.Array back."""
    jax = _jax()
    if jax is None:
        return False
    return is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def host_array(x, where):
    """x as one C-contiguous numpy array in host memory."""
    if not x.is_fully_addressable:
        raise ValueError(
            'jax.Array at %s has shards in other processes: saving it '
            'needs the multi-process protocol, which ckpt does not have '
            'yet' % where)
    shards = x.addressable_shards
    if x.is_fully_replicated or len(shards) == 1:
        return np.ascontiguousarray(np.asarray(shards[0].data))
    out = np.empty(x.shape, dtype=np.dtype(x.dtype))
    for s in shards:
        if s.replica_id == 0:
            out[s.index] = np.asarray(s.data)
    return out


def _sharding(tgt):
    return getattr(tgt, 'sharding', None)


def place(host, tgt):
    """A jax.Array with tgt's dtype and sharding holding host (a numpy
    array of tgt's shape)."""
    jax = _jax()
    dtype = np.dtype(tgt.dtype)
    if host.dtype != dtype:
        host = host.astype(dtype)
    sharding = _sharding(tgt)
    if sharding is None:
        return jax.device_put(np.array(host, copy=True))

    def piece(index):
        # A fresh array per device: the host buffer may be a view into
        # the mapped checkpoint, which does not outlive the restore.
        return np.array(host[index], copy=True, order='C')
    return jax.make_array_from_callback(tuple(host.shape), sharding, piece)


class _Target:
    def __init__(self, dtype, sharding):
        self.dtype = dtype
        self.sharding = sharding


def restore_as_saved(host, tag):
    """A leaf that was saved as a jax.Array, restored without a target: a
    jax.Array in the saved layout when this process has the devices, else
    on the default device (Orbax too gives back jax arrays). Only called
    once jax is loaded(); without jax a jax leaf restores as numpy."""
    sharding = _sharding_from_tag(tag) if tag != TAG_JAX else None
    return place(host, _Target(host.dtype, sharding))

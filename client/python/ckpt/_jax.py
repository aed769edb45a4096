"""jax.Array leaves and restore targets (single process).

jax is never imported here: a tree can only hold jax arrays, or ask for
them, once the program has imported jax itself, so sys.modules tells.

Save: an array is handed to libckpt as pieces, the host buffers of its
addressable shards (zero-copy views of CPU device buffers; one per
distinct shard, replicas skipped), which libckpt copies straight into its
staging buffer; a layout that would need too many pieces is assembled by
numpy first. A jax.Array is immutable, so the copy happens after save()
returned (libckpt's background save), while the views are kept.

Restore into a target given as jax.Array or jax.ShapeDtypeStruct(shape,
dtype, sharding=...): the restored host array (restored straight into
our buffer, or viewed in the mapped checkpoint) is cast to the target's
dtype and put on each device of the target's sharding, a device_put of
that device's slice, so a checkpoint saved with one layout restores into
any other (resharding). Without a sharding the array goes to jax's
default device.

Several processes (jax.distributed): an array with shards in other
processes is saved as this process's ckpt.Shard pieces of the global
array (process_pieces: each distinct shard once, by one process, spread
over the processes that hold it), which the distributed-steps machinery
joins into one step. A target whose sharding spans other processes is
restored through Shard targets, one per distinct shard this process
holds (GlobalTarget), so each process reads only its part, laid out as
the target asks whatever the saved layout was. A process holding no
shard of an array hands an empty list of pieces at save, and at restore
asks for none (an empty GlobalTarget) and gets the global jax.Array with
no addressable shards, as jax.make_array_from_callback gives there.
"""

import ctypes
import operator
import sys

import numpy as np

TAG_JAX = 'jax'
_TAG_MAX = 64  # libckpt's limit on a leaf tag


def is_tag(tag):
    return tag == TAG_JAX or (tag or '').startswith(TAG_JAX + ':')


_tags = {}   # sharding -> tag


def sharding_tag(x):
    """sharding_tag_of(x.sharding), cached per sharding."""
    sh = getattr(x, 'sharding', None)
    try:
        return _tags[sh]
    except KeyError:
        pass
    except TypeError:
        return sharding_tag_of(x)
    tag = sharding_tag_of(x)
    if len(_tags) >= _LAYOUTS_MAX:
        _tags.clear()
    _tags[sh] = tag
    return tag


def sharding_tag_of(x):
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


_from_tags = {}   # tag -> sharding (or None), see _sharding_from_tag


def _sharding_from_tag(tag):
    """The NamedSharding a tag of sharding_tag_of names, cached: a restore
    asks once per leaf, and a Mesh costs about half a millisecond."""
    try:
        return _from_tags[tag]
    except KeyError:
        pass
    sh = _make_sharding(tag)
    if len(_from_tags) >= _LAYOUTS_MAX:
        _from_tags.clear()
    _from_tags[tag] = sh
    return sh


def _make_sharding(tag):
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


ARRAY_TYPES = set()     # the classes is_array found concrete arrays of


def is_array(x):
    """True for a concrete jax.Array (not a tracer)."""
    jax = _jax()
    if jax is not None and isinstance(x, jax.Array) and hasattr(
            x, 'addressable_shards'):
        ARRAY_TYPES.add(type(x))
        return True
    return False


def is_target(x):
    """True for a leaf that asks for a jax.Array back."""
    jax = _jax()
    if jax is None:
        return False
    return is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def host_array(x, where):
    """x as one C-contiguous numpy array in host memory (an array that
    spans other processes only when fully replicated)."""
    shards = x.addressable_shards
    if x.is_fully_replicated or len(shards) == 1:
        return np.ascontiguousarray(np.asarray(shards[0].data))
    out = np.empty(x.shape, dtype=np.dtype(x.dtype))
    for s in shards:
        if s.replica_id == 0:
            out[s.index] = np.asarray(s.data)
    return out


_MAX_PIECES = 4096   # per leaf; beyond, numpy assembles the host copy
_layouts = {}        # (sharding, shape, dtype) -> _Plan, see _layout
_LAYOUTS_MAX = 256


def _runs(index, shape, item):
    """The contiguous runs of a shard at index (a tuple of slices) in the
    C-order layout of shape: [(offset in the array, offset in the shard,
    nbytes)], or None when there are more than _MAX_PIECES."""
    strides = [1] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        strides[k] = strides[k + 1] * shape[k + 1]
    rng = [sl.indices(n)[:2] for sl, n in zip(index, shape)]
    rng += [(0, n) for n in shape[len(rng):]]
    if any(b <= a for a, b in rng):
        return []
    cut = [k for k, (a, b) in enumerate(rng) if (a, b) != (0, shape[k])]
    if not cut:
        n = item
        for d in shape:
            n *= d
        return [(0, 0, n)]
    k = cut[-1]
    run = (rng[k][1] - rng[k][0]) * strides[k] * item
    outer = [range(a, b) for a, b in rng[:k]]
    nruns = 1
    for r in outer:
        nruns *= len(r)
    if nruns > _MAX_PIECES:
        return None
    first = rng[k][0] * strides[k]
    out = []
    for i, idx in enumerate(np.ndindex(*[len(r) for r in outer])):
        off = first + sum((outer[j][0] + idx[j]) * strides[j]
                          for j in range(k))
        out.append((off * item, i * run, run))
    return out


class _Plan:
    """How the bytes of every array of one (sharding, shape, itemsize) lie
    in its per-device buffers (x._arrays order, the order of
    addressable_shards). pos: the buffer position of each distinct shard
    (replicas skipped); table: one row per contiguous run, a ckpt_piece
    (offset in the array, offset in its buffer until the buffer's
    address is added, nbytes: three uint64, the layout of a ckpt_piece
    on the 64-bit platforms PIECES_AS_TABLE checks), grouped by distinct
    shard; counts: the number of runs of each distinct shard."""
    __slots__ = ('nbufs', 'pos', 'every', 'table', 'counts', 'runs',
                 'export', 'spec')

    def __init__(self, nbufs, layout):
        self.nbufs = nbufs
        self.pos = tuple(p for p, _ in layout)
        self.every = self.pos == tuple(range(nbufs))   # no replicas
        self.runs = [r for _, r in layout]
        self.counts = np.array([len(r) for r in self.runs], np.intp)
        self.table = np.array([(off, src, n) for r in self.runs
                               for off, src, n in r],
                              np.uint64).reshape(-1, 3)
        self.export = None      # how buffers become views, see shard_buffers
        self.spec = None        # the leaf's ckpt_array_spec words, see _tree


# ckpt_piece is {uint64_t offset; const void *data; size_t nbytes}
PIECES_AS_TABLE = ctypes.sizeof(ctypes.c_void_p) == 8 and \
    ctypes.sizeof(ctypes.c_size_t) == 8


def _layout(x, shape, dtype):
    """The _Plan of x's sharding, shape and dtype (cached), or None when
    the layout cuts the array into too many runs."""
    item = dtype.itemsize
    key = (x.sharding, shape, dtype)
    try:
        return _layouts[key]
    except KeyError:
        pass
    except TypeError:           # a sharding that cannot be hashed
        key = None
    shards = x.addressable_shards
    out, n = [], 0
    for pos, s in enumerate(shards):
        if s.replica_id != 0:
            continue
        runs = _runs(s.index, shape, item)
        if runs is None:
            out = None
            break
        n += len(runs)
        if n > _MAX_PIECES:
            out = None
            break
        if runs:
            out.append((pos, runs))
    if out is not None:
        out = _Plan(len(shards), out)
    if key is not None:
        if len(_layouts) >= _LAYOUTS_MAX:
            _layouts.clear()
        _layouts[key] = out
    return out


_c_contiguous = operator.attrgetter('c_contiguous')
_pointer = operator.methodcaller('unsafe_buffer_pointer')


def _export_mv(bufs):
    views = list(map(memoryview, bufs))
    return views if all(map(_c_contiguous, views)) else None


def _export_np(bufs):
    views = [np.asarray(b) for b in bufs]
    for v in views:
        if not v.flags.c_contiguous:
            return None
    return views


def shard_buffers(x):
    """x's bytes straight from the buffers of its addressable shards (one
    per distinct shard, replicas skipped): (plan, views, bases) with plan
    the _Plan of x's layout, views the buffers as exported to Python and
    bases their addresses, in plan.pos order. A view holds its device
    buffer (as jax's external references do: jax declines to donate it).
    None when a buffer is not a C-contiguous host buffer or the layout
    cuts the array into too many runs (the caller then uses host_array).

    The per-array work is two calls per buffer: the runs, their offsets
    and sizes come from the plan, computed once per layout, and so does
    the way buffers are exported: memoryviews (the buffer protocol, the
    cheapest), or numpy views for the dtypes jax does not export through
    it (bfloat16, float8)."""
    plan = _layout(x, x.shape, x.dtype)
    if plan is None or not PIECES_AS_TABLE:
        return None
    return _buffers(plan, x)


def known_shard_buffers(x):
    """shard_buffers(x) for a layout a save has seen whole before (its
    plan has its spec, see _tree._jax_spec), with nothing else asked of
    x: the path of a tree saved at every step. None otherwise, and the
    caller takes the full path. (A plan exists only for a fully
    addressable sharding, so x's is.)"""
    try:
        plan = _layouts.get((x.sharding, x.shape, x.dtype))
    except TypeError:           # a sharding that cannot be hashed
        return None
    if plan is None or plan.spec is None:
        return None
    return _buffers(plan, x)


def _buffers(plan, x):
    # x._arrays: the per-device arrays in addressable_shards' order,
    # without building the Shard objects (jax's own accessor otherwise)
    bufs = getattr(x, '_arrays', None)
    if type(bufs) is not list or len(bufs) != plan.nbufs:
        bufs = [s.data for s in x.addressable_shards]
    sel = bufs if plan.every else [bufs[p] for p in plan.pos]
    try:
        if plan.export is None:
            return _first_export(plan, sel)
        views = plan.export(sel)
        if views is None:
            return None
        bases = list(map(_pointer, sel))
    except (TypeError, ValueError, AttributeError, BufferError):
        return None
    return plan, views, bases


def _first_export(plan, sel):
    """shard_buffers' first call for a layout: choose the export and
    check that a view's address is the buffer's unsafe_buffer_pointer(),
    which later calls use without asking the view (a zero-copy export on
    the CPU backend; otherwise this layout takes host_array's copy)."""
    try:
        views, export = _export_mv(sel), _export_mv
    except BufferError:
        views, export = _export_np(sel), _export_np
    if views is None:
        return None
    bases = [b.unsafe_buffer_pointer() for b in sel]
    for v, base in zip(views, bases):
        if not isinstance(v, np.ndarray):
            v = np.frombuffer(v.cast('B'), np.uint8)
        if v.size and v.ctypes.data != base:
            return None
    plan.export = export
    return plan, views, bases


def host_pieces(x, where):
    """shard_buffers(x) as (pieces, views) with pieces a list of (offset,
    address, nbytes) in the array's C-order layout; None as there."""
    got = shard_buffers(x)
    if got is None:
        return None
    plan, views, bases = got
    pieces = [(off, base + src, n) for runs, base in zip(plan.runs, bases)
              for off, src, n in runs]
    return pieces, views


def pieces_table(plans):
    """The ckpt_piece table of several arrays' plans, each array's rows
    contiguous and in the given order, before the addresses of their
    buffers are added (see with_bases); and the number of runs of each
    buffer, None when each buffer is one run."""
    if len(plans) == 1:
        table, counts = plans[0].table, plans[0].counts
    else:
        table = np.concatenate([p.table for p in plans])
        counts = np.concatenate([p.counts for p in plans])
    return table, (None if (counts == 1).all() else counts)


def with_bases(table, counts, bases):
    """pieces_table's table for buffers at the addresses bases (one per
    buffer, in order): the per-run work of a whole tree in a few numpy
    operations."""
    out = table.copy()
    b = np.array(bases, np.uint64)
    out[:, 1] += b if counts is None else np.repeat(b, counts)
    return out


def is_global(x):
    """True for a jax.Array that spans other processes and is not a copy
    every process holds: distinct shards in other processes, or replicated
    over only some of the processes (the primary host may hold none of
    it). Saved as this process's pieces, see process_pieces; every
    process decides alike, from the sharding alone."""
    if x.is_fully_addressable:
        return False
    return not x.is_fully_replicated or \
        len(processes_of(x.sharding)) < _jax().process_count()


def processes_of(sharding):
    """The process indices of a sharding's devices."""
    return {d.process_index for d in sharding.device_set}


def _starts(index, shape):
    return tuple(sl.indices(n)[0] for sl, n in zip(index, shape)) + \
        (0,) * (len(shape) - len(index))


def process_pieces(x):
    """This process's part of a global jax.Array: [(offsets, host view)],
    each distinct shard of the array saved by exactly one process. Among
    the processes holding a shard, the k-th distinct shard goes to the
    (k mod n)-th, so replicas across processes share the writing. Every
    process computes the same assignment from the sharding alone."""
    shape = tuple(x.shape)
    holders = {}        # starts -> set of process indices
    for dev, index in x.sharding.devices_indices_map(shape).items():
        holders.setdefault(_starts(index, shape), set()).add(
            dev.process_index)
    mine = set()
    me = _jax().process_index()
    for k, starts in enumerate(sorted(holders)):
        procs = sorted(holders[starts])
        if procs[k % len(procs)] == me:
            mine.add(starts)
    out = []
    for s in x.addressable_shards:
        starts = _starts(s.index, shape)
        if starts in mine:
            mine.discard(starts)
            out.append((starts, np.asarray(s.data)))
    return out


class GlobalTarget(list):
    """Restore target for a jax.Array whose sharding spans other
    processes: Shard targets (ckpt.Shard, 64-byte aligned buffers), one
    per distinct shard this process holds; assemble() makes the global
    jax.Array of the filled Shards."""

    def __init__(self, tgt, shard_cls, empty):
        sharding = _sharding(tgt)
        shape = tuple(int(d) for d in tgt.shape)
        dtype = np.dtype(tgt.dtype)
        self.target = tgt
        self.devices = []       # (device, starts) of this process
        seen = set()
        pieces = []
        for dev, index in sharding.addressable_devices_indices_map(
                shape).items():
            starts = _starts(index, shape)
            self.devices.append((dev, starts))
            if starts in seen:
                continue
            seen.add(starts)
            pshape = tuple(len(range(*sl.indices(n))) for sl, n in
                           zip(index, shape)) + shape[len(index):]
            pieces.append(shard_cls(empty(pshape, dtype), shape, starts))
        # no device in this process: no piece (an empty list), and the
        # array comes back with no addressable shards
        self.sharding = sharding
        self.shape = shape
        self.dtype = dtype
        list.__init__(self, pieces)

    def assemble(self, filled):
        """The global jax.Array, each local device given its filled
        piece (the buffers are ours: jax uses them in place)."""
        jax = _jax()
        by = {tuple(sh.offsets): sh.data for sh in filled}
        arrays = [jax.device_put(by[starts], dev)
                  for dev, starts in self.devices]
        if not arrays:
            # as jax.make_array_from_callback in a process without a
            # device of the sharding: no addressable shards
            return jax.make_array_from_single_device_arrays(
                self.shape, self.sharding, arrays, dtype=self.dtype)
        return jax.make_array_from_single_device_arrays(
            self.shape, self.sharding, arrays)


def needs_global_target(x):
    """A jax restore target whose sharding spans other processes."""
    sh = _sharding(x)
    return sh is not None and is_target(x) and \
        not sh.is_fully_addressable


def _sharding(tgt):
    return getattr(tgt, 'sharding', None)


def place(host, tgt, owned=False):
    """A jax.Array with tgt's dtype and sharding holding host (a numpy
    array of tgt's shape).

    owned: host is a buffer this restore allocated for this one array and
    nobody else holds (the restore read the checkpoint straight into it).
    jax on CPU then uses each device's slice in place (a C-contiguous,
    64-byte aligned slice is aliased, not copied; replicas of a slice share
    it, as jax's own device_put does), so the bytes are written once, by
    the restore. Otherwise each device gets a fresh copy: an unowned host
    may be a view into the mapped checkpoint, which does not outlive the
    restore, or memory the caller still holds."""
    jax = _jax()
    dtype = np.dtype(tgt.dtype)
    if host.dtype != dtype:
        host = host.astype(dtype)
        owned = True
    sharding = _sharding(tgt)
    if sharding is None:
        return jax.device_put(host if owned and host.flags.c_contiguous
                              else np.array(host, copy=True))

    def piece(index):
        part = host[index]
        if owned and part.flags.c_contiguous:
            return part
        return np.array(part, copy=True, order='C')
    return jax.make_array_from_callback(tuple(host.shape), sharding, piece)


class _Target:
    def __init__(self, dtype, sharding):
        self.dtype = dtype
        self.sharding = sharding


def restore_as_saved(host, tag, owned=False):
    """A leaf that was saved as a jax.Array, restored without a target: a
    jax.Array in the saved layout when this process has the devices, else
    on the default device (Orbax too gives back jax arrays). Only called
    once jax is loaded(); without jax a jax leaf restores as numpy. owned:
    as place()."""
    sharding = _sharding_from_tag(tag) if tag != TAG_JAX else None
    return place(host, _Target(host.dtype, sharding), owned)

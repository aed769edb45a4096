"""Pytrees <-> libckpt trees. No pickle: every leaf is an array (numpy, torch)
or a JSON-like scalar; anything else is refused before anything is sent."""

import ctypes
import itertools
from collections.abc import Mapping

import numpy as np

from ckpt import _jax
from ckpt import _lib
from ckpt import metadata as _md
from ckpt.shard import Shard

L = _lib

try:  # torch is optional
    import torch as _torch
except Exception:  # pragma: no cover - torch missing or broken
    _torch = None


class _Placeholder:
    """Marks a leaf that is skipped on restore (Orbax's PLACEHOLDER)."""
    _inst = None

    def __new__(cls):
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self):
        return 'PLACEHOLDER'

    def __reduce__(self):
        return (_Placeholder, ())


PLACEHOLDER = _Placeholder()

# ---- dtypes -----------------------------------------------------------------

_NP_TO_CK = {
    np.dtype(np.bool_): L.DT_BOOL, np.dtype(np.uint8): L.DT_U8,
    np.dtype(np.int8): L.DT_I8, np.dtype(np.uint16): L.DT_U16,
    np.dtype(np.int16): L.DT_I16, np.dtype(np.float16): L.DT_F16,
    np.dtype(np.uint32): L.DT_U32, np.dtype(np.int32): L.DT_I32,
    np.dtype(np.float32): L.DT_F32, np.dtype(np.uint64): L.DT_U64,
    np.dtype(np.int64): L.DT_I64, np.dtype(np.float64): L.DT_F64,
}
_CK_TO_NP = {v: k for k, v in _NP_TO_CK.items()}
_CK_NAMES = {
    L.DT_BOOL: 'bool', L.DT_U8: 'uint8', L.DT_I8: 'int8', L.DT_U16: 'uint16',
    L.DT_I16: 'int16', L.DT_F16: 'float16', L.DT_BF16: 'bfloat16',
    L.DT_U32: 'uint32', L.DT_I32: 'int32', L.DT_F32: 'float32',
    L.DT_U64: 'uint64', L.DT_I64: 'int64', L.DT_F64: 'float64',
    L.DT_F8_E4M3: 'float8_e4m3fn', L.DT_F8_E5M2: 'float8_e5m2',
}

try:  # optional: ml_dtypes gives numpy a bfloat16/float8
    import ml_dtypes as _mld
    _NP_TO_CK[np.dtype(_mld.bfloat16)] = L.DT_BF16
    _CK_TO_NP[L.DT_BF16] = np.dtype(_mld.bfloat16)
    _NP_TO_CK[np.dtype(_mld.float8_e4m3fn)] = L.DT_F8_E4M3
    _CK_TO_NP[L.DT_F8_E4M3] = np.dtype(_mld.float8_e4m3fn)
    _NP_TO_CK[np.dtype(_mld.float8_e5m2)] = L.DT_F8_E5M2
    _CK_TO_NP[L.DT_F8_E5M2] = np.dtype(_mld.float8_e5m2)
except Exception:
    pass

_TORCH_TO_CK = {}
_CK_TO_TORCH = {}
if _torch is not None:
    for _name, _ck in [('bool', L.DT_BOOL), ('uint8', L.DT_U8),
                       ('int8', L.DT_I8), ('uint16', L.DT_U16),
                       ('int16', L.DT_I16), ('float16', L.DT_F16),
                       ('bfloat16', L.DT_BF16), ('uint32', L.DT_U32),
                       ('int32', L.DT_I32), ('float32', L.DT_F32),
                       ('uint64', L.DT_U64), ('int64', L.DT_I64),
                       ('float64', L.DT_F64),
                       ('float8_e4m3fn', L.DT_F8_E4M3),
                       ('float8_e5m2', L.DT_F8_E5M2)]:
        _td = getattr(_torch, _name, None)
        if isinstance(_td, _torch.dtype):
            _TORCH_TO_CK[_td] = _ck
            _CK_TO_TORCH[_ck] = _td

TAG_NP_SCALAR = 'np.scalar'
TAG_TORCH = 'torch'

_TORCH_NUMPY_OK = set() if _torch is None else {
    d for d, ck in _TORCH_TO_CK.items() if ck in _CK_TO_NP}

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def is_torch_tensor(x):
    return _torch is not None and isinstance(x, _torch.Tensor)


def np_dtype_for(ck):
    dt = _CK_TO_NP.get(ck)
    if dt is None:
        raise ValueError(
            'dtype %s has no numpy equivalent here (install ml_dtypes, or '
            'restore into torch tensors)' % _CK_NAMES.get(ck, ck))
    return dt


def dtype_display(ck):
    """The dtype object shown in metadata: numpy dtype, else torch dtype,
    else the name."""
    dt = _CK_TO_NP.get(ck)
    if dt is not None:
        return dt
    if ck in _CK_TO_TORCH:
        return _CK_TO_TORCH[ck]
    return _CK_NAMES.get(ck, str(ck))


# ---- flattening ------------------------------------------------------------------

def is_shards(x):
    """A Shard, or a non-empty list/tuple of Shards (pieces of one
    array): a single leaf."""
    if isinstance(x, Shard):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and \
        all(isinstance(v, Shard) for v in x)


def shard_list(x):
    return [x] if isinstance(x, Shard) else list(x)


def is_no_piece(x):
    """An empty list where Shards would go: this rank asks for (or holds)
    no piece of the array there (also a jax target whose sharding gives
    this process no device)."""
    return isinstance(x, list) and not x


def no_piece_value(tleaf):
    """What a restore gives for a target asking for no piece: an empty
    list, or for a jax target the global jax.Array with no addressable
    shards."""
    if isinstance(tleaf, _jax.GlobalTarget):
        return tleaf.assemble([])
    return []


def has_no_piece(target):
    """True when a restore target asks somewhere for no piece of an
    array."""
    if target is None:
        return False
    if is_no_piece(target):
        return True
    if not _is_container(target):
        return False
    return any(is_no_piece(v) for _, v in flatten(target, 'target'))


def _is_container(x):
    return isinstance(x, (Mapping, list, tuple)) and not is_shards(x)


def flatten(tree, what='item'):
    """[(path, leaf)], path = tuple of (kind, key). Containers: Mapping
    (str keys), list, tuple; empty containers become leaves."""
    out = []

    def rec(x, path):
        if isinstance(x, Mapping):
            if not x:
                out.append((path, x))
                return
            for k, v in x.items():
                if not isinstance(k, str):
                    raise TypeError(
                        'Unsupported dict key %r (%s) at %s: only str keys '
                        'are supported' % (k, type(k).__name__,
                                           path_name(path) or what))
                rec(v, path + ((L.KEY_DICT, k),))
        elif isinstance(x, (list, tuple)) and not is_shards(x):
            if not x:
                out.append((path, x))
                return
            kind = L.KEY_TUPLE if isinstance(x, tuple) else L.KEY_LIST
            for i, v in enumerate(x):
                rec(v, path + ((kind, i),))
        else:
            out.append((path, x))

    rec(tree, ())
    return out


def path_name(path):
    return '.'.join(str(k) for _, k in path)


def _keys_array(path):
    n = len(path)
    arr = (L.Key * max(n, 1))()
    for i, (kind, k) in enumerate(path):
        arr[i].kind = kind
        if kind == L.KEY_DICT:
            arr[i].key = k.encode('utf-8')
        else:
            arr[i].index = k
    return arr, n


def _shape_array(shape):
    return (ctypes.c_int64 * max(len(shape), 1))(*shape)


class _Prepared:
    """One leaf converted to what libckpt needs; holds the memory."""
    __slots__ = ('path', 'kind', 'dtype', 'shape', 'addr', 'nbytes', 'keep',
                 'i', 'f', 'b', 's', 'tag', 'gshape', 'offsets')

    def __init__(self, path, kind):
        self.path = path
        self.kind = kind
        self.dtype = 0
        self.shape = ()
        self.addr = None
        self.nbytes = 0
        self.keep = None
        self.i = 0
        self.f = 0.0
        self.b = 0
        self.s = None
        self.tag = None
        self.gshape = None      # pieces: the global shape and offsets
        self.offsets = None


def _ck_dtype(dt, path):
    key = dt.newbyteorder('=') if dt.byteorder not in ('=', '|') else dt
    ck = _NP_TO_CK.get(key)
    if ck is None:
        raise TypeError(
            'Unsupported array dtype %s at %s: supported are bool, '
            'int8..int64, uint8..uint64, float16, float32, float64 (and '
            'bfloat16 as torch tensors)' % (dt, path_name(path) or 'item'))
    return ck


def _prep_numpy(path, arr, tag=None):
    dt = arr.dtype
    if dt.byteorder == '>' or (dt.byteorder == '=' and
                               np.little_endian is False):
        arr = arr.astype(dt.newbyteorder('<'))
        dt = arr.dtype
    ck = _ck_dtype(dt, path)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order='C')
    p = _Prepared(path, L.LEAF_ARRAY)
    p.dtype = ck
    p.shape = tuple(int(d) for d in arr.shape)
    p.nbytes = int(arr.nbytes)
    p.addr = arr.ctypes.data if arr.nbytes else None
    p.keep = arr
    p.tag = tag
    return p


def _prep_torch(path, t):
    if t.device.type != 'cpu':
        raise ValueError('torch tensor at %s is on %s: move it to the CPU '
                         'first' % (path_name(path) or 'item', t.device))
    if t.is_sparse or getattr(t, 'is_quantized', False):
        raise TypeError('Unsupported torch tensor layout at %s'
                        % (path_name(path) or 'item'))
    ck = _TORCH_TO_CK.get(t.dtype)
    if ck is None:
        raise TypeError('Unsupported torch dtype %s at %s'
                        % (t.dtype, path_name(path) or 'item'))
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    t = t.contiguous()
    p = _Prepared(path, L.LEAF_ARRAY)
    p.dtype = ck
    p.shape = tuple(int(d) for d in t.shape)
    p.nbytes = t.numel() * t.element_size()
    p.addr = t.data_ptr() if p.nbytes else None
    p.keep = t
    p.tag = TAG_TORCH
    return p


def prepare_pieces(path, x):
    """The pieces of a Shard leaf (or list of Shards), one _Prepared each."""
    where = path_name(path) or 'item'
    out = []
    for sh in shard_list(x):
        data = sh.data
        if is_torch_tensor(data):
            p = _prep_torch(path, data)
        elif isinstance(data, np.ndarray) and not data.dtype.hasobject:
            p = _prep_numpy(path, data)
        else:
            raise TypeError('Shard at %s: data must be a numpy array or a '
                            'torch CPU tensor, got %s'
                            % (where, type(data).__name__))
        p.gshape = sh.global_shape
        p.offsets = sh.offsets
        out.append(p)
    return out


def prepare_leaves(path, x):
    """prepare_leaf, as a list (a Shard list gives several pieces)."""
    if is_shards(x):
        return prepare_pieces(path, x)
    if _jax.is_array(x):
        if _jax.is_global(x):
            return _prep_jax_global(path, x)
        return [_prep_jax(path, x)]
    return [prepare_leaf(path, x)]


def _prep_jax_global(path, x):
    """A jax.Array with shards in other processes: this process's pieces
    of it (distributed steps join every process's pieces)."""
    gs = tuple(int(d) for d in x.shape)
    tag = _jax.sharding_tag(x)
    out = []
    for starts, view in _jax.process_pieces(x):
        p = _prep_numpy(path, view, tag)
        p.gshape = gs
        p.offsets = starts
        out.append(p)
    if not out and not x.addressable_shards:
        procs = _jax.processes_of(x.sharding)
        if len(procs) == 1:
            # there it is fully addressable: a host-local array, which
            # that process saves as its replicated leaf (jax and Orbax see
            # no global array either)
            raise ValueError(
                'jax.Array at %s: all its devices are in process %d, where '
                'it is a host-local array, not a global one; give it a '
                'sharding over several processes, or a copy in each'
                % (path_name(path) or 'item', min(procs)))
    if not out:
        # no piece of it here: an empty list, the other processes cover it
        return [_Prepared(path, L.LEAF_EMPTY_LIST)]
    return out


def _prep_jax(path, x):
    # a replicated array spanning processes: this process's copy (its
    # local shards need not hold replica 0)
    got = _jax.shard_buffers(x) if np.little_endian and \
        x.is_fully_addressable else None
    if got is None:
        return _prep_numpy(path, _jax.host_array(x, path_name(path)
                                                 or 'item'),
                           _jax.sharding_tag(x))
    plan, views, bases = got
    if plan.spec is None:
        plan.spec = _jax_spec(path, x)
    return _JaxLeaf(path, plan, views, bases)


class _JaxLeaf:
    """A jax.Array leaf handed as the pieces of its shard buffers: the
    plan of its layout (with its spec), the buffers' views (kept until
    the background copy is done) and their addresses."""
    __slots__ = ('path', 'plan', 'views', 'bases')

    def __init__(self, path, plan, views, bases):
        self.path = path
        self.plan = plan
        self.views = views
        self.bases = bases


def _jax_spec(path, x):
    """The words of a ckpt_array_spec that depend only on the layout of x
    (its plan's key: sharding, shape, dtype): dtype and ndim, shape,
    number of pieces, tag; plus the ctypes objects they point into."""
    ck = _ck_dtype(x.dtype, path)
    shape = _shape_array(tuple(int(d) for d in x.shape))
    tag = ctypes.create_string_buffer(_jax.sharding_tag(x).encode())
    ndim = len(x.shape)
    return ((ck & 0xffffffff) | (ndim << 32), ctypes.addressof(shape),
            ctypes.addressof(tag), (shape, tag))


def immutable(keeps):
    """True when the built trees (their keep lists) hold arrays and every
    one came from a jax.Array: nothing the caller can change before a
    background copy is done."""
    ks = [k for keep in keeps for k in keep]
    return bool(ks) and all(isinstance(k, _Views) for k in ks)


class _Views(list):
    """The host views of a jax.Array's shards (immutable bytes)."""


def prepare_leaf(path, x):
    """Convert one leaf; raises TypeError/ValueError for unsupported ones."""
    where = path_name(path) or 'item'
    if x is PLACEHOLDER:
        raise ValueError('PLACEHOLDER at %s cannot be saved' % where)
    if isinstance(x, Mapping) and not x:
        return _Prepared(path, L.LEAF_EMPTY_DICT)
    if isinstance(x, list) and not x:
        return _Prepared(path, L.LEAF_EMPTY_LIST)
    if isinstance(x, tuple) and not x:
        return _Prepared(path, L.LEAF_EMPTY_TUPLE)
    if x is None:
        return _Prepared(path, L.LEAF_NONE)
    if isinstance(x, (bool, np.bool_)) and not isinstance(x, np.generic):
        p = _Prepared(path, L.LEAF_BOOL)
        p.b = 1 if x else 0
        return p
    if isinstance(x, int) and not isinstance(x, np.generic):
        if not _INT64_MIN <= x <= _INT64_MAX:
            raise ValueError('int at %s does not fit in int64: %d'
                             % (where, x))
        p = _Prepared(path, L.LEAF_INT)
        p.i = int(x)
        return p
    if isinstance(x, float) and not isinstance(x, np.generic):
        p = _Prepared(path, L.LEAF_FLOAT)
        p.f = float(x)
        return p
    if isinstance(x, str):
        if '\0' in x:
            raise ValueError('str at %s contains a NUL character' % where)
        p = _Prepared(path, L.LEAF_STR)
        p.s = x.encode('utf-8')
        return p
    if isinstance(x, np.generic):
        return _prep_numpy(path, np.asarray(x), TAG_NP_SCALAR)
    if isinstance(x, np.ndarray):
        if x.dtype.hasobject:
            raise TypeError('Unsupported object array at %s: only numeric '
                            'and bool arrays can be saved' % where)
        return _prep_numpy(path, x)
    if is_torch_tensor(x):
        return _prep_torch(path, x)
    if _jax.is_array(x):
        return _prep_jax(path, x)
    if hasattr(x, '__array__') and hasattr(x, 'shape') and hasattr(x, 'dtype'):
        # other array types: bring them to host memory
        arr = np.asarray(x)
        if arr.dtype.hasobject:
            raise TypeError('Unsupported object array at %s' % where)
        return _prep_numpy(path, arr)
    raise TypeError(
        'Unsupported leaf type %s at %s: leaves must be numpy arrays or '
        'scalars, torch CPU tensors, int, float, bool, str or None'
        % (type(x).__name__, where))


def build_tree(item, what='item'):
    """Build a ckpt_tree for `item`. Returns (tree_ptr, keepalive); the
    caller frees tree_ptr with ckpt_tree_free after ckpt_save returned."""
    if not _is_container(item):
        raise ValueError(
            'Unsupported item of type %s for %s: expected a tree (dict, list '
            'or tuple) of arrays and scalars; use ocp.args.ArraySave for a '
            'single array' % (type(item).__name__, what))
    if not item:
        raise ValueError('Found empty item.')
    return _tree_from_prepared(prepare_tree(item, what))


def prepare_tree(item, what='item'):
    """Every leaf of item prepared for libckpt, in order."""
    leaves = []
    for p, x in flatten(item, what):
        # a jax.Array of a layout saved before: its buffers at once
        got = _jax.known_shard_buffers(x) if type(x) in _jax.ARRAY_TYPES \
            else None
        if got is not None:
            leaves.append(_JaxLeaf(p, *got))
        else:
            leaves.extend(prepare_leaves(p, x))
    return leaves


def build_array_tree(arr):
    """ArraySave: a single array stored as a one-leaf tree (path 'array');
    a Shard (or a list of Shards) is this rank's part of a global array,
    as a sharded jax.Array is in Orbax's multi-host ArraySave."""
    path = ((L.KEY_DICT, 'array'),)
    if is_shards(arr):
        return _tree_from_prepared(prepare_pieces(path, arr))
    leaf = prepare_leaf(path, arr)
    if type(leaf) is not _JaxLeaf and leaf.kind != L.LEAF_ARRAY:
        raise TypeError('ArraySave expects an array, got %s'
                        % type(arr).__name__)
    return _tree_from_prepared([leaf])


_keys_cache = {}     # path -> (ctypes Key array, depth)
_CACHE_MAX = 1 << 14


def _cached(cache, key, make):
    """make(key), kept in cache: a tree saved every step has the same
    paths and shapes every time."""
    try:
        return cache[key]
    except KeyError:
        pass
    v = make(key)
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = v
    return v


def _tree_from_prepared(leaves):
    lib = L.lib()
    t = lib.ckpt_tree_new()
    if not t:
        raise MemoryError('ckpt_tree_new')
    keep = []   # libckpt copies the tables' rows; their buffers are kept
    try:
        # each run of consecutive jax leaves in one call, in tree order
        for jax_run, run in itertools.groupby(
                leaves, key=lambda p: type(p) is _JaxLeaf):
            if jax_run:
                _add_jax_leaves(lib, t, list(run), keep)
            else:
                for p in run:
                    _add_prepared(lib, t, p, keep)
    except BaseException:
        lib.ckpt_tree_free(t)
        raise
    return t, keep


def _add_jax_leaves(lib, t, run, keep):
    """Consecutive jax leaves: their pieces in one table, added by one
    call that takes a spec per leaf (see _run_layout)."""
    # lay holds what the specs point into until the call returns
    lay = _run_layout(run)
    _, _, table, counts, specs, _ = lay
    table = _jax.with_bases(table, counts,
                            [b for p in run for b in p.bases])
    # the views hold the buffers (jax declines to donate them)
    keep.append(_Views([v for p in run for v in p.views]))
    failed = ctypes.c_size_t(0)
    rc = lib.ckpt_tree_add_arrays_pieces_k(
        t, specs.ctypes.data, len(run), table.ctypes.data,
        ctypes.byref(failed))
    if rc != 0:
        L.check_plain(rc, 'cannot add leaf %s'
                      % (path_name(run[failed.value].path) or 'item'))


_last_run = None     # (plans, paths, table, counts, specs, keys)


def _run_layout(run):
    """(plans, paths, pieces table without buffer addresses, run counts,
    ckpt_array_spec table, the key arrays the specs point into) of a run
    of jax leaves: what depends only on their paths and layouts, so kept
    for the next save of the same tree (a tree saved at every step hands
    the same run every time)."""
    global _last_run
    plans = tuple(p.plan for p in run)
    paths = tuple(p.path for p in run)
    c = _last_run
    if c is not None and c[0] == plans and c[1] == paths:
        return c
    table, counts = _jax.pieces_table(plans)
    keys = [_keys_array(path) for path in paths]
    specs = np.array([(ctypes.addressof(k), d, p.spec[0], p.spec[1], 0,
                       len(p.table), p.spec[2])
                      for (k, d), p in zip(keys, plans)], np.uint64)
    specs[1:, 4] = np.cumsum(specs[:-1, 5])
    # the specs point into keys and into the plans' ctypes objects
    _last_run = (plans, paths, table, counts, specs, keys)
    return _last_run


def _add_prepared(lib, t, p, keep):
    keys, n = _cached(_keys_cache, p.path, _keys_array)
    if p.kind == L.LEAF_ARRAY and p.gshape is not None:
        rc = lib.ckpt_tree_add_piece_k(
            t, keys, n, p.dtype, len(p.shape),
            _shape_array(p.gshape), _shape_array(p.offsets),
            _shape_array(p.shape), p.addr, p.nbytes)
        # a piece of a jax.Array is an immutable view
        keep.append(_Views([p.keep]) if _jax.is_tag(p.tag) else p.keep)
        if rc == L.CKPT_EMISMATCH:
            raise ValueError(
                'pieces of %s overlap or disagree on dtype or global shape'
                % (path_name(p.path) or 'item'))
    elif p.kind == L.LEAF_ARRAY:
        shp = _shape_array(p.shape)
        rc = lib.ckpt_tree_add_array_k(
            t, keys, n, p.dtype, len(p.shape), shp, p.addr, p.nbytes)
        # a jax.Array's host copy or view is immutable too
        keep.append(_Views([p.keep]) if _jax.is_tag(p.tag) else p.keep)
    else:
        rc = lib.ckpt_tree_add_scalar_k(
            t, keys, n, p.kind, p.i, p.f, p.b, p.s)
    L.check_plain(rc, 'cannot add leaf %s' % (path_name(p.path) or 'item'))
    if p.tag:
        L.check_plain(lib.ckpt_tree_set_tag(
            t, _cached(_tags_cache, p.tag, str.encode)), 'cannot tag leaf')


_tags_cache = {}     # tag -> bytes


# ---- reading restored trees ---------------------------------------------------------

class Owner:
    """Owns a ckpt_restored; zero-copy views keep it alive."""

    def __init__(self, ptr):
        self.ptr = ptr

    def free(self):
        if self.ptr:
            L.lib().ckpt_restored_free(self.ptr)
            self.ptr = None

    def __del__(self):
        try:
            self.free()
        except Exception:
            pass


class _View:
    """Exposes mapped bytes to numpy (read-only); keeps the owner alive."""

    def __init__(self, owner, addr, shape, dtype):
        self._owner = owner
        self.__array_interface__ = {
            'version': 3, 'shape': tuple(shape), 'typestr': dtype.str,
            'descr': dtype.descr, 'data': (addr, True), 'strides': None}


class RawArray:
    """A restored array leaf before conversion."""
    __slots__ = ('ck', 'shape', 'addr', 'nbytes', 'tag', 'owner', 'pieces')

    def __init__(self, ck, shape, addr, nbytes, tag, owner):
        self.ck = ck
        self.shape = shape
        self.addr = addr
        self.nbytes = nbytes
        self.tag = tag
        self.owner = owner
        # item metadata of a global array: shape is the global shape,
        # pieces [(offsets, shape, file)] what was saved
        self.pieces = None

    # -- conversions
    def numpy_view(self):
        dt = np_dtype_for(self.ck)
        if not self.nbytes or not self.addr:
            a = np.empty(self.shape, dt)
            a.flags.writeable = False
            return a
        # the array interface cannot name extension dtypes (ml_dtypes'
        # bfloat16, float8): expose their bytes, then view them as dt
        raw = np.dtype('V%d' % dt.itemsize) if dt.isbuiltin == 2 else dt
        a = np.asarray(_View(self.owner, self.addr, self.shape, raw))
        return a if a.dtype == dt else a.view(dt)

    def numpy_copy(self, dtype=None):
        src_dt = _CK_TO_NP.get(self.ck)
        if src_dt is None:
            # bf16/f8 without ml_dtypes: go through torch
            t = self.torch_copy()
            if dtype is None:
                raise ValueError(
                    'dtype %s has no numpy equivalent here: give a numpy '
                    'target dtype or restore as torch'
                    % _CK_NAMES.get(self.ck, self.ck))
            return t.to(_torch.float32).numpy().astype(dtype)
        if dtype is None or np.dtype(dtype) == src_dt:
            out = np.empty(self.shape, src_dt)
            if self.nbytes:
                ctypes.memmove(out.ctypes.data, self.addr, self.nbytes)
            return out
        out = np.empty(self.shape, np.dtype(dtype))
        if self.nbytes:
            out[...] = self.numpy_view()   # one pass: mapped -> cast copy
        return out

    def torch_copy(self, dtype=None):
        if _torch is None:
            raise ValueError('torch is not importable')
        tdt = _CK_TO_TORCH.get(self.ck)
        if tdt is None:
            raise ValueError('dtype %s has no torch equivalent'
                             % _CK_NAMES.get(self.ck, self.ck))
        t = _torch.empty(self.shape, dtype=tdt)
        if self.nbytes:
            ctypes.memmove(t.data_ptr(), self.addr, self.nbytes)
        if dtype is not None and dtype != tdt:
            t = t.to(dtype)
        return t

    def default_value(self, zero_copy):
        """Restore as saved."""
        if self.tag == TAG_TORCH and _torch is not None:
            return self.torch_copy()
        if self.ck not in _CK_TO_NP and self.ck in _CK_TO_TORCH:
            return self.torch_copy()
        if self.tag == TAG_NP_SCALAR and not self.shape:
            return self.numpy_copy()[()]
        if _jax.is_tag(self.tag) and self.ck in _CK_TO_NP and \
                _jax.loaded():
            # the view is of this restore's private (copy-on-write)
            # mapping of the file: jax may use it in place
            return _jax.restore_as_saved(self.numpy_view(), self.tag,
                                         owned=True)
        return self.numpy_view() if zero_copy else self.numpy_copy()


class Ready:
    """An array leaf already restored into memory we own (numpy/torch)."""
    __slots__ = ('obj', 'tag')

    def __init__(self, obj, tag):
        self.obj = obj
        self.tag = tag


def read_tree(tree_ptr, owner):
    """[(path, value)] with RawArray for arrays and Python values for
    scalars, in saved order. Metadata-only trees give RawArray with addr
    None."""
    lib = L.lib()
    out = []
    piece_at = {}       # path -> index in out of its global array
    n = lib.ckpt_tree_nleaves(tree_ptr)
    leaf = L.Leaf()
    for i in range(n):
        L.check_plain(lib.ckpt_tree_leaf(tree_ptr, i, ctypes.byref(leaf)),
                      'ckpt_tree_leaf')
        path = []
        for d in range(leaf.depth):
            k = leaf.path[d]
            if k.kind == L.KEY_DICT:
                path.append((L.KEY_DICT, k.key.decode('utf-8')))
            else:
                path.append((k.kind, int(k.index)))
        path = tuple(path)
        kind = leaf.kind
        tag = leaf.tag.decode('utf-8') if leaf.tag else ''
        if kind in (L.LEAF_ARRAY, L.LEAF_TARGET) and leaf.global_shape:
            shape = tuple(int(leaf.shape[d]) for d in range(leaf.ndim))
            gs = tuple(int(leaf.global_shape[d]) for d in range(leaf.ndim))
            off = tuple(int(leaf.offsets[d]) for d in range(leaf.ndim))
            fname = leaf.file.decode('utf-8') if leaf.file else None
            if path in piece_at:
                out[piece_at[path]][1].pieces.append((off, shape, fname))
                continue
            val = RawArray(leaf.dtype, gs, None, 0, tag, owner)
            val.pieces = [(off, shape, fname)]
            piece_at[path] = len(out)
        elif kind in (L.LEAF_ARRAY, L.LEAF_TARGET):
            shape = tuple(int(leaf.shape[d]) for d in range(leaf.ndim))
            val = RawArray(leaf.dtype, shape, leaf.data, int(leaf.nbytes),
                           tag, owner)
        elif kind == L.LEAF_INT:
            val = int(leaf.i)
        elif kind == L.LEAF_FLOAT:
            val = float(leaf.f)
        elif kind == L.LEAF_BOOL:
            val = bool(leaf.b)
        elif kind == L.LEAF_STR:
            val = leaf.s.decode('utf-8') if leaf.s is not None else ''
        elif kind == L.LEAF_NONE:
            val = None
        elif kind == L.LEAF_EMPTY_DICT:
            val = _EMPTY_DICT
        elif kind == L.LEAF_EMPTY_LIST:
            val = _EMPTY_LIST
        elif kind == L.LEAF_EMPTY_TUPLE:
            val = ()
        else:
            raise ValueError('unknown leaf kind %d' % kind)
        out.append((path, val))
    return out


class _EmptyMarker:
    def __init__(self, factory):
        self.factory = factory


_EMPTY_DICT = _EmptyMarker(dict)
_EMPTY_LIST = _EmptyMarker(list)


def _materialize_default(v, zero_copy):
    if isinstance(v, Ready):
        if v.tag == TAG_NP_SCALAR and isinstance(v.obj, np.ndarray) and \
                v.obj.shape == ():
            return v.obj[()]
        if _jax.is_tag(v.tag) and isinstance(v.obj, np.ndarray) and \
                _jax.loaded():
            # v.obj: the buffer the restore allocated and filled
            return _jax.restore_as_saved(v.obj, v.tag, owned=True)
        return v.obj
    if isinstance(v, RawArray):
        return v.default_value(zero_copy)
    if isinstance(v, _EmptyMarker):
        return v.factory()
    return v


def unflatten(entries, convert):
    """Rebuild nested containers from [(path, value)]."""
    if len(entries) == 1 and not entries[0][0]:
        return convert(entries[0][1])
    root = [None, {}]  # [kind, children]

    for path, val in entries:
        if not path:
            raise ValueError('malformed tree: a root leaf among others')
        node = root
        for depth, (kind, key) in enumerate(path):
            if node[0] is None:
                node[0] = kind
            elif node[0] != kind:
                raise ValueError('malformed tree: mixed container kinds at %s'
                                 % path_name(path[:depth]))
            if depth == len(path) - 1:
                node[1][key] = ('leaf', val)
            else:
                child = node[1].get(key)
                if child is None or child[0] == 'leaf':
                    child = [None, {}]
                    node[1][key] = child
                node = child

    def build(node):
        if isinstance(node, tuple):
            return convert(node[1])
        kind, children = node
        if kind == L.KEY_DICT:
            return {k: build(v) for k, v in children.items()}
        vals = [build(children[k]) for k in sorted(children)]
        return tuple(vals) if kind == L.KEY_TUPLE else vals

    return build(root)


def restore_as_saved(entries, zero_copy):
    return unflatten(entries, lambda v: _materialize_default(v, zero_copy))


# ---- restore with a target --------------------------------------------------------

def _norm(path):
    return tuple(('d', k) if kind == L.KEY_DICT else ('i', k)
                 for kind, k in path)


def _is_abstract_array(x):
    if is_torch_tensor(x):
        return True
    if isinstance(x, (bool, int, float, str)) or x is None:
        return False
    return hasattr(x, 'shape') and hasattr(x, 'dtype')


def _target_dtype(x):
    if is_torch_tensor(x):
        return x.dtype
    dt = x.dtype
    if _torch is not None and isinstance(dt, _torch.dtype):
        return dt
    return np.dtype(dt)


def _host_value(val, tshape, where):
    """A restored leaf as a numpy array of shape tshape, without a copy
    where it can be a view."""
    if isinstance(val, Ready):
        obj = val.obj
        if is_torch_tensor(obj):
            obj = obj.numpy() if obj.dtype in _TORCH_NUMPY_OK else \
                obj.to(_torch.float32).numpy()
        host = np.asarray(obj)
    elif isinstance(val, RawArray):
        host = (val.numpy_view() if val.ck in _CK_TO_NP
                else val.numpy_copy(np.float32))
    elif isinstance(val, (bool, int, float)):
        host = np.asarray(val)
    else:
        raise ValueError('Cannot restore %s value at %s into an array '
                         'target' % (type(val).__name__, where))
    if tuple(host.shape) != tshape:
        raise ValueError(
            'Shape mismatch at %s: the checkpoint has %s, the target asks '
            'for %s' % (where, tuple(host.shape), tshape))
    return host


def _convert_to_target(val, tgt, zero_copy, where):
    tshape = tuple(int(d) for d in tgt.shape)
    if _jax.is_target(tgt):
        # a numpy buffer the restore allocated (Ready), or a view of the
        # restore's private mapping (RawArray), is ours to hand over
        owned = (isinstance(val, Ready) and isinstance(val.obj, np.ndarray)) \
            or (isinstance(val, RawArray) and val.ck in _CK_TO_NP)
        return _jax.place(_host_value(val, tshape, where), tgt, owned)
    tdt = _target_dtype(tgt)
    want_torch = is_torch_tensor(tgt) or (
        _torch is not None and isinstance(tdt, _torch.dtype))
    if isinstance(val, Ready):
        obj = val.obj
        if tuple(obj.shape) != tshape:
            raise ValueError(
                'Shape mismatch at %s: the checkpoint has %s, the target '
                'asks for %s' % (where, tuple(obj.shape), tshape))
        if want_torch:
            if not is_torch_tensor(obj):
                obj = _torch.from_numpy(obj)
            return obj if obj.dtype == tdt else obj.to(tdt)
        if is_torch_tensor(obj):
            obj = obj.numpy() if obj.dtype in _TORCH_NUMPY_OK else \
                obj.to(_torch.float32).numpy()
        if obj.dtype != tdt:
            obj = obj.astype(tdt)
        return obj[()] if isinstance(tgt, np.generic) else obj
    if isinstance(val, RawArray):
        if val.shape != tshape:
            raise ValueError(
                'Shape mismatch at %s: the checkpoint has %s, the target '
                'asks for %s' % (where, val.shape, tshape))
        if want_torch:
            return val.torch_copy(tdt)
        if (zero_copy and val.ck in _CK_TO_NP and
                np_dtype_for(val.ck) == tdt and not isinstance(tgt, np.generic)):
            return val.numpy_view()
        out = val.numpy_copy(tdt)
        if isinstance(tgt, np.generic):
            return out[()]
        return out
    if isinstance(val, (bool, int, float)):
        if tshape != ():
            raise ValueError(
                'Shape mismatch at %s: the checkpoint has a scalar, the '
                'target asks for %s' % (where, tshape))
        if want_torch:
            return _torch.tensor(val, dtype=tdt)
        out = np.asarray(val, dtype=tdt)
        return out[()] if isinstance(tgt, np.generic) else out
    raise ValueError('Cannot restore %s value at %s into an array target'
                     % (type(val).__name__, where))


def match_target(entries, target, partial):
    """Match target leaves with saved leaves. Returns (matches, wanted):
    matches = [(tpath, tleaf, exact index or None, [subtree indices])],
    wanted = {saved index: target leaf or None (as saved)} for the saved
    leaves that are restored. Raises ValueError on structure problems."""
    saved = [_norm(p) for p, _ in entries]
    tleaves = flatten(target, 'target')
    covered = [False] * len(saved)
    matches = []
    wanted = {}
    for tpath, tleaf in tleaves:
        nt = _norm(tpath)
        where = path_name(tpath) or 'item'
        exact = None
        sub = []
        for idx, np_ in enumerate(saved):
            if np_ == nt:
                exact = idx
            elif np_[:len(nt)] == nt and len(np_) > len(nt):
                sub.append(idx)
        if exact is None and not sub:
            raise ValueError(
                'Requested to restore "%s", which is missing in the '
                'checkpoint.' % where)
        for idx in ([exact] if exact is not None else []) + sub:
            covered[idx] = True
        if tleaf is PLACEHOLDER and exact is None and not partial:
            # Orbax: a PLACEHOLDER stands for one leaf, not a subtree
            # (checkpointer_test_utils.py, non_leaf_placeholder).
            raise ValueError(_structure_mismatch(
                '%s: PLACEHOLDER given for a subtree of %d saved leaves'
                % (where, len(sub))))
        if tleaf is not PLACEHOLDER:
            if exact is not None:
                val = entries[exact][1]
                if is_no_piece(tleaf) and isinstance(val, (RawArray, Ready)):
                    # no piece of this array: nothing is read
                    wanted[exact] = tleaf
                    matches.append((tpath, tleaf, exact, sub))
                    continue
                arr = _is_abstract_array(tleaf) or is_shards(tleaf)
                if is_shards(tleaf) and not isinstance(val, (RawArray,
                                                             Ready)):
                    raise ValueError('Cannot restore a %s at %s into Shard '
                                     'targets' % (type(val).__name__, where))
                if arr and isinstance(val, RawArray):
                    tshape = tuple(int(d) for d in (
                        shard_list(tleaf)[0].global_shape if
                        is_shards(tleaf) else tleaf.shape))
                    if is_shards(tleaf) and any(
                            sh.global_shape != tshape
                            for sh in shard_list(tleaf)):
                        raise ValueError('Shard targets at %s disagree on '
                                         'the global shape' % where)
                    if val.shape != tshape:
                        raise ValueError(
                            'Shape mismatch at %s: the checkpoint has %s, '
                            'the target asks for %s'
                            % (where, val.shape, tshape))
                wanted[exact] = tleaf if arr else None
            else:
                if _is_abstract_array(tleaf) or is_shards(tleaf):
                    raise ValueError(
                        'Structure mismatch at %s: the checkpoint has a '
                        'subtree there, the target a single array' % where)
                for i in sub:
                    wanted[i] = None
        matches.append((tpath, tleaf, exact, sub))
    if not partial:
        missing = [i for i, c in enumerate(covered) if not c]
        if missing:
            raise ValueError(_omitted_message(
                [(path_name(entries[i][0]), entries[i][1]) for i in missing]))
    return matches, wanted


def _omitted_message(missing):
    """Orbax's words for a target that leaves out saved leaves, one entry
    per leaf ("Source" is the target, "Target" what is on disk)."""
    parts = []
    for where, val in missing:
        kind = 'scalar'
        if isinstance(val, RawArray):
            kind = 'jax.Array' if _jax.is_tag(val.tag) else 'np.ndarray'
        parts.append('%s:\n    - Source: MISSING\n    - Target: '
                     "ValueMetadataEntry(value_type='%s', "
                     'skip_deserialize=False, write_shape=None)'
                     % (where, kind))
    return ('User-provided restore item and on-disk value metadata tree '
            'structures do not match:\n%s\nIf this mismatch is '
            'intentional, pass `partial_restore=True` to only restore '
            'parameters found in `item`.' % '\n\n'.join(parts))


def _structure_mismatch(diff):
    """Orbax's message (base_pytree_checkpoint_handler.py)."""
    return ('User-provided restore item and on-disk value metadata tree'
            ' structures do not match:\n%s\nIf this mismatch is'
            ' intentional, pass `partial_restore=True` to only restore'
            ' parameters found in `item`.' % diff)


def restore_with_target(entries, target, partial, zero_copy):
    """Restore into the structure of `target`. Array-like target leaves give
    dtype (cast) and shape (checked); other leaves mean "as saved";
    PLACEHOLDER leaves are skipped. Without partial, every saved leaf must be
    covered by the target."""
    matches, _ = match_target(entries, target, partial)
    results = {}
    for tpath, tleaf, exact, sub in matches:
        where = path_name(tpath) or 'item'
        if tleaf is PLACEHOLDER:
            results[tpath] = PLACEHOLDER
        elif exact is not None:
            val = entries[exact][1]
            if is_no_piece(tleaf) and isinstance(val, (RawArray, Ready)):
                results[tpath] = no_piece_value(tleaf)
            elif is_shards(tleaf):
                results[tpath] = _shards_from(val, tleaf, where)
            elif _is_abstract_array(tleaf):
                results[tpath] = _convert_to_target(val, tleaf, zero_copy,
                                                    where)
            else:
                results[tpath] = _materialize_default(val, zero_copy)
        else:
            rel = [(entries[i][0][len(tpath):], entries[i][1]) for i in sub]
            results[tpath] = unflatten(
                rel, lambda v: _materialize_default(v, zero_copy))
    return _rebuild(target, (), results)


def _shards_from(val, tleaf, where):
    """Shard targets filled from a restored leaf: the Shards libckpt
    filled (Ready), or slices of the whole array (RawArray). A jax target
    spanning processes (GlobalTarget) gives its jax.Array."""
    if isinstance(val, Ready):
        if isinstance(val.obj, _Assemble):
            return val.obj.target.assemble(val.obj.filled)
        return val.obj
    if isinstance(tleaf, _jax.GlobalTarget):
        host = _host_value(val, tleaf.shape, where)
        return tleaf.assemble([
            Shard(np.array(host[sh.slices()], dtype=sh.data.dtype,
                           order='C'), sh.global_shape, sh.offsets)
            for sh in tleaf])
    out = []
    for sh in shard_list(tleaf):
        whole = _host_value(val, sh.global_shape, where)
        part = whole[sh.slices()]
        data = sh.data
        if is_torch_tensor(data):
            t = _torch.from_numpy(np.ascontiguousarray(part))
            filled = t.to(data.dtype)
        else:
            filled = np.array(part, dtype=np.dtype(data.dtype), order='C')
        out.append(Shard(filled, sh.global_shape, sh.offsets))
    return out[0] if isinstance(tleaf, Shard) else type(tleaf)(out)


class _Assemble:
    """Shards libckpt fills for a GlobalTarget; the jax.Array is made
    once they are filled (after the restore)."""
    __slots__ = ('target', 'filled')

    def __init__(self, target, filled):
        self.target = target
        self.filled = filled


def global_targets(tree):
    """tree with each jax target whose sharding spans other processes
    replaced by a GlobalTarget (this process's Shard targets); tree
    itself when there is none."""
    if not _jax.loaded():
        return tree
    found = [False]

    def conv(x):
        if isinstance(x, Mapping):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)) and not is_shards(x):
            vals = [conv(v) for v in x]
            if isinstance(x, tuple):
                return type(x)(*vals) if hasattr(x, '_fields') else \
                    tuple(vals)
            return vals
        if _jax.needs_global_target(x):
            found[0] = True
            return _jax.GlobalTarget(x, Shard, _empty_for_jax)
        return x
    out = conv(tree)
    return out if found[0] else tree


def _shard_buffer(sh):
    """The buffer a Shard target is filled in: its own data when libckpt
    can write it in place (C-contiguous, writable, a known dtype), else a
    new array of its dtype. Returns (object, ckpt dtype, address) or None."""
    data = sh.data
    shape = sh.shape
    if is_torch_tensor(data):
        ck = _TORCH_TO_CK.get(data.dtype)
        if ck is None:
            return None
        if data.device.type == 'cpu' and data.is_contiguous() and \
                not data.requires_grad:
            return data, ck, data.data_ptr()
        obj = _torch.empty(shape, dtype=data.dtype)
        return obj, ck, obj.data_ptr()
    dt = np.dtype(data.dtype)
    ck = _NP_TO_CK.get(dt)
    if ck is None:
        return None
    if isinstance(data, np.ndarray) and data.flags.c_contiguous and \
            data.flags.writeable and dt.isnative:
        return data, ck, data.ctypes.data
    obj = np.empty(shape, dt)
    return obj, ck, obj.ctypes.data


# ---- restoring into buffers we allocate ------------------------------------------

_JAX_ALIGN = 64   # jax on CPU uses a host buffer in place from this alignment


def _empty_for_jax(shape, dt):
    """np.empty(shape, dt) on a _JAX_ALIGN-byte boundary: the buffer of a
    leaf that becomes a jax.Array, which jax then aliases instead of
    copying (see _jax.place)."""
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    raw = np.empty(n + _JAX_ALIGN, np.uint8)
    off = -raw.ctypes.data % _JAX_ALIGN
    return raw[off:off + n].view(dt).reshape(shape)


def alloc_dst(meta, tleaf):
    """Allocate the array a saved leaf (RawArray from item metadata) is
    restored into: (object, ckpt dtype, address) or None when libckpt
    cannot produce it directly (then the caller falls back)."""
    shape = meta.shape
    if tleaf is not None and _is_abstract_array(tleaf):
        tdt = _target_dtype(tleaf)
        if _torch is not None and isinstance(tdt, _torch.dtype):
            ck = _TORCH_TO_CK.get(tdt)
            if ck is None:
                return None
            obj = _torch.empty(shape, dtype=tdt)
            return obj, ck, obj.data_ptr()
        ck = _NP_TO_CK.get(tdt)
        if ck is None:
            return None
        obj = _empty_for_jax(shape, tdt) if _jax.is_target(tleaf) else \
            np.empty(shape, tdt)
        return obj, ck, obj.ctypes.data
    ck = meta.ck
    if (meta.tag == TAG_TORCH and _torch is not None) or (
            ck not in _CK_TO_NP and ck in _CK_TO_TORCH):
        tdt = _CK_TO_TORCH.get(ck)
        if tdt is None:
            return None
        obj = _torch.empty(shape, dtype=tdt)
        return obj, ck, obj.data_ptr()
    dt = _CK_TO_NP.get(ck)
    if dt is None:
        return None
    obj = _empty_for_jax(shape, dt) if _jax.is_tag(meta.tag) and \
        _jax.loaded() else np.empty(shape, dt)
    return obj, ck, obj.ctypes.data


def jax_views(entries, wanted):
    """True when every array leaf restored (wanted: index -> target leaf
    or None) becomes a jax.Array of its saved dtype: the restore then
    hands jax views of its private (copy-on-write) mapping of the files,
    verified, instead of copying into new memory. Saved pieces of global
    arrays, casts, and numpy/torch/Shard/multi-process targets need the
    copy."""
    if not _jax.loaded():
        return False
    some = False
    for idx, tleaf in wanted.items():
        meta = entries[idx][1]
        if not isinstance(meta, RawArray):
            continue
        if meta.pieces is not None or meta.ck not in _CK_TO_NP:
            return False
        if tleaf is None:
            if not _jax.is_tag(meta.tag):
                return False
        elif not _jax.is_target(tleaf) or \
                _jax.needs_global_target(tleaf) or \
                np.dtype(tleaf.dtype) != np_dtype_for(meta.ck):
            return False
        some = True
    return some


def build_target_tree(entries, wanted):
    """A libckpt target tree asking for the saved leaves in `wanted` (index
    -> target leaf or None), each into a buffer allocated here. Returns
    (tree_ptr, {index: Ready}) or None when some leaf needs the fallback."""
    lib = L.lib()
    t = lib.ckpt_tree_new()
    if not t:
        raise MemoryError('ckpt_tree_new')
    ready = {}
    try:
        for idx in sorted(wanted):
            path, meta = entries[idx]
            if not isinstance(meta, RawArray):
                continue
            if is_no_piece(wanted[idx]):
                # libckpt gives an empty list there and reads nothing
                keys, n = _keys_array(path)
                L.check_plain(lib.ckpt_tree_add_scalar_k(
                    t, keys, n, L.LEAF_EMPTY_LIST, 0, 0.0, 0, None),
                    'restore target')
                continue
            if is_shards(wanted[idx]):
                keys, n = _keys_array(path)
                filled = []
                for sh in shard_list(wanted[idx]):
                    got = _shard_buffer(sh)
                    if got is None:
                        lib.ckpt_tree_free(t)
                        return None
                    obj, ck, addr = got
                    nbytes = int(np.prod(sh.shape, dtype=np.int64)) * \
                        int(lib.ckpt_dtype_size(ck))
                    rc = lib.ckpt_tree_add_piece_target_k(
                        t, keys, n, ck, len(sh.shape),
                        _shape_array(sh.global_shape),
                        _shape_array(sh.offsets), _shape_array(sh.shape),
                        addr if nbytes else None, nbytes)
                    if rc == L.CKPT_EMISMATCH:
                        raise ValueError('Shard targets at %s overlap or '
                                         'disagree on the global shape'
                                         % (path_name(path) or 'item'))
                    L.check_plain(rc, 'restore target')
                    filled.append(Shard(obj, sh.global_shape, sh.offsets))
                w = wanted[idx]
                if isinstance(w, _jax.GlobalTarget):
                    ready[idx] = Ready(_Assemble(w, filled), meta.tag)
                    continue
                ready[idx] = Ready(filled[0] if isinstance(
                    w, Shard) else type(w)(filled), meta.tag)
                continue
            got = alloc_dst(meta, wanted[idx])
            if got is None:
                lib.ckpt_tree_free(t)
                return None
            obj, ck, addr = got
            nbytes = int(np.prod(meta.shape, dtype=np.int64)) * \
                int(lib.ckpt_dtype_size(ck))
            keys, n = _keys_array(path)
            shp = _shape_array(meta.shape)
            L.check_plain(lib.ckpt_tree_add_target_k(
                t, keys, n, ck, len(meta.shape), shp,
                addr if nbytes else None, nbytes), 'restore target')
            ready[idx] = Ready(obj, meta.tag)
    except BaseException:
        lib.ckpt_tree_free(t)
        raise
    return t, ready


def _rebuild(x, path, results):
    if isinstance(x, Mapping):
        if not x:
            return results.get(path, {})
        return {k: _rebuild(v, path + ((L.KEY_DICT, k),), results)
                for k, v in x.items()}
    if isinstance(x, (list, tuple)) and not is_shards(x):
        if not x:
            return results[path] if path in results else type(x)()
        kind = L.KEY_TUPLE if isinstance(x, tuple) else L.KEY_LIST
        vals = [_rebuild(v, path + ((kind, i),), results)
                for i, v in enumerate(x)]
        if isinstance(x, tuple):
            if hasattr(x, '_fields'):
                return type(x)(*vals)
            return tuple(vals)
        return vals
    return results[path]


# ---- metadata ---------------------------------------------------------------------

def metadata_tree(entries, directory):
    def conv_entry(path, v):
        name = path_name(path)
        if isinstance(v, RawArray):
            if v.tag == TAG_NP_SCALAR and not v.shape:
                return _md.ScalarMetadata(name=name, directory=directory,
                                          shape=(), sharding=None,
                                          dtype=dtype_display(v.ck))
            pieces = None
            if v.pieces is not None:
                pieces = tuple(_md.PieceMetadata(offsets=o, shape=s, file=f)
                               for o, s, f in v.pieces)
            return _md.ArrayMetadata(name=name, directory=directory,
                                     shape=v.shape, sharding=None,
                                     dtype=dtype_display(v.ck),
                                     pieces=pieces)
        if isinstance(v, bool):
            return _md.ScalarMetadata(name=name, directory=directory,
                                      shape=(), sharding=None,
                                      dtype=np.dtype('bool'))
        if isinstance(v, int):
            return _md.ScalarMetadata(name=name, directory=directory,
                                      shape=(), sharding=None,
                                      dtype=np.dtype('int64'))
        if isinstance(v, float):
            return _md.ScalarMetadata(name=name, directory=directory,
                                      shape=(), sharding=None,
                                      dtype=np.dtype('float64'))
        if isinstance(v, str):
            return _md.StringMetadata(name=name, directory=directory)
        return _materialize_default(v, False)

    conv = [(p, conv_entry(p, v)) for p, v in entries]
    return unflatten(conv, lambda v: v)

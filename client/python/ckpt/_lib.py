"""ctypes bindings for libckpt (see ckpt/ckpt.h, the C manual).

The library is found through $CKPT_LIBRARY, then ctypes.util.find_library,
then the soname libckpt.so.0. Nothing here is public API.
"""

import ctypes
import ctypes.util
import errno
import os
import threading

from ckpt import errors as _errors

c_int = ctypes.c_int
c_int64 = ctypes.c_int64
c_uint64 = ctypes.c_uint64
c_size_t = ctypes.c_size_t
c_double = ctypes.c_double
c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p
c_long = ctypes.c_long
c_unsigned = ctypes.c_uint
POINTER = ctypes.POINTER

# ---- error codes (proto/ckpt_codes.def, shipped in the package) ------------


def _read_codes():
    """The X(NAME, VALUE, "description") entries of ckpt_codes.def, the one
    table of error codes ckptd, libckpt and this package are built from."""
    import os
    import re
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        'ckpt_codes.def')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    entries = re.findall(r'^X\((\w+), (-\d+), "([^"]*)"\)$', text, re.M)
    if not entries:
        raise ImportError('%s holds no error codes' % path)
    return [(name, int(value), desc) for name, value, desc in entries]


CODES = _read_codes()
CKPT_OK = 0
globals().update(('CKPT_' + _name, _value) for _name, _value, _ in CODES)
CKPT_ECODE_MIN = min(_value for _, _value, _ in CODES)

KEY_DICT, KEY_LIST, KEY_TUPLE = 0, 1, 2

LEAF_ARRAY = 0
LEAF_INT = 1
LEAF_FLOAT = 2
LEAF_BOOL = 3
LEAF_STR = 4
LEAF_NONE = 5
LEAF_EMPTY_DICT = 6
LEAF_EMPTY_LIST = 7
LEAF_EMPTY_TUPLE = 8
LEAF_TARGET = 9

HANDLER_UNSPECIFIED = 0
HANDLER_STANDARD = 1
HANDLER_PYTREE = 2
HANDLER_JSON = 3
HANDLER_ARRAY = 4
HANDLER_PROTO = 5

SAVE_FIXED_INTERVAL = 0
SAVE_SPECIFIC_STEPS = 1
SAVE_CONTINUOUS = 2
SAVE_INITIAL = 3
SAVE_PREEMPTION = 4
SAVE_ANY = 5

PRESERVE_ALL = 0
PRESERVE_LATEST_N = 1
PRESERVE_EVERY_N_SECONDS = 2
PRESERVE_EVERY_N_STEPS = 3
PRESERVE_CUSTOM_STEPS = 4
PRESERVE_BEST_N = 5
PRESERVE_LATEST_DURATION = 6
PRESERVE_EVERY_N_STEPS_CLOSEST = 8
PRESERVE_ANY = 7

# dtypes
DT_BOOL, DT_U8, DT_I8, DT_U16, DT_I16 = 1, 2, 3, 4, 5
DT_F16, DT_BF16, DT_U32, DT_I32, DT_F32 = 6, 7, 8, 9, 10
DT_U64, DT_I64, DT_F64, DT_F8_E4M3, DT_F8_E5M2 = 11, 12, 13, 14, 15


class Key(ctypes.Structure):
    _fields_ = [('kind', c_int), ('key', c_char_p), ('index', c_uint64)]


class Piece(ctypes.Structure):
    _fields_ = [('offset', c_uint64), ('data', c_void_p),
                ('nbytes', c_size_t)]


class Leaf(ctypes.Structure):
    _fields_ = [
        ('kind', c_int),
        ('path', POINTER(Key)),
        ('depth', c_size_t),
        ('path_str', c_char_p),
        ('dtype', c_int),
        ('ndim', c_int),
        ('shape', POINTER(c_int64)),
        ('data', c_void_p),
        ('nbytes', c_size_t),
        ('i', c_int64),
        ('f', c_double),
        ('b', c_int),
        ('s', c_char_p),
        ('tag', c_char_p),
        ('xxh3', c_uint64),
        ('file', c_char_p),
        ('global_shape', POINTER(c_int64)),
        ('offsets', POINTER(c_int64)),
    ]


class Status(ctypes.Structure):
    _fields_ = [
        ('version', ctypes.c_char * 32),
        ('uptime_secs', c_double),
        ('connections', ctypes.c_uint32),
        ('managers', ctypes.c_uint32),
        ('queued_saves', ctypes.c_uint32),
        ('inflight_saves', ctypes.c_uint32),
        ('waiting_for_memory', ctypes.c_uint32),
        ('workers', ctypes.c_uint32),
        ('staging_bytes', c_uint64),
        ('memory_budget', c_uint64),
        ('saves_committed', c_uint64),
        ('saves_failed', c_uint64),
        ('bytes_written', c_uint64),
    ]


class StepInfo(ctypes.Structure):
    _fields_ = [
        ('step', c_uint64),
        ('state', c_int),
        ('init_ns', c_int64),
        ('commit_ns', c_int64),
        ('bytes', c_uint64),
        ('name', ctypes.c_char * 256),
        ('error', ctypes.c_char * 256),
        ('upload', ctypes.c_char * 16),
        ('upload_error', ctypes.c_char * 256),
    ]


# (name, restype, argtypes)
# ckpt_should_save_fn: int (*)(uint64_t step, int64_t latest, void *arg)
SHOULD_SAVE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64,
                                  ctypes.c_int64, ctypes.c_void_p)

_PROTOS = [
    ('ckpt_strerror', c_char_p, [c_int]),
    ('ckpt_version', c_char_p, []),
    ('ckpt_dtype_size', c_size_t, [c_int]),
    ('ckpt_tree_new', c_void_p, []),
    ('ckpt_tree_free', None, [c_void_p]),
    ('ckpt_tree_add_array_k', c_int,
     [c_void_p, POINTER(Key), c_size_t, c_int, c_int, POINTER(c_int64),
      c_void_p, c_size_t]),
    ('ckpt_tree_add_array_pieces_k', c_int,
     [c_void_p, POINTER(Key), c_size_t, c_int, c_int, POINTER(c_int64),
      POINTER(Piece), c_size_t]),
    ('ckpt_tree_add_arrays_pieces_k', c_int,
     [c_void_p, c_void_p, c_size_t, c_void_p, POINTER(c_size_t)]),
    ('ckpt_tree_add_scalar_k', c_int,
     [c_void_p, POINTER(Key), c_size_t, c_int, c_int64, c_double, c_int,
      c_char_p]),
    ('ckpt_tree_set_tag', c_int, [c_void_p, c_char_p]),
    ('ckpt_tree_add_target_k', c_int,
     [c_void_p, POINTER(Key), c_size_t, c_int, c_int, POINTER(c_int64),
      c_void_p, c_size_t]),
    ('ckpt_tree_add_piece_k', c_int,
     [c_void_p, POINTER(Key), c_size_t, c_int, c_int, POINTER(c_int64),
      POINTER(c_int64), POINTER(c_int64), c_void_p, c_size_t]),
    ('ckpt_tree_add_piece_target_k', c_int,
     [c_void_p, POINTER(Key), c_size_t, c_int, c_int, POINTER(c_int64),
      POINTER(c_int64), POINTER(c_int64), c_void_p, c_size_t]),
    ('ckpt_tree_nleaves', c_size_t, [c_void_p]),
    ('ckpt_tree_leaf', c_int, [c_void_p, c_size_t, POINTER(Leaf)]),
    ('ckpt_options_new', c_void_p, []),
    ('ckpt_options_free', None, [c_void_p]),
    ('ckpt_options_set_create', c_int, [c_void_p, c_int]),
    ('ckpt_options_set_read_only', c_int, [c_void_p, c_int]),
    ('ckpt_options_set_max_to_keep', c_int, [c_void_p, c_int64]),
    ('ckpt_options_set_keep_period', c_int, [c_void_p, c_uint64]),
    ('ckpt_options_set_keep_time_interval', c_int, [c_void_p, c_double]),
    ('ckpt_options_set_best', c_int, [c_void_p, c_char_p, c_int]),
    ('ckpt_options_set_keep_checkpoints_without_metrics', c_int,
     [c_void_p, c_int]),
    ('ckpt_options_set_step_prefix', c_int, [c_void_p, c_char_p]),
    ('ckpt_options_set_step_format_fixed_length', c_int,
     [c_void_p, c_unsigned]),
    ('ckpt_options_set_cleanup_tmp_directories', c_int, [c_void_p, c_int]),
    ('ckpt_options_set_save_interval_steps', c_int, [c_void_p, c_uint64]),
    ('ckpt_options_set_save_on_steps', c_int,
     [c_void_p, POINTER(c_uint64), c_size_t]),
    ('ckpt_options_set_todelete_subdir', c_int, [c_void_p, c_char_p]),
    ('ckpt_options_set_enable_background_delete', c_int, [c_void_p, c_int]),
    ('ckpt_options_set_async', c_int, [c_void_p, c_int]),
    ('ckpt_options_set_async_timeout', c_int, [c_void_p, c_double]),
    ('ckpt_options_set_prevent_write_metrics', c_int, [c_void_p, c_int]),
    ('ckpt_options_set_path_permission_mode', c_int, [c_void_p, c_unsigned]),
    ('ckpt_options_set_root_metadata', c_int, [c_void_p, c_char_p]),
    ('ckpt_options_set_should_save_fn', c_int,
     [c_void_p, SHOULD_SAVE_FN, c_void_p]),
    ('ckpt_options_set_item_names', c_int,
     [c_void_p, POINTER(c_char_p), c_size_t]),
    ('ckpt_options_set_process_index', c_int, [c_void_p, ctypes.c_uint32]),
    ('ckpt_options_set_process_count', c_int, [c_void_p, ctypes.c_uint32]),
    ('ckpt_options_set_primary_host', c_int, [c_void_p, ctypes.c_uint32]),
    ('ckpt_options_set_active_processes', c_int,
     [c_void_p, POINTER(ctypes.c_uint32), c_size_t]),
    ('ckpt_options_set_job', c_int, [c_void_p, c_char_p]),
    ('ckpt_options_save_policy_add', c_int,
     [c_void_p, c_int, c_uint64, POINTER(c_uint64), c_size_t, c_double]),
    ('ckpt_options_save_policy_child', c_int, [c_void_p, c_int, c_int]),
    ('ckpt_options_preservation_add', c_int,
     [c_void_p, c_int, c_int64, c_double, POINTER(c_uint64), c_size_t,
      c_char_p, c_int, c_int]),
    ('ckpt_options_preservation_child', c_int, [c_void_p, c_int, c_int]),
    ('ckpt_options_preservation_every_n', c_int,
     [c_void_p, c_int, c_int, c_int64]),
    ('ckpt_connect', c_int, [c_char_p, POINTER(c_void_p)]),
    ('ckpt_connect_errmsg', c_char_p, []),
    ('ckpt_disconnect', None, [c_void_p]),
    ('ckpt_client_errmsg', c_char_p, [c_void_p]),
    ('ckpt_ping', c_int, [c_void_p]),
    ('ckpt_status_get', c_int, [c_void_p, POINTER(Status)]),
    ('ckpt_manager_open', c_int,
     [c_void_p, c_char_p, c_void_p, POINTER(c_void_p)]),
    ('ckpt_manager_close', c_int, [c_void_p]),
    ('ckpt_manager_errmsg', c_char_p, [c_void_p]),
    ('ckpt_manager_directory', c_char_p, [c_void_p]),
    ('ckpt_save_args_new', c_void_p, []),
    ('ckpt_save_args_free', None, [c_void_p]),
    ('ckpt_save_args_add_tree', c_int, [c_void_p, c_char_p, c_int, c_void_p]),
    ('ckpt_save_args_add_json', c_int, [c_void_p, c_char_p, c_char_p]),
    ('ckpt_save_args_add_proto', c_int, [c_void_p, c_char_p, c_char_p]),
    ('ckpt_save_args_set_composite', c_int, [c_void_p, c_int]),
    ('ckpt_save_args_set_metrics', c_int, [c_void_p, c_char_p]),
    ('ckpt_save_args_set_custom_metadata', c_int, [c_void_p, c_char_p]),
    ('ckpt_save_args_set_force', c_int, [c_void_p, c_int]),
    ('ckpt_save_args_set_timestamp', c_int, [c_void_p, c_int64]),
    ('ckpt_save_args_set_preempted', c_int, [c_void_p, c_int]),
    ('ckpt_save_args_set_background', c_int, [c_void_p, c_int]),
    ('ckpt_save_args_set_cow', c_int, [c_void_p, c_int]),
    ('ckpt_cow_available', c_int, []),
    ('ckpt_manager_cow_bytes', c_size_t, [c_void_p]),
    ('ckpt_save', c_int, [c_void_p, c_uint64, c_void_p, POINTER(c_int)]),
    ('ckpt_save_ask_early', c_int, [c_void_p, c_uint64, c_int64]),
    ('ckpt_wait_until_finished', c_int, [c_void_p]),
    ('ckpt_check_for_errors', c_int, [c_void_p]),
    ('ckpt_is_saving_in_progress', c_int, [c_void_p]),
    ('ckpt_wait_pending', c_int, [c_void_p]),
    ('ckpt_preempt', c_int, [c_void_p]),
    ('ckpt_reached_preemption', c_int, [c_void_p, c_uint64, POINTER(c_int)]),
    ('ckpt_set_step_metrics', c_int, [c_void_p, c_uint64, c_char_p]),
    ('ckpt_should_save', c_int, [c_void_p, c_uint64, POINTER(c_int)]),
    ('ckpt_all_steps', c_int,
     [c_void_p, POINTER(POINTER(c_uint64)), POINTER(c_size_t)]),
    ('ckpt_latest_step', c_int, [c_void_p, POINTER(c_int64)]),
    ('ckpt_best_step', c_int, [c_void_p, POINTER(c_int64)]),
    ('ckpt_metrics', c_int, [c_void_p, c_uint64, POINTER(c_void_p)]),
    ('ckpt_list_steps', c_int,
     [c_void_p, POINTER(POINTER(StepInfo)), POINTER(c_size_t)]),
    ('ckpt_wait_for_step', c_int,
     [c_void_p, c_int64, c_int64, POINTER(c_int64)]),
    ('ckpt_restore_args_new', c_void_p, []),
    ('ckpt_restore_args_free', None, [c_void_p]),
    ('ckpt_restore_args_add_item', c_int, [c_void_p, c_char_p, c_void_p, c_int]),
    ('ckpt_restore_args_set_directory', c_int, [c_void_p, c_char_p]),
    ('ckpt_restore_args_set_zero_copy', c_int, [c_void_p, c_int]),
    ('ckpt_restore_args_set_verify', c_int, [c_void_p, c_int]),
    ('ckpt_restore_args_set_metadata_only', c_int, [c_void_p, c_int]),
    ('ckpt_restore', c_int, [c_void_p, c_int64, c_void_p, POINTER(c_void_p)]),
    ('ckpt_item_metadata', c_int, [c_void_p, c_int64, POINTER(c_void_p)]),
    ('ckpt_restored_free', None, [c_void_p]),
    ('ckpt_restored_step', c_uint64, [c_void_p]),
    ('ckpt_restored_nitems', c_size_t, [c_void_p]),
    ('ckpt_restored_item_name', c_char_p, [c_void_p, c_size_t]),
    ('ckpt_restored_item_handler', c_int, [c_void_p, c_size_t]),
    ('ckpt_restored_item_tree', c_void_p, [c_void_p, c_size_t]),
    ('ckpt_restored_item_json', c_char_p, [c_void_p, c_size_t]),
    ('ckpt_restored_find', c_long, [c_void_p, c_char_p]),
    ('ckpt_restored_directory', c_char_p, [c_void_p]),
    ('ckpt_metadata', c_int, [c_void_p, c_int64, POINTER(c_void_p)]),
    ('ckpt_delete', c_int, [c_void_p, c_uint64]),
    ('ckpt_reload', c_int, [c_void_p]),
    ('ckpt_verify', c_int, [c_void_p, c_int64, POINTER(c_void_p)]),
]

_lock = threading.Lock()
_lib = None


def _candidates():
    env = os.environ.get('CKPT_LIBRARY')
    if env:
        yield env
        return
    found = ctypes.util.find_library('ckpt')
    if found:
        yield found
    yield 'libckpt.so.0'


def lib():
    """The loaded libckpt (loaded on first use)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        errs = []
        handle = None
        for name in _candidates():
            try:
                handle = ctypes.CDLL(name)
                break
            except OSError as e:
                errs.append(str(e))
        if handle is None:
            raise ImportError(
                'cannot load libckpt (set CKPT_LIBRARY to the path of '
                'libckpt.so): ' + '; '.join(errs))
        for name, restype, argtypes in _PROTOS:
            fn = getattr(handle, name, None)
            if fn is None:
                continue
            fn.restype = restype
            fn.argtypes = argtypes
        libc = ctypes.CDLL(None)
        handle._free = libc.free
        handle._free.argtypes = [c_void_p]
        handle._free.restype = None
        _lib = handle
    return _lib


def free(ptr):
    if ptr:
        lib()._free(ptr)


def take_string(ptr):
    """Decode a malloc'ed C string and free it; None for NULL."""
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode('utf-8')
    finally:
        free(ptr)


def strerror(code):
    s = lib().ckpt_strerror(code)
    return s.decode('utf-8', 'replace') if s else 'error %d' % code


def _dec(b):
    return b.decode('utf-8', 'replace') if b else ''


def exception_for(code, message):
    """Map a negative CKPT_E* code and message to a Python exception."""
    if not message:
        message = strerror(code)
    if code in (CKPT_ENOSTEPS, CKPT_ENOTFOUND):
        return FileNotFoundError(message)
    if code == CKPT_EEXIST:
        return _errors.StepAlreadyExistsError(message)
    if code == CKPT_ENOITEM:
        return _errors.ItemNotFoundError(message)
    if code in (CKPT_EINCOMPLETE, CKPT_EINVAL, CKPT_EMISMATCH, CKPT_EDTYPE):
        return ValueError(message)
    if code == CKPT_EACCES:
        return PermissionError(errno.EACCES, message)
    if code == CKPT_ENOSPC:
        return OSError(errno.ENOSPC, message)
    if code == CKPT_ENOTDIR:
        return FileNotFoundError(errno.ENOENT, message)
    return _errors.CkptError(code, message)


def check_client(rc, client):
    if rc < 0:
        raise exception_for(rc, _dec(lib().ckpt_client_errmsg(client)))
    return rc


def check_manager(rc, mgr):
    if rc < 0:
        raise exception_for(rc, _dec(lib().ckpt_manager_errmsg(mgr)))
    return rc


def check_plain(rc, what):
    if rc < 0:
        raise exception_for(rc, '%s: %s' % (what, strerror(rc)))
    return rc

"""CheckpointManager over libckpt, with Orbax's API and messages."""

import copy
import ctypes
import dataclasses
import datetime
import json
import logging
import math
import os
import re
import sys
import threading
import time
import weakref
from typing import (Any, Callable, Container, Iterator, List, Optional,
                    Sequence)

import numpy as np

from ckpt import _lib
from ckpt import _tree
from ckpt import args as args_lib
from ckpt import distributed as _distributed
from ckpt import policies as cm
from ckpt import errors as errors_lib
from ckpt import handlers as handlers_lib
from ckpt import metadata as md
from ckpt.metadata import RootMetadata, StepMetadata

L = _lib
DEFAULT_ITEM_NAME = 'default'
RESERVED_ITEM_NAMES = ('metrics',)
# best_fn is evaluated here; its value travels as this metric.
BEST_METRIC = '__ckpt_best__'
_RESERVED_METRIC_PREFIX = '__ckpt_'


def _now_ns():
    """The save time given to the daemon's time-based policies
    (keep_time_interval, EveryNSeconds, LatestDuration, Continuous). Tests
    replace it to run those policies without waiting, as Orbax's tests mock
    the clock."""
    return time.time_ns()

_HANDLER_CODES = {'standard': L.HANDLER_STANDARD, 'pytree': L.HANDLER_PYTREE,
                  'json': L.HANDLER_JSON, 'array': L.HANDLER_ARRAY,
                  'proto': L.HANDLER_PROTO}
_CODE_HANDLERS = {v: k for k, v in _HANDLER_CODES.items()}

_LEGACY_MSG = (
    'ckpt supports only the CheckpointManager API of orbax-checkpoint >= '
    '0.5: {what} is the deprecated legacy API. Create the manager with '
    'CheckpointManager(directory, options=..., item_names=... or '
    'item_handlers=...) and pass `args=` to save() and restore(), e.g. '
    'mngr.save(step, args=ocp.args.StandardSave(tree)) and '
    'mngr.restore(step, args=ocp.args.StandardRestore(abstract_tree)).')


def _absl_logger():
    lg = logging.getLogger('absl')
    if not lg.handlers and not logging.getLogger().handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter('%(levelname)s:%(name)s:%(message)s'))
        lg.addHandler(h)
        lg.propagate = False
    return lg


def _warn(msg):
    _absl_logger().warning(msg)


_STANDARD_NO_TARGET = (
    '`StandardCheckpointHandler` expects a target tree to be provided for '
    'restore. Not doing so is generally UNSAFE unless you know the present '
    'topology to be the same one as the checkpoint was saved under.')


# ---- options ---------------------------------------------------------------------

@dataclasses.dataclass
class AsyncOptions:
    """Orbax's async options. timeout_secs is the time a background save
    may take (given to ckptd); post_finalization_callback runs in this
    process after each background save commits (async managers only);
    barrier_sync_fn and create_directories_asynchronously are accepted
    and unused (one process per manager; ckptd creates directories)."""
    timeout_secs: int = 1200
    barrier_sync_fn: Any = None
    post_finalization_callback: Any = None
    create_directories_asynchronously: bool = False


@dataclasses.dataclass
class FileOptions:
    """Orbax's file options: path_permission_mode is the mode of the step
    directories (None: ckptd's default)."""
    path_permission_mode: Optional[int] = None


@dataclasses.dataclass
class MultiprocessingOptions:
    """Orbax's multi-process options (distributed steps, see
    ckpt.distributed): primary_host is the rank that writes replicated
    leaves; active_processes, when given, the set of ranks taking part
    (the others must not open the manager); barrier_sync_key_prefix tells
    jobs sharing a root apart (default: $CKPT_JOB, else
    $TORCHELASTIC_RUN_ID)."""
    primary_host: Optional[int] = 0
    active_processes: Any = None
    barrier_sync_key_prefix: Optional[str] = None


@dataclasses.dataclass
class CheckpointManagerOptions:
    """Orbax's options, with its defaults. See ORBAX semantics; every option
    is enforced by ckptd except should_save_fn and best_fn/BestN metric
    functions, which run in this process."""
    save_interval_steps: int = 1
    max_to_keep: Optional[int] = None
    keep_time_interval: Optional[Any] = None
    keep_period: Optional[int] = None
    should_keep_fn: Optional[Callable[[int], bool]] = None
    best_fn: Optional[Callable[[Any], float]] = None
    best_mode: str = 'max'
    keep_checkpoints_without_metrics: bool = True
    step_prefix: Optional[str] = None
    step_format_fixed_length: Optional[int] = None
    step_name_format: Any = None
    create: bool = True
    cleanup_tmp_directories: bool = False
    save_on_steps: Optional[Container[int]] = None
    single_host_load_and_broadcast: bool = False
    todelete_subdir: Optional[str] = None
    todelete_full_path: Optional[str] = None
    enable_hns: bool = False
    enable_background_delete: bool = False
    read_only: bool = False
    enable_async_checkpointing: bool = True
    async_options: Optional[AsyncOptions] = None
    multiprocessing_options: Optional[MultiprocessingOptions] = None
    should_save_fn: Optional[Callable[[int, Optional[int]], bool]] = None
    file_options: Optional[FileOptions] = None
    save_root_metadata: bool = True
    temporary_path_class: Any = None
    save_decision_policy: Any = None
    preservation_policy: Any = None
    prevent_write_metrics: bool = False
    enable_should_save_is_saving_in_progress_check: bool = True
    enable_per_process_directory_creation: bool = False
    # Orbax 0.12. Performance hints with no effect here (ckptd's workers
    # delete; its index makes opening cheap):
    num_deletion_threads: Optional[int] = None
    lightweight_initialize: bool = False
    atomicity_options: Any = None

    def __post_init__(self) -> None:
        def _int(name, v, lo):
            if v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError('`%s` must be an integer, got %r'
                                 % (name, v))
            if v < lo:
                raise ValueError('`%s` must be >= %d, got %d' % (name, lo, v))

        if self.max_to_keep is not None and (
                not isinstance(self.max_to_keep, (int, np.integer)) or
                self.max_to_keep < 0):
            # Orbax's text (CheckpointManagerOptions.__post_init__)
            raise ValueError('Setting of `max_to_keep` must be None or '
                             'non-negative.')
        _int('save_interval_steps', self.save_interval_steps, 0)
        _int('keep_period', self.keep_period, 1)
        _int('step_format_fixed_length', self.step_format_fixed_length, 0)
        if self.best_mode not in ('min', 'max'):
            raise ValueError(
                "`CheckpointManagerOptions.best_mode` must be one of None, "
                "'min' or 'max'. Got %s." % (self.best_mode,))
        if self.best_fn is not None and not callable(self.best_fn):
            raise ValueError('`best_fn` must be callable')
        if self.should_save_fn is not None and not callable(
                self.should_save_fn):
            raise ValueError('`should_save_fn` must be callable')
        if self.keep_time_interval is not None:
            secs = _seconds(self.keep_time_interval)
            if secs < 0:
                raise ValueError('`keep_time_interval` must be >= 0')
        if self.step_prefix is not None and (
                not isinstance(self.step_prefix, str) or
                not self.step_prefix or '/' in self.step_prefix or
                '\0' in self.step_prefix):
            raise ValueError('`step_prefix` must be a non-empty string '
                             'without "/", got %r' % (self.step_prefix,))
        if self.todelete_subdir is not None and (
                not isinstance(self.todelete_subdir, str) or
                not self.todelete_subdir or '/' in self.todelete_subdir or
                self.todelete_subdir in ('.', '..')):
            raise ValueError('`todelete_subdir` must be a single directory '
                             'name, got %r' % (self.todelete_subdir,))
        if self.todelete_full_path is not None:
            raise ValueError('`todelete_full_path` is not supported by ckpt; '
                             'use `todelete_subdir`')
        if self.step_name_format is not None:
            raise ValueError('`step_name_format` is not supported by ckpt; '
                             'use `step_prefix` and '
                             '`step_format_fixed_length`')
        if self.should_keep_fn is not None:
            raise ValueError('`should_keep_fn` is not supported by ckpt; use '
                             'a `preservation_policy` (e.g. CustomSteps)')
        if self.save_on_steps is not None:
            self.save_on_steps = frozenset(int(s) for s in self.save_on_steps)
            for s in self.save_on_steps:
                if s < 0:
                    raise ValueError('`save_on_steps` must be non-negative')
        if self.preservation_policy is not None:
            if (self.max_to_keep is not None or self.keep_period is not None
                    or self.keep_time_interval is not None):
                raise ValueError(
                    '`preservation_policy` and `delete options` are mutually'
                    ' exclusive - do not use together.')
            if not isinstance(self.preservation_policy, cm.PreservationPolicy):
                raise ValueError('`preservation_policy` must be a preservation '
                                 'policy, got %r' % (self.preservation_policy,))
        if self.save_decision_policy is not None and not isinstance(
                self.save_decision_policy, cm.SaveDecisionPolicy):
            raise ValueError('`save_decision_policy` must be a save decision '
                             'policy, got %r' % (self.save_decision_policy,))
        if self.async_options is not None and self.async_options.timeout_secs \
                is not None and self.async_options.timeout_secs <= 0:
            raise ValueError('`async_options.timeout_secs` must be > 0')
        if self.read_only and self.save_interval_steps > 0:
            # Orbax 0.12 (CheckpointManagerOptions.__post_init__).
            self.save_interval_steps = 0
            logging.getLogger('absl').warning(
                'CheckpointManagerOptions.read_only=True, setting'
                ' save_interval_steps=0.')
        for name in ('temporary_path_class', 'atomicity_options'):
            if getattr(self, name) is not None:
                raise NotImplementedError(
                    '`%s` is not supported by ckpt: ckptd commits each step '
                    'with its own protocol (<step>.ckptd-tmp, fsync, rename)'
                    % name)
        if self.enable_per_process_directory_creation:
            raise NotImplementedError(
                '`enable_per_process_directory_creation` is not supported '
                'by ckpt (one process per manager)')
        if self.single_host_load_and_broadcast:
            raise NotImplementedError(
                '`single_host_load_and_broadcast` is not supported by ckpt '
                '(one process per manager)')
        mp = self.multiprocessing_options
        if mp is not None:
            if not isinstance(mp, MultiprocessingOptions):
                raise ValueError('multiprocessing_options must be a '
                                 'MultiprocessingOptions, got %r' % (mp,))
            if mp.primary_host is None:
                raise NotImplementedError(
                    'MultiprocessingOptions(primary_host=None) (every '
                    'process writes its own copy) is not supported by ckpt:'
                    ' replicated leaves are written once, by the primary '
                    'host')
            if isinstance(mp.primary_host, bool) or \
                    not isinstance(mp.primary_host, int) or \
                    mp.primary_host < 0:
                raise ValueError('primary_host must be a rank (int >= 0), '
                                 'got %r' % (mp.primary_host,))
            if mp.active_processes is not None:
                act = set(mp.active_processes)
                if not act or any(isinstance(r, bool) or
                                  not isinstance(r, int) or r < 0
                                  for r in act):
                    raise ValueError('active_processes must be a non-empty '
                                     'set of ranks, got %r'
                                     % (mp.active_processes,))
                if mp.primary_host not in act:
                    raise ValueError(
                        'primary_host %d is not one of active_processes %r'
                        % (mp.primary_host, sorted(act)))
            if mp.barrier_sync_key_prefix is not None and (
                    not isinstance(mp.barrier_sync_key_prefix, str) or
                    len(mp.barrier_sync_key_prefix.encode()) > 255):
                raise ValueError('barrier_sync_key_prefix must be a str of '
                                 'at most 255 bytes')
        if self.async_options is not None and \
                self.async_options.post_finalization_callback is not None:
            if not self.enable_async_checkpointing:
                # Orbax: CheckpointManager.__init__.
                raise ValueError(
                    'AsyncOptions.post_finalization_callback is only '
                    'supported with AsyncCheckpointer. But final resolved '
                    'checkpointer is:  Checkpointer')
            if not callable(self.async_options.post_finalization_callback):
                raise ValueError('`post_finalization_callback` must be '
                                 'callable')


_SCHEME = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]*)://')


def _root_name(directory):
    """The root as ckptd names it: an absolute local path (also for
    `file://`), or an `s3://bucket/prefix` object-store root, which the
    daemon opens with its own credentials. Other schemes are refused here
    (they would otherwise become a local directory "gs:/...")."""
    d = os.fspath(directory)
    if isinstance(d, bytes):
        d = os.fsdecode(d)
    m = _SCHEME.match(d)
    if m is None and not isinstance(directory, (str, bytes)):
        m = _SCHEME.match(str(directory))
        if m is not None:
            d = str(directory)
    if m is not None:
        scheme = m.group(1).lower()
        if scheme == 's3':
            return d
        if scheme != 'file':
            raise ValueError(
                'Unsupported path scheme "%s://" in %r: ckptd serves local '
                'directories and s3:// roots' % (m.group(1), str(directory)))
        d = d[len(m.group(0)):]
    return os.path.abspath(d)


def _seconds(v):
    if isinstance(v, datetime.timedelta):
        return v.total_seconds()
    return float(v)


# ---- helpers -----------------------------------------------------------------------

def _jsonable(x, where='value'):
    """Convert to plain JSON types (numpy scalars and arrays included)."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (int, np.integer)) and not isinstance(x, np.bool_):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist(), where)
    if _tree.is_torch_tensor(x):
        return _jsonable(x.detach().cpu().tolist(), where)
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if not isinstance(k, str):
                raise TypeError('JSON keys must be str, got %r in %s'
                                % (k, where))
            out[k] = _jsonable(v, where)
        return out
    if isinstance(x, (list, tuple)):
        return [_jsonable(v, where) for v in x]
    raise TypeError('%s is not JSON serializable: %r (%s)'
                    % (where, x, type(x).__name__))


def _json_dumps(x, where):
    return json.dumps(_jsonable(x, where), allow_nan=False)


_HANDLER_CLASSES = {'standard': 'StandardCheckpointHandler',
                    'pytree': 'PyTreeCheckpointHandler',
                    'json': 'JsonCheckpointHandler',
                    'array': 'ArrayCheckpointHandler',
                    'proto': 'ProtoCheckpointHandler'}


# Orbax's texts (CheckpointManager._validate_args).
_ARGS_AS_ITEMS = (
    'Found an instance of `CheckpointArgs` provided for `items`. This may'
    ' be due to misuse of the newer API - make sure to specify the'
    ' argument keyword (e.g. `args=args`).')


def _expected_args(args):
    return (f'Expected args of type `CheckpointArgs`; found {type(args)}. '
            'Use e.g. ocp.args.StandardSave(tree) / '
            'ocp.args.StandardRestore(abstract_tree).')


def _with_item(a, item):
    """a, or a copy of it whose target is item."""
    if item is a.item:
        return a
    b = copy.copy(a)
    b.item = item
    return b


def _provided_none(name):
    """Orbax: composite_checkpoint_handler.py _get_or_set_handler."""
    return ValueError(
        'Provided `None` for `CheckpointArgs`, and the `CheckpointHandler`'
        f' for item "{name}" was not configured. If saving, this'
        f' indicates that "{name}" was saved with `None` (an instance'
        ' of `CheckpointArgs` was expected). If restoring, providing'
        ' `None` for the item is valid, but only if the `CheckpointHandler'
        ' was already configured. Provide a `CheckpointArgs` subclass so'
        ' that `CompositeCheckpointHandler` will know how to restore the'
        ' item.')


def _no_matching_handler(name, args, known):
    """Orbax: composite_checkpoint_handler.py _get_or_set_handler."""
    reg = {n: _HANDLER_CLASSES.get(h, h) for n, h in known.items()
           if h is not None}
    return ValueError(
        f'Item "{name}" and args "{args}" does not match with any'
        f' registered handler! Registered handlers: {reg}')


def _undetermined(name):
    return ValueError(
        f'Item with name: "{name}" had an undetermined'
        ' `CheckpointHandler` when restoring. Please ensure the handler'
        ' was specified during initialization, or use the appropriate'
        ' `CheckpointArgs` subclass to indicate the item type.')


class Checkpointer:
    """Legacy Orbax API: accepted so that old code fails with a clear
    message at CheckpointManager(...)."""

    def __init__(self, handler: Any = None, *args: Any,
                 **kwargs: Any) -> None:
        self.handler = handler

    def __getattr__(self, name: str) -> Any:
        raise ValueError(_LEGACY_MSG.format(what='Checkpointer'))


class AsyncCheckpointer(Checkpointer):
    """Legacy Orbax API, as Checkpointer."""


# ---- the manager ---------------------------------------------------------------------

class CheckpointManager:
    """Orbax's CheckpointManager, served by ckptd.

    Extra keyword: zero_copy=False. When True, restored numpy arrays are
    read-only views over the mapped checkpoint files (no copy; the mapping
    lives as long as the arrays). StandardRestore/PyTreeRestore/
    ArrayRestore(zero_copy=...) override it per restore. torch tensors
    and dtype-cast leaves are always copies.
    """

    def __init__(self, directory: Any, checkpointers: Any = None,
                 options: Optional[CheckpointManagerOptions] = None,
                 metadata: Any = None,
                 item_names: Optional[Sequence[str]] = None,
                 item_handlers: Any = None, logger: Any = None,
                 handler_registry: Any = None, *, zero_copy: bool = False,
                 socket_path: Optional[str] = None) -> None:
        """Open (and by default create) the checkpoint root `directory`
        through ckptd (`socket_path`, else $CKPTD_SOCKET or the default
        socket). `metadata` is the root's custom metadata, saved once."""
        self._client = None
        self._m = None
        self._closed = True
        self._fn_error = None
        self._should_save_fn_ref = None
        if checkpointers is not None:
            raise ValueError(_LEGACY_MSG.format(
                what='passing `checkpointers` to CheckpointManager'))
        if handler_registry is not None:
            raise ValueError('`handler_registry` is not supported by ckpt; '
                             'use `item_handlers`')
        if options is None:
            options = CheckpointManagerOptions()
        if not isinstance(options, CheckpointManagerOptions):
            raise ValueError('`options` must be a CheckpointManagerOptions')
        self._options = options
        if options.should_save_fn is not None:
            self._should_save_fn_ref = self._should_save_cb()
        self._zero_copy = bool(zero_copy)
        self._dir = _root_name(directory)
        self._finalizer = None      # post_finalization_callback's thread
        self._bg_keep = None        # host views a background copy reads
        self._finalize_error = None

        # Items and handlers known to this manager (Orbax semantics).
        self._single_item = None
        self._known = {}
        self._names_fixed = False   # item_names/item_handlers dict given
        if item_handlers is not None:
            if isinstance(item_handlers, handlers_lib.CheckpointHandler):
                if item_names is not None:
                    raise ValueError(
                        '`item_handlers` in default item mode and '
                        '`item_names` should not be provided together.')
                self._single_item = True
                self._known[DEFAULT_ITEM_NAME] = item_handlers._handler
            elif isinstance(item_handlers, dict):
                self._single_item = False
                self._names_fixed = True
                for name, h in item_handlers.items():
                    self._check_item_name(name)
                    if h is not None and not isinstance(
                            h, handlers_lib.CheckpointHandler):
                        raise ValueError('item_handlers[%r] is not a '
                                         'CheckpointHandler: %r' % (name, h))
                    self._known[name] = h._handler if h is not None else None
            else:
                raise ValueError('`item_handlers` must be a CheckpointHandler '
                                 'or a dict of them, got %r'
                                 % (item_handlers,))
        if item_names is not None:
            if isinstance(item_names, str):
                raise ValueError('`item_names` must be a sequence of names')
            self._single_item = False
            self._names_fixed = True
            for name in item_names:
                self._check_item_name(name)
                self._known.setdefault(name, None)

        self._best_fns = []   # [(metric_name, fn)]
        self._root_metadata = None if metadata is None else \
            _jsonable(metadata, 'metadata')
        self._pid = os.getpid()
        self._socket_path = socket_path
        self._metadata_arg = metadata
        # Orbax: a read-only manager on a root that does not exist yet has
        # no steps (it is read when reload() finds it). The daemon opens
        # it without a root and answers for it.
        self._open_daemon_manager()

    def _open_daemon_manager(self):
        """Open the daemon's manager."""
        opts = self._build_options(self._options, self._metadata_arg)
        socket_path = self._socket_path
        lib = L.lib()
        try:
            c = ctypes.c_void_p()
            sp = os.fsencode(socket_path) if socket_path else None
            rc = lib.ckpt_connect(sp, ctypes.byref(c))
            if rc < 0:
                em = getattr(lib, 'ckpt_connect_errmsg', None)
                msg = em().decode('utf-8', 'replace') if em else ''
                raise L.exception_for(rc, 'cannot connect to ckptd: %s'
                                      % (msg or L.strerror(rc)))
            self._client = c.value
            m = ctypes.c_void_p()
            rc = lib.ckpt_manager_open(self._client, os.fsencode(self._dir),
                                       opts, ctypes.byref(m))
            L.check_client(rc, self._client)
            self._m = m.value
            self._closed = False
            self._rank_unranked_steps()
        except BaseException:
            if self._client:
                lib.ckpt_disconnect(self._client)
                self._client = None
            raise
        finally:
            lib.ckpt_options_free(opts)

    # -- construction helpers
    @staticmethod
    def _check_item_name(name):
        """What a C string can carry; the daemon judges the name itself
        (empty, a path, hidden, reserved, duplicate) and says why."""
        if not isinstance(name, str) or '\0' in name:
            raise ValueError('Invalid item name: %r' % (name,))

    def _build_options(self, o, metadata):
        lib = L.lib()
        opts = lib.ckpt_options_new()
        if not opts:
            raise MemoryError('ckpt_options_new')

        def chk(rc, what):
            if rc < 0:
                raise ValueError('invalid option %s: %s'
                                 % (what, L.strerror(rc)))
            return rc

        try:
            chk(lib.ckpt_options_set_create(opts, int(bool(o.create))),
                'create')
            chk(lib.ckpt_options_set_read_only(opts, int(bool(o.read_only))),
                'read_only')
            if o.max_to_keep is not None:
                chk(lib.ckpt_options_set_max_to_keep(opts, int(o.max_to_keep)),
                    'max_to_keep')
            if o.keep_period is not None:
                chk(lib.ckpt_options_set_keep_period(opts, int(o.keep_period)),
                    'keep_period')
            if o.keep_time_interval is not None:
                chk(lib.ckpt_options_set_keep_time_interval(
                    opts, _seconds(o.keep_time_interval)),
                    'keep_time_interval')
            if o.best_fn is not None:
                self._best_fns.append((BEST_METRIC, o.best_fn))
                chk(lib.ckpt_options_set_best(
                    opts, BEST_METRIC.encode(), int(o.best_mode == 'min')),
                    'best_fn')
            chk(lib.ckpt_options_set_keep_checkpoints_without_metrics(
                opts, int(bool(o.keep_checkpoints_without_metrics))),
                'keep_checkpoints_without_metrics')
            if o.step_prefix is not None:
                chk(lib.ckpt_options_set_step_prefix(
                    opts, o.step_prefix.encode()), 'step_prefix')
            if o.step_format_fixed_length is not None:
                chk(lib.ckpt_options_set_step_format_fixed_length(
                    opts, int(o.step_format_fixed_length)),
                    'step_format_fixed_length')
            chk(lib.ckpt_options_set_cleanup_tmp_directories(
                opts, int(bool(o.cleanup_tmp_directories))),
                'cleanup_tmp_directories')
            chk(lib.ckpt_options_set_save_interval_steps(
                opts, int(o.save_interval_steps)), 'save_interval_steps')
            if o.save_on_steps:
                steps = sorted(o.save_on_steps)
                arr = (ctypes.c_uint64 * len(steps))(*steps)
                chk(lib.ckpt_options_set_save_on_steps(opts, arr, len(steps)),
                    'save_on_steps')
            if o.todelete_subdir is not None:
                chk(lib.ckpt_options_set_todelete_subdir(
                    opts, o.todelete_subdir.encode()), 'todelete_subdir')
            chk(lib.ckpt_options_set_enable_background_delete(
                opts, int(bool(o.enable_background_delete))),
                'enable_background_delete')
            chk(lib.ckpt_options_set_async(
                opts, int(bool(o.enable_async_checkpointing))),
                'enable_async_checkpointing')
            if o.async_options is not None and \
                    o.async_options.timeout_secs is not None:
                chk(lib.ckpt_options_set_async_timeout(
                    opts, float(o.async_options.timeout_secs)),
                    'async_options.timeout_secs')
            chk(lib.ckpt_options_set_prevent_write_metrics(
                opts, int(bool(o.prevent_write_metrics))),
                'prevent_write_metrics')
            if o.file_options is not None and \
                    o.file_options.path_permission_mode is not None:
                chk(lib.ckpt_options_set_path_permission_mode(
                    opts, int(o.file_options.path_permission_mode)),
                    'file_options.path_permission_mode')
            if metadata is not None and o.save_root_metadata:
                chk(lib.ckpt_options_set_root_metadata(
                    opts, _json_dumps(metadata, 'metadata').encode()),
                    'metadata')
            if self._single_item is False:
                names = [n for n in self._known]
                if names:
                    arr = (ctypes.c_char_p * len(names))(
                        *[n.encode() for n in names])
                    chk(lib.ckpt_options_set_item_names(opts, arr, len(names)),
                        'item_names')
            self._set_processes(opts, o, chk)
            if o.should_save_fn is not None:
                chk(lib.ckpt_options_set_should_save_fn(
                    opts, self._should_save_fn_ref, None), 'should_save_fn')
            if o.save_decision_policy is not None:
                self._add_save_policy(opts, o.save_decision_policy, -1)
            if o.preservation_policy is not None:
                self._add_preservation(opts, o.preservation_policy, -1)
        except BaseException:
            lib.ckpt_options_free(opts)
            raise
        return opts

    def _set_processes(self, opts, o, chk):
        """This process's rank and the job's processes (ckpt.distributed
        and multiprocessing_options)."""
        lib = L.lib()
        index, count = _distributed.process_index(), \
            _distributed.process_count()
        mp = o.multiprocessing_options
        primary = 0
        if mp is not None:
            primary = int(mp.primary_host)
            if mp.active_processes is not None:
                act = sorted(set(mp.active_processes))
                if index not in act:
                    raise ValueError(
                        'process %d is not one of active_processes %r: only '
                        'active processes open the manager' % (index, act))
                count = len(act)
                arr = (ctypes.c_uint32 * len(act))(*act)
                chk(lib.ckpt_options_set_active_processes(opts, arr,
                                                          len(act)),
                    'active_processes')
            if mp.barrier_sync_key_prefix is not None:
                chk(lib.ckpt_options_set_job(
                    opts, mp.barrier_sync_key_prefix.encode()),
                    'barrier_sync_key_prefix')
        elif primary >= count:
            primary = 0
        self._process = (index, count, primary)
        if count == 1 and (mp is None or mp.active_processes is None):
            return
        chk(lib.ckpt_options_set_process_index(opts, index), 'process_index')
        chk(lib.ckpt_options_set_process_count(opts, count), 'process_count')
        chk(lib.ckpt_options_set_primary_host(opts, primary), 'primary_host')

    def _add_save_policy(self, opts, p, parent):
        lib = L.lib()
        steps = None
        nsteps = 0
        interval = 0
        secs = 0.0
        if isinstance(p, cm.FixedIntervalPolicy):
            kind, interval = L.SAVE_FIXED_INTERVAL, p.interval
        elif isinstance(p, cm.SpecificStepsPolicy):
            kind = L.SAVE_SPECIFIC_STEPS
            lst = sorted(set(int(s) for s in p.steps))
            steps = (ctypes.c_uint64 * max(len(lst), 1))(*lst)
            nsteps = len(lst)
        elif isinstance(p, cm.ContinuousCheckpointingPolicy):
            kind = L.SAVE_CONTINUOUS
            secs = float(p.minimum_interval_secs or 0.0)
        elif isinstance(p, cm.InitialSavePolicy):
            kind = L.SAVE_INITIAL
        elif isinstance(p, cm.PreemptionCheckpointingPolicy):
            kind = L.SAVE_PREEMPTION
        elif isinstance(p, cm.AnySavePolicy):
            kind = L.SAVE_ANY
        else:
            raise ValueError('Unsupported save decision policy: %r' % (p,))
        idx = lib.ckpt_options_save_policy_add(opts, kind, interval, steps,
                                               nsteps, secs)
        return self._link_policy_node(
            opts, p, idx, parent, 'save decision policy',
            lib.ckpt_options_save_policy_child,
            self._add_save_policy if kind == L.SAVE_ANY else None)

    @staticmethod
    def _link_policy_node(opts, p, idx, parent, what, add_child, add_sub):
        """Check a node just added (index idx), hang it under parent, and
        add the children of an Any policy with add_sub."""
        if idx < 0:
            raise ValueError('invalid %s %r: %s' % (what, p, L.strerror(idx)))
        if parent >= 0:
            rc = add_child(opts, parent, idx)
            if rc < 0:
                raise ValueError('invalid %s: %s' % (what, L.strerror(rc)))
        if add_sub is not None:
            for child in p.policies:
                add_sub(opts, child, idx)
        return idx

    def _add_preservation(self, opts, p, parent):
        lib = L.lib()
        n, secs, steps, nsteps = 0, 0.0, None, 0
        metric, mode_min, keep_without = None, 0, 1
        every_n = None
        if isinstance(p, cm.PreserveAll):
            kind = L.PRESERVE_ALL
        elif isinstance(p, cm.LatestN):
            if p.n is None:
                kind = L.PRESERVE_ALL
            else:
                kind, n = L.PRESERVE_LATEST_N, int(p.n)
        elif isinstance(p, cm.EveryNSeconds):
            kind, secs = L.PRESERVE_EVERY_N_SECONDS, _seconds(p.interval_secs)
        elif isinstance(p, cm.EveryNSteps):
            kind, n = L.PRESERVE_EVERY_N_STEPS, int(p.interval_steps)
            every_n = (int(bool(p.exact_interval)),
                       -1 if p.max_to_keep is None else int(p.max_to_keep))
        elif isinstance(p, cm.EveryNStepsClosest):
            kind, n = L.PRESERVE_EVERY_N_STEPS_CLOSEST, int(p.interval_steps)
            every_n = (1, -1 if p.max_to_keep is None else
                       int(p.max_to_keep))
        elif isinstance(p, cm.CustomSteps):
            kind = L.PRESERVE_CUSTOM_STEPS
            steps = (ctypes.c_uint64 * max(len(p.steps), 1))(*p.steps)
            nsteps = len(p.steps)
        elif isinstance(p, cm.BestN):
            kind = L.PRESERVE_BEST_N
            n = -1 if p.n is None else int(p.n)
            if p.n is None:
                kind = L.PRESERVE_ALL
            name = '%s%d__' % (_RESERVED_METRIC_PREFIX + 'best', len(
                self._best_fns))
            self._best_fns.append((name, p.get_metric_fn))
            metric = name.encode()
            # Orbax: sorted ascending (reverse=False) keeps the largest.
            mode_min = int(bool(p.reverse))
            keep_without = int(bool(p.keep_checkpoints_without_metrics))
        elif isinstance(p, cm.LatestDuration):
            kind, secs = L.PRESERVE_LATEST_DURATION, _seconds(p.duration_secs)
        elif isinstance(p, cm.AnyPreservationPolicy):
            kind = L.PRESERVE_ANY
        else:
            raise ValueError('Unsupported preservation policy: %r' % (p,))
        idx = lib.ckpt_options_preservation_add(opts, kind, n, secs, steps,
                                                nsteps, metric, mode_min,
                                                keep_without)
        if idx >= 0 and every_n is not None:
            rc = lib.ckpt_options_preservation_every_n(opts, idx, *every_n)
            if rc < 0:
                raise ValueError('invalid preservation policy %r: %s'
                                 % (p, L.strerror(rc)))
        return self._link_policy_node(
            opts, p, idx, parent, 'preservation policy',
            lib.ckpt_options_preservation_child,
            self._add_preservation if kind == L.PRESERVE_ANY else None)

    # -- basics
    def _mgr(self):
        if self._closed or not self._m:
            raise ValueError('CheckpointManager is closed')
        if os.getpid() != self._pid:
            raise RuntimeError('a CheckpointManager cannot be used in a '
                               'forked child; create a new one')
        return self._m

    def _check(self, rc):
        return L.check_manager(rc, self._m)

    def _wait_pending(self):
        """Orbax reads after the save in flight: wait for it (its error is
        left for wait_until_finished/check_for_errors/save)."""
        self._check(L.lib().ckpt_wait_pending(self._mgr()))
        self._bg_keep = None

    @property
    def directory(self) -> md.PosixGPath:
        """The checkpoint root (an s3:// root: its name, as given)."""
        if self._dir.startswith('s3://'):
            return self._dir
        return md.PosixGPath(self._dir)

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False

    def __del__(self) -> None:
        try:
            if not self._closed and os.getpid() == self._pid:
                self.close()
        except Exception:
            pass

    def close(self) -> None:
        """Wait for pending saves and close; raises a pending save error."""
        if self._closed:
            return
        lib = L.lib()
        cb_error = None
        try:
            self._join_finalizer()
        except BaseException as e:   # raised after the close below
            cb_error = e
        self._closed = True
        m, self._m = self._m, None
        msg = None
        try:
            rc = lib.ckpt_manager_close(m)
            self._bg_keep = None
            if rc < 0:
                msg = L.exception_for(
                    rc, L._dec(lib.ckpt_client_errmsg(self._client)))
        finally:
            lib.ckpt_disconnect(self._client)
            self._client = None
        if msg is not None:
            raise msg
        if cb_error is not None:
            raise cb_error

    # -- steps
    def all_steps(self, read: bool = False) -> Sequence[int]:
        """Committed steps, ascending; read=True rescans the disk first."""
        m = self._mgr()
        if read:
            self._check(L.lib().ckpt_reload(m))
        p = ctypes.POINTER(ctypes.c_uint64)()
        n = ctypes.c_size_t()
        self._check(L.lib().ckpt_all_steps(m, ctypes.byref(p),
                                           ctypes.byref(n)))
        try:
            return [int(p[i]) for i in range(n.value)]
        finally:
            L.free(ctypes.cast(p, ctypes.c_void_p).value)

    def latest_step(self) -> Optional[int]:
        """The newest committed step, or None."""
        v = ctypes.c_int64()
        self._check(L.lib().ckpt_latest_step(self._mgr(), ctypes.byref(v)))
        return None if v.value < 0 else int(v.value)

    def best_step(self) -> Optional[int]:
        """The best step by `best_fn`/`best_mode`, else the latest."""
        v = ctypes.c_int64()
        self._check(L.lib().ckpt_best_step(self._mgr(), ctypes.byref(v)))
        return None if v.value < 0 else int(v.value)

    def reload(self) -> None:
        """Forget cached state and rescan the root on disk."""
        self._check(L.lib().ckpt_reload(self._mgr()))
        self._rank_unranked_steps()

    def _raw_metrics(self, step):
        p = ctypes.c_void_p()
        self._check(L.lib().ckpt_metrics(self._mgr(), step, ctypes.byref(p)))
        text = L.take_string(p.value)
        return json.loads(text) if text else None

    def _rank_unranked_steps(self):
        """Steps whose metrics another program wrote (Orbax's
        <step>/metrics/metrics) lack the best_fn values this process
        computes at save time: compute them from those metrics and hand
        them to the daemon, which ranks with them (in memory)."""
        if not self._best_fns:
            return
        lib = L.lib()
        for step in self.all_steps():
            raw = self._raw_metrics(step)
            if not isinstance(raw, dict):
                continue
            user = {k: v for k, v in raw.items()
                    if not k.startswith(_RESERVED_METRIC_PREFIX)}
            if not user:        # no metrics: unranked, as in Orbax
                continue
            add = {}
            for name, fn in self._best_fns:
                if name in raw:
                    continue
                try:
                    add[name] = _jsonable(fn(user), 'best_fn(metrics)')
                except Exception as e:   # Orbax skips it as unranked
                    _warn('best_fn failed on the metrics of step %d: %r'
                          % (step, e))
            if add:
                self._check(lib.ckpt_set_step_metrics(
                    self._m, step, json.dumps(add).encode()))

    def reached_preemption(self, step: int) -> bool:
        """True once ckptd knows its node is going down (SIGTERM of the
        daemon, or `ckptctl preempt`); the next save is then taken whatever
        the save policy says (Orbax's PreemptionCheckpointingPolicy)."""
        step = self._check_step(step)
        out = ctypes.c_int()
        self._check(L.lib().ckpt_reached_preemption(self._mgr(), step,
                                                    ctypes.byref(out)))
        return bool(out.value)

    def should_save(self, step: int) -> bool:
        """Whether save(step) would save, by the save-decision policy."""
        step = self._check_step(step)
        if self._options.read_only:
            return False
        out = ctypes.c_int()
        rc = L.lib().ckpt_should_save(self._mgr(), step, ctypes.byref(out))
        self._raise_fn_error()
        self._check(rc)
        return bool(out.value)

    def _should_save_cb(self):
        """should_save_fn as libckpt's callback: libckpt applies Orbax's
        rule around it (never at or below the latest step; Any(fn,
        preemption)) for should_save and save alike. An exception of fn is
        kept and raised once libckpt returns (_raise_fn_error)."""
        fn = self._options.should_save_fn
        me = weakref.ref(self)          # no cycle through the callback

        def cb(step, latest, arg):
            try:
                return 1 if fn(int(step),
                               None if latest < 0 else int(latest)) else 0
            except BaseException as e:   # raised after the libckpt call
                m = me()
                if m is not None:
                    m._fn_error = e
                return 0
        return L.SHOULD_SAVE_FN(cb)

    def _raise_fn_error(self):
        e, self._fn_error = self._fn_error, None
        if e is not None:
            raise e

    def wait_until_finished(self) -> None:
        """Block until every save of this manager is durable and its
        retention applied; raises the first save error."""
        rc = L.lib().ckpt_wait_until_finished(self._mgr())
        self._bg_keep = None        # the background copy ended
        self._check(rc)
        self._join_finalizer()

    # -- AsyncOptions.post_finalization_callback (Orbax's AsyncCheckpointer
    # calls it in its background thread once the save is finalized)
    def _start_finalizer(self, step):
        ao = self._options.async_options
        cb = ao.post_finalization_callback if ao is not None else None
        if cb is None:
            return
        def run():
            lib = L.lib()
            m = self._m
            if m is None or lib.ckpt_wait_pending(m) != 0:
                return
            # This thread's own view of the save's outcome (a failure is
            # still raised once to each caller thread).
            if lib.ckpt_check_for_errors(m) != 0:
                return
            try:
                cb()
            except BaseException as e:   # raised by wait_until_finished
                self._finalize_error = e

        t = threading.Thread(target=run, name='ckpt-finalize-%d' % step,
                             daemon=True)
        self._finalizer = t
        t.start()

    def _join_finalizer(self):
        t = self._finalizer
        if t is not None and t is not threading.current_thread():
            t.join()
            self._finalizer = None
        e, self._finalize_error = self._finalize_error, None
        if e is not None:
            raise e

    def check_for_errors(self) -> None:
        """Raise the error of a failed background save, if any."""
        self._check(L.lib().ckpt_check_for_errors(self._mgr()))

    def is_saving_in_progress(self) -> bool:
        """Whether a save of this manager is not yet finished."""
        rc = L.lib().ckpt_is_saving_in_progress(self._mgr())
        self._check(rc)
        return bool(rc)

    def delete(self, step: int) -> None:
        """Delete a committed step."""
        step = self._check_step(step)
        if self._options.read_only:
            logging.getLogger('absl').warning(
                'Cannot delete checkpoint at step %d: CheckpointManager is '
                'read_only.', step)
            return
        self._check(L.lib().ckpt_delete(self._mgr(), step))

    def metrics(self, step: int) -> Optional[Any]:
        """The metrics saved with `step` (decoded JSON), or None."""
        step = self._check_step(step)
        p = ctypes.c_void_p()
        self._check(L.lib().ckpt_metrics(self._mgr(), step, ctypes.byref(p)))
        text = L.take_string(p.value)
        if text is None:
            return None
        d = json.loads(text)
        if isinstance(d, dict):
            d = {k: v for k, v in d.items()
                 if not k.startswith(_RESERVED_METRIC_PREFIX)}
        return d

    def metadata(self, step: Optional[int] = None) -> Any:
        """step None: RootMetadata (the root metadata given when the root
        was first opened; {} when none). Else the step's StepMetadata,
        its item_metadata filled for the items whose handler is known."""
        p = ctypes.c_void_p()
        if step is None:
            self._check(L.lib().ckpt_metadata(self._mgr(), -1,
                                              ctypes.byref(p)))
            text = L.take_string(p.value)
            d = json.loads(text) if text else {}
            if not d and self._options.read_only and \
                    self._root_metadata is not None:
                # Orbax: a read-only manager keeps it in memory only.
                d = self._root_metadata
            return RootMetadata(custom_metadata=d)
        step = self._check_step(step)
        self._wait_pending()
        self._check(L.lib().ckpt_metadata(self._mgr(), step, ctypes.byref(p)))
        text = L.take_string(p.value)
        d = json.loads(text) if text else {}
        metrics = d.get('metrics')
        if isinstance(metrics, dict):
            metrics = {k: v for k, v in metrics.items()
                       if not k.startswith(_RESERVED_METRIC_PREFIX)}
        if not metrics:         # Orbax keeps them in <step>/metrics/metrics
            metrics = self.metrics(step) or metrics
        item_md = d.get('item_metadata')
        if item_md is None:
            item_md = self._step_item_metadata(step)
        return StepMetadata(
            item_handlers=d.get('item_handlers'),
            item_metadata=item_md,
            metrics=metrics,
            performance_metrics=d.get('performance_metrics'),
            init_timestamp_nsecs=d.get('init_timestamp_nsecs'),
            commit_timestamp_nsecs=d.get('commit_timestamp_nsecs'),
            custom_metadata=d.get('custom_metadata'))

    def _step_item_metadata(self, step):
        """{item: item_metadata} for metadata(step); items whose handler
        this manager does not know are left out."""
        try:
            r = self.item_metadata(step)
        except (ValueError, KeyError, FileNotFoundError):
            return None
        if isinstance(r, args_lib.Composite):
            return {n: r[n] for n in r}
        return {DEFAULT_ITEM_NAME: r}

    @staticmethod
    def _check_step(step):
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError('step must be an integer, got %r' % (step,))
        step = int(step)
        if step < 0:
            raise ValueError('step must be non-negative, got %d' % step)
        return step

    # -- save
    def save(self, step: int, items: Any = None, save_kwargs: Any = None,
             metrics: Optional[Any] = None, force: bool = False,
             args: Any = None, custom_metadata: Optional[Any] = None
             ) -> bool:
        """Save `args` (e.g. args.StandardSave(tree), or args.Composite)
        as `step`. Returns False when the save-decision policy skips the
        step (unless `force`), True once ckptd owns the bytes; the step is
        written and committed in the background (wait_until_finished)."""
        if isinstance(items, args_lib.CheckpointArgs):
            raise ValueError(_ARGS_AS_ITEMS)
        if items is not None or save_kwargs is not None:
            raise ValueError(_LEGACY_MSG.format(
                what='save(step, items) without `args=`'))
        if args is None:
            raise ValueError('Must provide `args` for `save`.')
        if not isinstance(args, args_lib.CheckpointArgs):
            raise ValueError(_expected_args(args))
        step = self._check_step(step)
        m = self._mgr()
        is_comp = isinstance(args, args_lib.Composite)
        if self._single_item is True and is_comp:
            raise ValueError(
                'Cannot provide `args` of type `Composite` when dealing with a'
                ' single, unnamed (default) checkpointable object.')
        if self._single_item is False and not is_comp:
            raise ValueError(
                'Must provide `args` of type `Composite` when dealing with '
                'multiple checkpointable objects.')
        if is_comp:
            if len(args) == 0:
                raise ValueError('Found empty item.')
            plan = list(args.items())
        else:
            plan = [(DEFAULT_ITEM_NAME, args)]
        for name, a in plan:
            if is_comp:
                self._check_item_name(name)
            if a is None and self._known.get(name) is None:
                raise _provided_none(name)
            if a is None or not isinstance(a, args_lib.CheckpointArgs) or \
                    isinstance(a, args_lib.Composite) or not a._is_save:
                raise ValueError(
                    'Item "%s": expected a save argument (StandardSave, '
                    'PyTreeSave, JsonSave, ArraySave, ProtoSave), got %r'
                    % (name, a))
            known = self._known.get(name)
            if (is_comp and self._names_fixed and name not in self._known) \
                    or (known is not None and known != a._handler):
                raise _no_matching_handler(name, a, self._known)

        if self._options.read_only:
            _warn('Cannot save checkpoint at step %d: CheckpointManager is '
                  'read_only.' % step)
            return False
        lib_force = bool(force)
        now = _now_ns()
        lib = L.lib()
        if not lib_force:
            # ckptd decides while the trees below are built; ckpt_save
            # takes the answer
            self._check(lib.ckpt_save_ask_early(m, step, now))

        metrics_json = None
        if metrics is not None and self._best_fns:
            if not isinstance(metrics, dict):
                raise ValueError('`metrics` must be a dict, got %r'
                                 % (type(metrics).__name__,))
            mj = _jsonable(metrics, 'metrics')
            for name, fn in self._best_fns:
                v = fn(metrics)
                mj[name] = _jsonable(v, 'best_fn(metrics)')
            metrics_json = json.dumps(mj, allow_nan=False)
        custom_json = None
        if custom_metadata is not None:
            if not isinstance(custom_metadata, dict):
                raise ValueError('`custom_metadata` must be a dict')
            custom_json = _json_dumps(custom_metadata, 'custom_metadata')

        trees = []
        keep = []
        sa = lib.ckpt_save_args_new()
        if not sa:
            raise MemoryError('ckpt_save_args_new')
        try:
            for name, a in plan:
                cname = None if not is_comp else name.encode()
                h = a._handler
                if h in ('standard', 'pytree'):
                    if a.item is None:
                        raise ValueError('Must provide item to save.')
                    t, k = _tree.build_tree(
                        a.item, what='%s of item "%s"' % (
                            type(a).__name__, name))
                    trees.append(t)
                    keep.append(k)
                    rc = lib.ckpt_save_args_add_tree(sa, cname,
                                                     _HANDLER_CODES[h], t)
                elif h == 'array':
                    t, k = _tree.build_array_tree(a.item)
                    trees.append(t)
                    keep.append(k)
                    rc = lib.ckpt_save_args_add_tree(sa, cname,
                                                     L.HANDLER_ARRAY, t)
                elif h == 'json':
                    if a.item is None:
                        raise ValueError('Must provide item to save.')
                    rc = lib.ckpt_save_args_add_json(
                        sa, cname, _json_dumps(a.item, 'JsonSave item')
                        .encode())
                elif h == 'proto':
                    rc = lib.ckpt_save_args_add_proto(
                        sa, cname, str(a.item).encode())
                else:
                    raise ValueError('unsupported args %r' % (a,))
                L.check_plain(rc, 'item "%s"' % name)
            if is_comp:
                L.check_plain(lib.ckpt_save_args_set_composite(sa, 1),
                              'composite')
            if metrics_json is not None:
                L.check_plain(lib.ckpt_save_args_set_metrics(
                    sa, metrics_json.encode()), 'metrics')
            if custom_json is not None:
                L.check_plain(lib.ckpt_save_args_set_custom_metadata(
                    sa, custom_json.encode()), 'custom_metadata')
            if lib_force:
                L.check_plain(lib.ckpt_save_args_set_force(sa, 1), 'force')
            L.check_plain(lib.ckpt_save_args_set_timestamp(sa, now),
                          'timestamp')
            # Only jax arrays (immutable): libckpt copies them after
            # save() returned; their host views are kept until then.
            bg = _tree.immutable(keep)
            if bg:
                L.check_plain(lib.ckpt_save_args_set_background(sa, 1),
                              'background')
            else:
                # numpy/torch: libckpt write-protects the large arrays and
                # copies them after save() returned (a write waits for
                # its block's copy); they are kept alive until then
                L.check_plain(lib.ckpt_save_args_set_cow(sa, 1), 'cow')
            saved = ctypes.c_int(0)
            self._join_finalizer()
            # The manager's mode and handlers are fixed by this call.
            self._single_item = not is_comp
            for name, a in plan:
                self._known[name] = a._handler
            rc = lib.ckpt_save(m, step, sa, ctypes.byref(saved))
            self._raise_fn_error()
            self._check(rc)
            # the previous background copy ended in ckpt_save
            self._bg_keep = keep if saved.value and (
                bg or lib.ckpt_manager_cow_bytes(m)) else None
            if saved.value:
                self._start_finalizer(step)
            return bool(saved.value)
        finally:
            lib.ckpt_save_args_free(sa)
            for t in trees:
                lib.ckpt_tree_free(t)
            del keep

    # -- restore
    def _other_root(self, directory):
        """The root a restore reads: None for this manager's own."""
        root = None if directory is None else _root_name(directory)
        return None if root == self._dir else root

    def _step_on_disk(self, step, other):
        """Ask the daemon which step to read (the latest when step is
        None), where it is and which items it holds: its naming, its scan
        of another root (other), its errors (Orbax's). Returns (owner of
        the items' metadata, step, step directory, item names)."""
        if step is not None:
            step = self._check_step(step)
        owner = self._lib_restore(step, None, other, metadata_only=True)
        lib = L.lib()
        names = [lib.ckpt_restored_item_name(owner.ptr, i).decode()
                 for i in range(lib.ckpt_restored_nitems(owner.ptr))]
        return (owner, int(lib.ckpt_restored_step(owner.ptr)),
                os.fsdecode(lib.ckpt_restored_directory(owner.ptr)),
                [n for n in names if n not in RESERVED_ITEM_NAMES])

    def _item_kinds(self, step):
        """{item: handler kind} of a step as the daemon reads it (from the
        step's metadata, else from each item's files); the step's metrics
        are no item."""
        owner, _, _, names = self._step_on_disk(step, None)
        lib = L.lib()
        kinds = {}
        for i in range(lib.ckpt_restored_nitems(owner.ptr)):
            n = lib.ckpt_restored_item_name(owner.ptr, i).decode()
            if n in names:
                kinds[n] = _CODE_HANDLERS.get(
                    lib.ckpt_restored_item_handler(owner.ptr, i))
        return kinds

    def _lib_restore(self, step, names, directory, metadata_only=False,
                     targets=None, zero_copy=True, verify=True):
        """names: items to restore (None: all). targets: {name: tree}.
        verify: check checksums of mapped views too (libckpt skips that
        for zero-copy views unless asked), for data this layer copies."""
        lib = L.lib()
        m = self._mgr()
        out = ctypes.c_void_p()
        if step is None:
            step = -1
        if metadata_only and directory is None:
            self._check(lib.ckpt_item_metadata(m, step, ctypes.byref(out)))
            return _tree.Owner(out.value)
        targets = targets or {}
        ra = lib.ckpt_restore_args_new()
        if not ra:
            raise MemoryError('ckpt_restore_args_new')
        try:
            for n in names or ():
                t = targets.get(n)
                L.check_plain(lib.ckpt_restore_args_add_item(
                    ra, n.encode(), t, 1 if t else 0), 'restore item')
            if directory is not None:
                L.check_plain(lib.ckpt_restore_args_set_directory(
                    ra, os.fsencode(directory)), 'directory')
            L.check_plain(lib.ckpt_restore_args_set_zero_copy(
                ra, 1 if zero_copy else 0), 'zero_copy')
            if verify:
                L.check_plain(lib.ckpt_restore_args_set_verify(ra, 1),
                              'verify')
            if metadata_only:
                L.check_plain(lib.ckpt_restore_args_set_metadata_only(
                    ra, 1), 'metadata_only')
            self._check(lib.ckpt_restore(m, step, ra, ctypes.byref(out)))
        finally:
            lib.ckpt_restore_args_free(ra)
        return _tree.Owner(out.value)

    def _zc(self, a):
        zc = getattr(a, 'zero_copy', None)
        return self._zero_copy if zc is None else bool(zc)

    def _prepare_targets(self, owner_meta, plan, other):
        """For tree items restored as owned copies: read the item metadata,
        allocate every wanted array here (numpy or torch) and hand the
        buffers to libckpt as restore targets, so the bytes are copied (and
        checksummed) once, straight from the mapped files into them.
        Returns ({name: (meta entries, {index: Ready}, tree)}, need_zc)."""
        prepared = {}
        need_zc = False
        lib = L.lib()
        try:
            for n, h, a in plan:
                if h not in ('standard', 'pytree', 'array'):
                    continue
                target = getattr(a, 'item', None)
                # zero copy, or another root: views of the mapping, unless
                # the target asks for no piece of some array (a target
                # tree reads none of it, where the views would assemble it)
                if (other is not None or self._zc(a)) and \
                        not _tree.has_no_piece(target):
                    need_zc = True
                    continue
                idx = lib.ckpt_restored_find(owner_meta.ptr, n.encode())
                tree = lib.ckpt_restored_item_tree(owner_meta.ptr, idx) \
                    if idx >= 0 else None
                if not tree:
                    need_zc = True
                    continue
                em = _tree.read_tree(tree, owner_meta)
                if h == 'array':
                    if len(em) != 1:
                        need_zc = True
                        continue
                    wanted = {0: target if target is not None and (
                        _tree._is_abstract_array(target) or
                        _tree.is_shards(target) or
                        _tree.is_no_piece(target)) else None}
                elif target is None:
                    wanted = {i: None for i in range(len(em))}
                else:
                    partial = bool(getattr(a, 'partial_restore', False))
                    _, wanted = _tree.match_target(em, target, partial)
                if _tree.jax_views(em, wanted):
                    need_zc = True      # views, verified: no new memory
                    continue
                built = _tree.build_target_tree(em, wanted)
                if built is None:
                    need_zc = True
                    continue
                prepared[n] = (em, built[1], built[0])
        except BaseException:
            for _, _, t in prepared.values():
                lib.ckpt_tree_free(t)
            raise
        return prepared, need_zc

    def restore(self, step: Optional[int] = None, items: Any = None,
                restore_kwargs: Any = None, directory: Any = None,
                args: Any = None) -> Any:
        """Restore `step` (default: the latest) as described by `args`
        (e.g. args.StandardRestore(abstract_tree) for targets and casts);
        returns the tree, or a Composite of items."""
        if isinstance(items, args_lib.CheckpointArgs):
            raise ValueError(_ARGS_AS_ITEMS)
        if items is not None or restore_kwargs is not None:
            raise ValueError(_LEGACY_MSG.format(
                what='restore(step, items=..., restore_kwargs=...)'))
        if args is not None and not isinstance(args,
                                               args_lib.CheckpointArgs):
            raise ValueError(_expected_args(args))
        self._wait_pending()
        other = self._other_root(directory)
        owner_meta, step, step_dir, on_disk = self._step_on_disk(step, other)
        if self._single_item is None:
            self._single_item = DEFAULT_ITEM_NAME in on_disk

        plan = []   # [(name, handler, arg)]
        if self._single_item:
            if isinstance(args, args_lib.Composite):
                raise ValueError(
                    'Cannot provide `args` of type `Composite` when dealing '
                    'with a single, unnamed (default) checkpointable object.')
            if args is None:
                h = self._known.get(DEFAULT_ITEM_NAME)
                if h is None:
                    raise _undetermined(DEFAULT_ITEM_NAME)
                a = args_lib._RESTORE_FOR[h]()
            else:
                h = args._handler
                a = args
                if h is None:
                    raise ValueError('unsupported args %r' % (args,))
            plan.append((DEFAULT_ITEM_NAME, h, a))
        else:
            if args is not None and not isinstance(args, args_lib.Composite):
                raise ValueError(
                    'Must provide `args` of type `Composite` when dealing '
                    'with multiple checkpointable objects.')
            if args is None or len(args) == 0:
                names = [n for n in self._known if n in on_disk]
                if not self._known:
                    names = list(on_disk)
                for n in names:
                    h = self._known.get(n)
                    if h is None:
                        raise _undetermined(n)
                    plan.append((n, h, args_lib._RESTORE_FOR[h]()))
            else:
                for n, a in args.items():
                    if a is None:
                        h = self._known.get(n)
                        if h is None:
                            raise _provided_none(n)
                        a = args_lib._RESTORE_FOR[h]()
                    else:
                        if not isinstance(a, args_lib.CheckpointArgs) or \
                                a._handler is None:
                            raise ValueError('Item "%s": unsupported args %r'
                                             % (n, a))
                        h = a._handler
                    plan.append((n, h, a))
        for n, h, a in plan:
            if getattr(a, 'transforms', None) is not None:
                raise NotImplementedError(
                    'PyTreeRestore(transforms=...) is not supported by ckpt; '
                    'restore the tree and transform it in Python')
            if getattr(a, 'strict', True) is False:
                raise NotImplementedError(
                    'StandardRestore(strict=False) (truncating/padding '
                    'arrays to the target shape) is not supported by ckpt')
        # jax targets spanning other processes: this process's pieces
        plan = [(n, h, _with_item(a, _tree.global_targets(a.item))
                 if h in ('standard', 'pytree') and
                 getattr(a, 'item', None) is not None else a)
                for n, h, a in plan]
        prepared, need_zc = self._prepare_targets(owner_meta, plan, other)
        try:
            # The daemon refuses items the step does not hold
            # (ItemNotFoundError, Orbax's message).
            owner = self._lib_restore(
                step, [n for n, _, _ in plan], other,
                targets={n: p[2] for n, p in prepared.items()},
                zero_copy=need_zc,
                verify=not all(self._zc(a) for _, _, a in plan))
        finally:
            for _, _, t in prepared.values():
                L.lib().ckpt_tree_free(t)
        for n, h, a in plan:
            self._known[n] = h
        results = {}
        for n, h, a in plan:
            results[n] = self._convert_item(owner, n, h, a, prepared.get(n))
        del owner
        if self._single_item:
            return results[DEFAULT_ITEM_NAME]
        return args_lib.Composite(**{n: results[n] for n in sorted(results)})

    def _convert_item(self, owner, name, h, a, prepared=None):
        lib = L.lib()
        idx = lib.ckpt_restored_find(owner.ptr, name.encode())
        if idx < 0:
            raise KeyError(f'Item "{name}" was not found in the checkpoint.')
        stored = _CODE_HANDLERS.get(lib.ckpt_restored_item_handler(
            owner.ptr, idx))
        if h in ('json', 'proto'):
            text = lib.ckpt_restored_item_json(owner.ptr, idx)
            if text is None:
                raise ValueError(
                    'Item "%s" is stored as %s, not %s: restore it with the '
                    'matching args' % (name, stored, h))
            text = text.decode('utf-8')
            if h == 'json':
                return json.loads(text)
            cls = getattr(a, 'item', None)
            if cls is None:
                return text
            from google.protobuf import text_format  # optional dependency
            return text_format.Parse(text, cls())
        tree = lib.ckpt_restored_item_tree(owner.ptr, idx)
        if not tree:
            raise ValueError(
                'Item "%s" is stored as %s, not a tree: restore it with '
                'JsonRestore' % (name, stored))
        if prepared is not None:
            em, ready, _ = prepared
            entries = [(p, ready.get(i, v)) for i, (p, v) in enumerate(em)]
        else:
            entries = _tree.read_tree(tree, owner)
        zc = self._zc(a)
        target = getattr(a, 'item', None)
        if h == 'array':
            if len(entries) != 1:
                raise ValueError('Item "%s" is not a single array' % name)
            path, val = entries[0]
            if target is not None and _tree.is_no_piece(target):
                return _tree.no_piece_value(target)
            if target is not None and _tree.is_shards(target):
                return _tree._shards_from(val, target, name)
            if target is not None and _tree._is_abstract_array(target):
                return _tree._convert_to_target(val, target, zc, name)
            return _tree._materialize_default(val, zc)
        if target is None:
            if h == 'standard':
                _warn(_STANDARD_NO_TARGET)
            return _tree.restore_as_saved(entries, zc)
        partial = bool(getattr(a, 'partial_restore', False))
        return _tree.restore_with_target(entries, target, partial, zc)

    def item_metadata(self, step: int) -> Any:
        """Metadata (shapes, dtypes) of the items of `step`, no data.

        A StandardSave/PyTreeSave item gives a metadata.TreeMetadata (its
        .tree is the tree of ArrayMetadata/ScalarMetadata/StringMetadata;
        it also reads as that tree), an ArraySave item one ArrayMetadata,
        a JSON or proto item None. Several items: a Composite of those."""
        step = self._check_step(step)
        self._wait_pending()
        owner, step, step_dir, on_disk = self._step_on_disk(step, None)
        if self._single_item is None:
            self._single_item = DEFAULT_ITEM_NAME in on_disk
        if self._single_item:
            names = [DEFAULT_ITEM_NAME]
        else:
            names = list(self._known) or list(on_disk)
        missing = [n for n in names if self._known.get(n) is None]
        if missing:
            raise ValueError(
                'No mapped CheckpointHandler found for items:'
                f' {missing}. Please see documentation of'
                ' `item_handlers` in CheckpointManager.')
        lib = L.lib()
        out = {}
        for n in names:
            h = self._known[n]
            idx = lib.ckpt_restored_find(owner.ptr, n.encode())
            if idx < 0 or h in ('json', 'proto'):
                out[n] = None
                continue
            tree = lib.ckpt_restored_item_tree(owner.ptr, idx)
            if not tree:
                out[n] = None
                continue
            entries = _tree.read_tree(tree, owner)
            d = md.PosixGPath(step_dir, n)
            if h == 'array' and len(entries) == 1:
                out[n] = _tree.metadata_tree([((), entries[0][1])], d)
            else:
                t = _tree.metadata_tree(entries, d)
                if h in ('standard', 'pytree') and isinstance(
                        t, (dict, list, tuple)):
                    t = md.TreeMetadata.build(t)
                out[n] = t
        if self._single_item:
            return out[DEFAULT_ITEM_NAME]
        return args_lib.Composite(**out)

    # -- ckptd extras
    def wait_for_step(self, after: Optional[int] = None,
                      timeout_secs: Optional[float] = None) -> int:
        """Block until a step newer than `after` (default: the latest)
        commits, from any process; returns it. TimeoutError on timeout."""
        if after is None:
            after = self.latest_step()
            after = -1 if after is None else after
        ms = -1 if timeout_secs is None else max(1, int(timeout_secs * 1000))
        out = ctypes.c_int64()
        rc = L.lib().ckpt_wait_for_step(self._mgr(), int(after), ms,
                                        ctypes.byref(out))
        if rc == L.CKPT_ETIMEDOUT:
            raise TimeoutError('no step after %d within %s seconds'
                               % (after, timeout_secs))
        self._check(rc)
        return int(out.value)

    def verify(self, step: Optional[int] = None) -> List[str]:
        """Check stored checksums; returns a list of problem strings."""
        p = ctypes.c_void_p()
        s = -1 if step is None else self._check_step(step)
        rc = L.lib().ckpt_verify(self._mgr(), s, ctypes.byref(p))
        text = L.take_string(p.value) or ''
        if rc != L.CKPT_ECORRUPT or not text:
            self._check(rc)
        return [line for line in text.splitlines() if line]

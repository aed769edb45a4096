"""Turn checkpoints written by Orbax into ckptd steps.

    python -m ckpt.migrate [options] ORBAX_ROOT DEST

Every committed step of ORBAX_ROOT (OCDBT or zarr/tensorstore format: Orbax
itself reads them, so orbax-checkpoint must be installed) is read item by
item and saved under DEST through ckptd, with the same step number, item
names and handler kinds (PyTree/Standard trees, Json, Array), its metrics
and custom metadata. Orbax's commit time of each step becomes the ckptd
step's save time (the time that keep_time_interval and the other
time-based policies read); the ckptd commit time is the time of the
migration. Array leaves arrive as numpy arrays (a jax.Array saved by Orbax
restores with its dtype; give a target with a sharding to get jax arrays
back). Steps that DEST already has are skipped, so an interrupted migration
can be run again.

ckpt keeps metrics only for a manager with a best_fn: --best-metric NAME
(and --best-mode) says which metric ranks steps, as the Orbax job's
best_fn did. Without it, and when every step's metrics have the same
single numeric key, that key is used.
"""

import argparse
import sys
from typing import Callable, List, Optional, Sequence

import numpy as np

import ckpt

_HANDLER_KINDS = (
    ('StandardCheckpointHandler', 'standard'),
    ('PyTreeCheckpointHandler', 'pytree'),
    ('JsonCheckpointHandler', 'json'),
    ('ArrayCheckpointHandler', 'array'),
    ('ProtoCheckpointHandler', 'proto'),
)


class MigrationError(Exception):
    """A migration that cannot be done (no orbax-checkpoint, an item kind
    ckpt cannot take, ambiguous metrics)."""


def _kind_of_type(typestr, name, where):
    """The handler kind of an item from the type Orbax recorded in the
    step's metadata; None when none was recorded."""
    for cls, kind in _HANDLER_KINDS:
        if typestr and typestr.endswith(cls):
            return kind
    if typestr:
        raise MigrationError('step %s: item "%s" was written by %s, which '
                             'ckpt cannot migrate' % (where, name, typestr))
    return None


def _kind_of_files(item_dir):
    """The handler kind of an item of an Orbax step without item_handlers
    metadata, from its files (item_dir: a path of Orbax's own epath)."""
    files = {p.name for p in item_dir.iterdir()}
    if 'metadata' in files and '_METADATA' not in files:
        return 'json'
    return 'pytree'


def _orbax():
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:
        raise MigrationError('reading Orbax checkpoints needs '
                             'orbax-checkpoint (pip install '
                             'orbax-checkpoint): %s' % e) from None
    return ocp


def _restore_args_for(ocp, tree):
    """Restore every array leaf as a numpy array (no devices needed), the
    scalars as saved."""
    import jax

    def one(m):
        if type(m).__name__ in ('ScalarMetadata', 'StringMetadata'):
            return ocp.RestoreArgs()
        return ocp.RestoreArgs(restore_type=np.ndarray)
    return jax.tree.map(one, tree)


def _read_item(ocp, mngr, step, name, kind, default):
    """One item of an Orbax step, read by Orbax (default: the manager is in
    Orbax's single-item mode, name is 'default')."""
    if kind in ('standard', 'pytree'):
        meta = mngr.item_metadata(step)
        if not default:
            meta = meta[name]
        tree = getattr(meta, 'tree', meta)
        rargs = _restore_args_for(ocp, tree)
        a = ocp.args.PyTreeRestore(item=None, restore_args=rargs)
    elif kind == 'json':
        a = ocp.args.JsonRestore()
    elif kind == 'array':
        a = ocp.args.ArrayRestore()
    else:
        raise MigrationError('step %d: item "%s" is a %s item, which ckpt '
                             'cannot migrate' % (step, name, kind))
    if default:
        return mngr.restore(step, args=a)
    return mngr.restore(step, args=ocp.args.Composite(**{name: a}))[name]


def _save_args(kind, value):
    if kind == 'standard':
        return ckpt.args.StandardSave(value)
    if kind == 'pytree':
        return ckpt.args.PyTreeSave(value)
    if kind == 'json':
        return ckpt.args.JsonSave(value)
    return ckpt.args.ArraySave(np.asarray(value))


def _choose_best_metric(all_metrics, given):
    if given:
        return given
    keys = set()
    for m in all_metrics:
        if m:
            keys.update(k for k, v in m.items()
                        if isinstance(v, (int, float)) and
                        not isinstance(v, bool))
    if not keys:
        return None
    if len(keys) == 1:
        return keys.pop()
    raise MigrationError('the steps have metrics %s: say which one ranks '
                         'steps with --best-metric' % sorted(keys))


def migrate(orbax_root: str, dest: str, *,
            best_metric: Optional[str] = None, best_mode: str = 'max',
            step_prefix: Optional[str] = None,
            step_format_fixed_length: Optional[int] = None,
            log: Optional[Callable[[str], None]] = None) -> List[int]:
    """Migrate every committed step of orbax_root into dest. Returns the
    list of steps migrated (steps dest already had are skipped)."""
    ocp = _orbax()
    import ckpt.manager as cm
    src_opts = ocp.CheckpointManagerOptions(
        read_only=True, step_prefix=step_prefix,
        step_format_fixed_length=step_format_fixed_length)
    with ocp.CheckpointManager(orbax_root, options=src_opts) as probe:
        steps = sorted(probe.all_steps())
        infos = {s: probe.metadata(s) for s in steps}
    if not steps:
        raise MigrationError('no steps found in %s' % orbax_root)

    # The Orbax steps are found where Orbax names them, and read through
    # Orbax's own paths (any root Orbax reads).
    name_format = ocp.step.standard_name_format(
        step_prefix=step_prefix,
        step_format_fixed_length=step_format_fixed_length)
    kinds = {}
    for s in steps:
        md = infos[s]
        step_dir = ocp.step.build_step_path(orbax_root, name_format, s)
        handlers = dict(md.item_handlers or {})
        if not handlers:
            handlers = {p.name: None for p in step_dir.iterdir()
                        if p.is_dir()}
        handlers.pop('metrics', None)
        kinds[s] = {n: _kind_of_type(t, n, step_dir) or
                    _kind_of_files(step_dir / n)
                    for n, t in handlers.items()}

    metric = _choose_best_metric([infos[s].metrics for s in steps],
                                 best_metric)
    all_kinds = {}
    for s in steps:
        for n, k in kinds[s].items():
            all_kinds.setdefault(n, k)
    handlers = {n: _ckpt_handler(k) for n, k in all_kinds.items()}
    default = set(all_kinds) == {'default'}
    dst_opts = ckpt.CheckpointManagerOptions(
        enable_async_checkpointing=False,
        step_prefix=step_prefix,
        step_format_fixed_length=step_format_fixed_length,
        best_fn=(lambda m: m[metric]) if metric else None,
        best_mode=best_mode)
    src = ocp.CheckpointManager(
        orbax_root, options=src_opts,
        item_handlers=(_orbax_handler(ocp, all_kinds['default']) if default
                       else {n: _orbax_handler(ocp, k)
                             for n, k in all_kinds.items()}))
    done = []
    real_now = cm._now_ns
    try:
        with ckpt.CheckpointManager(
                dest, options=dst_opts,
                item_handlers=(handlers['default'] if default
                               else handlers)) as dst:
            have = set(dst.all_steps())
            for s in steps:
                if s in have:
                    continue
                md = infos[s]
                values = {n: _read_item(ocp, src, s, n, k, default)
                          for n, k in kinds[s].items()}
                if default:
                    args = _save_args(kinds[s]['default'], values['default'])
                else:
                    args = ckpt.args.Composite(**{
                        n: _save_args(kinds[s][n], v)
                        for n, v in values.items()})
                when = md.commit_timestamp_nsecs or md.init_timestamp_nsecs
                if when:
                    cm._now_ns = lambda w=int(when): w
                metrics = md.metrics if (metric and md.metrics) else None
                dst.save(s, args=args, metrics=metrics, force=True,
                         custom_metadata=md.custom_metadata or None)
                cm._now_ns = real_now
                done.append(s)
                if log:
                    log('step %d: %s' % (s, ', '.join(
                        '%s (%s)' % (n, kinds[s][n]) for n in
                        sorted(kinds[s]))))
            dst.wait_until_finished()
    finally:
        cm._now_ns = real_now
        src.close()
    return done


def _ckpt_handler(kind):
    return {'standard': ckpt.StandardCheckpointHandler,
            'pytree': ckpt.PyTreeCheckpointHandler,
            'json': ckpt.JsonCheckpointHandler,
            'array': ckpt.ArrayCheckpointHandler}[kind]()


def _orbax_handler(ocp, kind):
    # Standard items are PyTree items on disk; the PyTree handler reads
    # them with per-leaf restore args (numpy, no devices).
    return {'standard': ocp.PyTreeCheckpointHandler,
            'pytree': ocp.PyTreeCheckpointHandler,
            'json': ocp.JsonCheckpointHandler,
            'array': ocp.ArrayCheckpointHandler}[kind]()


def main(argv: Optional[Sequence[str]] = None,
         prog: str = 'python -m ckpt.migrate') -> int:
    """The `python -m ckpt.migrate` command (also `ckptctl import`, which
    passes its name as prog); returns the exit status."""
    p = argparse.ArgumentParser(
        prog=prog,
        description='Copy the steps of an Orbax checkpoint root into a '
                    'ckptd root (through ckptd).')
    p.add_argument('orbax_root')
    p.add_argument('dest')
    p.add_argument('--best-metric', help='the metric that ranks steps '
                   '(what the Orbax job\'s best_fn returned)')
    p.add_argument('--best-mode', choices=('min', 'max'), default='max')
    p.add_argument('--step-prefix', default=None)
    p.add_argument('--step-format-fixed-length', type=int, default=None)
    p.add_argument('-q', '--quiet', action='store_true')
    a = p.parse_args(argv)
    try:
        done = migrate(a.orbax_root, a.dest, best_metric=a.best_metric,
                       best_mode=a.best_mode, step_prefix=a.step_prefix,
                       step_format_fixed_length=a.step_format_fixed_length,
                       log=None if a.quiet else
                       (lambda s: print(s, flush=True)))
    except (MigrationError, OSError, ValueError) as e:
        print('%s: %s' % ('ckpt.migrate' if prog.startswith('python')
                          else prog, e), file=sys.stderr)
        return 1
    if not a.quiet:
        print('migrated %d step(s) into %s' % (len(done), a.dest))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Write ckptd steps as Orbax checkpoints, for jobs that go back to Orbax.

    python -m ckpt.export [--step N ...] CKPT_ROOT DEST

Each step (all committed steps by default) is restored through ckptd, item
by item with the handler it was saved with, and saved into DEST by
orbax.checkpoint itself (which must be installed), so whatever Orbax
version restores it reads its own format: same step number, item names,
handler kinds, metrics and custom metadata. Leaves saved as jax.Array are
written as jax arrays in their saved layout when this process has those
devices, numpy leaves as numpy arrays.
"""

import argparse
import sys
from typing import Callable, List, Optional, Sequence

import ckpt
from ckpt import migrate as _migrate


class ExportError(Exception):
    """An export that cannot be done (no orbax-checkpoint, a missing step,
    an item kind Orbax cannot take)."""


def _restore_args(kind):
    if kind == 'standard':
        return ckpt.args.StandardRestore()
    if kind == 'pytree':
        return ckpt.args.PyTreeRestore()
    if kind == 'json':
        return ckpt.args.JsonRestore()
    if kind == 'array':
        return ckpt.args.ArrayRestore()
    raise ExportError('%s items cannot be exported' % kind)


def _orbax_save_args(ocp, kind, value):
    if kind == 'standard':
        return ocp.args.StandardSave(value)
    if kind == 'pytree':
        return ocp.args.PyTreeSave(value)
    if kind == 'json':
        return ocp.args.JsonSave(value)
    return ocp.args.ArraySave(value)


def export(src_root: str, dest: str, steps: Optional[Sequence[int]] = None,
           *, step_prefix: Optional[str] = None,
           step_format_fixed_length: Optional[int] = None,
           log: Optional[Callable[[str], None]] = None) -> List[int]:
    """Save steps of the ckptd root src_root into the Orbax root dest.
    Returns the steps written (steps dest already has are skipped)."""
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:
        raise ExportError('writing Orbax checkpoints needs '
                          'orbax-checkpoint: %s' % e) from None
    naming = dict(step_prefix=step_prefix,
                  step_format_fixed_length=step_format_fixed_length)
    done = []
    with ckpt.CheckpointManager(src_root, options=ckpt.CheckpointManagerOptions(
            read_only=True, **naming)) as src:
        have = sorted(src.all_steps())
        if steps is None:
            steps = have
        missing = sorted(set(steps) - set(have))
        if missing:
            raise ExportError('no step %s in %s' % (
                ', '.join(str(s) for s in missing), src_root))
        infos = {s: src.metadata(s) for s in steps}
        kinds = {}
        for s in steps:
            # The kinds recorded in the step's metadata, else the daemon's
            # reading of the step (ckptd's steps are read only through it).
            handlers = dict(infos[s].item_handlers or {})
            handlers.pop('metrics', None)
            where = '%d of %s' % (s, src_root)
            kinds[s] = {n: _migrate._kind_of_type(t, n, where)
                        for n, t in handlers.items()}
            if not kinds[s] or None in kinds[s].values():
                read = src._item_kinds(s)
                kinds[s] = {n: k or read.get(n)
                            for n, k in (kinds[s] or read).items()}
            unknown = sorted(n for n, k in kinds[s].items() if k is None)
            if unknown:
                raise ExportError('step %s: items %s cannot be read' % (
                    where, ', '.join(unknown)))
        any_metrics = any(infos[s].metrics for s in steps)
        with ocp.CheckpointManager(dest, options=ocp.CheckpointManagerOptions(
                enable_async_checkpointing=False,
                # Orbax writes metrics only for a manager with a best_fn;
                # the value is not stored, Orbax recomputes it on load.
                best_fn=(lambda m: 0) if any_metrics else None,
                **naming)) as dst:
            already = set(dst.all_steps())
            for s in steps:
                if s in already:
                    continue
                k = kinds[s]
                default = set(k) == {'default'}
                if default:
                    value = src.restore(s, args=_restore_args(k['default']))
                    args = _orbax_save_args(ocp, k['default'], value)
                else:
                    r = src.restore(s, args=ckpt.args.Composite(**{
                        n: _restore_args(kind) for n, kind in k.items()}))
                    args = ocp.args.Composite(**{
                        n: _orbax_save_args(ocp, kind, r[n])
                        for n, kind in k.items()})
                md = infos[s]
                dst.save(s, args=args, metrics=md.metrics or None,
                         custom_metadata=md.custom_metadata or None,
                         force=True)
                done.append(s)
                if log:
                    log('step %d: %s' % (s, ', '.join(
                        '%s (%s)' % (n, k[n]) for n in sorted(k))))
            dst.wait_until_finished()
    return done


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `python -m ckpt.export` command; returns the exit status."""
    p = argparse.ArgumentParser(
        prog='python -m ckpt.export',
        description='Write steps of a ckptd root as Orbax checkpoints.')
    p.add_argument('ckpt_root')
    p.add_argument('dest')
    p.add_argument('--step', type=int, action='append', dest='steps',
                   help='a step to export (repeatable; default: all)')
    p.add_argument('--step-prefix', default=None)
    p.add_argument('--step-format-fixed-length', type=int, default=None)
    p.add_argument('-q', '--quiet', action='store_true')
    a = p.parse_args(argv)
    try:
        done = export(a.ckpt_root, a.dest, a.steps, step_prefix=a.step_prefix,
                      step_format_fixed_length=a.step_format_fixed_length,
                      log=None if a.quiet else
                      (lambda s: print(s, flush=True)))
    except (ExportError, _migrate.MigrationError, OSError, ValueError) as e:
        print('ckpt.export: %s' % e, file=sys.stderr)
        return 1
    if not a.quiet:
        print('exported %d step(s) into %s' % (len(done), a.dest))
    return 0


if __name__ == '__main__':
    sys.exit(main())

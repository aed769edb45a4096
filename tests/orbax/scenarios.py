"""Scenarios run by differ.py twice: with orbax.checkpoint and with ckpt.

Each scenario is a function sc_NAME(ocp, t) using only the orbax.checkpoint
API and t (differ.Env): t.root() for a fresh root, t.out() and t.attempt()
to show values and exceptions, t.clock()/t.advance() for the mocked clock.
Most are translations of cases of Orbax's own checkpoint_manager_test.py
(named after them) with numpy trees in place of its sharded jax arrays;
the rest cover what that file does not (exception messages, metadata,
should_save).
"""

import datetime
import os
import sys

import numpy as np


def all_scenarios():
    g = globals()
    return [(n[3:], g[n]) for n in sorted(g) if n.startswith('sc_')]


def pytree():
    return {'a': np.arange(8, dtype=np.int32),
            'b': np.arange(16, dtype=np.float32).reshape(4, 4),
            'c': {'a': np.arange(4, dtype=np.int64) * 3,
                  'e': np.linspace(0, 1, 6, dtype=np.float64)}}


def doubled():
    return {k: ({kk: vv * 2 for kk, vv in v.items()} if isinstance(v, dict)
                else v * 2) for k, v in pytree().items()}


def save_params(ocp, m, step, tree=None, metrics=None, force=False):
    return m.save(step, args=ocp.args.Composite(
        params=ocp.args.PyTreeSave(pytree() if tree is None else tree)),
        metrics=metrics, force=force)


def restore_params(ocp, m, step, target=None):
    return m.restore(step, args=ocp.args.Composite(
        params=ocp.args.PyTreeRestore(target))).params


def opts(ocp, **kw):
    return ocp.CheckpointManagerOptions(**kw)


# ---- checkpoint_manager_test.py ------------------------------------------------

def sc_save_restore(ocp, t):
    for enable_async, fixed in ((False, 8), (False, None), (True, None)):
        root = t.root()
        o = opts(ocp, enable_async_checkpointing=enable_async,
                 step_format_fixed_length=fixed,
                 async_options=ocp.AsyncOptions(timeout_secs=500))
        with ocp.CheckpointManager(root, item_names=('params',),
                                   options=o) as m:
            t.out('saved', save_params(ocp, m, 0))
            m.wait_until_finished()
            t.out('restored', restore_params(ocp, m, 0))
            t.out('listing', t.listdir(root))


def sc_file_format(ocp, t):
    for prefix, fixed in ((None, 8), (None, None), ('checkpoint', 8),
                          ('checkpoint', None)):
        root = t.root()
        o = opts(ocp, step_prefix=prefix, step_format_fixed_length=fixed)
        with ocp.CheckpointManager(root, item_names=('params',),
                                   options=o) as m:
            t.out('saved', save_params(ocp, m, 0))
            m.wait_until_finished()
            t.out('steps', m.all_steps())
        t.out('listing', t.listdir(root))
        step_dir = [n for n in t.listdir(root) if n.endswith('0')]
        t.out('step folder', [t.listdir(os.path.join(root, d))
                              for d in step_dir])


def sc_save_restore_no_kwargs(ocp, t):
    with ocp.CheckpointManager(t.root(), item_names=('params',)) as m:
        t.out('saved', save_params(ocp, m, 0))
        m.wait_until_finished()
        t.out('restored', m.restore(0)['params'])


def sc_save_restore_invalid_item(ocp, t):
    with ocp.CheckpointManager(t.root(), item_names=('params',)) as m:
        t.attempt('save invalid', m.save, 0, args=ocp.args.Composite(
            invalid=ocp.args.PyTreeSave(pytree())))
        t.attempt('restore invalid', m.restore, 0, args=ocp.args.Composite(
            invalid=ocp.args.PyTreeRestore(pytree())))


def sc_new_and_legacy_api_confusion(ocp, t):
    with ocp.CheckpointManager(t.root(), item_names=('params',)) as m:
        t.out('saved', save_params(ocp, m, 0))
        m.wait_until_finished()
        t.attempt('positional save', m.save, 1, ocp.args.Composite(
            params=ocp.args.PyTreeSave(pytree())))
        t.attempt('positional restore', m.restore, 0, ocp.args.Composite(
            params=ocp.args.PyTreeRestore()))


def sc_incorrect_single_usage(ocp, t):
    with ocp.CheckpointManager(t.root()) as m:
        t.out('saved', m.save(0, args=ocp.args.PyTreeSave(pytree())))
        m.wait_until_finished()
        t.attempt('composite save', m.save, 1, args=ocp.args.Composite(
            params=ocp.args.PyTreeSave(pytree())))
        t.attempt('composite restore', m.restore, 0, args=ocp.args.Composite(
            params=ocp.args.PyTreeRestore()))


def sc_incorrect_composite_usage(ocp, t):
    with ocp.CheckpointManager(t.root(), item_names=('params',)) as m:
        t.out('saved', save_params(ocp, m, 0))
        m.wait_until_finished()
        t.attempt('single save', m.save, 1, args=ocp.args.PyTreeSave(pytree()))
        t.attempt('single restore', m.restore, 0, args=ocp.args.PyTreeRestore())


def sc_all_steps(ocp, t):
    for enable_async, fixed in ((False, 8), (False, None), (True, None)):
        root = t.root()
        o = opts(ocp, enable_async_checkpointing=enable_async,
                 step_format_fixed_length=fixed)
        with ocp.CheckpointManager(root, item_names=('params',),
                                   options=o) as m:
            for step in range(5):
                t.out('saved %d' % step, save_params(ocp, m, step))
            m.wait_until_finished()
            # Orbax's save_fake_tmp_dir: an uncommitted step 5.
            os.makedirs(os.path.join(
                root, ('%08d' % 5 if fixed else '5') +
                '.orbax-checkpoint-tmp-1', 'params'))
            t.out('steps', sorted(m.all_steps()))
            t.out('latest', m.latest_step())


def sc_all_steps_reload(ocp, t):
    root = t.root()
    m = ocp.CheckpointManager(root, item_names=('params',))
    for step in range(2):
        t.out('saved', save_params(ocp, m, step))
    m.wait_until_finished()
    t.out('steps', sorted(m.all_steps()))
    m2 = ocp.CheckpointManager(root, item_names=('params',))
    for step in range(2, 4):
        t.out('saved', save_params(ocp, m2, step))
    m2.wait_until_finished()
    t.out('old manager', sorted(m.all_steps()))
    t.out('new manager', sorted(m2.all_steps()))
    m.reload()
    t.out('old manager reloaded', sorted(m.all_steps()))
    m.close()
    m2.close()


def sc_latest_step(ocp, t):
    for enable_async, interval in ((False, 1), (True, 2)):
        o = opts(ocp, enable_async_checkpointing=enable_async,
                 save_interval_steps=interval)
        with ocp.CheckpointManager(t.root(), item_names=('params',),
                                   options=o) as m:
            for step in range(6):
                t.out('saved %d' % step, save_params(ocp, m, step))
            m.wait_until_finished()
            t.out('latest', m.latest_step())
            t.out('saved 6', save_params(ocp, m, 6))
            m.wait_until_finished()
            t.out('latest', m.latest_step())


def sc_latest_step_restore(ocp, t):
    with ocp.CheckpointManager(t.root(), item_names=('params',),
                               options=opts(ocp, save_interval_steps=2)) as m:
        for step in range(6):
            save_params(ocp, m, step, {'step': step, **pytree()})
        m.wait_until_finished()
        t.out('latest', m.latest_step())
        t.out('restored', restore_params(ocp, m, None))


def sc_no_overwrite_existing(ocp, t):
    with ocp.CheckpointManager(t.root(), item_names=('params',)) as m:
        t.out('saved', save_params(ocp, m, 0))
        t.attempt('again', save_params, ocp, m, 0, doubled(), force=True)
        m.wait_until_finished()
        t.out('restored', restore_params(ocp, m, 0))


def sc_removes_old_saves(ocp, t):
    for enable_async in (False, True):
        for todelete in (None, 'ttl=1h'):
            root = t.root()
            o = opts(ocp, enable_async_checkpointing=enable_async,
                     max_to_keep=2, todelete_subdir=todelete)
            with ocp.CheckpointManager(root, item_names=('params',),
                                       options=o) as m:
                for step in range(5):
                    save_params(ocp, m, step)
                    m.wait_until_finished()
                    t.out('steps', sorted(m.all_steps()))
            t.out('listing', t.listdir(root))
            if todelete:
                t.out('renamed', t.listdir(os.path.join(root, todelete)))


def sc_max_to_keep_zero(ocp, t):
    for todelete in (None, 'ttl=1h'):
        with ocp.CheckpointManager(t.root(), options=opts(
                ocp, max_to_keep=0, todelete_subdir=todelete)) as m:
            for step in range(5):
                t.out('saved', m.save(step, args=ocp.args.PyTreeSave(pytree())))
                m.wait_until_finished()
                t.out('steps', m.all_steps())


def sc_max_to_keep_zero_other_conditions(ocp, t):
    with t.clock():
        m = ocp.CheckpointManager(t.root(), options=opts(
            ocp, max_to_keep=0, keep_period=3,
            keep_time_interval=datetime.timedelta(hours=5)))
        for step in range(9):
            t.out('saved', m.save(step, args=ocp.args.PyTreeSave(pytree())))
            m.wait_until_finished()
            t.out('steps', sorted(m.all_steps()))
            t.advance(hours=1)
    m.close()


def sc_removes_old_saves_keep_period(ocp, t):
    for enable_async in (False, True):
        with ocp.CheckpointManager(t.root(), item_names=('params',),
                                   options=opts(
                                       ocp,
                                       enable_async_checkpointing=enable_async,
                                       max_to_keep=2, keep_period=4,
                                       save_interval_steps=2)) as m:
            for step in range(12):
                t.out('saved %d' % step, save_params(ocp, m, step))
                m.wait_until_finished()
                t.out('steps', sorted(m.all_steps()))


def sc_removes_old_saves_time_interval(ocp, t):
    root = t.root()
    o = opts(ocp, max_to_keep=2,
             keep_time_interval=datetime.timedelta(hours=3))
    with t.clock():
        m = ocp.CheckpointManager(root, item_names=('params',), options=o)
        for step in range(10):
            save_params(ocp, m, step)
            m.wait_until_finished()
            t.out('steps', sorted(m.all_steps()))
            t.advance(hours=1)
        m.close()


def sc_removes_old_saves_time_interval_metrics(ocp, t):
    loss = list(range(10))
    o = opts(ocp, max_to_keep=3, best_mode='min',
             best_fn=lambda mt: mt['loss'],
             keep_time_interval=datetime.timedelta(hours=3))
    with t.clock():
        m = ocp.CheckpointManager(t.root(), item_names=('params',), options=o)
        for step in range(10):
            save_params(ocp, m, step, metrics={'loss': loss[step]})
            m.wait_until_finished()
            t.out('steps', sorted(m.all_steps()))
            t.advance(hours=1)
        t.out('best', m.best_step())
        m.close()


def sc_save_interval(ocp, t):
    with ocp.CheckpointManager(t.root(), item_names=('params',),
                               options=opts(ocp, save_interval_steps=2)) as m:
        for step in range(6):
            t.out('should_save %d' % step, m.should_save(step))
            t.out('saved %d' % step, save_params(ocp, m, step))
        m.wait_until_finished()
        t.out('steps', sorted(m.all_steps()))
        t.out('forced 5', save_params(ocp, m, 5, force=True))
        m.wait_until_finished()
        t.out('steps', sorted(m.all_steps()))


def sc_save_on_steps(ocp, t):
    with ocp.CheckpointManager(t.root(), item_names=('params',), options=opts(
            ocp, save_interval_steps=10000,
            save_on_steps=frozenset({1, 3, 5}))) as m:
        for step in range(6):
            t.out('saved %d' % step, save_params(ocp, m, step))
        m.wait_until_finished()
        t.out('steps', sorted(m.all_steps()))


def sc_save_same_step(ocp, t):
    for enable_async in (True, False):
        root = t.root()
        with ocp.CheckpointManager(root, item_names=('params',), options=opts(
                ocp, enable_async_checkpointing=enable_async)) as m:
            t.out('saved', save_params(ocp, m, 0, force=True))
            t.attempt('again', save_params, ocp, m, 0, force=True)
            m.wait_until_finished()
            t.out('steps', m.all_steps())
            t.out('step folder', t.listdir(os.path.join(root, '0')))


def sc_save_default_item(ocp, t):
    for enable_async in (False, True):
        with ocp.CheckpointManager(t.root(), options=opts(
                ocp, enable_async_checkpointing=enable_async)) as m:
            t.out('saved', m.save(0, args=ocp.args.PyTreeSave(pytree())))
            m.wait_until_finished()
            t.out('restored', m.restore(0, args=ocp.args.PyTreeRestore()))


def sc_multiple_items(ocp, t):
    meta = {'VERSION': 2, 'optimizer': {'lr': 0.001, 'type': 'adam'}}
    root = t.root()
    with ocp.CheckpointManager(root, item_names=('params', 'arr',
                                                 'metadata')) as m:
        t.out('saved', m.save(0, args=ocp.args.Composite(
            params=ocp.args.PyTreeSave(pytree()),
            arr=ocp.args.ArraySave(np.arange(16)),
            metadata=ocp.args.JsonSave(meta))))
        m.wait_until_finished()
        r = m.restore(0, args=ocp.args.Composite(
            params=ocp.args.PyTreeRestore(),
            arr=ocp.args.ArrayRestore(),
            metadata=ocp.args.JsonRestore()))
        t.out('params', r.params)
        t.out('arr', r.arr)
        t.out('metadata', r.metadata)
        t.out('items', sorted(r.keys()))
    t.out('step folder', t.listdir(os.path.join(root, '0')))


def sc_save_best(ocp, t):
    loss = [5, 2, 4, 3, 7] + [1, 10, 9, 7, 4]
    acc = [30, 85, 70, 80, 60] + [100, 40, 45, 75, 75]
    for mode in ('min', 'max'):
        for enable_async in (False, True):
            for todelete in (None, 'ttl=1h'):
                fn = ((lambda mt: mt['loss']) if mode == 'min'
                      else (lambda mt: mt['accuracy']))
                root = t.root()
                o = opts(ocp, enable_async_checkpointing=enable_async,
                         best_fn=fn, best_mode=mode, max_to_keep=2,
                         todelete_subdir=todelete)
                m = ocp.CheckpointManager(root, options=o)
                for step in range(5):
                    m.save(step, args=ocp.args.PyTreeSave(pytree()),
                           metrics={'loss': loss[step],
                                    'accuracy': acc[step]})
                    m.wait_until_finished()
                    t.out('steps', sorted(m.all_steps()))
                m.close()
                m = ocp.CheckpointManager(root, options=o)
                for step in range(5, 10):
                    m.save(step, args=ocp.args.PyTreeSave(pytree()),
                           metrics={'loss': loss[step],
                                    'accuracy': acc[step]})
                    m.wait_until_finished()
                    t.out('steps', sorted(m.all_steps()))
                t.out('best', m.best_step())
                t.out('metrics', m.metrics(m.best_step()) if hasattr(
                    m, 'metrics') else None)
                m.close()


def sc_save_best_delete_no_metrics(ocp, t):
    with ocp.CheckpointManager(t.root(), options=opts(
            ocp, best_fn=lambda mt: mt['loss'], best_mode='min',
            max_to_keep=2)) as m:
        for step in range(5):
            t.out('saved', m.save(step, args=ocp.args.PyTreeSave(pytree())))
        m.wait_until_finished()
        t.out('steps', sorted(m.all_steps()))
        t.out('best', m.best_step())
        t.out('latest', m.latest_step())


def sc_save_best_some_metrics(ocp, t):
    loss = [3, 6, 4, 1, 7, 7]
    with ocp.CheckpointManager(t.root(), options=opts(
            ocp, best_fn=lambda mt: mt['loss'], best_mode='min',
            max_to_keep=3)) as m:
        for step in range(6):
            metrics = {'loss': loss[step]} if step % 2 == 0 else None
            t.out('saved', m.save(step, args=ocp.args.PyTreeSave(pytree()),
                                  metrics=metrics))
            m.wait_until_finished()
            t.out('steps', sorted(m.all_steps()))
        t.out('best', m.best_step())


def sc_restore_independent(ocp, t):
    root, other = t.root(), t.root()
    with ocp.CheckpointManager(other, item_names=('params',)) as m:
        save_params(ocp, m, 0, doubled())
        save_params(ocp, m, 1, doubled())
    with ocp.CheckpointManager(root, item_names=('params',)) as m:
        save_params(ocp, m, 0)
        m.wait_until_finished()
        t.out('own', m.restore(0, args=ocp.args.Composite(
            params=ocp.args.PyTreeRestore())).params)
        t.out('other', m.restore(1, args=ocp.args.Composite(
            params=ocp.args.PyTreeRestore()), directory=other).params)
        t.attempt('other missing', m.restore, 5, args=ocp.args.Composite(
            params=ocp.args.PyTreeRestore()), directory=other)


def sc_metadata(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root, options=opts(ocp, max_to_keep=1),
                               metadata={'state': 123, 'version': 'v1'}) as m:
        m.save(0, args=ocp.args.StandardSave(pytree()))
        m.wait_until_finished()
        md = m.metadata()
        t.out('metadata type', type(md).__name__)
        t.out('custom', getattr(md, 'custom_metadata', md))
    with ocp.CheckpointManager(root) as m:
        md = m.metadata()
        t.out('again', getattr(md, 'custom_metadata', md))


def sc_empty_metadata(ocp, t):
    with ocp.CheckpointManager(t.root()) as m:
        md = m.metadata()
        t.out('metadata type', type(md).__name__)
        t.out('custom', getattr(md, 'custom_metadata', md))


def sc_checkpoint_args_mismatch_item_handlers(ocp, t):
    with ocp.CheckpointManager(
            t.root(), item_handlers={
                'params': ocp.PyTreeCheckpointHandler(),
                'metadata': ocp.JsonCheckpointHandler()}) as m:
        t.attempt('json as pytree', m.save, 0, args=ocp.args.Composite(
            params=ocp.args.PyTreeSave(pytree()),
            metadata=ocp.args.PyTreeSave({'a': 1})))


def sc_item_names_with_single_item_handler(ocp, t):
    t.attempt('both', ocp.CheckpointManager, t.root(),
              item_names=('params',),
              item_handlers=ocp.PyTreeCheckpointHandler())


def sc_default_item_metadata_with_new_checkpoint_manager(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root) as m:
        m.save(0, args=ocp.args.StandardSave(pytree()))
    with ocp.CheckpointManager(root) as m:
        t.attempt('item_metadata unknown handler', m.item_metadata, 0)
    with ocp.CheckpointManager(
            root, item_handlers=ocp.StandardCheckpointHandler()) as m:
        t.attempt('item_metadata type', lambda: type(
            m.item_metadata(0)).__name__)
        t.out('item_metadata tree', getattr(m.item_metadata(0), 'tree',
                                            m.item_metadata(0)))


def sc_directory_creation(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root, options=opts(ocp, create=False)) as m:
        t.out('exists after create=False', os.path.exists(root))
    with ocp.CheckpointManager(root) as m:
        t.out('exists after create=True', os.path.exists(root))
        t.out('steps', m.all_steps())


def sc_delete(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root, item_names=('params',)) as m:
        for step in range(3):
            save_params(ocp, m, step)
        m.wait_until_finished()
        m.delete(1)
        t.out('steps', sorted(m.all_steps()))
        t.out('listing', t.listdir(root))
        t.attempt('delete missing', m.delete, 7)


def sc_delete_with_todelete_subdir(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root, item_names=('params',), options=opts(
            ocp, todelete_subdir='ttl=1h', max_to_keep=2)) as m:
        for step in range(4):
            save_params(ocp, m, step)
            m.wait_until_finished()
        m.delete(3)
        t.out('steps', sorted(m.all_steps()))
        t.out('listing', t.listdir(root))
        t.out('renamed', t.listdir(os.path.join(root, 'ttl=1h')))


def sc_async_finalize(ocp, t):
    with ocp.CheckpointManager(t.root(), item_names=('params',)) as m:
        save_params(ocp, m, 0)
        m.wait_until_finished()
        t.out('in progress', m.is_saving_in_progress())
        t.out('steps', m.all_steps())


def sc_sync_is_save_in_progress(ocp, t):
    with ocp.CheckpointManager(t.root(), item_names=('params',), options=opts(
            ocp, enable_async_checkpointing=False)) as m:
        save_params(ocp, m, 0)
        t.out('in progress', m.is_saving_in_progress())


def sc_should_save_fn(ocp, t):
    calls = []

    def fn(step, latest):
        calls.append((step, latest))
        return step % 3 == 0
    with ocp.CheckpointManager(t.root(), options=opts(
            ocp, should_save_fn=fn)) as m:
        for step in range(7):
            t.out('should_save %d' % step, m.should_save(step))
            t.out('saved %d' % step, m.save(
                step, args=ocp.args.StandardSave(pytree())))
            m.wait_until_finished()
        t.out('steps', sorted(m.all_steps()))


def sc_should_save_empty_root(ocp, t):
    with ocp.CheckpointManager(t.root(), options=opts(
            ocp, save_interval_steps=5)) as m:
        for step in (3, 0, 4, 5):
            t.out('should_save %d' % step, m.should_save(step))


def sc_read_only(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root, item_names=('params',)) as m:
        save_params(ocp, m, 0)
    with ocp.CheckpointManager(root, item_names=('params',), options=opts(
            ocp, read_only=True)) as m:
        t.out('should_save', m.should_save(1))
        t.out('saved', save_params(ocp, m, 1))
        t.out('restored', restore_params(ocp, m, 0))
        t.out('delete', m.delete(0))
        t.out('steps', m.all_steps())
    t.out('listing', t.listdir(root))


def sc_read_only_missing_root(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root, options=opts(ocp, read_only=True)) as m:
        t.out('steps', m.all_steps())
    t.out('exists', os.path.exists(root))


def sc_custom_metadata(ocp, t):
    with ocp.CheckpointManager(t.root()) as m:
        m.save(0, args=ocp.args.StandardSave(pytree()),
               custom_metadata={'round': 1, 'tag': 'x'})
        m.wait_until_finished()
        md = m.metadata(0)
        t.out('step metadata type', type(md).__name__)
        t.out('custom', md.custom_metadata)


def sc_default_init_default_item(ocp, t):
    for prefix in (None, 'foo'):
        root = t.root()
        with ocp.CheckpointManager(root, options=opts(
                ocp, step_prefix=prefix)) as m:
            m.save(0, args=ocp.args.StandardSave(pytree()))
            m.wait_until_finished()
            t.out('restored', m.restore(0))
            t.out('listing', t.listdir(root))
        with ocp.CheckpointManager(root, options=opts(
                ocp, step_prefix=prefix)) as m:
            t.out('steps', m.all_steps())
            t.attempt('restore unknown handler', m.restore, 0)
            t.out('restored', m.restore(
                0, args=ocp.args.StandardRestore()))


def sc_default_init_multi_item(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root) as m:
        m.save(0, args=ocp.args.Composite(
            state=ocp.args.StandardSave(pytree()),
            meta=ocp.args.JsonSave({'lr': 0.5})))
        m.wait_until_finished()
        r = m.restore(0)
        t.out('restored', r)
    with ocp.CheckpointManager(root) as m:
        t.attempt('restore unknown', m.restore, 0)
        r = m.restore(0, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))
        t.out('only meta', r)
        t.attempt('missing item', m.restore, 0, args=ocp.args.Composite(
            nope=ocp.args.JsonRestore()))


def sc_save_step_metadata(ocp, t):
    with ocp.CheckpointManager(t.root(), options=opts(
            ocp, best_fn=lambda mt: mt['loss'])) as m:
        m.save(0, args=ocp.args.Composite(
            state=ocp.args.StandardSave(pytree())), metrics={'loss': 1.5})
        m.wait_until_finished()
        md = m.metadata(0)
        t.out('metrics', md.metrics)
        t.out('item_handlers', sorted(md.item_handlers or {}))
        t.out('commit > init', md.commit_timestamp_nsecs >=
              md.init_timestamp_nsecs > 0)


def sc_item_metadata_access_with_no_handlers(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root) as m:
        m.save(0, args=ocp.args.Composite(
            state=ocp.args.StandardSave(pytree())))
    with ocp.CheckpointManager(root) as m:
        md = m.item_metadata(0)
        t.out('type', type(md).__name__)
        t.out('keys', sorted(md.keys()))
        t.out('state', md['state'] if 'state' in md else None)


def sc_restore_with_no_handlers(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root) as m:
        m.save(0, args=ocp.args.Composite(
            state=ocp.args.StandardSave(pytree())))
    with ocp.CheckpointManager(root) as m:
        t.attempt('restore', m.restore, 0)


def sc_item_metadata_with_handler(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root) as m:
        m.save(0, args=ocp.args.StandardSave(
            {'x': np.zeros((3, 5), np.float32), 'n': 4, 'f': 2.5}))
        m.wait_until_finished()
        md = m.item_metadata(0)
        t.out('item_metadata type', type(md).__name__)
        t.out('item_metadata tree', getattr(md, 'tree', md))


def sc_root_metadata_does_not_overwrite(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root, metadata={'v': 1}) as m:
        m.save(0, args=ocp.args.StandardSave(pytree()))
    with ocp.CheckpointManager(root, metadata={'v': 2}) as m:
        md = m.metadata()
        t.out('custom', getattr(md, 'custom_metadata', md))


def sc_save_decision_policy(ocp, t):
    sdp = ocp.checkpoint_managers
    for initial in (False, True):
        policies = [sdp.FixedIntervalPolicy(3),
                    sdp.SpecificStepsPolicy(steps=[4]),
                    sdp.FixedIntervalPolicy(5)]
        if initial:
            policies.append(sdp.InitialSavePolicy())
        with ocp.CheckpointManager(t.root(), options=opts(
                ocp, save_interval_steps=1,
                save_decision_policy=sdp.AnySavePolicy(policies))) as m:
            for step in range(1, 11):
                t.out('saved %d' % step, m.save(
                    step, args=ocp.args.StandardSave(pytree())))
            m.wait_until_finished()
            t.out('steps', sorted(m.all_steps()))


def sc_sync_continuous_checkpointing(ocp, t):
    sdp = ocp.checkpoint_managers
    with ocp.CheckpointManager(t.root(), options=opts(
            ocp, save_interval_steps=5, enable_async_checkpointing=False,
            save_decision_policy=sdp.ContinuousCheckpointingPolicy())) as m:
        for step in range(10):
            t.out('saved %d' % step, m.save(
                step, args=ocp.args.StandardSave(pytree())))


def sc_continuous_minimum_interval_mocked_clock(ocp, t):
    sdp = ocp.checkpoint_managers
    with t.clock():
        with ocp.CheckpointManager(t.root(), options=opts(
                ocp, enable_async_checkpointing=False,
                save_decision_policy=sdp.ContinuousCheckpointingPolicy(
                    minimum_interval_secs=120))) as m:
            for step in range(8):
                t.out('saved %d' % step, m.save(
                    step, args=ocp.args.StandardSave(pytree())))
                t.advance(seconds=50)
            t.out('steps', sorted(m.all_steps()))


def sc_preservation_joint_policy(ocp, t):
    pp = ocp.checkpoint_managers
    loss = [5, 2, 4, 3, 7, 10, 11, 9, 8, 6, 12, 1]
    policy = pp.AnyPreservationPolicy([
        pp.BestN(get_metric_fn=lambda mt: mt['loss'], reverse=True, n=2),
        pp.EveryNSteps(interval_steps=4),
        pp.CustomSteps(steps=[0, 3])])
    with ocp.CheckpointManager(t.root(), item_names=('params',), options=opts(
            ocp, preservation_policy=policy)) as m:
        for step in range(12):
            save_params(ocp, m, step, metrics={'loss': loss[step]})
            m.wait_until_finished()
            t.out('steps', sorted(m.all_steps()))


def sc_preservation_every_n_seconds_mocked_clock(ocp, t):
    pp = ocp.checkpoint_managers
    with t.clock():
        with ocp.CheckpointManager(t.root(), options=opts(
                ocp, preservation_policy=pp.AnyPreservationPolicy([
                    pp.LatestN(n=1), pp.EveryNSeconds(interval_secs=300)]))
        ) as m:
            for step in range(10):
                m.save(step, args=ocp.args.StandardSave(pytree()))
                m.wait_until_finished()
                t.out('steps', sorted(m.all_steps()))
                t.advance(seconds=130)


def sc_initial_save(ocp, t):
    for step in (0, 10):
        with ocp.CheckpointManager(t.root()) as m:
            t.out('should_save', m.should_save(step))
            t.out('saved', m.save(step, args=ocp.args.StandardSave(pytree())))


def sc_partial_restore_with_placeholder(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root) as m:
        m.save(0, args=ocp.args.PyTreeSave(pytree()))
    ph = ocp.PLACEHOLDER
    ref = {'a': 0, 'b': ph, 'c': {'a': 0, 'e': ph}}
    with ocp.CheckpointManager(root) as m:
        r = m.restore(0, args=ocp.args.PyTreeRestore(ref))
        t.out('restored a', r['a'], r['c']['a'])
        t.out('placeholders', r['b'] is ph, r['c']['e'] is ph)
    ref = {'a': 0, 'b': ph, 'c': {'e': ph}}
    with ocp.CheckpointManager(root) as m:
        t.attempt('missing leaf', m.restore, 0,
                  args=ocp.args.PyTreeRestore(ref))


def sc_partial_restore_with_omission(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root) as m:
        m.save(0, args=ocp.args.PyTreeSave(pytree()))
    with ocp.CheckpointManager(root) as m:
        t.out('leaf omission', m.restore(0, args=ocp.args.PyTreeRestore(
            {'a': 0, 'c': {'a': 0}}, partial_restore=True)))
        t.out('node omission', m.restore(0, args=ocp.args.PyTreeRestore(
            {'a': 0, 'b': 0}, partial_restore=True)))


# ---- beyond checkpoint_manager_test.py -------------------------------------------

def _seed_cells():
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(os.path.dirname(here), 'python'))
    import test_seed
    return test_seed


def _run_seed(ocp, t, cells):
    """The seed page's cells, notebook style (seed_runner.run_cell):
    displayed values, print() output and exceptions, cell by cell."""
    import contextlib
    import io
    import seed_runner
    ns = {'__name__': '__main__'}
    for i, src in enumerate(cells):
        src = src.replace('import ckpt as ocp', 'ocp = __ocp__')
        src = src.replace('/tmp/ckpt', os.path.join(t.base, 'ckpt'))
        ns['__ocp__'] = ocp
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                seed_runner.run_cell(src, ns)
        except Exception as e:  # noqa: BLE001 - shown like the page does
            buf.write('%s: %s\n' % (type(e).__name__, e))
        t.lines.append('cell %d: %s' % (i, t.rel(buf.getvalue())))


def sc_seed_page_after_examples(ocp, t):
    _run_seed(ocp, t, [c for c, _, _ in _seed_cells().CELLS])


def sc_seed_page_legacy_examples(ocp, t):
    _run_seed(ocp, t, ['import ckpt as ocp\n'] + _seed_cells().LEGACY_CELLS)


def sc_commit_marker(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root) as m:
        m.save(0, args=ocp.args.StandardSave(pytree()))
    t.out('step folder', t.listdir(os.path.join(root, '0'), marker=True))


def sc_errors_save_args(ocp, t):
    for label, kw in (('no args', {}),
                      ('empty tree', {'args': ocp.args.StandardSave({})}),
                      ('bare array', {'args': ocp.args.StandardSave(
                          np.arange(3))})):
        with ocp.CheckpointManager(t.root()) as m:
            t.attempt(label, m.save, 0, **kw)
            t.attempt('wait', m.wait_until_finished)
            t.attempt('steps', m.all_steps)


def sc_errors_restore(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root) as m:
        t.attempt('no steps', m.restore, None,
                  args=ocp.args.StandardRestore())
        m.save(0, args=ocp.args.StandardSave(pytree()))
        m.wait_until_finished()
        t.attempt('missing step', m.restore, 3,
                  args=ocp.args.StandardRestore())
    os.makedirs(os.path.join(root, '9'))
    with ocp.CheckpointManager(root) as m:
        t.out('steps', m.all_steps())
        t.attempt('incomplete', m.restore, 9,
                  args=ocp.args.StandardRestore())


def sc_errors_options(ocp, t):
    t.attempt('negative max_to_keep', ocp.CheckpointManagerOptions,
              max_to_keep=-1)
    t.attempt('bad best_mode', lambda: ocp.CheckpointManager(
        t.root(), options=ocp.CheckpointManagerOptions(best_mode='median')))
    t.attempt('policy and max_to_keep', lambda: ocp.CheckpointManager(
        t.root(), options=ocp.CheckpointManagerOptions(
            max_to_keep=2,
            preservation_policy=ocp.checkpoint_managers.LatestN(n=1))))


def sc_zero_size_array(ocp, t):
    with ocp.CheckpointManager(t.root()) as m:
        t.attempt('save', m.save, 0, args=ocp.args.PyTreeSave(
            {'z': np.zeros((0, 3))}))
        t.attempt('wait', m.wait_until_finished)
        t.out('steps', m.all_steps())


def sc_restore_with_target_dtype(ocp, t):
    with ocp.CheckpointManager(t.root()) as m:
        m.save(0, args=ocp.args.StandardSave(
            {'x': np.arange(6, dtype=np.float32).reshape(2, 3)}))
        m.wait_until_finished()
        t.out('as float64', m.restore(0, args=ocp.args.StandardRestore(
            {'x': np.zeros((2, 3), np.float64)})))
        t.attempt('wrong shape', m.restore, 0, args=ocp.args.StandardRestore(
            {'x': np.zeros((3, 3), np.float32)}))


def sc_scalars_and_containers(ocp, t):
    tree = {'i': 3, 'f': 1.25, 'n32': np.float32(2.5), 'l': [np.arange(2), 7],
            't': (np.ones(2), 2.0), 'nested': {'z': np.zeros((2, 3))}}
    with ocp.CheckpointManager(t.root()) as m:
        m.save(0, args=ocp.args.PyTreeSave(tree))
        m.wait_until_finished()
        t.out('restored', m.restore(0, args=ocp.args.PyTreeRestore()))


def sc_metrics_and_best(ocp, t):
    with ocp.CheckpointManager(t.root(), options=opts(
            ocp, best_fn=lambda mt: mt['acc'], best_mode='max',
            max_to_keep=2, keep_checkpoints_without_metrics=False)) as m:
        for step, acc in enumerate([0.1, 0.9, 0.5, None, 0.7]):
            m.save(step, args=ocp.args.StandardSave(pytree()),
                   metrics=None if acc is None else {'acc': acc})
            m.wait_until_finished()
            t.out('steps', sorted(m.all_steps()))
        t.out('best', m.best_step())
        t.out('latest', m.latest_step())


# ---- jax.Array leaves (8 CPU devices, XLA_FLAGS set by differ.py) ----------------

def _jax_mesh():
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('x', 'y'))
    return jax, mesh, NamedSharding, P


def _jax_tree():
    jax, mesh, NS, P = _jax_mesh()
    import jax.numpy as jnp
    return {
        'sharded': jax.device_put(
            jnp.arange(64, dtype=jnp.float32).reshape(8, 8),
            NS(mesh, P('x', 'y'))),
        'rows': jax.device_put(jnp.arange(24, dtype=jnp.int32).reshape(8, 3),
                               NS(mesh, P('x'))),
        'replicated': jax.device_put(jnp.linspace(0, 1, 8,
                                                  dtype=jnp.bfloat16),
                                     NS(mesh, P())),
        'single': jnp.ones((3,), jnp.float16),
    }


def sc_jax_restore_as_saved(ocp, t):
    with ocp.CheckpointManager(t.root()) as m:
        m.save(0, args=ocp.args.StandardSave(_jax_tree()))
        m.wait_until_finished()
        t.out('restored', m.restore(0, args=ocp.args.StandardRestore()))


def sc_jax_restore_into_shardings(ocp, t):
    jax, mesh, NS, P = _jax_mesh()
    import jax.numpy as jnp
    with ocp.CheckpointManager(t.root()) as m:
        m.save(0, args=ocp.args.StandardSave(_jax_tree()))
        m.wait_until_finished()
        sds = jax.ShapeDtypeStruct
        same = jax.tree.map(lambda a: sds(a.shape, a.dtype,
                                          sharding=a.sharding), _jax_tree())
        t.out('same layout', m.restore(0, args=ocp.args.StandardRestore(
            same)))
        other = {
            'sharded': sds((8, 8), jnp.float32, sharding=NS(mesh, P('y'))),
            'rows': sds((8, 3), jnp.int64 if jax.config.jax_enable_x64
                        else jnp.int32, sharding=NS(mesh, P())),
            'replicated': sds((8,), jnp.float32, sharding=NS(mesh, P('x'))),
            'single': sds((3,), jnp.float32, sharding=NS(mesh, P())),
        }
        t.out('resharded and cast', m.restore(
            0, args=ocp.args.StandardRestore(other)))
        arrays = {'sharded': jax.device_put(jnp.zeros((8, 8), jnp.float32),
                                            NS(mesh, P(None, 'x'))),
                  'rows': jnp.zeros((8, 3), jnp.int32),
                  'replicated': jax.device_put(jnp.zeros(8, jnp.bfloat16),
                                               NS(mesh, P('y'))),
                  'single': jnp.zeros(3, jnp.float16)}
        t.out('into arrays', m.restore(0, args=ocp.args.StandardRestore(
            arrays)))
        t.out('as numpy', m.restore(0, args=ocp.args.StandardRestore(
            {k: np.zeros(v.shape, v.dtype) for k, v in
             _jax_tree().items()})))


def sc_jax_float8(ocp, t):
    jax, mesh, NS, P = _jax_mesh()
    import jax.numpy as jnp
    tree = {'e4m3': jax.device_put(
        jnp.array([0.5, 1.0, -2.0, 448.0, 0, 1, 2, 3], jnp.float8_e4m3fn),
        NS(mesh, P('x'))),
        'e5m2': jnp.array([0.25, -1.5, 57344.0], jnp.float8_e5m2)}
    with ocp.CheckpointManager(t.root()) as m:
        m.save(0, args=ocp.args.StandardSave(tree))
        m.wait_until_finished()
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=a.sharding), tree)
        t.out('restored', m.restore(0, args=ocp.args.StandardRestore(
            target)))
        md = m.item_metadata(0)
        t.out('metadata', getattr(md, 'tree', md))


def sc_cleanup_tmp_directories(ocp, t):
    root = t.root()
    with ocp.CheckpointManager(root) as m:
        m.save(0, args=ocp.args.StandardSave(pytree()))
    for name in ('3.orbax-checkpoint-tmp-1234', '4.orbax-checkpoint-tmp'):
        os.makedirs(os.path.join(root, name, 'default'))
    with ocp.CheckpointManager(root, options=opts(
            ocp, cleanup_tmp_directories=False)) as m:
        t.out('steps', m.all_steps())
    t.out('kept', t.listdir(root))
    with ocp.CheckpointManager(root, options=opts(
            ocp, cleanup_tmp_directories=True)) as m:
        t.out('steps', m.all_steps())
        m.save(1, args=ocp.args.StandardSave(pytree()))
        m.wait_until_finished()
        t.out('steps', m.all_steps())
    t.out('after a save', t.listdir(root))


def sc_async_error_raised_once(ocp, t):
    """A save that fails after save() returned (its step name is taken by
    a file, so the commit fails): the error is raised once, by
    wait_until_finished, and the next save proceeds."""
    root = t.root()
    with ocp.CheckpointManager(root) as m:
        m.save(0, args=ocp.args.StandardSave(pytree()))
        m.wait_until_finished()
        with open(os.path.join(root, '1'), 'w') as f:
            f.write('in the way')
        t.raised('save 1', m.save, 1, args=ocp.args.StandardSave(pytree()))
        t.raised('wait', m.wait_until_finished)
        t.raised('wait again', m.wait_until_finished)
        t.raised('save 2', m.save, 2, args=ocp.args.StandardSave(pytree()))
        t.raised('wait', m.wait_until_finished)
        t.out('steps', sorted(m.all_steps()))

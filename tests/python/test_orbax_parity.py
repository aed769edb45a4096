"""Orbax 0.12 behaviours that Orbax code relies on (issue: Orbax parity).
Each test names the Orbax test or source it mirrors."""

import os
import threading

import numpy as np
import pytest


BIG = 1 << 24   # 16M float32 = 64 MiB: the save is still in flight


def _big_tree():
    return {'w': np.arange(BIG, dtype=np.float32), 'b': np.ones(3)}


def test_restore_right_after_async_save(ocp, tmp_path):
    # Orbax AsyncCheckpointer.restore/metadata wait_until_finished() first
    # (_src/checkpointers/async_checkpointer.py).
    tree = _big_tree()
    with ocp.CheckpointManager(str(tmp_path)) as m:
        assert m.save(0, args=ocp.args.StandardSave(tree))
        r = m.restore(0, args=ocp.args.StandardRestore(tree))
        np.testing.assert_array_equal(r['w'], tree['w'])
        assert m.save(1, args=ocp.args.StandardSave(tree))
        md = m.item_metadata(1)
        assert md['w'].shape == (BIG,)
        assert m.save(2, args=ocp.args.StandardSave(tree))
        smd = m.metadata(2)
        assert smd.item_handlers is not None
        assert m.save(3, args=ocp.args.StandardSave(tree))
        r = m.restore(None, args=ocp.args.StandardRestore(tree))
        assert m.latest_step() == 3


def test_step_metadata_has_item_metadata(ocp, tmp_path):
    # Orbax checkpoint_manager_test.py test_save_step_metadata: metadata(step)
    # is a StepMetadata whose item_metadata is filled.
    with ocp.CheckpointManager(str(tmp_path)) as m:
        m.save(0, args=ocp.args.StandardSave({'a': np.ones((2, 3))}))
        smd = m.metadata(0)
        assert isinstance(smd, ocp.StepMetadata)
        assert smd.item_metadata['default']['a'].shape == (2, 3)


def test_root_metadata_object_and_mapping(ocp, tmp_path):
    # Orbax test_root_metadata_save / test_metadata /
    # test_root_metadata_does_not_overwrite.
    with ocp.CheckpointManager(str(tmp_path), metadata={'state': 123}) as m:
        md = m.metadata()
        assert md == ocp.RootMetadata(custom_metadata={'state': 123})
        assert ocp.metadata.RootMetadata is ocp.RootMetadata
        assert ocp.metadata.StepMetadata is ocp.StepMetadata
        assert md.custom_metadata == {'state': 123}
        assert md == {'state': 123} and md['state'] == 123   # seed-era use
        assert dict(md) == {'state': 123}
    with ocp.CheckpointManager(str(tmp_path), metadata={'new': 456}) as m:
        assert m.metadata().custom_metadata == {'state': 123}


def test_empty_root_metadata(ocp, tmp_path):
    # Orbax test_empty_metadata.
    with ocp.CheckpointManager(str(tmp_path)) as m:
        assert m.metadata().custom_metadata == {}


def test_save_root_metadata_disabled(ocp, tmp_path):
    # Orbax test_save_root_metadata_disabled.
    O = ocp.CheckpointManagerOptions
    with ocp.CheckpointManager(str(tmp_path), options=O(
            save_root_metadata=False), metadata={'state': 123}) as m:
        assert m.metadata().custom_metadata == {}
    with ocp.CheckpointManager(str(tmp_path), options=O(
            save_root_metadata=True), metadata={'state': 123}) as m:
        assert m.metadata().custom_metadata == {'state': 123}


def test_read_only_root_metadata(ocp, tmp_path):
    # Orbax test_read_only_manager_does_not_save_root_metadata; and a
    # read-only manager reads the stored one, ignoring a new metadata=.
    O = ocp.CheckpointManagerOptions
    p = str(tmp_path)
    with ocp.CheckpointManager(p, options=O(read_only=True),
                               metadata={'state': 123}) as m:
        assert m.metadata().custom_metadata == {'state': 123}
    with ocp.CheckpointManager(p) as m:
        assert m.metadata().custom_metadata == {}
    with ocp.CheckpointManager(p, metadata={'state': 1}) as m:
        pass
    with ocp.CheckpointManager(p, options=O(read_only=True),
                               metadata={'state': 2}) as m:
        assert m.metadata().custom_metadata == {'state': 1}


def test_save_interval_steps_zero(ocp, tmp_path):
    # Orbax CheckpointManagerOptions.__post_init__: read_only sets
    # save_interval_steps=0; 0 is a valid setting.
    O = ocp.CheckpointManagerOptions
    assert O(read_only=True).save_interval_steps == 0
    with ocp.CheckpointManager(str(tmp_path), options=O(
            save_interval_steps=0)) as m:
        saved = [m.save(s, args=ocp.args.StandardSave({'s': s}))
                 for s in range(4)]
        m.wait_until_finished()
        assert saved == [True, False, False, False]   # InitialSavePolicy
        assert m.all_steps() == [0]


def test_unsupported_scheme(ocp, tmp_path):
    # ckpt serves local directories and s3:// roots: gs://... must not
    # become ./gs:/..., and s3://... goes to the daemon as it is, which
    # answers (this test's daemon has no S3 credentials nor grants).
    cwd = os.getcwd()
    os.chdir(str(tmp_path))
    try:
        with pytest.raises(ValueError, match=r'"gs://"'):
            ocp.CheckpointManager('gs://bucket/run')
        with pytest.raises(PermissionError, match=r's3'):
            ocp.CheckpointManager('s3://bucket/run')
        assert not os.path.exists('gs:')
        assert not os.path.exists('s3:')
    finally:
        os.chdir(cwd)
    with ocp.CheckpointManager('file://' + str(tmp_path / 'f')) as m:
        assert str(m.directory) == str(tmp_path / 'f')


def test_unsupported_options_raise(ocp, tmp_path):
    O = ocp.CheckpointManagerOptions
    MP = ocp.options.MultiprocessingOptions
    O(multiprocessing_options=MP())            # the default is fine
    O(multiprocessing_options=MP(primary_host=0))
    with pytest.raises(NotImplementedError):
        O(multiprocessing_options=MP(primary_host=None))
    O(multiprocessing_options=MP(active_processes={0, 1}))  # distributed
    for bad in (dict(temporary_path_class=object),
                dict(atomicity_options=object()),
                dict(enable_per_process_directory_creation=True),
                dict(single_host_load_and_broadcast=True)):
        with pytest.raises(NotImplementedError):
            O(**bad)
    O(num_deletion_threads=4, lightweight_initialize=True)   # hints
    tree = {'a': np.ones(3)}
    with ocp.CheckpointManager(str(tmp_path)) as m:
        m.save(0, args=ocp.args.StandardSave(tree))
        with pytest.raises(NotImplementedError):
            m.restore(0, args=ocp.args.PyTreeRestore(
                tree, transforms={}))
        with pytest.raises(NotImplementedError):
            m.restore(0, args=ocp.args.StandardRestore(tree, strict=False))


def test_post_finalization_callback(ocp, tmp_path):
    # Orbax async_checkpointer.py: post_finalization_callback() runs in the
    # background once each save is finalized.
    calls = []
    seen_steps = []

    def cb():
        calls.append(threading.current_thread().name)

    O = ocp.CheckpointManagerOptions
    with ocp.CheckpointManager(str(tmp_path), options=O(
            async_options=ocp.options.AsyncOptions(
                post_finalization_callback=cb))) as m:
        for s in range(3):
            m.save(s, args=ocp.args.StandardSave(_big_tree() if s == 0
                                                 else {'s': s}))
            seen_steps.append(len(calls))
        m.wait_until_finished()
        assert len(calls) == 3
        assert seen_steps[0] == 0      # not before the first save finished
        assert threading.current_thread().name not in calls
    # Orbax CheckpointManager.__init__: only with an async checkpointer.
    with pytest.raises(ValueError, match='post_finalization_callback is only '
                       'supported with AsyncCheckpointer'):
        O(enable_async_checkpointing=False,
          async_options=ocp.options.AsyncOptions(
              post_finalization_callback=cb))


def test_post_finalization_callback_not_after_failure(ocp, tmp_path):
    import shutil
    calls = []
    root = str(tmp_path / 'r')
    m = ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(
        async_options=ocp.options.AsyncOptions(
            post_finalization_callback=lambda: calls.append(1))))
    m.save(0, args=ocp.args.StandardSave({'a': 1}))
    m.wait_until_finished()
    assert calls == [1]
    shutil.rmtree(root)
    m.save(1, args=ocp.args.StandardSave({'a': 1}))
    with pytest.raises(OSError):
        m.wait_until_finished()
    assert calls == [1]
    m.close()


def test_args_mismatch_item_handlers(ocp, tmp_path):
    # Orbax test_checkpoint_args_mismatch_item_handlers.
    tree = {'a': np.ones(3)}
    with ocp.CheckpointManager(
            str(tmp_path / 'a'),
            item_handlers=ocp.PyTreeCheckpointHandler()) as m:
        with pytest.raises(ValueError, match='does not match with any '
                           'registered handler'):
            m.save(0, args=ocp.args.StandardSave(tree))
    with ocp.CheckpointManager(
            str(tmp_path / 'b'),
            item_handlers={'params': ocp.PyTreeCheckpointHandler()}) as m:
        with pytest.raises(ValueError, match='does not match with any '
                           'registered handler'):
            m.save(0, args=ocp.args.Composite(
                params=ocp.args.StandardSave(tree)))


def test_save_invalid_item(ocp, tmp_path):
    # Orbax test_save_restore_invalid_item: an item outside item_names.
    with ocp.CheckpointManager(str(tmp_path), item_names=('params',)) as m:
        with pytest.raises(ValueError, match='does not match with any '
                           'registered handler'):
            m.save(0, args=ocp.args.Composite(
                invalid=ocp.args.PyTreeSave({'a': np.ones(2)})))
        m.save(0, args=ocp.args.Composite(
            params=ocp.args.PyTreeSave({'a': np.ones(2)})))
        with pytest.raises(FileNotFoundError):
            m.restore(0, args=ocp.args.Composite(
                invalid=ocp.args.PyTreeRestore({'a': np.ones(2)})))


def test_composite_none_args(ocp, tmp_path):
    # Orbax composite_checkpoint_handler.py _get_or_set_handler.
    p = str(tmp_path)
    with ocp.CheckpointManager(p, item_names=('state', 'meta')) as m:
        with pytest.raises(ValueError, match='Provided `None` for '
                           '`CheckpointArgs`, and the `CheckpointHandler` '
                           'for item "meta" was not configured'):
            m.save(0, args=ocp.args.Composite(
                state=ocp.args.StandardSave({'a': np.ones(2)}), meta=None))
        m.save(0, args=ocp.args.Composite(
            state=ocp.args.StandardSave({'a': np.ones(2)}),
            meta=ocp.args.JsonSave({'x': 1})))
    with ocp.CheckpointManager(p, item_names=('state', 'meta')) as m:
        with pytest.raises(ValueError, match='Provided `None` for '
                           '`CheckpointArgs`'):
            m.restore(0, args=ocp.args.Composite(state=None))
        r = m.restore(0, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))
        assert r.meta == {'x': 1}
        # Once configured, None restores with the known handler.
        r = m.restore(0, args=ocp.args.Composite(meta=None))
        assert r.meta == {'x': 1}


def test_metrics_item_written_for_orbax(ocp, tmp_path):
    # Orbax checkpoint_manager.py save(): metrics go to the `metrics` item
    # (JsonSave) -> <step>/metrics/metrics, read back by _get_metrics().
    import json
    p = str(tmp_path)
    O = ocp.CheckpointManagerOptions
    with ocp.CheckpointManager(p, options=O(
            best_fn=lambda m: m['loss'], best_mode='min')) as m:
        m.save(0, args=ocp.args.StandardSave({'a': 1}),
               metrics={'loss': 0.5, 'acc': 0.9})
        m.wait_until_finished()
        assert m.metrics(0) == {'loss': 0.5, 'acc': 0.9}
    with open(os.path.join(p, '0', 'metrics', 'metrics')) as f:
        assert json.load(f) == {'loss': 0.5, 'acc': 0.9}
    with open(os.path.join(p, '0', '_CHECKPOINT_METADATA')) as f:
        assert json.load(f)['metrics']['loss'] == 0.5
    # prevent_write_metrics: nothing written, still ranked in memory
    # (Orbax keeps CheckpointInfo.metrics).
    q = str(tmp_path / 'nowrite')
    with ocp.CheckpointManager(q, options=O(
            best_fn=lambda m: m['loss'], best_mode='min', max_to_keep=2,
            prevent_write_metrics=True)) as m:
        for s, loss in enumerate([0.3, 0.1, 0.5, 0.2]):
            m.save(s, args=ocp.args.StandardSave({'a': s}),
                   metrics={'loss': loss})
            m.wait_until_finished()
        assert m.all_steps() == [1, 3]
        assert m.best_step() == 1
    assert not os.path.exists(os.path.join(q, '1', 'metrics'))


def test_orbax_written_metrics_rank(ocp, tmp_path):
    # A root written by Orbax: its steps carry <step>/metrics/metrics only.
    # Orbax's best_fn ranking (test_save_best) must hold over them.
    import json
    import shutil
    a = str(tmp_path / 'a')
    b = str(tmp_path / 'b')
    with ocp.CheckpointManager(a) as m:
        for s in range(4):
            m.save(s, args=ocp.args.StandardSave({'a': s}))
        m.wait_until_finished()
    os.makedirs(b)
    losses = {0: 0.4, 1: 0.1, 2: 0.3, 3: 0.5}
    for s, loss in losses.items():
        shutil.copytree(os.path.join(a, str(s)), os.path.join(b, str(s)))
        os.makedirs(os.path.join(b, str(s), 'metrics'))
        with open(os.path.join(b, str(s), 'metrics', 'metrics'), 'w') as f:
            json.dump({'loss': loss}, f)
    O = ocp.CheckpointManagerOptions
    with ocp.CheckpointManager(b, options=O(
            best_fn=lambda m: m['loss'], best_mode='min',
            max_to_keep=2)) as m:
        assert m.metrics(1) == {'loss': 0.1}
        assert m.metadata(1).metrics == {'loss': 0.1}
        assert m.best_step() == 1
        m.save(4, args=ocp.args.StandardSave({'a': 4}),
               metrics={'loss': 0.2})
        m.wait_until_finished()
        assert m.all_steps() == [1, 4]
        assert m.best_step() == 1


class _PrivateDaemon:
    """A ckptd of this test only: preempting it must not touch the
    daemon the other tests share."""

    def __init__(self, base, *extra):
        import subprocess
        from conftest import ckptd_bin, wait_for_socket
        self.sock = os.path.join(base, 'p.sock')
        self.log = open(os.path.join(base, 'p.log'), 'wb')
        self.proc = subprocess.Popen(
            [ckptd_bin(), '--socket', self.sock, '--state-dir',
             os.path.join(base, 'pstate'), '--foreground'] + list(extra),
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_socket(self.sock, self.proc)

    def stop(self):
        import signal
        import subprocess
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _poll(fn, secs=10.0):
    import time
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if fn():
            return True
        time.sleep(0.05)
    return fn()


def test_preemption_on_sigterm(ocp, tmp_path):
    # Orbax checkpoint_manager_test.py test_save_on_preemption: once the
    # preemption sync point is reached, should_save is True at that step
    # (PreemptionCheckpointingPolicy) and the save is taken.
    import signal
    d = _PrivateDaemon(str(tmp_path), '--preempt-grace', '30')
    try:
        root = str(tmp_path / 'run')
        m = ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(
            save_interval_steps=10), socket_path=d.sock)
        m.save(0, args=ocp.args.StandardSave({'a': 0}))
        m.wait_until_finished()
        assert not m.reached_preemption(5)
        assert not m.should_save(5)
        d.proc.send_signal(signal.SIGTERM)     # systemd shutdown
        assert _poll(lambda: m.reached_preemption(5))
        assert d.proc.poll() is None            # up for the grace period
        assert m.should_save(5)
        assert m.save(5, args=ocp.args.StandardSave({'a': 5}))
        m.wait_until_finished()
        assert m.reached_preemption(5)          # still: the loop can stop
        assert not m.should_save(6)             # one preemption save
        assert m.all_steps() == [0, 5]
        m.close()
        d.proc.wait(15)                        # the last manager closed
        assert d.proc.returncode == 0
    finally:
        d.stop()
    assert os.path.isdir(os.path.join(root, '5'))


def test_preemption_announced(ocp, tmp_path):
    # `ckptctl preempt` (a cloud preemption notice): the daemon stays up.
    import ctypes
    from ckpt import _lib as L
    d = _PrivateDaemon(str(tmp_path))
    try:
        O = ocp.CheckpointManagerOptions
        m = ocp.CheckpointManager(str(tmp_path / 'run'), options=O(
            save_interval_steps=100), socket_path=d.sock)
        m2 = ocp.CheckpointManager(str(tmp_path / 'other'), options=O(
            save_interval_steps=100), socket_path=d.sock)
        m.save(0, args=ocp.args.StandardSave({'a': 0}))
        assert not m.save(7, args=ocp.args.StandardSave({'a': 7}))
        lib = L.lib()
        c = ctypes.c_void_p()
        assert lib.ckpt_connect(d.sock.encode(), ctypes.byref(c)) == 0
        try:
            assert lib.ckpt_preempt(c) == 0
        finally:
            lib.ckpt_disconnect(c)
        # every open manager is told
        assert m.reached_preemption(8) and m2.reached_preemption(8)
        assert m.save(8, args=ocp.args.StandardSave({'a': 8}))
        assert not m.save(9, args=ocp.args.StandardSave({'a': 9}))
        m.wait_until_finished()
        assert m.all_steps() == [0, 8]
        assert m2.save(3, args=ocp.args.StandardSave({'a': 3}))
        m.close()
        m2.close()
        assert d.proc.poll() is None
    finally:
        d.stop()


def test_read_only_root_that_does_not_exist(ocp, tmp_path):
    # Orbax: read_only sets create=False; _load_checkpoint_infos returns []
    # for a missing directory; restore raises "No steps found".
    p = str(tmp_path / 'later')
    m = ocp.CheckpointManager(p, options=ocp.CheckpointManagerOptions(
        read_only=True), metadata={'x': 1})
    assert not os.path.exists(p)
    assert m.all_steps() == [] and m.latest_step() is None
    assert m.best_step() is None and not m.should_save(0)
    assert m.metadata().custom_metadata == {'x': 1}
    assert not m.save(0, args=ocp.args.StandardSave({'a': 1}))
    with pytest.raises(FileNotFoundError, match='No steps found in'):
        m.restore()
    with pytest.raises(FileNotFoundError, match='not found'):
        m.restore(3)
    m.wait_until_finished()
    with ocp.CheckpointManager(p) as w:
        w.save(2, args=ocp.args.StandardSave({'a': 2}))
    m.reload()
    assert m.all_steps() == [2]
    assert m.restore(2, args=ocp.args.StandardRestore())['a'] == 2
    m.close()


def test_read_only_missing_root_messages(ocp, tmp_path):
    # The daemon answers for a read-only manager on a missing root: the
    # step named by the manager's naming, the texts of an empty root.
    p = str(tmp_path / 'none')
    m = ocp.CheckpointManager(p, options=ocp.CheckpointManagerOptions(
        read_only=True, step_prefix='ck', step_format_fixed_length=3))
    want = 'Checkpoint at %s/ck_003 not found.' % p
    for call in (lambda: m.restore(3), lambda: m.metadata(3),
                 lambda: m.item_metadata(3)):
        with pytest.raises(FileNotFoundError) as e:
            call()
        assert str(e.value) == want
    with pytest.raises(FileNotFoundError) as e:
        m.restore()
    assert str(e.value) == 'No steps found in %s.' % p
    assert m.metadata().custom_metadata == {}
    assert not m.is_saving_in_progress() and not m.reached_preemption(1)
    m.reload()
    assert m.all_steps() == [] and not os.path.exists(p)
    m.close()
    with pytest.raises(ValueError, match='closed'):
        m.all_steps()


def test_orbax_error_texts(ocp, tmp_path):
    # Orbax checkpoint_manager.py: CheckpointManagerOptions.__post_init__,
    # CheckpointManager.__init__ and _validate_args, word for word.
    O = ocp.CheckpointManagerOptions
    cmp = ocp.checkpoint_managers
    with pytest.raises(ValueError) as e:
        O(best_mode='median')
    assert str(e.value) == ("`CheckpointManagerOptions.best_mode` must be "
                            "one of None, 'min' or 'max'. Got median.")
    with pytest.raises(ValueError) as e:
        O(max_to_keep=-1)
    assert str(e.value) == ('Setting of `max_to_keep` must be None or '
                            'non-negative.')
    with pytest.raises(ValueError) as e:
        O(max_to_keep=2, preservation_policy=cmp.LatestN(2))
    assert str(e.value) == ('`preservation_policy` and `delete options` are '
                            'mutually exclusive - do not use together.')
    with pytest.raises(ValueError) as e:
        ocp.CheckpointManager(str(tmp_path), item_names=('a',),
                              item_handlers=ocp.StandardCheckpointHandler())
    assert str(e.value) == ('`item_handlers` in default item mode and '
                            '`item_names` should not be provided together.')
    with ocp.CheckpointManager(str(tmp_path)) as m:
        with pytest.raises(ValueError, match='Found an instance of '
                           '`CheckpointArgs` provided for `items`'):
            m.save(0, ocp.args.StandardSave({'a': 1}))
        with pytest.raises(ValueError, match='Expected args of type '
                           '`CheckpointArgs`; found <class \'dict\'>'):
            m.save(0, args={'a': 1})
        with pytest.raises(ValueError, match='Expected args of type '
                           '`CheckpointArgs`'):
            m.restore(0, args={'a': 1})

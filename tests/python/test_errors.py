"""Bad arguments: Orbax's exception types and messages; nothing on disk."""

import os

import numpy as np
import pytest


def listing(p):
    out = []
    for root, dirs, files in os.walk(p):
        out += [os.path.relpath(os.path.join(root, x), p) for x in dirs + files]
    return sorted(out)


@pytest.fixture
def m(ocp, tmp_path):
    mg = ocp.CheckpointManager(str(tmp_path))
    yield mg
    mg.close()


def test_no_steps(ocp, m, tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        m.restore()
    assert str(ei.value) == f'No steps found in {tmp_path}.'


def test_missing_step(ocp, m, tmp_path):
    m.save(1, args=ocp.args.StandardSave({'a': 1}))
    m.wait_until_finished()
    with pytest.raises(FileNotFoundError) as ei:
        m.restore(2)
    assert str(ei.value) == f'Checkpoint at {tmp_path}/2 not found.'


def test_step_exists(ocp, m):
    m.save(1, args=ocp.args.StandardSave({'a': 1}))
    m.wait_until_finished()
    assert not m.save(1, args=ocp.args.StandardSave({'a': 2}))
    with pytest.raises(ocp.StepAlreadyExistsError) as ei:
        m.save(1, args=ocp.args.StandardSave({'a': 2}), force=True)
    assert isinstance(ei.value, ValueError)
    assert str(ei.value) == 'Checkpoint for step 1 already exists.'


@pytest.mark.parametrize('bad,exc', [
    ({'a': np.array([object(), 1], dtype=object)}, TypeError),
    ({'a': object()}, TypeError),
    ({'a': 1 << 70}, ValueError),
    ({'a': np.zeros(2, np.complex64)}, TypeError),
    ({1: 2}, TypeError),
])
def test_unsupported_leaves_leave_nothing(ocp, m, tmp_path, bad, exc):
    with pytest.raises(exc):
        m.save(0, args=ocp.args.StandardSave(bad))
    m.wait_until_finished()
    assert listing(str(tmp_path)) == []
    assert m.all_steps() == []


def test_messages(ocp, m, tmp_path):
    with pytest.raises(ValueError) as ei:
        m.save(0)
    assert str(ei.value) == 'Must provide `args` for `save`.'
    with pytest.raises(ValueError) as ei:
        m.save(0, args=ocp.args.StandardSave({}))
    assert str(ei.value) == 'Found empty item.'
    with pytest.raises(ValueError):
        m.save(0, args=ocp.args.StandardSave(np.ones(3)))
    with pytest.raises(ValueError) as ei:
        m.save(0, {'a': 1})        # positional: legacy API
    assert 'args=' in str(ei.value)
    m.save(0, args=ocp.args.StandardSave({'a': 1}))
    with pytest.raises(ValueError) as ei:
        m.save(1, args=ocp.args.Composite(x=ocp.args.StandardSave({'a': 1})))
    assert str(ei.value) == ('Cannot provide `args` of type `Composite` when '
                             'dealing with a single, unnamed (default) '
                             'checkpointable object.')
    m.wait_until_finished()
    assert m.all_steps() == [0]


def test_multi_requires_composite(ocp, tmp_path):
    with ocp.CheckpointManager(str(tmp_path), item_names=('a', 'b')) as m:
        with pytest.raises(ValueError) as ei:
            m.save(0, args=ocp.args.StandardSave({'a': 1}))
        assert str(ei.value) == ('Must provide `args` of type `Composite` '
                                 'when dealing with multiple checkpointable '
                                 'objects.')
        assert m.all_steps() == []


def test_missing_item_keyerror(ocp, tmp_path):
    with ocp.CheckpointManager(str(tmp_path)) as m:
        m.save(0, args=ocp.args.Composite(a=ocp.args.JsonSave({'x': 1})))
        m.wait_until_finished()
        with pytest.raises(KeyError) as ei:
            m.restore(0, args=ocp.args.Composite(b=ocp.args.JsonRestore()))
        assert ei.value.args[0] == ('Item "b" was not found in the '
                                    "checkpoint. Available items: ['a']")


def test_unknown_step_delete(ocp, m):
    with pytest.raises(FileNotFoundError) as ei:
        m.delete(3)
    assert str(ei.value) == 'Requested deleting a non-existent step: 3.'


def test_incomplete_step(ocp, m, tmp_path):
    os.makedirs(os.path.join(str(tmp_path), '4.ckptd-tmp', 'default'))
    m.reload()
    assert m.all_steps() == []
    with pytest.raises((FileNotFoundError, ValueError)):
        m.restore(4)


def test_permission_denied(ocp, tmp_path):
    if os.geteuid() == 0:
        # root bypasses modes; use a path under a file instead
        p = os.path.join(str(tmp_path), 'file')
        open(p, 'w').close()
        with pytest.raises(OSError):
            ocp.CheckpointManager(os.path.join(p, 'x'))
        return
    ro = os.path.join(str(tmp_path), 'ro')
    os.makedirs(ro)
    os.chmod(ro, 0o500)
    try:
        with pytest.raises(PermissionError):
            ocp.CheckpointManager(os.path.join(ro, 'x'))
    finally:
        os.chmod(ro, 0o700)


def test_create_false_missing_root(ocp, tmp_path):
    with pytest.raises(FileNotFoundError):
        ocp.CheckpointManager(os.path.join(str(tmp_path), 'nope'),
                              options=ocp.CheckpointManagerOptions(
                                  create=False))


def test_shape_dtype_mismatch_messages(ocp, m):
    m.save(0, args=ocp.args.StandardSave({'a': np.ones((2, 2))}))
    m.wait_until_finished()
    with pytest.raises(ValueError) as ei:
        m.restore(0, args=ocp.args.StandardRestore({'a': np.ones((4,))}))
    assert 'a' in str(ei.value) and '(2, 2)' in str(ei.value)


def _block_step(root, step):
    """A regular file where the step's directory goes: its save is accepted
    and then fails at commit with StepAlreadyExistsError, a ValueError
    (ckptd never removes a file it did not create). A manager's root is the directory it opened, so deleting the
    root would not do: that manager's later saves would fail too."""
    path = os.path.join(root, str(step))
    with open(path, 'w') as f:
        f.write('in the way\n')
    return path


def test_failed_async_save_is_reported(ocp, tmp_path):
    # Orbax checkpoint_manager.py _FinalizeThread.join: "Each thread should
    # only raise once"; the thread's next save then proceeds.
    import shutil
    import threading
    root = str(tmp_path / 'r')
    m = ocp.CheckpointManager(root)
    m.save(1, args=ocp.args.StandardSave({'a': np.ones(3)}))
    m.wait_until_finished()
    blocker = _block_step(root, 2)   # the next save cannot be committed
    assert m.save(2, args=ocp.args.StandardSave({'a': np.ones(3)}))
    with pytest.raises(ValueError) as e1:
        m.wait_until_finished()
    assert 'step 2' in str(e1.value)
    m.wait_until_finished()       # raised once in this thread
    m.check_for_errors()
    seen = []

    def other():
        try:
            m.wait_until_finished()
            seen.append(None)
        except ValueError as e:
            seen.append(str(e))
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [str(e1.value)]   # another thread is told too
    os.remove(blocker)
    assert m.save(3, args=ocp.args.StandardSave({'a': np.ones(3)}))
    m.wait_until_finished()
    steps = m.all_steps()
    assert 3 in steps and 2 not in steps
    m.close()


def test_failed_async_save_raised_by_next_save_once(ocp, tmp_path):
    # Orbax: save() first waits for the previous finalize thread (join),
    # which raises its error once in this thread.
    import shutil
    root = str(tmp_path / 'r')
    m = ocp.CheckpointManager(root)
    m.save(1, args=ocp.args.StandardSave({'a': np.ones(3)}))
    m.wait_until_finished()
    blocker = _block_step(root, 2)
    assert m.save(2, args=ocp.args.StandardSave({'a': np.ones(3)}))
    with pytest.raises(ValueError) as e1:
        m.save(3, args=ocp.args.StandardSave({'a': np.ones(3)}))
    assert 'step 2' in str(e1.value)
    os.remove(blocker)
    assert m.save(3, args=ocp.args.StandardSave({'a': np.ones(3)}))
    m.wait_until_finished()
    steps = m.all_steps()
    assert 3 in steps and 2 not in steps
    m.close()


def _flip_data_byte(step_dir):
    """Flip one byte in the middle of the first tensor's data."""
    import json
    import struct
    path = os.path.join(step_dir, 'default', 'data-00000.safetensors')
    with open(path, 'r+b') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        begin, end = next(v['data_offsets'] for k, v in header.items()
                          if not k.startswith('__'))
        pos = 8 + n + (begin + end) // 2
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))


def test_corruption_is_reported_by_name(ocp, tmp_path):
    w = np.arange(4096, dtype=np.float32)
    with ocp.CheckpointManager(str(tmp_path)) as mg:
        mg.save(1, args=ocp.args.StandardSave({'params': {'w': w}}))
        mg.wait_until_finished()
    _flip_data_byte(os.path.join(str(tmp_path), '1'))
    with ocp.CheckpointManager(str(tmp_path)) as mg:
        target = {'params': {'w': np.zeros_like(w)}}
        # Copies (the default) are verified, with or without a target.
        for args in (ocp.args.StandardRestore(target),
                     ocp.args.StandardRestore()):
            with pytest.raises(OSError) as ei:
                mg.restore(1, args=args)
            assert 'checksum mismatch' in str(ei.value)
            assert 'params' in str(ei.value) and 'w' in str(ei.value)
        # Zero-copy views are not read at restore time; verify() finds it.
        view = mg.restore(1, args=ocp.args.StandardRestore(zero_copy=True))
        assert not np.array_equal(view['params']['w'], w)
        problems = mg.verify(1)
        assert len(problems) == 1 and 'w' in problems[0]


def test_skipped_step_does_not_raise_pending_error(ocp, tmp_path):
    # Orbax save(): `if not force and not self.should_save(step): return
    # False` comes before wait_until_finished(), which raises.
    import shutil
    root = str(tmp_path / 'r')
    m = ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(
        save_interval_steps=2))
    m.save(0, args=ocp.args.StandardSave({'a': 0}))
    m.wait_until_finished()
    blocker = _block_step(root, 2)
    assert m.save(2, args=ocp.args.StandardSave({'a': 2}))
    assert not m.save(3, args=ocp.args.StandardSave({'a': 3}))
    with pytest.raises(ValueError) as ei:
        m.save(4, args=ocp.args.StandardSave({'a': 4}))
    assert 'step 2' in str(ei.value)
    os.remove(blocker)
    assert m.save(4, args=ocp.args.StandardSave({'a': 4}))
    m.wait_until_finished()
    assert 4 in m.all_steps()
    m.close()


def test_missing_item(ocp, tmp_path):
    # The daemon names the item and the items it found (Orbax's text);
    # both of Orbax's exception types catch it.
    with ocp.CheckpointManager(str(tmp_path)) as mg:
        mg.save(1, args=ocp.args.Composite(
            a=ocp.args.StandardSave({'x': 1}),
            b=ocp.args.JsonSave({'y': 2})))
        mg.wait_until_finished()
        with pytest.raises(ocp.errors.ItemNotFoundError) as ei:
            mg.restore(1, args=ocp.args.Composite(
                c=ocp.args.StandardRestore()))
    assert isinstance(ei.value, FileNotFoundError)
    assert isinstance(ei.value, KeyError)
    assert ei.value.args[0] == ('Item "c" was not found in the checkpoint. '
                                "Available items: ['a', 'b']")


def test_latest_of_another_root_in_its_naming(ocp, tmp_path):
    # restore(None, directory=...) takes the latest step of the other root
    # as the daemon finds it with this manager's naming; Python reads
    # nothing on disk itself (no listdir of the root or the step).
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    opts = ocp.CheckpointManagerOptions(step_prefix='ck',
                                        step_format_fixed_length=4)
    with ocp.CheckpointManager(a, options=opts) as mg:
        for s in (3, 12):
            mg.save(s, args=ocp.args.StandardSave({'s': np.array(s)}))
        mg.wait_until_finished()
    assert sorted(os.listdir(a)) == ['ck_0003', 'ck_0012']
    real_listdir = os.listdir
    with ocp.CheckpointManager(b, options=opts) as mg:
        def no_listdir(p='.'):
            raise AssertionError('Python listed %s' % p)
        os.listdir = no_listdir
        try:
            r = mg.restore(None, directory=a,
                           args=ocp.args.StandardRestore())
            with pytest.raises(FileNotFoundError) as ei:
                mg.restore(5, directory=a, args=ocp.args.StandardRestore())
        finally:
            os.listdir = real_listdir
    assert int(r['s']) == 12
    assert str(ei.value) == f'Checkpoint at {a}/ck_0005 not found.'


# Item names are judged by the daemon (one rule for saves, item_names and
# restores); the package passes them on and raises with its message.
@pytest.mark.parametrize('names,msg', [
    (('a', 'b/c'), 'invalid item name "b/c"'),
    (('a', '.hidden'), "must not start with '.'"),
    (('a', ''), 'item name is empty'),
])
def test_bad_item_names_are_the_daemons(ocp, m, tmp_path, names, msg):
    with pytest.raises(ValueError, match=msg.replace('.', r'\.')):
        m.save(0, args=ocp.args.Composite(**{
            n: ocp.args.StandardSave({'x': 1}) for n in names}))
    m.wait_until_finished()
    assert listing(str(tmp_path)) == []


def test_bad_item_names_at_open(ocp, tmp_path):
    with pytest.raises(ValueError, match='invalid item name "b/c"'):
        ocp.CheckpointManager(str(tmp_path), item_names=('a', 'b/c'))
    with pytest.raises(ValueError, match='Invalid item name'):
        ocp.CheckpointManager(str(tmp_path), item_names=('a', 'b\0c'))


def test_metrics_item_name(ocp, tmp_path):
    # Orbax writes the step's metrics as the item "metrics": the name is
    # taken only when metrics are saved with the step.
    opts = ocp.CheckpointManagerOptions(best_fn=lambda m: m['loss'])
    with ocp.CheckpointManager(str(tmp_path / 'm'), options=opts) as mg:
        with pytest.raises(ValueError) as ei:
            mg.save(0, args=ocp.args.Composite(
                metrics=ocp.args.StandardSave({'x': 1})),
                metrics={'loss': 1.0})
        assert str(ei.value) == ('Item name "metrics" is reserved; please '
                                 'use a different name.')
        assert mg.all_steps() == []
    with ocp.CheckpointManager(str(tmp_path / 'n')) as mg:
        mg.save(0, args=ocp.args.Composite(
            metrics=ocp.args.StandardSave({'x': 1})))
        mg.wait_until_finished()
        assert mg.all_steps() == [0]

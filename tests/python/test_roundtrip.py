"""Trees, dtypes, targets and metadata through a real daemon."""

import os

import numpy as np
import pytest

INT_DTYPES = ['int8', 'int16', 'int32', 'int64',
              'uint8', 'uint16', 'uint32', 'uint64']


def mgr(ocp, path, **kw):
    return ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(
        **kw.pop('opts', {})), **kw)


@pytest.mark.parametrize('dtype', INT_DTYPES + ['float16', 'float32',
                                                'float64', 'bool'])
def test_dtype_roundtrip(ocp, tmp_path, dtype):
    rng = np.random.default_rng(0)
    if dtype == 'bool':
        a = rng.integers(0, 2, size=(3, 5)).astype(bool)
    elif dtype.startswith('float'):
        a = rng.standard_normal((3, 5)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        a = np.array([[info.min, info.max, 0, 1, 7]] * 3, dtype=dtype)
    tree = {'x': a, 'zero_d': np.array(a.flat[1]), 'empty': np.zeros(
        (0, 4), dtype=dtype)}
    with mgr(ocp, str(tmp_path)) as m:
        assert m.save(1, args=ocp.args.StandardSave(tree))
        m.wait_until_finished()
        r = m.restore(1, args=ocp.args.StandardRestore(tree))
    for k in tree:
        assert isinstance(r[k], np.ndarray)
        assert r[k].dtype == np.dtype(dtype), k
        assert r[k].shape == tree[k].shape, k
        np.testing.assert_array_equal(r[k], tree[k])
        assert r[k].flags.owndata or r[k].base is not None
        assert r[k].flags.writeable


def test_python_and_numpy_scalars(ocp, tmp_path):
    tree = {'i': 3, 'f': 2.5, 'b': True, 's': 'hello', 'n': None,
            'np_i32': np.int32(-7), 'np_f16': np.float16(1.5),
            'np_b': np.bool_(False), 'big': -(1 << 63),
            'nested': {'l': [1, 2.0, 'x'], 't': (np.arange(3), {}),
                       'e': [], 'et': ()}}
    with mgr(ocp, str(tmp_path)) as m:
        m.save(0, args=ocp.args.StandardSave(tree))
        m.wait_until_finished()
        r = m.restore(0)
    assert r['i'] == 3 and type(r['i']) is int
    assert r['f'] == 2.5 and type(r['f']) is float
    assert r['b'] is True
    assert r['s'] == 'hello'
    assert r['n'] is None
    assert r['big'] == -(1 << 63)
    assert isinstance(r['np_i32'], np.int32) and r['np_i32'] == -7
    assert isinstance(r['np_f16'], np.float16) and r['np_f16'] == 1.5
    assert isinstance(r['np_b'], np.bool_) and not r['np_b']
    assert r['nested']['l'] == [1, 2.0, 'x']
    assert isinstance(r['nested']['t'], tuple)
    np.testing.assert_array_equal(r['nested']['t'][0], np.arange(3))
    assert r['nested']['t'][1] == {}
    assert r['nested']['e'] == [] and r['nested']['et'] == ()


def test_item_metadata(ocp, tmp_path):
    tree = {'w': np.ones((2, 3), np.float32), 'i': 1, 'f': 1.0, 'b': False,
            'ns': np.int16(3)}
    with mgr(ocp, str(tmp_path)) as m:
        m.save(5, args=ocp.args.StandardSave(tree))
        m.wait_until_finished()
        meta = m.item_metadata(5)
    d = ocp.PosixGPath(os.path.join(str(tmp_path), '5', 'default'))
    assert meta['w'] == ocp.ArrayMetadata(name='w', directory=d, shape=(2, 3),
                                          sharding=None,
                                          dtype=np.dtype('float32'))
    assert meta['i'] == ocp.ScalarMetadata(name='i', directory=d, shape=(),
                                           sharding=None,
                                           dtype=np.dtype('int64'))
    assert meta['f'].dtype == np.dtype('float64')
    assert meta['b'].dtype == np.dtype('bool')
    assert isinstance(meta['ns'], ocp.ScalarMetadata)
    assert meta['ns'].dtype == np.dtype('int16')


def test_target_casts_and_checks_shapes(ocp, tmp_path):
    tree = {'a': np.arange(6, dtype=np.float64).reshape(2, 3), 'b': 4}
    with mgr(ocp, str(tmp_path)) as m:
        m.save(0, args=ocp.args.StandardSave(tree))
        m.wait_until_finished()
        tgt = {'a': np.empty((2, 3), np.float32), 'b': 0}
        r = m.restore(0, args=ocp.args.StandardRestore(tgt))
        assert r['a'].dtype == np.float32
        np.testing.assert_array_equal(r['a'], tree['a'].astype(np.float32))
        assert r['b'] == 4

        class SDS:  # a ShapeDtypeStruct-like abstract leaf
            def __init__(self, shape, dtype):
                self.shape, self.dtype = shape, dtype
        r = m.restore(0, args=ocp.args.StandardRestore(
            {'a': SDS((2, 3), np.int32), 'b': SDS((), np.float32)}))
        assert r['a'].dtype == np.int32 and r['b'].dtype == np.float32
        assert float(r['b']) == 4.0
        with pytest.raises(ValueError):
            m.restore(0, args=ocp.args.StandardRestore(
                {'a': np.empty((3, 2)), 'b': 0}))
        with pytest.raises(ValueError):   # structure: 'b' omitted
            m.restore(0, args=ocp.args.StandardRestore(
                {'a': np.empty((2, 3))}))
        with pytest.raises(ValueError):   # 'c' is not in the checkpoint
            m.restore(0, args=ocp.args.StandardRestore(
                {'a': np.empty((2, 3)), 'b': 0, 'c': 1}))


def test_partial_restore_and_placeholder(ocp, tmp_path):
    tree = {'params': {'w': np.ones(4), 'b': np.zeros(2)},
            'opt': {'mu': np.full(4, 2.0)}, 'step': 10}
    with mgr(ocp, str(tmp_path)) as m:
        m.save(0, args=ocp.args.PyTreeSave(tree))
        m.wait_until_finished()
        r = m.restore(0, args=ocp.args.PyTreeRestore(
            {'params': {'w': np.empty(4)}}, partial_restore=True))
        assert list(r) == ['params'] and list(r['params']) == ['w']
        np.testing.assert_array_equal(r['params']['w'], np.ones(4))
        r = m.restore(0, args=ocp.args.PyTreeRestore(
            {'params': {'w': np.empty(4), 'b': ocp.PLACEHOLDER},
             'opt': {'mu': ocp.PLACEHOLDER}, 'step': 0}))
        assert r['params']['b'] is ocp.PLACEHOLDER
        assert r['opt']['mu'] is ocp.PLACEHOLDER
        assert r['step'] == 10
        # Orbax checkpointer_test_utils.py test_partial_restore_with_
        # placeholder, subtest non_leaf_placeholder: a PLACEHOLDER stands
        # for one leaf; for a subtree it is a structure mismatch.
        with pytest.raises(ValueError, match='User-provided restore item '
                           'and on-disk value metadata tree structures do '
                           'not match'):
            m.restore(0, args=ocp.args.PyTreeRestore(
                {'params': {'w': np.empty(4), 'b': np.empty(2)},
                 'opt': ocp.PLACEHOLDER, 'step': 0}))


def test_zero_copy_views(ocp, tmp_path):
    a = np.arange(1 << 16, dtype=np.float32)
    with mgr(ocp, str(tmp_path), zero_copy=True) as m:
        m.save(0, args=ocp.args.StandardSave({'a': a}))
        m.wait_until_finished()
        r = m.restore(0)
        assert not r['a'].flags.writeable
        assert r['a'].base is not None
        np.testing.assert_array_equal(r['a'], a)
        r2 = m.restore(0, args=ocp.args.StandardRestore(zero_copy=False))
        assert r2['a'].flags.writeable
    # the view stays valid after the manager closed
    np.testing.assert_array_equal(r['a'], a)


def test_composite_subset_and_items(ocp, tmp_path):
    with mgr(ocp, str(tmp_path)) as m:
        m.save(0, args=ocp.args.Composite(
            state=ocp.args.StandardSave({'x': np.arange(3)}),
            meta=ocp.args.JsonSave({'lr': 0.1, 'names': ['a', 'b']}),
            arr=ocp.args.ArraySave(np.eye(2))))
        m.wait_until_finished()
        r = m.restore(0)
        assert list(r.keys()) == ['arr', 'meta', 'state']
        assert r.meta == {'lr': 0.1, 'names': ['a', 'b']}
        assert r['meta'] == r.meta
        np.testing.assert_array_equal(r.arr, np.eye(2))
        np.testing.assert_array_equal(r.state['x'], np.arange(3))
        r = m.restore(0, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        assert list(r.keys()) == ['meta']
        with pytest.raises(KeyError):
            m.restore(0, args=ocp.args.Composite(
                nothere=ocp.args.JsonRestore()))


def test_restore_other_directory_and_latest(ocp, tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    with mgr(ocp, a) as m:
        for s in (1, 2, 3):
            m.save(s, args=ocp.args.StandardSave({'s': np.array(s)}))
        m.wait_until_finished()
        assert m.latest_step() == 3
        assert m.all_steps() == [1, 2, 3]
        assert int(m.restore()['s']) == 3
    with mgr(ocp, b) as m:
        m.save(7, args=ocp.args.StandardSave({'s': np.array(7)}))
        m.wait_until_finished()
        r = m.restore(2, directory=a)
        assert int(r['s']) == 2


def test_metrics_custom_metadata_and_root_metadata(ocp, tmp_path):
    opts = dict(best_fn=lambda mt: mt['loss'], best_mode='min')
    with mgr(ocp, str(tmp_path), opts=opts,
             metadata={'model': 'mlp'}) as m:
        m.save(0, args=ocp.args.StandardSave({'x': 1}),
               metrics={'loss': np.float32(0.5)},
               custom_metadata={'git': 'abc'})
        m.wait_until_finished()
        assert m.metrics(0) == {'loss': 0.5}
        md = m.metadata(0)
        assert md.custom_metadata == {'git': 'abc'}
        assert md.metrics == {'loss': 0.5}
        assert md.init_timestamp_nsecs > 0
        assert m.metadata() == {'model': 'mlp'}


def test_many_leaves_and_large_array(ocp, tmp_path):
    tree = {'l%d' % i: np.full((i % 7 + 1,), i, np.int32) for i in range(300)}
    tree['big'] = np.random.default_rng(1).standard_normal(
        (1024, 1024)).astype(np.float32)
    with mgr(ocp, str(tmp_path)) as m:
        m.save(0, args=ocp.args.StandardSave(tree))
        m.wait_until_finished()
        r = m.restore(0)
    assert list(r) == list(tree)
    for k in tree:
        np.testing.assert_array_equal(r[k], tree[k])


def test_sync_mode_and_context(ocp, tmp_path):
    with mgr(ocp, str(tmp_path),
             opts=dict(enable_async_checkpointing=False)) as m:
        assert m.save(0, args=ocp.args.StandardSave({'x': np.ones(3)}))
        # synchronous: committed when save returns
        assert os.path.isdir(os.path.join(str(tmp_path), '0', 'default'))
        assert not m.is_saving_in_progress()
        m.check_for_errors()
    with pytest.raises(ValueError):
        m.all_steps()


def test_step_prefix_and_fixed_length(ocp, tmp_path):
    with mgr(ocp, str(tmp_path), opts=dict(step_prefix='ckpt',
                                           step_format_fixed_length=5)) as m:
        m.save(42, args=ocp.args.StandardSave({'x': 1}))
        m.wait_until_finished()
        assert os.path.isdir(os.path.join(str(tmp_path), 'ckpt_00042'))
        assert m.restore(42) == {'x': 1}


def test_item_metadata_is_a_tree_metadata(ocp, tmp_path):
    # Orbax 0.12 (_src/metadata/tree.py): item_metadata() of a tree item is
    # a TreeMetadata whose .tree is the tree of leaf metadata and which
    # reads like that tree; ckpt's also equals and prints as the dict that
    # earlier versions returned.
    tree = {'w': np.ones((2, 3), np.float32), 'n': 4, 'l': [1.5, 'x']}
    with mgr(ocp, str(tmp_path)) as m:
        m.save(1, args=ocp.args.StandardSave(tree))
        m.wait_until_finished()
        meta = m.item_metadata(1)
    assert isinstance(meta, ocp.metadata.TreeMetadata)
    assert type(meta).__name__ == '_TreeMetadataImpl'
    assert isinstance(meta.tree, dict) and sorted(meta.tree) == ['l', 'n', 'w']
    assert meta.custom_metadata is None and meta.use_zarr3 is False
    assert meta['w'].shape == (2, 3) and meta['w'].dtype == np.float32
    assert meta['w'] is meta.tree['w']
    assert 'n' in meta and 'zz' not in meta and len(meta) == 3
    assert sorted(meta) == ['l', 'n', 'w']
    assert sorted(meta.keys()) == ['l', 'n', 'w']
    assert [k for k, _ in sorted(meta.items())] == ['l', 'n', 'w']
    assert len(list(meta.values())) == 3
    assert meta.get('zz', 7) == 7 and meta.get('n') is meta.tree['n']
    assert isinstance(meta['l'][1], ocp.StringMetadata)
    # Code that used it as a dict keeps working.
    assert meta == dict(meta.items()) == meta.tree
    assert dict(meta.items()) == meta.tree
    assert repr(meta) == repr(meta.tree)
    with pytest.raises(KeyError):
        meta['zz']


def test_item_metadata_composite_of_tree_metadata(ocp, tmp_path):
    with mgr(ocp, str(tmp_path), item_handlers={
            'state': ocp.StandardCheckpointHandler(),
            'a': ocp.ArrayCheckpointHandler(),
            'meta': ocp.JsonCheckpointHandler()}) as m:
        m.save(0, args=ocp.args.Composite(
            state=ocp.args.StandardSave({'x': np.zeros(4, np.int32)}),
            a=ocp.args.ArraySave(np.zeros((2, 2), np.float64)),
            meta=ocp.args.JsonSave({'v': 1})))
        m.wait_until_finished()
        md = m.item_metadata(0)
        smd = m.metadata(0)
    assert isinstance(md['state'], ocp.metadata.TreeMetadata)
    assert md['state']['x'].shape == (4,)
    assert isinstance(md['a'], ocp.ArrayMetadata)
    assert md['a'].shape == (2, 2)
    assert md['meta'] is None
    assert smd.item_metadata['state']['x'].dtype == np.int32

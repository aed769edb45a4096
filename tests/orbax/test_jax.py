"""jax.Array leaves in ckpt itself (the comparison with Orbax's results is
in test_differential.py, scenarios jax_*): saved from their shards without
a detour through Python lists, restored per device into the target's
sharding, and no jax import by ckpt itself."""

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from conftest import subprocess_env  # noqa: E402


@pytest.fixture
def mesh():
    assert jax.device_count() == 8, 'XLA_FLAGS must give 8 CPU devices'
    return Mesh(np.array(jax.devices()).reshape(4, 2), ('x', 'y'))


@pytest.fixture
def ck(daemon):
    import ckpt
    return ckpt


def test_save_does_not_go_through_python_lists(ck, tmp_path, mesh,
                                               monkeypatch):
    x = jax.device_put(jnp.arange(4096, dtype=jnp.float32).reshape(64, 64),
                       NamedSharding(mesh, P('x', 'y')))
    cls = type(x)

    def forbidden(*a, **k):
        raise AssertionError('jax.Array converted through Python objects')
    monkeypatch.setattr(cls, 'tolist', forbidden)
    monkeypatch.setattr(cls, '__iter__', forbidden)
    monkeypatch.setattr(cls, 'item', forbidden)
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        m.save(0, args=ck.args.StandardSave({'x': x}))
        m.wait_until_finished()
        got = m.restore(0, args=ck.args.StandardRestore(
            {'x': np.zeros((64, 64), np.float32)}))['x']
    monkeypatch.undo()
    np.testing.assert_array_equal(got, np.arange(4096, dtype=np.float32)
                                  .reshape(64, 64))


def test_restore_puts_each_shard_on_its_device(ck, tmp_path, mesh):
    src = np.arange(8 * 8, dtype=np.int32).reshape(8, 8)
    x = jax.device_put(src, NamedSharding(mesh, P('x')))
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        m.save(0, args=ck.args.StandardSave({'x': x}))
        m.wait_until_finished()
        want = NamedSharding(mesh, P('y', 'x'))
        # the target lays the array out differently from the saved one
        r = m.restore(0, args=ck.args.StandardRestore(
            {"x": jax.ShapeDtypeStruct((8, 8), jnp.float32,
                                       sharding=want)}))['x']
    assert isinstance(r, jax.Array)
    assert r.sharding == want
    assert r.dtype == jnp.float32
    assert len(r.addressable_shards) == 8
    for s in r.addressable_shards:
        np.testing.assert_array_equal(np.asarray(s.data),
                                      src[s.index].astype(np.float32))
        assert s.device in want.mesh.devices.ravel()


def test_shape_mismatch_with_a_jax_target(ck, tmp_path, mesh):
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        m.save(0, args=ck.args.StandardSave({'x': jnp.ones((4, 4))}))
        m.wait_until_finished()
        with pytest.raises(ValueError, match='Shape mismatch at x'):
            m.restore(0, args=ck.args.StandardRestore(
                {'x': jax.ShapeDtypeStruct((2, 4), jnp.float32)}))


def test_ckpt_does_not_import_jax(daemon):
    code = ('import sys, numpy as np, ckpt, tempfile\n'
            'd = tempfile.mkdtemp()\n'
            'with ckpt.CheckpointManager(d) as m:\n'
            '    m.save(0, args=ckpt.args.StandardSave({"a": np.ones(3)}))\n'
            '    m.wait_until_finished()\n'
            '    m.restore(0, args=ckpt.args.StandardRestore())\n'
            'assert "jax" not in sys.modules, "ckpt imported jax"\n'
            'print("ok")\n')
    out = subprocess.run([sys.executable, '-c', code], env=subprocess_env(
        daemon), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'


def test_jax_leaf_restores_as_numpy_without_jax(ck, daemon, tmp_path, mesh):
    root = str(tmp_path / 'r')
    x = jax.device_put(jnp.arange(16, dtype=jnp.float32).reshape(4, 4),
                       NamedSharding(mesh, P('x')))
    with ck.CheckpointManager(root) as m:
        m.save(0, args=ck.args.StandardSave({'x': x}))
    code = ('import sys, numpy as np, ckpt\n'
            'with ckpt.CheckpointManager(%r) as m:\n'
            '    r = m.restore(0, args=ckpt.args.StandardRestore())\n'
            'a = r["x"]\n'
            'assert type(a) is np.ndarray, type(a)\n'
            'assert a.flags.writeable and a.flags.owndata\n'
            'assert "jax" not in sys.modules\n'
            'print(a.sum())\n' % root)
    out = subprocess.run([sys.executable, '-c', code], env=subprocess_env(
        daemon), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '120.0'


def test_item_metadata_is_a_jax_pytree(ck, tmp_path):
    # As Orbax's TreeMetadata: jax.tree functions map over the leaf
    # metadata, and the result is a TreeMetadata again.
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        m.save(0, args=ck.args.StandardSave(
            {'a': np.zeros((2, 3), np.float32),
             'b': [np.arange(4), 7]}))
        m.wait_until_finished()
        md = m.item_metadata(0)
    shapes = jax.tree.map(lambda x: x.shape, md)
    assert isinstance(shapes, ck.metadata.TreeMetadata)
    assert shapes.tree == {'a': (2, 3), 'b': [(4,), ()]}
    leaves = jax.tree.leaves(md)
    assert [x.name for x in leaves] == ['a', 'b.0', 'b.1']
    assert all(isinstance(x, ck.metadata.Metadata) for x in leaves)

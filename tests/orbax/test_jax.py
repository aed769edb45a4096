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


# ---- saves copied from the shards, in the background ------------------------

def _layouts(mesh):
    """(name, global array, sharding): layouts whose shards are one run, many
    runs, replicated, 0-d and empty, in several dtypes."""
    rng = np.random.default_rng(7)
    m1 = Mesh(np.array(jax.devices()), ('d',))
    f = rng.standard_normal((16, 24)).astype(np.float32)
    return [
        ('rows', f, NamedSharding(mesh, P('x'))),
        ('blocks', f, NamedSharding(mesh, P('x', 'y'))),
        ('columns', f, NamedSharding(mesh, P(None, 'y'))),
        ('cols_rows', f, NamedSharding(mesh, P('y', 'x'))),
        ('replicated', f, NamedSharding(mesh, P())),
        ('partly_replicated', f, NamedSharding(mesh, P(None, 'x'))),
        ('cube', rng.integers(-9, 9, (3, 8, 6)).astype(np.int16),
         NamedSharding(mesh, P(None, 'x', 'y'))),
        ('bf16', rng.standard_normal((8, 8)).astype(jnp.bfloat16),
         NamedSharding(m1, P('d'))),
        ('scalar', np.array(3.5, np.float64), NamedSharding(mesh, P())),
        ('empty', np.zeros((0, 8), np.float32), NamedSharding(mesh, P())),
        ('single_device', np.arange(10, dtype=np.int64), None),
    ]


def test_every_layout_round_trips(ck, tmp_path, mesh):
    jax.config.update('jax_enable_x64', True)
    try:
        cases = _layouts(mesh)
        tree = {n: (jax.device_put(a, s) if s is not None
                    else jax.device_put(a)) for n, a, s in cases}
        with ck.CheckpointManager(str(tmp_path / 'r')) as m:
            assert m.save(0, args=ck.args.StandardSave(tree))
            m.wait_until_finished()
            got = m.restore(0, args=ck.args.StandardRestore(
                {n: np.zeros(a.shape, a.dtype) for n, a, _ in cases}))
            new = m.restore(0)
    finally:
        jax.config.update('jax_enable_x64', False)
    for n, a, s in cases:
        np.testing.assert_array_equal(got[n], a, err_msg=n)
        assert got[n].dtype == a.dtype, n
        assert isinstance(new[n], jax.Array), n
        np.testing.assert_array_equal(np.asarray(new[n]), a, err_msg=n)


def _address(view):
    if not isinstance(view, np.ndarray):
        view = np.frombuffer(view.cast('B'), np.uint8)
    return view.ctypes.data


def test_pieces_are_the_shard_buffers(ck, mesh):
    """The pieces handed to libckpt are the device buffers themselves (no
    host copy), they tile the array once, and replicas are skipped."""
    from ckpt import _jax as cj
    a = np.arange(16 * 24, dtype=np.float32).reshape(16, 24)
    x = jax.device_put(a, NamedSharding(mesh, P(None, 'x')))  # 2 replicas
    pieces, views = cj.host_pieces(x, 'x')
    assert len(views) == 4              # the 4 distinct shards of 8
    bufs = {s.data.unsafe_buffer_pointer() for s in x.addressable_shards}
    assert {_address(v) for v in views} <= bufs
    nb = a.nbytes // 4
    assert all(any(b <= p < b + nb for b in map(_address, views))
               for _, p, _ in pieces)
    spans = sorted((o, o + n) for o, _, n in pieces)
    assert spans[0][0] == 0 and spans[-1][1] == a.nbytes
    assert all(p[1] == q[0] for p, q in zip(spans, spans[1:]))
    assert len(pieces) == 4 * 16        # one run per row of each shard


def test_too_many_runs_fall_back_to_a_host_copy(ck, tmp_path, mesh):
    from ckpt import _jax as cj
    a = np.arange(8192 * 8, dtype=np.int32).reshape(8192, 8)
    x = jax.device_put(a, NamedSharding(mesh, P(None, 'y')))
    assert cj.host_pieces(x, 'x') is None       # 2 x 8192 runs
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        m.save(0, args=ck.args.StandardSave({'x': x}))
        m.wait_until_finished()
        got = m.restore(0, args=ck.args.StandardRestore(
            {'x': np.zeros_like(a)}))
    np.testing.assert_array_equal(got['x'], a)


def _state(n, rows, cols, mesh):
    sh = NamedSharding(Mesh(np.array(jax.devices()), ('d',)), P('d'))
    rng = np.random.default_rng(3)
    host = {'p%d' % i: rng.standard_normal((rows, cols)).astype(np.float32)
            for i in range(n)}
    return host, {k: jax.device_put(v, sh) for k, v in host.items()}


def test_save_returns_before_the_copy(ck, tmp_path, mesh):
    """save() of jax leaves blocks for much less than one copy of their
    bytes takes (it blocked for two copies before: the shards into a host
    array, then into staging). Medians, generous margin."""
    import time
    host, state = _state(16, 64, 128 << 10, mesh)      # 512 MiB
    flat = np.empty(sum(v.nbytes for v in host.values()), np.uint8)
    flat[:] = 1
    copies, blocks = [], []
    with ck.CheckpointManager(str(tmp_path / 'r'), options=ck.
                              CheckpointManagerOptions(max_to_keep=1)) as m:
        for step in range(4):
            t0 = time.monotonic()
            o = 0
            for v in host.values():
                b = v.reshape(-1).view(np.uint8)
                flat[o:o + b.size] = b
                o += b.size
            copies.append(time.monotonic() - t0)
            t0 = time.monotonic()
            assert m.save(step, args=ck.args.StandardSave(state))
            blocks.append(time.monotonic() - t0)
            m.wait_until_finished()
        got = m.restore(3, args=ck.args.StandardRestore(
            {k: np.zeros_like(v) for k, v in host.items()}))
    for k, v in host.items():
        np.testing.assert_array_equal(got[k], v)
    copy, block = sorted(copies)[2], sorted(blocks)[2]
    assert block < copy / 3, (blocks, copies)


def test_donating_the_arrays_after_save_keeps_the_checkpoint(
        ck, tmp_path, mesh):
    """A train step that donates the state right after save(): jax sees the
    host views the copy holds and does not reuse those buffers."""
    host, state = _state(8, 64, 32 << 10, mesh)
    step = jax.jit(lambda t: jax.tree_util.tree_map(lambda a: a * 0 + 7, t),
                   donate_argnums=0)
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        assert m.save(0, args=ck.args.StandardSave(state))
        state = step(state)
        state = step(state)
        jax.block_until_ready(state)
        m.wait_until_finished()
        got = m.restore(0, args=ck.args.StandardRestore(
            {k: np.zeros_like(v) for k, v in host.items()}))
    for k, v in host.items():
        np.testing.assert_array_equal(got[k], v)
        assert float(state[k][0, 0]) == 7.0


def test_a_background_save_holds_the_buffers_it_reads(ck, tmp_path, mesh):
    """Until the background copy is done, the buffers save() handed to it
    are held: a jitted step donating the state right after save() gets new
    buffers instead of overwriting those. Checked on the leaves whose
    buffers jax reuses when nothing holds them (at least the float32
    rows)."""
    step = jax.jit(lambda t: jax.tree_util.tree_map(lambda a: a * 0 + 7, t),
                   donate_argnums=0)
    rows = NamedSharding(Mesh(np.array(jax.devices()), ('d',)), P('d'))

    # Made by jax, not put from numpy: jax's CPU client adopts a numpy
    # buffer that happens to be 64-byte aligned without a copy, and a
    # donated array whose buffer jax does not own is never reused.
    state = jax.jit(lambda: {'f': jnp.ones((64, 256), np.float32),
                             'b': jnp.ones((64, 256), jnp.bfloat16),
                             'r': jnp.ones((16, 16), np.int32)},
                    out_shardings={'f': rows, 'b': rows,
                                   'r': NamedSharding(mesh, P('x'))})

    def buffers(t):
        return {k: [s.data.unsafe_buffer_pointer()
                    for s in v.addressable_shards] for k, v in t.items()}
    free = state()
    before = buffers(free)
    after = buffers(step(free))
    reused = [k for k in before if set(after[k]) & set(before[k])]
    assert 'f' in reused, (before, after)
    # step 0 plans each layout; steps 1 and 2 take the layouts known
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        for s in range(3):
            held = state()
            before = buffers(held)
            assert m.save(s, args=ck.args.StandardSave(held))
            after = buffers(step(held))
            m.wait_until_finished()
            got = m.restore(s)
            for k in reused:
                assert not set(before[k]) & set(after[k]), (s, k)
            for k in before:
                np.testing.assert_array_equal(
                    np.asarray(got[k], np.float32), 1.0)


def test_restored_arrays_are_written_once_and_kept_apart(
        ck, tmp_path, mesh):
    """A jax leaf is restored into one aligned host buffer whose device
    slices jax uses in place (no second copy per device); no two restored
    arrays share memory, so donating one to a jitted step leaves the
    others (and the next restore) intact."""
    m1 = Mesh(np.array(jax.devices()), ('d',))
    rows = NamedSharding(m1, P('d'))
    repl = NamedSharding(mesh, P())
    rng = np.random.default_rng(11)
    a = rng.standard_normal((8, 1024)).astype(np.float32)
    b = rng.standard_normal((16, 16)).astype(np.float32)
    c = rng.standard_normal((8, 64)).astype(np.float32)
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        m.save(0, args=ck.args.StandardSave(
            {'a': jax.device_put(a, rows), 'b': jax.device_put(b, repl),
             'c': jax.device_put(c, NamedSharding(mesh, P(None, 'x')))}))
        m.wait_until_finished()
        new = m.restore(0)
        tgt = m.restore(0, args=ck.args.StandardRestore(
            {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)
             for k, v, s in (('a', a, rows), ('b', b, repl),
                             ('c', c, NamedSharding(mesh, P('y'))))}))
    step = jax.jit(lambda x: x * 0 - 1, donate_argnums=0)
    for got in (new, tgt):
        assert got['a'].sharding == rows and got['b'].sharding == repl
        sa = sorted(got['a'].addressable_shards,
                    key=lambda s: s.index[0].start)
        ptrs = [s.data.unsafe_buffer_pointer() for s in sa]
        # the 8 row slices of one buffer, used in place
        assert ptrs == [ptrs[0] + i * 1024 * 4 for i in range(8)], ptrs
        mem = {k: {s.data.unsafe_buffer_pointer() for s in
                   got[k].addressable_shards} for k in got}
        assert not (mem['a'] & mem['b'] or mem['a'] & mem['c'] or
                    mem['b'] & mem['c'])
        for k in ('b', 'a', 'c'):
            out = jax.block_until_ready(step(got[k]))
            assert all(float(s.data.ravel()[0]) == -1.0
                       for s in out.addressable_shards)
            for other, want in (('a', a), ('b', b), ('c', c)):
                if not got[other].is_deleted():
                    for s in got[other].addressable_shards:
                        np.testing.assert_array_equal(
                            np.asarray(s.data), want[s.index], err_msg=other)


def test_jax_restores_are_verified(ck, tmp_path, mesh):
    """jax leaves restored as views of the mapped files (no copy) are still
    checked against their checksums, with and without targets."""
    import glob
    a = np.arange(8 * 512, dtype=np.float32).reshape(8, 512)
    sh = NamedSharding(mesh, P('x'))
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        m.save(0, args=ck.args.StandardSave({'w': jax.device_put(a, sh)}))
        m.wait_until_finished()
        got = m.restore(0)
        np.testing.assert_array_equal(np.asarray(got['w']), a)
    files = glob.glob(str(tmp_path / 'r' / '0' / 'default' / '*.safetensors'))
    assert len(files) == 1
    with open(files[0], 'r+b') as f:
        f.seek(-100, os.SEEK_END)
        b = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([b[0] ^ 0xFF]))
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        for args in (ck.args.StandardRestore(),
                     ck.args.StandardRestore({'w': jax.ShapeDtypeStruct(
                         a.shape, a.dtype, sharding=sh)})):
            with pytest.raises(OSError, match='checksum mismatch'):
                m.restore(0, args=args)


def test_restore_and_close_right_after_a_background_save(ck, tmp_path,
                                                         mesh):
    host, state = _state(4, 64, 16 << 10, mesh)
    root = str(tmp_path / 'r')
    with ck.CheckpointManager(root) as m:
        assert m.save(0, args=ck.args.StandardSave(state))
        got = m.restore(0)          # waits for the copy and the commit
        for k, v in host.items():
            np.testing.assert_array_equal(np.asarray(got[k]), v)
        assert m.save(1, args=ck.args.StandardSave(state))
        assert m.save(2, args=ck.args.StandardSave(state))
    with ck.CheckpointManager(root) as m:   # close waited for both
        assert m.all_steps() == [0, 1, 2]
        got = m.restore(2, args=ck.args.StandardRestore())
    for k, v in host.items():
        np.testing.assert_array_equal(np.asarray(got[k]), v)


def test_policy_decides_a_background_save_at_once(ck, tmp_path, mesh):
    _, state = _state(2, 8, 1024, mesh)
    opts = ck.CheckpointManagerOptions(save_interval_steps=2)
    with ck.CheckpointManager(str(tmp_path / 'r'), options=opts) as m:
        got = [m.save(s, args=ck.args.StandardSave(state)) for s in range(5)]
        m.wait_until_finished()
        assert got == [True, False, True, False, True]
        assert m.all_steps() == [0, 2, 4]
        with pytest.raises(ck.errors.StepAlreadyExistsError
                           if hasattr(ck, 'errors') and hasattr(
                               ck.errors, 'StepAlreadyExistsError')
                           else Exception):
            m.save(4, args=ck.args.StandardSave(state), force=True)


def test_known_layouts_keep_the_tree_in_order(ck, tmp_path, mesh):
    """A tree of jax arrays among other leaves, saved at several steps
    with new values: from the second save on the arrays take the layouts
    planned before (one call for each run of jax leaves); every step holds
    its own values, each array comes back as a jax.Array in its sharding,
    and the other leaves keep their places."""
    rows = NamedSharding(mesh, P('x'))
    blocks = NamedSharding(mesh, P('x', 'y'))
    repl = NamedSharding(mesh, P())

    def tree(v):
        return {'a': jax.device_put(np.full((8, 8), v, np.float32), rows),
                'b': v,
                'c': jax.device_put(np.arange(64, dtype=np.int32)
                                    .reshape(8, 8) + v, blocks),
                'd': np.full(3, v, np.int64),
                'e': [jax.device_put(np.full((4,), v, np.float16), repl),
                      jax.device_put(np.full((8, 8), -v, np.float32),
                                     rows)]}
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        for v in range(3):
            assert m.save(v, args=ck.args.StandardSave(tree(v)))
        m.wait_until_finished()
        for v in range(3):
            got, want = m.restore(v), tree(v)
            assert got['b'] == v
            np.testing.assert_array_equal(got['d'], want['d'])
            for k, g, w in (('a', got['a'], want['a']),
                            ('c', got['c'], want['c']),
                            ('e0', got['e'][0], want['e'][0]),
                            ('e1', got['e'][1], want['e'][1])):
                assert isinstance(g, jax.Array), (v, k)
                assert g.sharding.is_equivalent_to(w.sharding, g.ndim), k
                assert g.dtype == w.dtype, (v, k)
                np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
        # the same layouts under other names, then in another order
        t = tree(5)
        renamed = {'z' + k: v for k, v in t.items()}
        assert m.save(5, args=ck.args.StandardSave(renamed))
        swapped = dict(t, a=t['c'], c=t['a'])
        assert m.save(6, args=ck.args.StandardSave(swapped))
        m.wait_until_finished()
        got = m.restore(5)
        assert sorted(got) == sorted(renamed)
        np.testing.assert_array_equal(np.asarray(got['zc']),
                                      np.asarray(t['c']))
        got = m.restore(6)
        np.testing.assert_array_equal(np.asarray(got['a']),
                                      np.asarray(t['c']))
        np.testing.assert_array_equal(np.asarray(got['c']),
                                      np.asarray(t['a']))


def test_array_save_of_a_jax_array(ck, tmp_path, mesh):
    """ArraySave of a sharded jax.Array: saved from its shard buffers (in
    the background), restored whole, at every step its own values."""
    sh = NamedSharding(mesh, P('x', 'y'))
    src = np.arange(64, dtype=np.float32).reshape(8, 8)
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        for s in range(3):
            assert m.save(s, args=ck.args.ArraySave(
                jax.device_put(src + s, sh)))
        m.wait_until_finished()
        for s in range(3):
            got = m.restore(s, args=ck.args.ArrayRestore())
            np.testing.assert_array_equal(np.asarray(got), src + s)


def test_mixed_tree_copies_numpy_leaves_before_returning(ck, tmp_path, mesh):
    _, state = _state(2, 8, 1024, mesh)
    a = np.arange(4096, dtype=np.int64)
    with ck.CheckpointManager(str(tmp_path / 'r')) as m:
        m.save(0, args=ck.args.StandardSave({'j': state, 'n': a}))
        a[:] = -1                   # numpy is mutable: copied already
        m.wait_until_finished()
        got = m.restore(0)
    np.testing.assert_array_equal(got['n'], np.arange(4096, dtype=np.int64))


def test_an_error_taking_a_background_save_is_async(tmp_path, mesh):
    """ckptd refuses the save when it gets it (here: more leaves than its
    --max-leaves): save() had already returned True, so the error is the
    save's async error, raised once by wait_until_finished; the next save
    proceeds."""
    from conftest import _py
    import signal
    import subprocess
    base = tmp_path / 'd'
    base.mkdir()
    sock = str(base / 's.sock')
    with open(base / 'log', 'wb') as log:
        proc = subprocess.Popen(
            [_py.ckptd_bin(), '--socket', sock, '--state-dir',
             str(base / 'state'), '--foreground', '--max-leaves', '4'],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        _py.wait_for_socket(sock, proc)
        env = dict(os.environ, CKPTD_SOCKET=sock, CKPTD_AUTOSTART='0')
        code = r'''
import os, sys
import numpy as np, jax
import ckpt
big = {'a%d' % i: jax.numpy.ones((4, 4)) * i for i in range(6)}
small = {'a': jax.numpy.ones((4, 4))}
with ckpt.CheckpointManager(sys.argv[1]) as m:
    print('saved', m.save(0, args=ckpt.args.StandardSave(big)))
    try:
        m.wait_until_finished()
        print('no error')
    except Exception as e:
        print('raised', type(e).__name__, 'leaves' in str(e))
    m.wait_until_finished()
    print('again none')
    print('saved', m.save(1, args=ckpt.args.StandardSave(small)))
    m.wait_until_finished()
    print('steps', m.all_steps())
'''
        out = subprocess.run([sys.executable, '-c', code,
                              str(tmp_path / 'r')], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.split('\n')
        assert lines[0] == 'saved True', out.stdout
        assert lines[1].startswith('raised ') and lines[1].endswith(
            'True'), out.stdout
        assert lines[2:5] == ['again none', 'saved True', 'steps [1]'], \
            out.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

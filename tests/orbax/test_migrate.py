"""ckpt.migrate (Orbax root -> ckptd steps) and ckpt.export (ckptd steps ->
Orbax root), on checkpoints that orbax.checkpoint itself wrote and reads,
in both of its formats (OCDBT and zarr/tensorstore per array)."""

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from conftest import subprocess_env  # noqa: E402

LOSS = [4.0, 2.5, 3.0]


def state(step):
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('x', 'y'))
    return {
        'w': jax.device_put(jnp.arange(64, dtype=jnp.float32).reshape(8, 8)
                            + step, NamedSharding(mesh, P('x', 'y'))),
        'b': np.arange(5, dtype=np.int64) * step,
        'h': jnp.full((4,), step, jnp.bfloat16),
        'n': step,
        'lr': 0.5 / (step + 1),
    }


def assert_state(got, step):
    want = state(step)
    assert sorted(got) == sorted(want)
    for k in ('w', 'b', 'h'):
        g = np.asarray(got[k])
        assert g.dtype == np.dtype(want[k].dtype), k
        np.testing.assert_array_equal(g, np.asarray(want[k]))
    assert got['n'] == step
    assert got['lr'] == pytest.approx(0.5 / (step + 1))


def write_orbax(root, use_ocdbt):
    handlers = {'state': ocp.PyTreeCheckpointHandler(use_ocdbt=use_ocdbt),
                'meta': ocp.JsonCheckpointHandler(),
                'arr': ocp.ArrayCheckpointHandler()}
    with ocp.CheckpointManager(
            root, item_handlers=handlers,
            options=ocp.CheckpointManagerOptions(
                best_fn=lambda m: m['loss'], best_mode='min',
                enable_async_checkpointing=False)) as m:
        for s in range(3):
            m.save(s, args=ocp.args.Composite(
                state=ocp.args.PyTreeSave(state(s)),
                meta=ocp.args.JsonSave({'step': s, 'tag': 'orbax'}),
                arr=ocp.args.ArraySave(np.arange(3) + s)),
                metrics={'loss': LOSS[s]},
                custom_metadata={'run': 'r%d' % s})
        return {s: m.metadata(s) for s in range(3)}


def run_module(daemon, mod, *args):
    return subprocess.run([sys.executable, '-m', mod] + list(args),
                          env=subprocess_env(daemon), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize('fmt', ['ocdbt', 'zarr'])
def test_migrate_orbax_root(daemon, tmp_path, fmt):
    import ckpt
    src, dst = str(tmp_path / 'orbax'), str(tmp_path / 'ckpt')
    orbax_md = write_orbax(src, fmt == 'ocdbt')
    if fmt == 'zarr':  # per-array tensorstore folders, no OCDBT manifest
        assert os.path.isdir(os.path.join(src, '0', 'state', 'w'))
    else:
        assert any(n.startswith('ocdbt') or n == 'manifest.ocdbt'
                   for n in os.listdir(os.path.join(src, '0', 'state')))
    out = run_module(daemon, 'ckpt.migrate', '--best-metric', 'loss',
                     '--best-mode', 'min', src, dst)
    assert out.returncode == 0, out.stderr
    assert 'migrated 3 step(s)' in out.stdout

    with ckpt.CheckpointManager(dst, options=ckpt.CheckpointManagerOptions(
            best_fn=lambda m: m['loss'], best_mode='min')) as m:
        assert m.all_steps() == [0, 1, 2]
        assert m.best_step() == 1
        for s in range(3):
            r = m.restore(s, args=ckpt.args.Composite(
                state=ckpt.args.PyTreeRestore(),
                meta=ckpt.args.JsonRestore(),
                arr=ckpt.args.ArrayRestore()))
            assert_state(r.state, s)
            assert r.meta == {'step': s, 'tag': 'orbax'}
            np.testing.assert_array_equal(r.arr, np.arange(3) + s)
            md = m.metadata(s)
            assert md.metrics == {'loss': LOSS[s]}
            assert md.custom_metadata == {'run': 'r%d' % s}
            # Orbax's commit time is the time policies read in ckptd
            assert md.init_timestamp_nsecs == \
                orbax_md[s].commit_timestamp_nsecs
            # as Orbax lists them: the step's metrics too
            assert sorted(md.item_handlers) == sorted(
                orbax_md[s].item_handlers) == ['arr', 'meta', 'metrics',
                                               'state']
        # restore into a sharded target: jax arrays again
        mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('x', 'y'))
        sh = NamedSharding(mesh, P('x', 'y'))
        r = m.restore(2, args=ckpt.args.Composite(
            state=ckpt.args.PyTreeRestore({
                'w': jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=sh),
                'b': 0, 'h': 0, 'n': 0, 'lr': 0})))
        assert r.state['w'].sharding == sh

    again = run_module(daemon, 'ckpt.migrate', '--best-metric', 'loss', src,
                       dst)
    assert again.returncode == 0, again.stderr
    assert 'migrated 0 step(s)' in again.stdout


def test_migrate_default_item_and_errors(daemon, tmp_path):
    import ckpt
    src, dst = str(tmp_path / 'orbax'), str(tmp_path / 'ckpt')
    with ocp.CheckpointManager(src) as m:
        m.save(5, args=ocp.args.StandardSave({'a': np.ones((2, 2)), 'k': 3}))
    out = run_module(daemon, 'ckpt.migrate', src, dst)
    assert out.returncode == 0, out.stderr
    with ckpt.CheckpointManager(dst) as m:
        r = m.restore(5, args=ckpt.args.StandardRestore())
        np.testing.assert_array_equal(r['a'], np.ones((2, 2)))
        assert r['k'] == 3
    empty = str(tmp_path / 'empty')
    os.makedirs(empty)
    out = run_module(daemon, 'ckpt.migrate', empty, str(tmp_path / 'x'))
    assert out.returncode == 1
    assert 'ckpt.migrate: no steps found in' in out.stderr
    # several metrics and no --best-metric: says which to choose
    multi = str(tmp_path / 'multi')
    with ocp.CheckpointManager(multi, options=ocp.CheckpointManagerOptions(
            best_fn=lambda m: m['a'])) as m:
        m.save(0, args=ocp.args.StandardSave({'a': 1}),
               metrics={'a': 1.0, 'b': 2.0})
    out = run_module(daemon, 'ckpt.migrate', multi, str(tmp_path / 'y'))
    assert out.returncode == 1
    assert "--best-metric" in out.stderr and "['a', 'b']" in out.stderr


def ckptctl(daemon, *args, **env):
    exe = os.environ.get('CKPTCTL_BIN')
    assert exe, 'CKPTCTL_BIN is not set (meson test sets it)'
    return subprocess.run([exe] + list(args), env=subprocess_env(
        daemon, **env), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('fmt', ['ocdbt', 'zarr'])
def test_ckptctl_import(daemon, tmp_path, fmt):
    """ckptctl import runs the migration with the interpreter CKPT_PYTHON
    names, on the daemon of --socket, and says clearly what is missing."""
    import ckpt
    src, dst = str(tmp_path / 'orbax'), str(tmp_path / 'ckpt')
    orbax_md = write_orbax(src, fmt == 'ocdbt')
    out = ckptctl(daemon, '--socket', daemon.sock, 'import', src, dst,
                  '--best-metric', 'loss', '--best-mode', 'min',
                  CKPT_PYTHON=sys.executable, CKPTD_SOCKET='/nonexistent')
    assert out.returncode == 0, out.stderr
    assert 'migrated 3 step(s)' in out.stdout
    with ckpt.CheckpointManager(dst, options=ckpt.CheckpointManagerOptions(
            best_fn=lambda m: m['loss'], best_mode='min')) as m:
        assert m.all_steps() == [0, 1, 2]
        assert m.best_step() == 1
        for s in range(3):
            r = m.restore(s, args=ckpt.args.Composite(
                state=ckpt.args.PyTreeRestore(),
                meta=ckpt.args.JsonRestore(),
                arr=ckpt.args.ArrayRestore()))
            assert_state(r.state, s)
            assert r.meta == {'step': s, 'tag': 'orbax'}
            md = m.metadata(s)
            assert md.metrics == {'loss': LOSS[s]}
            assert md.init_timestamp_nsecs == \
                orbax_md[s].commit_timestamp_nsecs
    steps = ckptctl(daemon, 'steps', dst, '--json')
    assert steps.returncode == 0, steps.stderr
    assert '"step": 2' in steps.stdout.replace('"step":2', '"step": 2')
    again = ckptctl(daemon, 'import', src, dst, '-q',
                    CKPT_PYTHON=sys.executable)
    assert again.returncode == 0 and again.stdout == '', again
    # what is missing, said clearly
    none = ckptctl(daemon, 'import', src, str(tmp_path / 'x'),
                   CKPT_PYTHON=str(tmp_path / 'no-python'))
    assert none.returncode == 1
    assert 'cannot run' in none.stderr and 'CKPT_PYTHON' in none.stderr
    # Debian's python3: numpy, no orbax (install-deps.sh keeps it so)
    assert subprocess.run(['/usr/bin/python3', '-c', 'import orbax'],
                          capture_output=True).returncode != 0
    no_orbax = ckptctl(daemon, 'import', src, str(tmp_path / 'y'),
                       CKPT_PYTHON='/usr/bin/python3')
    assert no_orbax.returncode == 1, no_orbax
    assert 'has no orbax-checkpoint' in no_orbax.stderr, no_orbax.stderr
    assert not os.path.exists(str(tmp_path / 'y'))
    usage = ckptctl(daemon, 'import', src)
    assert usage.returncode == 2 and 'usage: import' in usage.stderr


def test_export_for_orbax(daemon, tmp_path):
    import ckpt
    src, dst = str(tmp_path / 'ckpt'), str(tmp_path / 'orbax')
    with ckpt.CheckpointManager(src, options=ckpt.CheckpointManagerOptions(
            best_fn=lambda m: m['loss'], best_mode='min')) as m:
        for s in range(3):
            m.save(s, args=ckpt.args.Composite(
                state=ckpt.args.StandardSave(state(s)),
                meta=ckpt.args.JsonSave({'step': s})),
                metrics={'loss': LOSS[s]}, custom_metadata={'c': s})
    out = run_module(daemon, 'ckpt.export', '--step', '1', '--step', '2',
                     src, dst)
    assert out.returncode == 0, out.stderr
    assert 'exported 2 step(s)' in out.stdout

    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('x', 'y'))
    sh = NamedSharding(mesh, P(None, 'x'))
    with ocp.CheckpointManager(dst, options=ocp.CheckpointManagerOptions(
            best_fn=lambda m: m['loss'], best_mode='min')) as m:
        assert m.all_steps() == [1, 2]
        assert m.best_step() == 1
        for s in (1, 2):
            r = m.restore(s, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(),
                meta=ocp.args.JsonRestore()))
            assert_state(r.state, s)
            assert isinstance(r.state['w'], jax.Array)
            assert r.meta == {'step': s}
            md = m.metadata(s)
            assert md.metrics == {'loss': LOSS[s]}
            assert md.custom_metadata == {'c': s}
        # Orbax reshards what ckpt exported into its own target
        tgt = jax.tree.map(lambda a: a, state(2))
        tgt['w'] = jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=sh)
        r = m.restore(2, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(tgt)))
        assert r.state['w'].sharding == sh
        np.testing.assert_array_equal(np.asarray(r.state['w']),
                                      np.asarray(state(2)['w']))


def _drop_item_handlers(root):
    """Remove item_handlers from every step's _CHECKPOINT_METADATA, as in
    steps of an Orbax that did not record them."""
    import json
    for step in os.listdir(root):
        f = os.path.join(root, step, '_CHECKPOINT_METADATA')
        if not os.path.isfile(f):
            continue
        with open(f) as fp:
            d = json.load(fp)
        d.pop('item_handlers', None)
        with open(f, 'w') as fp:
            json.dump(d, fp)


def test_kinds_without_item_handlers(daemon, tmp_path):
    """Steps whose metadata names no handler: migrate finds the kinds of
    an Orbax step from its files (through Orbax's own paths), export asks
    the daemon for the kinds of a ckptd step."""
    import ckpt
    src, dst, back = (str(tmp_path / n) for n in ('orbax', 'ckpt', 'back'))
    with ocp.CheckpointManager(
            src, item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                                'meta': ocp.JsonCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(
                step_prefix='run', step_format_fixed_length=3,
                enable_async_checkpointing=False)) as m:
        for s in range(2):
            m.save(s, args=ocp.args.Composite(
                state=ocp.args.PyTreeSave({'a': np.arange(4) + s, 'n': s}),
                meta=ocp.args.JsonSave({'step': s})))
    _drop_item_handlers(src)
    out = run_module(daemon, 'ckpt.migrate', '--step-prefix', 'run',
                     '--step-format-fixed-length', '3', src, dst)
    assert out.returncode == 0, out.stderr
    assert 'meta (json), state (pytree)' in out.stdout, out.stdout
    _drop_item_handlers(dst)
    naming = ckpt.CheckpointManagerOptions(step_prefix='run',
                                           step_format_fixed_length=3)
    with ckpt.CheckpointManager(dst, options=naming) as m:
        assert m.metadata(1).item_handlers is None
    out = run_module(daemon, 'ckpt.export', '--step-prefix', 'run',
                     '--step-format-fixed-length', '3', dst, back)
    assert out.returncode == 0, out.stderr
    # a tree item without a recorded handler reads as Standard
    assert 'meta (json), state (standard)' in out.stdout, out.stdout
    with ocp.CheckpointManager(back, options=ocp.CheckpointManagerOptions(
            step_prefix='run', step_format_fixed_length=3)) as m:
        assert m.all_steps() == [0, 1]
        r = m.restore(1, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(), meta=ocp.args.JsonRestore()))
        np.testing.assert_array_equal(np.asarray(r.state['a']),
                                      np.arange(4) + 1)
        assert r.meta == {'step': 1}

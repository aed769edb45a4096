"""One process of a two-process jax job (jax.distributed over loopback,
4 CPU devices each, 8 in all), run by test_jax_multiprocess.py:

    jax_multiprocess_worker.py PROCESS_ID PORT ROOT MODE [NPROC]

MODE save: save step 0 and 1 of a state of global arrays laid out over
both processes (rows over all 8 devices; blocks on a 2x4 mesh; columns
replicated across the processes; a fully replicated array and a scalar).
MODE restore: restore step 1 into targets of other layouts (resharding),
then without targets. MODE restore-whole: restore step 2, which one
process saved as whole numpy arrays, into the same global targets.
MODE save-far, restore-far (NPROC 3, 2 CPU devices each): arrays whose
devices are all in other processes (process 0 holds none of them) save
as the others' pieces while process 0 hands none, and restore into
targets that give some process no device: it gets a jax.Array without
addressable shards. An array all on process 2 (host-local there) is
refused by process 0.
Each check that fails raises; the last line is "ok".
"""

import os
import sys

NPROC = int(sys.argv[5]) if __name__ == '__main__' and len(sys.argv) > 5 \
    else 2
if __name__ == '__main__':
    # not when a test imports this file for its data: its jax keeps the
    # devices it was given
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=%d' \
        % (8 // NPROC)
    os.environ['JAX_PLATFORMS'] = 'cpu'

import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402


def state_host(step):
    rng = np.random.default_rng(100 + step)
    return {
        'rows': rng.standard_normal((16, 32)).astype(np.float32),
        'blocks': rng.integers(-1000, 1000, (8, 12)).astype(np.int32),
        'cols': rng.standard_normal((6, 8)).astype(jnp.bfloat16),
        'repl': rng.standard_normal((4, 6)).astype(np.float32),
    }


def far_host(step):
    rng = np.random.default_rng(200 + step)
    return {
        'far': rng.standard_normal((8, 12)).astype(np.float32),
        'far_repl': rng.integers(-50, 50, (3, 5)).astype(np.int32),
        'spread': rng.standard_normal((12, 4)).astype(np.float32),
    }


def far(pid, root, mode):
    """NPROC 3, 2 devices each: devs[2 * p:2 * p + 2] are process p's."""
    import ckpt as ocp
    assert jax.process_count() == 3 and len(jax.devices()) == 6
    devs = np.array(jax.devices())
    assert [d.process_index for d in devs] == [0, 0, 1, 1, 2, 2]

    def mesh(procs):
        return Mesh(np.array([d for d in devs if d.process_index in procs]),
                    ('d',))
    host = far_host(0)
    if mode == 'save-far':
        layout = {
            'far': NamedSharding(mesh((1, 2)), P('d')),      # rows on 4
            'far_repl': NamedSharding(mesh((1, 2)), P()),    # a copy on 4
            'spread': NamedSharding(mesh((0, 1, 2)), P('d')),
        }
    else:
        layout = {
            'far': NamedSharding(mesh((0, 1)), P(None, 'd')),
            'far_repl': NamedSharding(mesh((2,)), P()),   # process 2 only
            'spread': NamedSharding(mesh((1, 2)), P('d')),
        }
    with ocp.CheckpointManager(root) as m:
        if mode == 'save-far':
            tree = {k: jax.make_array_from_callback(
                v.shape, layout[k], lambda i, v=v: v[i], dtype=v.dtype)
                for k, v in host.items()}
            if pid == 0:
                assert not tree['far'].addressable_shards
                assert not tree['far_repl'].addressable_shards
                # all on process 2: host-local there, no global array;
                # refused before anything is sent
                local2 = jax.make_array_from_callback(
                    (4, 2), NamedSharding(mesh((2,)), P('d')),
                    lambda i: np.ones((4, 2), np.float32)[i],
                    dtype=np.float32)
                try:
                    m.save(5, args=ocp.args.StandardSave({'a': local2}))
                except ValueError as e:
                    assert 'host-local' in str(e), e
                else:
                    raise AssertionError('an array host-local to process '
                                         '2 was saved by process 0')
            tree['n'] = 7
            assert m.save(0, args=ocp.args.StandardSave(tree))
            m.wait_until_finished()
            assert m.all_steps() == [0], m.all_steps()
        else:
            targets = {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                               sharding=layout[k])
                       for k, v in host.items()}
            targets['n'] = 0
            for zc in (False, True):
                got = m.restore(0, args=ocp.args.StandardRestore(
                    targets, zero_copy=zc))
                assert got['n'] == 7
                for k, v in host.items():
                    a = got[k]
                    assert isinstance(a, jax.Array), k
                    assert a.sharding == layout[k], (k, a.sharding)
                    assert a.shape == v.shape and a.dtype == v.dtype, k
                    mine = pid in {d.process_index for d in
                                   layout[k].device_set}
                    assert len(a.addressable_shards) == (
                        len(layout[k].addressable_devices) if mine else 0), k
                    for s in a.addressable_shards:
                        np.testing.assert_array_equal(np.asarray(s.data),
                                                      v[s.index], err_msg=k)
    print('ok', flush=True)


def main():
    pid, port, root, mode = (int(sys.argv[1]), sys.argv[2], sys.argv[3],
                             sys.argv[4])
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address='127.0.0.1:' + port,
                               num_processes=NPROC, process_id=pid,
                               initialization_timeout=120)
    if mode.endswith('-far'):
        return far(pid, root, mode)
    assert jax.process_count() == 2 and len(jax.devices()) == 8
    import ckpt as ocp
    assert ocp.distributed.process_index() == pid
    assert ocp.distributed.process_count() == 2

    devs = np.array(jax.devices())
    m8 = Mesh(devs, ('d',))
    m24 = Mesh(devs.reshape(2, 4), ('p', 'l'))    # p: across processes
    save_layout = {
        'rows': NamedSharding(m8, P('d')),
        'blocks': NamedSharding(m24, P('p', 'l')),
        'cols': NamedSharding(m24, P(None, 'l')),  # replicated over p
        'repl': NamedSharding(m8, P()),
    }
    other_layout = {
        'rows': NamedSharding(m24, P('l', 'p')),
        'blocks': NamedSharding(m24, P('l', 'p')),
        'cols': NamedSharding(m24, P('p')),
        'repl': NamedSharding(m24, P('p')),
    }

    def put(host, layout):
        return {k: jax.make_array_from_callback(v.shape, layout[k],
                                                lambda i, v=v: v[i])
                for k, v in host.items()}

    opts = ocp.CheckpointManagerOptions(max_to_keep=3)
    with ocp.CheckpointManager(root, options=opts) as m:
        if mode == 'save':
            for step in (0, 1):
                tree = put(state_host(step), save_layout)
                assert not tree['rows'].is_fully_addressable
                tree['n'] = step + 10
                assert m.save(step, args=ocp.args.StandardSave(tree))
            m.wait_until_finished()
            assert m.all_steps() == [0, 1], m.all_steps()
        else:
            want = state_host(1)
            targets = {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                               sharding=other_layout[k])
                       for k, v in want.items()}
            targets['n'] = 0
            step = 2 if mode == 'restore-whole' else 1
            got = m.restore(step, args=ocp.args.StandardRestore(targets))
            assert got['n'] == 11
            for k, v in want.items():
                a = got[k]
                assert isinstance(a, jax.Array), k
                assert a.sharding == other_layout[k], (k, a.sharding)
                assert a.shape == v.shape and a.dtype == v.dtype, k
                for s in a.addressable_shards:
                    assert s.device.process_index == pid
                    np.testing.assert_array_equal(np.asarray(s.data),
                                                  v[s.index], err_msg=k)
            if mode == 'restore-whole':
                print('ok', flush=True)
                return
            # a cast on the way, and a target of the saved layout
            got = m.restore(1, args=ocp.args.StandardRestore(
                {'rows': jax.ShapeDtypeStruct((16, 32), np.float16,
                                              sharding=save_layout['rows']),
                 'blocks': targets['blocks'], 'cols': targets['cols'],
                 'repl': targets['repl'], 'n': 0}))
            for s in got['rows'].addressable_shards:
                np.testing.assert_array_equal(
                    np.asarray(s.data), want['rows'][s.index].astype(
                        np.float16))
            # the whole arrays (an evaluator's view), no target
            plain = m.restore(1)
            for k, v in want.items():
                np.testing.assert_array_equal(
                    np.asarray(plain[k].addressable_shards[0].data)
                    if not plain[k].is_fully_addressable
                    else np.asarray(plain[k]),
                    v[plain[k].addressable_shards[0].index]
                    if not plain[k].is_fully_addressable else v,
                    err_msg=k)
    print('ok', flush=True)


if __name__ == '__main__':
    main()

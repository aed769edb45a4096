"""jax_handover.py - where a save of jax arrays spends its blocking time in
Python: the hand-over of the shard buffers to libckpt, part by part, for
a state of --arrays arrays sharded over the 8 CPU devices of
XLA_FLAGS=--xla_force_host_platform_device_count=8 (no daemon needed):

    CKPT_LIBRARY=build/client/libckpt.so PYTHONPATH=client/python \\
        .venv/bin/python tests/bench/jax_handover.py [--gib 1] [--arrays 64]

One JSON line per part, the median over --reps repetitions (ms):
  exports   a memoryview of each shard buffer (the reference that makes jax
            decline a donation while the background copy reads it)
  pointers  the address of each shard buffer
  prepare   every leaf prepared (plan lookup, exports, addresses)
  tree      the prepared leaves handed to libckpt (one pieces table and
            one call for the tree's jax leaves)
  total     prepare and tree: what save() spends in Python before it asks
            ckptd (tests/bench/vs_orbax.py gives the whole save blocking)
"""

import argparse
import json
import os
import time

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def median_ms(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--gib', type=float, default=1.0)
    p.add_argument('--arrays', type=int, default=64)
    p.add_argument('--reps', type=int, default=200)
    o = p.parse_args()

    import numpy as np
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from ckpt import _jax, _lib, _tree

    each = int(o.gib * (1 << 30)) // o.arrays // 4096 * 4096
    sh = NamedSharding(Mesh(np.array(jax.devices()), ('d',)), P('d'))
    state = {'layer%02d' % i: jax.device_put(
        np.ones(each // 4, np.float32).reshape(8, -1), sh)
        for i in range(o.arrays)}
    arrays = list(state.values())

    def prepare():
        return _tree.prepare_tree(state)

    prepared = prepare()

    def tree():
        t, _ = _tree._tree_from_prepared(prepared)
        _lib.lib().ckpt_tree_free(t)

    def total():
        ps = prepare()
        t, _ = _tree._tree_from_prepared(ps)
        _lib.lib().ckpt_tree_free(t)

    parts = {
        'exports': lambda: [[memoryview(b) for b in x._arrays]
                            for x in arrays],
        'pointers': lambda: [[b.unsafe_buffer_pointer() for b in x._arrays]
                             for x in arrays],
        'prepare': prepare,
        'tree': tree,
        'total': total,
    }
    nbufs = sum(len(x.addressable_shards) for x in arrays)
    for name, f in parts.items():
        print(json.dumps({'case': 'jax_handover_' + name,
                          'arrays': o.arrays, 'buffers': nbufs,
                          'value': median_ms(f, o.reps), 'unit': 'ms'}),
              flush=True)


if __name__ == '__main__':
    main()

"""vs_orbax.py - ckpt against orbax.checkpoint on the same state, same disk.

Run with the Python of the virtual environment that scripts/install-deps.sh
makes (orbax-checkpoint and jax), by run.sh; one JSON line per sample:

    .venv/bin/python vs_orbax.py --dir DIR [--gib 1] [--arrays 64] [--runs 3]
        [--interference-steps 40] [--kinds np,jax]

For each library (ckpt, orbax) and each kind of leaf (numpy arrays; jax
arrays sharded over the 8 CPU devices of
XLA_FLAGS=--xla_force_host_platform_device_count=8), with each library's
default options (async saves):
  save blocking   how long save() holds the caller
  save -> durable save() until wait_until_finished() returns
  restore new     restore without a target (new arrays)
  restore target  restore into a given target (numpy arrays / abstract
                  jax.ShapeDtypeStruct with the saved sharding)
and the trainer interference: a CPU-bound loop's slowdown while the state
(numpy, then jax leaves) is checkpointed every 10 steps (the loop's time
with checkpoints over its time without). Cases: ox_<lib>_<np|jax>_<what>,
ox_<lib>_interference (numpy leaves), ox_<lib>_jax_interference,
ox_<lib>_np_w_interference (numpy leaves the loop also writes at every
step, e.g. an optimizer's update: a copy-on-write save's faults), and
ox_memcpy_<1thread|2threads>: the same bytes copied into a warm buffer
(what a save of mutable numpy arrays must at least block for).
The ckpt cases need CKPTD_SOCKET (a ckptd on the same filesystem).
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def emit(case, run, value, unit):
    print(json.dumps({'case': case, 'run': run, 'value': value,
                      'unit': unit}), flush=True)


def note(msg):
    print('vs_orbax.py: ' + msg, file=sys.stderr, flush=True)


def make_state(np, gib, n):
    each = int(gib * (1 << 30)) // n // 4096 * 4096
    rng = np.random.default_rng(1)
    return {'layer%02d' % i: rng.integers(0, 1 << 32, size=each // 4,
                                          dtype=np.uint32).view(np.float32)
            .reshape(8, -1) for i in range(n)}


def check_same(np, got, want, what):
    for k, v in want.items():
        g = np.asarray(got[k])
        if g.shape != v.shape or g.dtype != v.dtype or \
                g[0, :16].tobytes() != np.asarray(v)[0, :16].tobytes() or \
                g[-1, -16:].tobytes() != np.asarray(v)[-1, -16:].tobytes():
            raise SystemExit('%s: restored %s differs' % (what, k))


def bench_kind(libs, kind, state, target, work, runs, nbytes, np):
    """Both libraries on one kind of leaves, their runs interleaved (ckpt,
    orbax, ckpt, orbax, ...) so that a change of the machine's load hits
    both alike."""
    mgrs = []
    try:
        for lib, ocp in libs:
            root = os.path.join(work, '%s-%s' % (lib, kind))
            shutil.rmtree(root, ignore_errors=True)
            m = ocp.CheckpointManager(
                root, options=ocp.CheckpointManagerOptions(max_to_keep=2))
            mgrs.append((lib, ocp, m, root, 'ox_%s_%s_' % (lib, kind)))
            m.save(0, args=ocp.args.StandardSave(state))   # warm-up
            m.wait_until_finished()
        note('%s leaves, %s (%d runs each, interleaved)'
             % (kind, ' and '.join(n for n, _ in libs), runs))
        for r in range(runs):
            for lib, ocp, m, root, pre in mgrs:
                os.sync()
                t0 = time.monotonic()
                m.save(r + 1, args=ocp.args.StandardSave(state))
                t1 = time.monotonic()
                m.wait_until_finished()
                t2 = time.monotonic()
                emit(pre + 'save_blocking', r, t1 - t0, 's')
                emit(pre + 'save_durable', r, t2 - t0, 's')
        for lib, ocp, m, root, pre in mgrs:
            got = m.restore(runs, args=ocp.args.StandardRestore())   # warm
            check_same(np, got, state, lib + ' restore')
            del got
        for r in range(runs):
            for lib, ocp, m, root, pre in mgrs:
                t0 = time.monotonic()
                got = m.restore(runs, args=ocp.args.StandardRestore())
                t = time.monotonic() - t0
                del got
                emit(pre + 'restore_new', r, nbytes / t, 'B/s')
        for r in range(runs):
            for lib, ocp, m, root, pre in mgrs:
                t0 = time.monotonic()
                got = m.restore(runs,
                                args=ocp.args.StandardRestore(target))
                t = time.monotonic() - t0
                if r == 0:
                    check_same(np, got, state, lib + ' restore into target')
                del got
                emit(pre + 'restore_target', r, nbytes / t, 'B/s')
    finally:
        for lib, ocp, m, root, pre in mgrs:
            m.close()
            shutil.rmtree(root, ignore_errors=True)


def bench_memcpy(np, state, runs):
    """The physical limit of a save that must copy (numpy leaves are
    mutable): the same bytes copied into a warm buffer, by one thread and
    by two (numpy releases the GIL while it copies)."""
    import threading
    vals = [v.reshape(-1).view(np.uint8) for v in state.values()]
    offs, o = [], 0
    for v in vals:
        offs.append(o)
        o += v.size
    dst = np.ones(o, np.uint8)

    def copy(idx):
        for i in idx:
            dst[offs[i]:offs[i] + vals[i].size] = vals[i]
    for r in range(runs):
        t0 = time.monotonic()
        copy(range(len(vals)))
        emit('ox_memcpy_1thread', r, time.monotonic() - t0, 's')
        t0 = time.monotonic()
        th = threading.Thread(target=copy, args=(range(1, len(vals), 2),))
        th.start()
        copy(range(0, len(vals), 2))
        th.join()
        emit('ox_memcpy_2threads', r, time.monotonic() - t0, 's')


def train_step(np, x):
    """About 0.1 s of single-threaded CPU work on an idle core."""
    for _ in range(12):
        x = np.tanh(x) * 1.0001 + 0.5
    return x


def loop_time(np, steps, on_step=None):
    x = np.random.default_rng(2).standard_normal((512, 512))
    t0 = time.monotonic()
    for i in range(steps):
        x = train_step(np, x)
        if on_step is not None:
            on_step(i)
    return time.monotonic() - t0


def write_state(np, state):
    """An optimizer-like update touching every page of the (numpy)
    state: one element per 4 KiB, so that each copy-on-write block a save
    left protected takes its fault."""
    for v in state.values():
        # as integers: the random bits hold NaNs
        v.reshape(-1).view(np.uint32)[::1024] += np.uint32(1)


def bench_interference(libs, states, work, steps, reps, np):
    """Each repetition times the bare loop and then the loop with
    checkpoints, for each kind of leaf and each library in turn, so that
    both libraries see the same machine load; the slowdown is the median
    over the repetitions. The loop is the same NumPy work for both kinds
    of leaves: what differs is what a save costs the trainer. Kind
    'np_w': numpy leaves that the loop also writes at every step (after
    each save too), for both the bare loop and the loop with
    checkpoints."""
    for rep in range(reps):
        for kind, state in states:
            for lib, ocp in libs:
                writes = kind == 'np_w'
                root = os.path.join(work, '%s-%s-interference' % (lib, kind))
                shutil.rmtree(root, ignore_errors=True)
                note('%s %s interference, repetition %d (%d steps, a save '
                     'every 10)' % (lib, kind, rep, steps))
                base = loop_time(np, steps, (lambda i: write_state(
                    np, state)) if writes else None)
                with ocp.CheckpointManager(
                        root, options=ocp.CheckpointManagerOptions(
                            max_to_keep=2)) as m:
                    def on_step(i):
                        if i % 10 == 0:
                            m.save(i, args=ocp.args.StandardSave(state))
                        if writes:
                            write_state(np, state)
                    t = loop_time(np, steps, on_step)
                    m.wait_until_finished()
                shutil.rmtree(root, ignore_errors=True)
                # numpy leaves keep the case names of earlier tables
                pre = 'ox_%s_' % lib if kind == 'np' else \
                    'ox_%s_%s_' % (lib, kind)
                emit(pre + 'loop_base', rep, base, 's')
                emit(pre + 'loop_ckpt', rep, t, 's')
                emit(pre + 'interference', rep, max(t / base - 1.0, 1e-6),
                     'x')


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--dir', required=True)
    p.add_argument('--gib', type=float, default=1.0)
    p.add_argument('--arrays', type=int, default=64)
    p.add_argument('--runs', type=int, default=3)
    p.add_argument('--interference-steps', type=int, default=40)
    p.add_argument('--only', default='ckpt,orbax')
    p.add_argument('--kinds', default='np,jax',
                   help='kinds of leaves to bench: np, jax or both')
    p.add_argument('--interference-writes', type=int, default=1,
                   help='also the interference of a loop that writes the '
                   'numpy state at every step (ox_<lib>_np_w_*)')
    o = p.parse_args()
    logging.getLogger('absl').setLevel(logging.ERROR)

    import numpy as np
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import orbax.checkpoint as orbax
    import ckpt
    o.dir = os.path.abspath(o.dir)   # Orbax wants absolute paths
    os.makedirs(o.dir, exist_ok=True)
    note('generating %.2f GiB in %d arrays' % (o.gib, o.arrays))
    state = make_state(np, o.gib, o.arrays)
    nbytes = sum(a.nbytes for a in state.values())
    emit('ox_bytes', 0, nbytes, 'B')
    mesh = Mesh(np.array(jax.devices()), ('d',))
    sh = NamedSharding(mesh, P('d'))
    jstate = {k: jax.device_put(v, sh) for k, v in state.items()}
    jax.block_until_ready(jstate)
    targets = {
        'np': {k: np.empty_like(v) for k, v in state.items()},
        'jax': {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sh)
                for k, v in state.items()},
    }
    libs = [(n, m) for n, m in (('ckpt', ckpt), ('orbax', orbax))
            if n in o.only.split(',')]
    kinds = [(k, st) for k, st in (('np', state), ('jax', jstate))
             if k in o.kinds.split(',')]
    if 'np' in o.kinds.split(','):
        bench_memcpy(np, state, o.runs)
    for kind, st in kinds:
        bench_kind(libs, kind, st, targets[kind], o.dir, o.runs, nbytes, np)
    if o.interference_steps > 0:
        ikinds = list(kinds)
        if o.interference_writes and 'np' in o.kinds.split(','):
            # a copy: the loop writes it
            ikinds.append(('np_w', {k: v.copy() for k, v in state.items()}))
        bench_interference(libs, ikinds, o.dir, o.interference_steps, o.runs,
                           np)


if __name__ == '__main__':
    main()

"""dist_bench.py - the Python side of the distributed benchmark rows:
a step of one global float32 array saved by RANKS processes (RANK /
WORLD_SIZE, each its rows as a ckpt.Shard; the time each save() blocks,
beside a memcpy of the part) is restored by 2 processes into
Shard targets of their layout (resharded, warm page cache: after one
untimed restore), beside a warm memcpy of the same bytes in each process,
in turn with the restores (the median of 5 of each); and the same state
saved by RANKS processes with torch.save + fsync each (what DCP users do
without async), beside ckptd's global commit measured by bench_dist.

    dist_bench.py --dir DIR [--mib 256] [--ranks 4] [--runs 3]
                  [--restore-procs 2]

Prints JSON lines {"case", "run", "value", "unit"}:
  dist_py_blocking     per saving process: its save() of a step (its
                       second: the first warms its staging memory)
  dist_py_memcpy       per saving process: memcpy of its part, just before
                       (all processes at once, as their saves)
  dist_restore2_bw     per restoring process: its part / restore time
  dist_restore2_memcpy_bw  per process: memcpy of its part (prefaulted)
                       (--restore-procs P: dist_restoreP_*, P processes
                       restore; with P = 3 no saved piece fits wholly in
                       a target, so every copy is a piece copy)
  dist_torch_save_fsync    first rank's start to the last rank's fsync
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

COLS = 1024
REPEAT = 5      # restores and memcpys per run and process: their median


def rows_of(n, world, rank):
    q, r = divmod(n, world)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


def worker(a):
    import ckpt
    ckpt.distributed.initialize()
    rank, world = ckpt.distributed.process_index(), \
        ckpt.distributed.process_count()
    n = a.mib * a.ranks * (1 << 20) // (4 * COLS)     # global rows
    lo, hi = rows_of(n, world, rank)
    res = {}
    if a.worker == 'save':
        part = np.random.default_rng(rank).standard_normal(
            (hi - lo, COLS), dtype=np.float32)
        buf = np.ones_like(part)        # prefaulted
        with ckpt.CheckpointManager(a.dir) as m:
            # a first save, untimed, as a training job's first: its
            # staging memory is fresh (first touch); later saves reuse it
            m.save(a.step - 1, args=ckpt.args.StandardSave(
                {'w': ckpt.Shard(part, (n, COLS), (lo, 0))}))
            m.wait_until_finished()
            ready(); go()
            t = time.perf_counter()
            np.copyto(buf, part)
            res['memcpy'] = time.perf_counter() - t
            t = time.perf_counter()
            m.save(a.step, args=ckpt.args.StandardSave(
                {'w': ckpt.Shard(part, (n, COLS), (lo, 0))}))
            res['blocking'] = time.perf_counter() - t
            m.wait_until_finished()
    elif a.worker == 'restore':
        buf = np.ones((hi - lo, COLS), np.float32)      # prefaulted
        src = np.ones_like(buf)
        target = {'w': ckpt.Shard(buf, (n, COLS), (lo, 0))}
        with ckpt.CheckpointManager(a.dir) as m:
            # warm: the daemon writes with O_DIRECT, so the step's files
            # are not in the page cache after the save; one untimed
            # restore reads them in
            m.restore(a.step, args=ckpt.args.StandardRestore(target))
            ready(); go()
            # memcpy and restore in turn (a drift of the machine's speed
            # touches both); the median of each
            tm, tr = [], []
            for _ in range(REPEAT):
                t = time.perf_counter()
                np.copyto(buf, src)
                tm.append(time.perf_counter() - t)
                t = time.perf_counter()
                got = m.restore(a.step,
                                args=ckpt.args.StandardRestore(target))
                tr.append(time.perf_counter() - t)
            res['memcpy'] = sorted(tm)[REPEAT // 2]
            res['restore'] = sorted(tr)[REPEAT // 2]
        assert got['w'].data is buf
        res['bytes'] = buf.nbytes
    else:   # torch.save + fsync of this rank's part
        import torch
        part = torch.from_numpy(np.random.default_rng(rank).standard_normal(
            (hi - lo, COLS), dtype=np.float32))
        path = os.path.join(a.dir, 'rank%d.pt' % rank)
        ready(); go()
        res['start'] = time.time()
        with open(path, 'wb') as f:
            torch.save({'w': part}, f)
            f.flush()
            os.fsync(f.fileno())
        res['end'] = time.time()
        os.unlink(path)
    print(json.dumps(res), flush=True)


def ready():
    print('ready', flush=True)


def go():
    sys.stdin.readline()


def job(a, what, world, step, root=None):
    env = dict(os.environ, WORLD_SIZE=str(world))
    env.pop('TORCHELASTIC_RUN_ID', None)
    procs = [subprocess.Popen(
        [sys.executable, __file__, '--worker', what, '--dir', root or a.dir,
         '--mib', str(a.mib), '--ranks', str(a.ranks), '--step', str(step)],
        env=dict(env, RANK=str(r)), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True) for r in range(world)]
    for p in procs:     # all at once: prepared, then timed together
        assert p.stdout.readline().strip() == 'ready'
    for p in procs:
        p.stdin.write('go\n')
        p.stdin.flush()
    out = []
    for p in procs:
        line = p.stdout.readline()
        p.wait()
        if p.returncode != 0:
            raise SystemExit('%s rank failed (%d)' % (what, p.returncode))
        out.append(json.loads(line))
    return out


def emit(case, run, value, unit):
    print(json.dumps({'case': case, 'run': run, 'value': value,
                      'unit': unit}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--dir', required=True)
    ap.add_argument('--mib', type=int, default=256)
    ap.add_argument('--ranks', type=int, default=4)
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--restore-procs', type=int, default=2)
    ap.add_argument('--worker')
    ap.add_argument('--step', type=int, default=1)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    os.makedirs(a.dir, exist_ok=True)
    for run in range(a.runs):
        root = os.path.join(a.dir, 'step-%d' % run)   # a fresh root each run
        shutil.rmtree(root, ignore_errors=True)
        for r in job(a, 'save', a.ranks, 1, root):
            emit('dist_py_blocking', run, r['blocking'], 's')
            emit('dist_py_memcpy', run, r['memcpy'], 's')
        rp = a.restore_procs
        for r in job(a, 'restore', rp, 1, root):
            emit('dist_restore%d_bw' % rp, run, r['bytes'] / r['restore'],
                 'B/s')
            emit('dist_restore%d_memcpy_bw' % rp, run,
                 r['bytes'] / r['memcpy'], 'B/s')
        shutil.rmtree(root)
        t = job(a, 'torch', a.ranks, 0)
        emit('dist_torch_save_fsync', run,
             max(r['end'] for r in t) - min(r['start'] for r in t), 's')


if __name__ == '__main__':
    main()

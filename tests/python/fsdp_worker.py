"""One rank of a small FSDP-style training job, run by test_distributed.py
with torch.distributed (gloo, CPU): every parameter and its SGD momentum
are cut by rows across the ranks; each step the slices are all-gathered
for the forward, the gradient is all-reduced, and each rank updates only
its rows.  Every EVERY steps the rank saves its rows as ckpt.Shard pieces
of the global arrays.

usage: fsdp_worker.py ROOT OUT TOTAL EVERY [--die-before STEP] [--resume]

--die-before STEP: the rank SIGKILLs itself just before saving STEP.
--resume: start from the latest step under ROOT, restored into Shard
targets of this job's layout (any number of processes).
OUT.<rank> gets a JSON report; rank 0 writes the final parameters to
OUT.npz."""

import datetime
import json
import os
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist

import ckpt

SHAPES = {'w1': (8, 6), 'b1': (8,), 'w2': (4, 8), 'b2': (4,)}
LR, MU = 0.05, 0.9


def rows(n, world, rank):
    q, r = divmod(n, world)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


def initial():
    g = torch.Generator().manual_seed(7)
    return {k: torch.randn(s, generator=g) * 0.5 for k, s in SHAPES.items()}


def batch(step):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(16, 6, generator=g)
    return x, torch.sin(x[:, :4] * 1.5)


def gather(local, world):
    full = {}
    for k, t in local.items():
        sizes = [rows(SHAPES[k][0], world, r) for r in range(world)]
        parts = [torch.empty((hi - lo,) + SHAPES[k][1:]) for lo, hi in sizes]
        dist.all_gather(parts, t.contiguous())
        full[k] = torch.cat(parts)
    return full


def train_step(local, mom, step, rank, world):
    full = {k: v.requires_grad_(True) for k, v in gather(local, world).items()}
    x, y = batch(step)
    h = torch.tanh(x @ full['w1'].t() + full['b1'])
    loss = ((h @ full['w2'].t() + full['b2'] - y) ** 2).mean()
    loss.backward()
    for k in SHAPES:
        lo, hi = rows(SHAPES[k][0], world, rank)
        # each rank contributes its rows of the gradient, so the
        # all-reduced sum is exact whatever the number of ranks
        g = torch.zeros_like(full[k].grad)
        g[lo:hi] = full[k].grad[lo:hi]
        dist.all_reduce(g)
        mom[k].mul_(MU).add_(g[lo:hi])
        local[k].sub_(LR * mom[k])


def shards(local, mom):
    tree = {'params': {}, 'momentum': {}}
    for k in SHAPES:
        lo = rows(SHAPES[k][0], WORLD, RANK)[0]
        off = (lo,) + (0,) * (len(SHAPES[k]) - 1)
        tree['params'][k] = ckpt.Shard(local[k], SHAPES[k], off)
        tree['momentum'][k] = ckpt.Shard(mom[k], SHAPES[k], off)
    return tree


def main():
    global RANK, WORLD
    root, out, total, every = sys.argv[1], sys.argv[2], \
        int(sys.argv[3]), int(sys.argv[4])
    args = sys.argv[5:]
    die = int(args[args.index('--die-before') + 1]) \
        if '--die-before' in args else None
    dist.init_process_group('gloo', timeout=datetime.timedelta(seconds=20))
    ckpt.distributed.initialize()           # from torch.distributed
    RANK, WORLD = ckpt.distributed.process_index(), \
        ckpt.distributed.process_count()
    assert (RANK, WORLD) == (dist.get_rank(), dist.get_world_size())
    res = {'rank': RANK, 'error': None, 'start': 0}
    m = ckpt.CheckpointManager(root, options=ckpt.CheckpointManagerOptions(
        async_options=ckpt.AsyncOptions(timeout_secs=10)))
    full = initial()
    local, mom = {}, {}
    for k in SHAPES:
        lo, hi = rows(SHAPES[k][0], WORLD, RANK)
        local[k] = full[k][lo:hi].clone()
        mom[k] = torch.zeros_like(local[k])
    start = 0
    if '--resume' in args:
        start = m.latest_step()
        target = shards({k: torch.empty_like(v) for k, v in local.items()},
                        {k: torch.empty_like(v) for k, v in mom.items()})
        target['step'] = 0
        got = m.restore(start, args=ckpt.args.StandardRestore(target))
        assert got['step'] == start
        for k in SHAPES:
            local[k] = got['params'][k].data
            mom[k] = got['momentum'][k].data
        res['start'] = start
    try:
        for step in range(start + 1, total + 1):
            train_step(local, mom, step, RANK, WORLD)
            local = {k: v.detach() for k, v in local.items()}
            if step % every == 0:
                if die == step:
                    report(out, res)
                    os.kill(os.getpid(), signal.SIGKILL)
                tree = shards(local, mom)
                tree['step'] = step
                m.save(step, args=ckpt.args.StandardSave(tree))
                m.wait_until_finished()
    except Exception as e:  # reported to the test, which checks it
        res['error'] = '%s: %s' % (type(e).__name__, e)
        res['all_steps'] = list(m.all_steps())
        report(out, res)
        os._exit(3)         # the job is broken: no more collectives
    res['all_steps'] = list(m.all_steps())
    m.close()
    final = gather(local, WORLD)
    if RANK == 0:
        np.savez(out + '.npz', **{k: v.numpy() for k, v in final.items()})
    report(out, res)
    dist.destroy_process_group()


def report(out, res):
    with open('%s.%d' % (out, res['rank']), 'w') as f:
        json.dump(res, f)


if __name__ == '__main__':
    main()

"""One rank of a distributed job, run by test_distributed.py as a real
process with RANK / WORLD_SIZE in its environment (as torchrun sets them).

usage:
  dist_worker.py save ROOT OUT STEP[,STEP...] [options]
  dist_worker.py restore ROOT OUT STEP [--whole]

save: every rank saves the job's state of each step (global_state):
sharded leaves as this rank's ckpt.Shard pieces (layout_pieces), plain
leaves replicated; then waits for the commits. Options:
  --max-to-keep N       retention
  --timeout S           async_options.timeout_secs
  --die-before STEP     SIGKILL this process just before saving STEP
  --die-after STEP      SIGKILL this process just after save(STEP) returned
  --bad overlap|missing this rank's pieces of 'w' overlap the next rank's,
                        or this rank saves no piece of 'w'
  --job NAME            MultiprocessingOptions(barrier_sync_key_prefix=NAME)
restore: every rank restores STEP into Shard targets of the restore layout
(another cut than the save's), or with --whole the whole arrays (no
target). OUT (a JSON file per rank, OUT.<rank>) gets what happened; the
restored arrays go to OUT.<rank>.npz.
"""

import json
import os
import signal
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)),
                                'client', 'python'))

import ckpt  # noqa: E402

try:  # the 'opt/t' pieces are torch tensors where torch is installed
    import torch
except ImportError:  # the numpy-2 environment has no torch: numpy pieces
    torch = None

# leaf -> (global shape, dtype, dimension cut when saving, when restoring)
SHARDED = {
    'params/w': ((16, 12), np.float32, 0, 1),
    'params/e': ((10, 7, 3), np.int64, 1, 0),
    'opt/t': ((9, 4), np.float32, 0, 1),        # torch tensors (see above)
}


def global_state(step):
    """The job's state at `step`: {path: numpy array or scalar}."""
    rng = np.random.default_rng(1000 + step)
    out = {}
    for key, (gs, dt, _, _) in SHARDED.items():
        if np.issubdtype(dt, np.integer):
            out[key] = rng.integers(-2 ** 40, 2 ** 40, size=gs).astype(dt)
        else:
            out[key] = rng.standard_normal(gs).astype(dt)
    out['params/b'] = rng.standard_normal(12)            # replicated f64
    out['step'] = step
    out['name'] = 'run-%d' % step
    return out


def cut(n, parts, rank):
    """[lo, hi) of rank's slice of n split in `parts` (numpy's
    array_split: the first n % parts get one more)."""
    q, r = divmod(n, parts)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


def box(gs, dim, parts, rank):
    lo, hi = cut(gs[dim], parts, rank)
    off = tuple(lo if d == dim else 0 for d in range(len(gs)))
    shape = tuple(hi - lo if d == dim else gs[d] for d in range(len(gs)))
    return off, shape


def sl(off, shape):
    return tuple(slice(o, o + n) for o, n in zip(off, shape))


def to_tree(flat):
    tree = {}
    for k, v in flat.items():
        node = tree
        parts = k.split('/')
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return tree


def local_state(step, rank, world, bad=None, empty_w=False):
    """This rank's view: its pieces of the sharded leaves, the plain ones.
    empty_w: the last rank holds no piece of 'params/w' (an empty list of
    Shards), the others share it."""
    g = global_state(step)
    flat = {}
    for key, (gs, dt, dim, _) in SHARDED.items():
        if key == 'params/w' and empty_w and world > 1:
            if rank == world - 1:
                flat[key] = []
                continue
            off, shape = box(gs, dim, world - 1, rank)
        else:
            off, shape = box(gs, dim, world, rank)
        data = np.ascontiguousarray(g[key][sl(off, shape)])
        if key == 'opt/t' and torch is not None:
            flat[key] = ckpt.Shard(torch.from_numpy(data.copy()), gs, off)
        elif key == 'params/w':
            # two pieces (a list of Shards): the rows split in two
            h = shape[0] // 2
            o2 = (off[0] + h,) + off[1:]
            pieces = [ckpt.Shard(data[:h], gs, off),
                      ckpt.Shard(data[h:], gs, o2)]
            if bad == 'overlap':
                # one more row, the next rank's first
                lo, hi = off[0], off[0] + shape[0] + 1
                pieces = [ckpt.Shard(np.ascontiguousarray(g[key][lo:hi]),
                                     gs, off)]
            elif bad == 'missing':
                pieces = pieces[:1]
            elif bad == 'empty':
                pieces = []         # no piece, and nobody else has them
            flat[key] = pieces
        else:
            flat[key] = ckpt.Shard(data, gs, off)
    for key in ('params/b', 'step', 'name'):
        flat[key] = g[key]
    return to_tree(flat)


def report(out, rank, d):
    with open('%s.%d' % (out, rank), 'w') as f:
        json.dump(d, f)


def opts(args):
    kw = {}
    if '--max-to-keep' in args:
        kw['max_to_keep'] = int(args[args.index('--max-to-keep') + 1])
    if '--timeout' in args:
        kw['async_options'] = ckpt.AsyncOptions(
            timeout_secs=float(args[args.index('--timeout') + 1]))
    if '--job' in args:
        kw['multiprocessing_options'] = ckpt.MultiprocessingOptions(
            barrier_sync_key_prefix=args[args.index('--job') + 1])
    return ckpt.CheckpointManagerOptions(**kw)


def arg(args, name):
    return args[args.index(name) + 1] if name in args else None


def late_for(m, step, res):
    """A rank still computing when its step fails: check_for_errors
    raises the failure once (it arrives without a save of ours), then the
    late save of the step fails at once with the same error."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        try:
            m.check_for_errors()
        except Exception as e:
            res['async_error'] = '%s: %s' % (type(e).__name__, e)
            break
        time.sleep(0.05)
    try:
        m.check_for_errors()
        res['async_again'] = None
    except Exception as e:
        res['async_again'] = str(e)
    state = local_state(step, res['rank'], res['world'])
    t0 = time.monotonic()
    try:
        m.save(step, args=ckpt.args.StandardSave(state))
        res['late_save'] = None
    except Exception as e:
        res['late_save'] = '%s: %s' % (type(e).__name__, e)
    res['late_save_secs'] = time.monotonic() - t0


def save(root, out, steps, args):
    rank, world = ckpt.distributed.process_index(), \
        ckpt.distributed.process_count()
    die_before = arg(args, '--die-before')
    die_after = arg(args, '--die-after')
    late = arg(args, '--late')
    bad = arg(args, '--bad')
    res = {'rank': rank, 'world': world, 'saved': {}, 'error': None}
    m = ckpt.CheckpointManager(root, options=opts(args))
    try:
        for step in steps:
            if die_before is not None and step == int(die_before):
                report(out, rank, res)
                os.kill(os.getpid(), signal.SIGKILL)
            if late is not None and step == int(late):
                late_for(m, step, res)
                continue
            state = local_state(step, rank, world,
                                bad if step == steps[-1] else None,
                                '--empty-w' in args)
            if '--array' in args:
                # ArraySave of this rank's pieces of one global array
                a = ckpt.args.ArraySave(state['params']['w'])
            else:
                a = ckpt.args.StandardSave(state)
            res['saved'][str(step)] = bool(m.save(step, args=a))
            if die_after is not None and step == int(die_after):
                report(out, rank, res)
                os.kill(os.getpid(), signal.SIGKILL)
        m.wait_until_finished()
    except Exception as e:  # reported to the test, which checks it
        res['error'] = '%s: %s' % (type(e).__name__, e)
    res['all_steps'] = list(m.all_steps())
    m.close()
    report(out, rank, res)


def restore(root, out, step, args):
    rank, world = ckpt.distributed.process_index(), \
        ckpt.distributed.process_count()
    res = {'rank': rank, 'world': world, 'error': None}
    arrays = {}
    with ckpt.CheckpointManager(root) as m:
        try:
            if '--whole' in args:
                got = m.restore(step, args=ckpt.args.StandardRestore())
                for key in SHARDED:
                    a, b = key.split('/')
                    v = got[a][b]
                    arrays[key] = v.numpy() if torch is not None and \
                        isinstance(v, torch.Tensor) else np.asarray(v)
                arrays['params/b'] = got['params']['b']
                res['scalars'] = [got['step'], got['name']]
            else:
                target = {}
                for key, (gs, dt, _, dim) in SHARDED.items():
                    off, shape = box(gs, dim, world, rank)
                    if key == 'opt/t' and torch is not None:
                        t = torch.empty(shape, dtype=torch.float32)
                    else:
                        t = np.empty(shape, dt)
                    target[key] = ckpt.Shard(t, gs, off)
                target['params/b'] = np.empty(12, np.float64)
                target['step'] = 0
                target['name'] = ''
                got = m.restore(step, args=ckpt.args.StandardRestore(
                    to_tree(target)))
                for key in SHARDED:
                    a, b = key.split('/')
                    sh = got[a][b]
                    assert isinstance(sh, ckpt.Shard), type(sh)
                    data = sh.data.numpy() if torch is not None and \
                        isinstance(sh.data, torch.Tensor) else sh.data
                    arrays[key] = data
                    arrays[key + '@'] = np.asarray(sh.offsets)
                arrays['params/b'] = got['params']['b']
                res['scalars'] = [got['step'], got['name']]
        except Exception as e:
            res['error'] = '%s: %s' % (type(e).__name__, e)
    np.savez('%s.%d.npz' % (out, rank), **arrays)
    report(out, rank, res)


def main():
    cmd, root, out = sys.argv[1:4]
    ckpt.distributed.initialize()       # RANK / WORLD_SIZE
    if cmd == 'save':
        save(root, out, [int(s) for s in sys.argv[4].split(',')],
             sys.argv[5:])
    else:
        restore(root, out, int(sys.argv[4]), sys.argv[5:])


if __name__ == '__main__':
    main()

#!/usr/bin/python3
"""peers.py - what users would otherwise run, on the same data as bench_ckpt.

Writes `arrays` float32 arrays (gib GiB in total, incompressible) with
numpy.save, torch.save, h5py and zarr, each followed by fsync of every file
and directory written, and saves/restores them with the ckpt package (the
Python client of ckptd). One JSON line per sample on stdout, values in base
units, like bench_ckpt:

    /usr/bin/python3 peers.py --dir DIR [--gib 1] [--arrays 64] [--runs 5]
        [--only numpy,torch,h5py,zarr,ckpt]

The ckpt case needs CKPTD_SOCKET (and CKPT_LIBRARY / PYTHONPATH when run
from a build tree).
"""

import argparse
import json
import os
import shutil
import sys
import time


def emit(case, run, value, unit):
    print(json.dumps({'case': case, 'run': run, 'value': value,
                      'unit': unit}), flush=True)


def note(msg):
    print('peers.py: ' + msg, file=sys.stderr, flush=True)


def fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root):
    """fsync every file and directory under root (and root's parent)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fsync_path(os.path.join(dirpath, name))
        fsync_path(dirpath, directory=True)
    fsync_path(os.path.dirname(os.path.abspath(root)), directory=True)


def make_data(np, gib, n):
    each = int(gib * (1 << 30)) // n // 4096 * 4096
    rng = np.random.default_rng(1)
    return {'layer%02d' % i: rng.integers(0, 1 << 32, size=each // 4,
                                          dtype=np.uint32).view(np.float32)
            for i in range(n)}


def save_numpy(np, data, out):
    os.mkdir(out)
    for name, a in data.items():
        with open(os.path.join(out, name + '.npy'), 'wb') as f:
            np.save(f, a)
            f.flush()
            os.fsync(f.fileno())
    fsync_path(out, directory=True)
    fsync_path(os.path.dirname(out), directory=True)


def save_torch(torch, data, out):
    tensors = {k: torch.from_numpy(v) for k, v in data.items()}
    with open(out, 'wb') as f:
        torch.save(tensors, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_path(os.path.dirname(out), directory=True)


def save_h5py(h5py, data, out):
    with h5py.File(out, 'w') as f:
        for k, v in data.items():
            f.create_dataset(k, data=v)
    fsync_path(out)
    fsync_path(os.path.dirname(out), directory=True)


def save_zarr(zarr, data, out):
    g = zarr.open_group(out, mode='w')
    for k, v in data.items():
        g.create_dataset(k, data=v)     # defaults: auto chunks, Blosc
    fsync_tree(out)


def rm(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)


def bench_peer(name, fn, mod, data, work, runs, nbytes):
    note('%s (%d runs)' % (name, runs))
    out = os.path.join(work, 'peer-' + name)
    for r in range(runs):
        rm(out)
        os.sync()
        t0 = time.monotonic()
        fn(mod, data, out)
        t = time.monotonic() - t0
        emit(name + '_save_fsync', r, t, 's')
        emit(name + '_save_fsync_bw', r, nbytes / t, 'B/s')
    rm(out)


def bench_ckpt(np, data, work, runs, nbytes):
    import logging
    import ckpt as ocp
    # restoring without a target is what we measure; skip Orbax's warning
    logging.getLogger('absl').setLevel(logging.ERROR)
    note('ckpt python (%d runs)' % runs)
    root = os.path.join(work, 'python-ckpt')
    tree = {k: {'w': v} for k, v in data.items()}
    with ocp.CheckpointManager(root) as mngr:
        step = 1
        mngr.save(step, args=ocp.args.StandardSave(tree))
        mngr.wait_until_finished()
        for r in range(runs):
            step += 1
            os.sync()
            t0 = time.monotonic()
            mngr.save(step, args=ocp.args.StandardSave(tree))
            t1 = time.monotonic()
            mngr.wait_until_finished()
            t2 = time.monotonic()
            emit('py_save_blocking', r, t1 - t0, 's')
            emit('py_persist', r, nbytes / (t2 - t0), 'B/s')
        mngr.restore(step, args=ocp.args.StandardRestore())   # warm
        for r in range(runs):
            t0 = time.monotonic()
            got = mngr.restore(step, args=ocp.args.StandardRestore())
            t = time.monotonic() - t0
            for k, v in data.items():
                w = got[k]['w']
                if (w.dtype != v.dtype or w.shape != v.shape or
                        w[:16].tobytes() != v[:16].tobytes() or
                        w[-16:].tobytes() != v[-16:].tobytes()):
                    raise SystemExit('ckpt restore of %s differs' % k)
            del got, w
            emit('py_restore_new', r, nbytes / t, 'B/s')
        # the plain-Python peer of a restore into new arrays: a copy
        for r in range(runs):
            t0 = time.monotonic()
            copies = {k: v.copy() for k, v in data.items()}
            t = time.monotonic() - t0
            del copies
            emit('py_copy_new', r, nbytes / t, 'B/s')


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--dir', required=True)
    p.add_argument('--gib', type=float, default=1.0)
    p.add_argument('--arrays', type=int, default=64)
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--only', default='numpy,torch,h5py,zarr,ckpt')
    o = p.parse_args()
    only = set(o.only.split(','))

    import numpy as np
    os.makedirs(o.dir, exist_ok=True)
    note('generating %.2f GiB in %d arrays' % (o.gib, o.arrays))
    data = make_data(np, o.gib, o.arrays)
    nbytes = sum(a.nbytes for a in data.values())
    emit('py_bytes', 0, nbytes, 'B')

    if 'numpy' in only:
        bench_peer('numpy', save_numpy, np, data, o.dir, o.runs, nbytes)
    if 'torch' in only:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        bench_peer('torch', save_torch, torch, data, o.dir, o.runs, nbytes)
    if 'h5py' in only:
        import h5py
        bench_peer('h5py', save_h5py, h5py, data, o.dir, o.runs, nbytes)
    if 'zarr' in only:
        import zarr
        bench_peer('zarr', save_zarr, zarr, data, o.dir, o.runs, nbytes)
    if 'ckpt' in only:
        bench_ckpt(np, data, o.dir, o.runs, nbytes)


if __name__ == '__main__':
    main()

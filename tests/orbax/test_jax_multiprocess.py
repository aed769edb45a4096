"""jax.Array leaves of a two-process jax job (jax.distributed on loopback,
jax's CPU backend with gloo collectives, 4 devices per process): arrays
sharded across the processes save as pieces of one global array through
the distributed-steps machinery, and restore resharded into targets of
another layout in each process, and whole in a single process; a step a
single process saved restores into targets spanning both processes. A
three-process job (2 devices each) saves arrays one process holds no
shard of, and restores into targets giving a process no device."""

import os
import re
import socket
import subprocess
import sys

import numpy as np

from conftest import subprocess_env

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, 'jax_multiprocess_worker.py')
sys.path.insert(0, HERE)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run_pair(daemon, root, mode, nproc=2):
    port = str(_free_port())
    env = subprocess_env(daemon)
    for k in ('RANK', 'WORLD_SIZE', 'XLA_FLAGS'):
        env.pop(k, None)
    procs = [subprocess.Popen(
        [sys.executable, WORKER, str(i), port, root, mode, str(nproc)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(nproc)]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, out))
    bad = ['process %d (%s), status %d:\n%s' % (i, mode, rc, out[-3000:])
           for i, (rc, out) in enumerate(outs)
           if rc != 0 or not out.rstrip().endswith('ok')]
    assert not bad, '\n'.join(bad)


def test_two_process_save_then_resharded_restore(daemon, tmp_path):
    import ckpt
    import jax_multiprocess_worker as w
    root = str(tmp_path / 'r')
    _run_pair(daemon, root, 'save')
    _run_pair(daemon, root, 'restore')

    # one process, no jax.distributed: the whole global arrays, bit for bit
    want = w.state_host(1)
    with ckpt.CheckpointManager(root) as m:
        assert m.all_steps() == [0, 1]
        got = m.restore(1, args=ckpt.args.StandardRestore(
            dict({k: np.zeros_like(v) for k, v in want.items()}, n=0)))
        md = m.item_metadata(1)
    assert got['n'] == 11
    for k, v in want.items():
        assert got[k].dtype == v.dtype
        assert got[k].tobytes() == v.tobytes(), k
    # rows: 8 pieces, one per device; cols (replicated over the processes):
    # 4 pieces, written by the two processes in turn; repl: a plain leaf
    assert len(md['rows'].pieces) == 8
    assert len(md['blocks'].pieces) == 8
    assert len(md['cols'].pieces) == 4
    files = {p.file for p in md['cols'].pieces}
    ranks = {int(re.search(r'-p(\d+)-', f).group(1)) for f in files}
    assert ranks == {0, 1}, files
    assert md['repl'].pieces is None

    # a step one process saved as whole arrays, restored by two processes
    # into targets spanning both (each reads its part of each array)
    with ckpt.CheckpointManager(root) as m:
        m.save(2, args=ckpt.args.StandardSave(dict(want, n=11)))
        m.wait_until_finished()
        assert m.item_metadata(2)['rows'].pieces is None
    _run_pair(daemon, root, 'restore-whole')


def test_process_holding_none_of_an_array(daemon, tmp_path):
    """Three processes: arrays whose devices are all in processes 1 and 2
    (rows over 4 devices, a copy on 4) save as their pieces while
    process 0 hands none, and the step commits; restored into targets
    that give some process no device, that process gets the jax.Array
    with no addressable shards and the others their slices."""
    import ckpt
    import jax_multiprocess_worker as w
    root = str(tmp_path / 'r')
    _run_pair(daemon, root, 'save-far', 3)
    want = w.far_host(0)
    with ckpt.CheckpointManager(root) as m:
        assert m.all_steps() == [0]
        got = m.restore(0, args=ckpt.args.StandardRestore(
            dict({k: np.zeros_like(v) for k, v in want.items()}, n=0)))
        md = m.item_metadata(0)
    assert got['n'] == 7
    for k, v in want.items():
        assert got[k].dtype == v.dtype
        assert got[k].tobytes() == v.tobytes(), k
    ranks = {k: {int(re.search(r'-p(\d+)-', p.file).group(1))
                 for p in md[k].pieces} for k in want}
    # far: 4 row pieces from processes 1 and 2; far_repl: one piece (its
    # copy is replicated over them only: the primary holds none of it)
    assert len(md['far'].pieces) == 4 and ranks['far'] == {1, 2}
    assert len(md['far_repl'].pieces) == 1 and ranks['far_repl'] <= {1, 2}
    assert len(md['spread'].pieces) == 6 and ranks['spread'] == {0, 1, 2}
    _run_pair(daemon, root, 'restore-far', 3)

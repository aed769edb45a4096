"""Distributed steps: several real processes (RANK / WORLD_SIZE, as torchrun
sets them) save one step together through a real ckptd; restores with
another number of processes reshard; rank failures fail the step on every
rank; the step on disk is checked by the independent numpy reader."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import subprocess_env

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, 'dist_worker.py')
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'integration'))

import dist_worker  # noqa: E402
import read_step  # noqa: E402


# ---- helpers --------------------------------------------------------------------

def start(daemon, world, rank, cmd, root, out, what, extra=()):
    env = subprocess_env(daemon, RANK=str(rank), WORLD_SIZE=str(world))
    env.pop('TORCHELASTIC_RUN_ID', None)
    env.pop('CKPT_JOB', None)
    return subprocess.Popen(
        [sys.executable, WORKER, cmd, root, out, what] + list(extra),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(procs, timeout=180):
    outs = []
    for p in procs:
        o, _ = p.communicate(timeout=timeout)
        outs.append((p.returncode, o.decode('utf-8', 'replace')))
    return outs


def reports(out, ranks):
    res = {}
    for r in ranks:
        with open('%s.%d' % (out, r)) as f:
            res[r] = json.load(f)
    return res


def job(daemon, world, cmd, root, out, what, extra=None, ranks=None):
    """Run ranks (default: all of world) of a job; extra(rank) -> args.
    Returns {rank: report}; every process must have exited 0 unless it
    killed itself (its report is then the one written before)."""
    ranks = list(range(world)) if ranks is None else ranks
    procs = [start(daemon, world, r, cmd, root, out, what,
                   extra(r) if extra else ()) for r in ranks]
    for r, (rc, text) in zip(ranks, finish(procs)):
        assert rc in (0, -9), 'rank %d exited %d:\n%s' % (r, rc, text)
    return reports(out, ranks)


def all_ok(res, steps=None):
    """Every rank of the reports res without error and, when steps is
    given, listing those steps."""
    for rep in res.values():
        assert rep['error'] is None, rep
        if steps is not None:
            assert rep['all_steps'] == steps, rep


def ckptctl_steps(daemon, root):
    # the build tree: <build>/daemon/ckptd -> <build>/client/ckptctl
    b = os.path.dirname(os.path.dirname(os.environ['CKPTD_BIN']))
    p = subprocess.run([os.path.join(b, 'client', 'ckptctl'), 'steps', root],
                       capture_output=True, text=True,
                       env=subprocess_env(daemon))
    return p.stdout + p.stderr


def steps_on_disk(root):
    return sorted(int(n) for n in os.listdir(root) if n.isdigit())


def leftovers(root):
    return [n for n in os.listdir(root) if 'tmp' in n or n.startswith('.')]


def expected(step):
    return dist_worker.global_state(step)


def check_on_disk(root, step):
    """The independent reader assembles every global array from its
    pieces (checking they tile it) and finds the job's values."""
    leaves = read_step.read_item(os.path.join(root, str(step), 'default'))
    want = expected(step)
    for key in dist_worker.SHARDED:
        kind, arr = leaves[key]
        assert arr.dtype == want[key].dtype
        assert arr.tobytes() == want[key].tobytes(), key
    assert leaves['params/b'][1].tobytes() == want['params/b'].tobytes()
    assert leaves['step'] == ('int', step)
    assert leaves['name'] == ('str', want['name'])


def check_assembled(out, world, step):
    """The global arrays put together from every rank's restored Shards
    (each element written exactly once) are the ones step saved."""
    want = expected(step)
    got = {k: np.zeros_like(want[k]) for k in dist_worker.SHARDED}
    seen = {k: np.zeros(want[k].shape, np.int32) for k in dist_worker.SHARDED}
    for r in range(world):
        z = np.load('%s.%d.npz' % (out, r))
        for k in dist_worker.SHARDED:
            off = tuple(int(o) for o in z[k + '@'])
            sl = dist_worker.sl(off, z[k].shape)
            got[k][sl] = z[k]
            seen[k][sl] += 1
        assert z['params/b'].tobytes() == want['params/b'].tobytes()
    for k in dist_worker.SHARDED:
        assert (seen[k] == 1).all(), k
        assert got[k].tobytes() == want[k].tobytes(), (world, k)


@pytest.fixture
def identity():
    import ckpt
    yield ckpt.distributed
    ckpt.distributed.initialize(0, 1)


# ---- process identity and shards (one process) ---------------------------------------------

def test_identity(ocp, identity, monkeypatch):
    identity.initialize(2, 4)
    assert (identity.process_index(), identity.process_count()) == (2, 4)
    monkeypatch.setenv('RANK', '3')
    monkeypatch.setenv('WORLD_SIZE', '5')
    identity.initialize()
    assert (identity.process_index(), identity.process_count()) == (3, 5)
    identity.initialize(process_index=1)
    assert (identity.process_index(), identity.process_count()) == (1, 5)
    with pytest.raises(ValueError, match='process_index'):
        identity.initialize(5, 5)
    with pytest.raises(ValueError, match='process_count'):
        identity.initialize(0, 0)
    monkeypatch.delenv('RANK')
    monkeypatch.delenv('WORLD_SIZE')
    identity.initialize()
    assert (identity.process_index(), identity.process_count()) == (0, 1)


def test_shard_checks(ocp):
    with pytest.raises(ValueError, match='outside'):
        ocp.Shard(np.zeros((3, 2)), (4, 2), (2, 0))
    with pytest.raises(ValueError, match='dimensions'):
        ocp.Shard(np.zeros((3, 2)), (4, 2), (0,))
    with pytest.raises(ValueError, match='at least one dimension'):
        ocp.Shard(np.zeros(()), (), ())
    with pytest.raises(TypeError):
        ocp.Shard([1, 2], (2,), (0,))
    s = ocp.Shard(np.zeros((3, 2), np.float32), [4, 2], [1, 0])
    assert s.global_shape == (4, 2) and s.offsets == (1, 0)
    assert s.shape == (3, 2) and s.slices() == (slice(1, 4), slice(0, 2))


def test_overlapping_pieces_in_one_save(ocp, tmp_path):
    g = np.arange(8, dtype=np.float32)
    tree = {'w': [ocp.Shard(g[:5], (8,), (0,)), ocp.Shard(g[4:], (8,), (4,))]}
    with ocp.CheckpointManager(str(tmp_path)) as m:
        with pytest.raises(ValueError, match='overlap'):
            m.save(1, args=ocp.args.StandardSave(tree))
        assert m.all_steps() == []


def test_multiprocessing_options(ocp, identity):
    MP = ocp.options.MultiprocessingOptions
    O = ocp.CheckpointManagerOptions
    O(multiprocessing_options=MP(primary_host=1, active_processes={1, 3}))
    with pytest.raises(ValueError, match='primary_host'):
        O(multiprocessing_options=MP(primary_host=0, active_processes={1, 3}))
    with pytest.raises(NotImplementedError):
        O(multiprocessing_options=MP(primary_host=None))


def test_shard_targets_of_a_whole_array(ocp, tmp_path):
    """A step saved by one process restores into Shard targets of any
    layout (numpy and torch, with a cast), and zero-copy too."""
    w = np.random.default_rng(5).standard_normal((6, 10)).astype(np.float32)
    with ocp.CheckpointManager(str(tmp_path)) as m:
        m.save(1, args=ocp.args.StandardSave({'w': w}))
        m.wait_until_finished()
        for zc in (False, True):
            t = {'w': [ocp.Shard(np.empty((6, 4), np.float64), (6, 10),
                                 (0, 0)),
                       ocp.Shard(np.empty((6, 6), np.float32), (6, 10),
                                 (0, 4))]}
            got = m.restore(1, args=ocp.args.StandardRestore(
                t, zero_copy=zc))['w']
            assert [type(s) for s in got] == [ocp.Shard, ocp.Shard]
            assert got[0].data.dtype == np.float64
            assert np.array_equal(got[0].data, w[:, :4].astype(np.float64))
            assert got[1].data.tobytes() == w[:, 4:].tobytes()
            assert got[1].offsets == (0, 4)
        # large enough for the copies to be cut and shared by threads
        big = np.random.default_rng(6).standard_normal(
            (1500, 4096)).astype(np.float32)
        m.save(2, args=ocp.args.StandardSave({'w': big}))
        m.wait_until_finished()
        t = [ocp.Shard(np.empty((1500, 1000), np.float32), big.shape,
                       (0, 0)),
             ocp.Shard(np.empty((1500, 3096), np.float32), big.shape,
                       (0, 1000))]
        got = m.restore(2, args=ocp.args.StandardRestore({'w': t}))['w']
        assert got[0].data is t[0].data     # filled in place
        assert got[0].data.tobytes() == big[:, :1000].tobytes()
        assert got[1].data.tobytes() == big[:, 1000:].tobytes()
        with pytest.raises(ValueError, match='Shape mismatch|global shape'):
            m.restore(1, args=ocp.args.StandardRestore(
                {'w': ocp.Shard(np.empty((2, 2), np.float32), (7, 10),
                                (0, 0))}))


def _flip_last_tensor(item):
    """Flip a byte in the middle of the tensor stored last in item."""
    import struct
    best = None
    for n in sorted(os.listdir(item)):
        if not n.endswith('.safetensors'):
            continue
        with open(os.path.join(item, n), 'rb') as f:
            hl = struct.unpack('<Q', f.read(8))[0]
            header = json.loads(f.read(hl))
        for k, v in header.items():
            if not k.startswith('__') and (best is None or
                                            v['data_offsets'][0] > best[1]):
                best = (n, v['data_offsets'][0], v['data_offsets'][1], hl)
    n, begin, end, hl = best
    with open(os.path.join(item, n), 'r+b') as f:
        pos = 8 + hl + (begin + end) // 2
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))


def test_corrupt_piece_fails_on_every_copy_path(ocp, tmp_path):
    """A corrupted saved piece fails every restore that reads it, naming
    the tensor, whatever the copy: straight into place from the mapping
    (numpy's buffers) or by pread (torch's), cast, columns; a target that
    reads only the sound piece still restores (torch's path where torch
    is installed: the numpy 2 environment has none)."""
    try:
        import torch
    except ImportError:
        torch = None
    big = np.random.default_rng(7).standard_normal(
        (1500, 4096)).astype(np.float32)
    root = str(tmp_path / 'r')
    with ocp.CheckpointManager(root) as m:
        m.save(1, args=ocp.args.StandardSave({'w': [
            ocp.Shard(big[:750], big.shape, (0, 0)),
            ocp.Shard(big[750:], big.shape, (750, 0))]}))
        m.wait_until_finished()
    _flip_last_tensor(os.path.join(root, '1', 'default'))

    def shard(a, off):
        return {'w': ocp.Shard(a, big.shape, off)}
    bad = {
        'rows of the piece': shard(np.empty((750, 4096), np.float32),
                                   (750, 0)),
        'every row': shard(np.empty((1500, 4096), np.float32), (0, 0)),
        'cast': shard(np.empty((750, 4096), np.float64), (750, 0)),
        'columns': shard(np.empty((1500, 96), np.float32), (0, 4000)),
        'whole array': {'w': np.empty(big.shape, np.float32)},
        'no target': None,
    }
    if torch is not None:
        bad['torch rows'] = shard(torch.empty((750, 4096)), (750, 0))
    with ocp.CheckpointManager(root) as m:
        for what, target in bad.items():
            with pytest.raises(OSError) as ei:
                m.restore(1, args=ocp.args.StandardRestore(target))
            assert 'checksum mismatch' in str(ei.value), what
            assert "'w'" in str(ei.value), (what, str(ei.value))
        got = m.restore(1, args=ocp.args.StandardRestore(
            shard(np.empty((750, 4096), np.float32), (0, 0))))['w']
        assert got.data.tobytes() == big[:750].tobytes()


def test_targets_asking_for_no_piece(ocp, tmp_path):
    """A rank asking for no piece of an array (an empty list where Shard
    targets would go) gets an empty list back and reads none of it: with
    a corrupted piece on disk, those restores succeed (numpy copies and
    zero copy, StandardRestore, PyTreeRestore, ArrayRestore), while any
    restore that reads the array fails on the checksum."""
    rng = np.random.default_rng(11)
    big = rng.standard_normal((64, 96)).astype(np.float32)
    whole = rng.integers(0, 100, (5, 7)).astype(np.int16)
    root = str(tmp_path / 'r')
    with ocp.CheckpointManager(root) as m:
        m.save(1, args=ocp.args.StandardSave({
            'w': [ocp.Shard(big[:40], big.shape, (0, 0)),
                  ocp.Shard(big[40:], big.shape, (40, 0))],
            'n': 3}))
        m.save(2, args=ocp.args.StandardSave({'whole': whole, 'e': [],
                                              'n': 4}))
        m.wait_until_finished()
    _flip_last_tensor(os.path.join(root, '1', 'default'))
    with ocp.CheckpointManager(root) as m:
        for zc in (False, True):
            got = m.restore(1, args=ocp.args.StandardRestore(
                {'w': [], 'n': 0}, zero_copy=zc))
            assert got == {'w': [], 'n': 3}, (zc, got)
            got = m.restore(1, args=ocp.args.PyTreeRestore(
                {'w': [], 'n': 0}, zero_copy=zc))
            assert got == {'w': [], 'n': 3}, (zc, got)
            # partial: the array alone
            got = m.restore(1, args=ocp.args.PyTreeRestore(
                {'w': []}, partial_restore=True, zero_copy=zc))
            assert got == {'w': []}, (zc, got)
        # another root's step (restore(directory=...)) alike
        with ocp.CheckpointManager(str(tmp_path / 'other')) as o:
            got = o.restore(1, directory=root, args=ocp.args.StandardRestore(
                {'w': [], 'n': 0}))
            assert got == {'w': [], 'n': 3}, got
        # the corruption is there for whoever reads the array
        for target in ({'w': np.empty(big.shape, np.float32), 'n': 0},
                       {'w': [ocp.Shard(np.empty((24, 96), np.float32),
                                        big.shape, (40, 0))], 'n': 0}):
            with pytest.raises(OSError, match='checksum mismatch'):
                m.restore(1, args=ocp.args.StandardRestore(target))
        # an array saved whole, and a saved empty list, asked for by []
        got = m.restore(2, args=ocp.args.StandardRestore(
            {'whole': [], 'e': [], 'n': 0}))
        assert got == {'whole': [], 'e': [], 'n': 4}
        # ... beside Shard targets of the same array elsewhere in the tree
        got = m.restore(2, args=ocp.args.StandardRestore(
            {'whole': [ocp.Shard(np.empty((2, 7), np.int64), (5, 7),
                                 (3, 0))], 'e': [], 'n': 0}))
        assert np.array_equal(got['whole'][0].data, whole[3:])

    # ArrayRestore: an ArraySave of pieces, one of them corrupted
    aroot = str(tmp_path / 'a')
    with ocp.CheckpointManager(aroot) as m:
        m.save(1, args=ocp.args.ArraySave(
            [ocp.Shard(big[:, :50], big.shape, (0, 0)),
             ocp.Shard(big[:, 50:], big.shape, (0, 50))]))
        m.wait_until_finished()
    _flip_last_tensor(os.path.join(aroot, '1', 'default'))
    with ocp.CheckpointManager(aroot) as m:
        for zc in (False, True):
            assert m.restore(1, args=ocp.args.ArrayRestore(
                [], zero_copy=zc)) == []
        with pytest.raises(OSError, match='checksum mismatch'):
            m.restore(1, args=ocp.args.ArrayRestore())


def test_corrupt_chunk_outside_the_rows_read(ocp, tmp_path):
    """Pieces over 2 MiB carry a checksum per 2 MiB chunk: a restore that
    reads some rows of a piece verifies only the chunks holding them, so
    a corrupted chunk it does not read does not fail it, and one it reads
    does, naming the tensor and the chunk."""
    big = np.random.default_rng(8).standard_normal(
        (2048, 1024)).astype(np.float32)        # pieces of 4 MiB: 2 chunks
    root = str(tmp_path / 'r')
    with ocp.CheckpointManager(root) as m:
        m.save(1, args=ocp.args.StandardSave({'w': [
            ocp.Shard(big[:1024], big.shape, (0, 0)),
            ocp.Shard(big[1024:], big.shape, (1024, 0))]}))
        m.wait_until_finished()
    item = os.path.join(root, '1', 'default')
    with open(os.path.join(item, '_METADATA')) as f:
        pieces = [lf for lf in json.load(f)['leaves'] if 'pieces' in lf][0]
    for pc in pieces['pieces']:
        assert pc['chunk'] == 2 << 20
        assert len(pc['xxh3_chunks']) == 2 * 16
    # a byte of row 1024 + 900: the second chunk (rows 512..1023) of the
    # second piece
    import struct
    pc = [p for p in pieces['pieces'] if p['offsets'][0] == 1024][0]
    with open(os.path.join(item, pc['file']), 'r+b') as f:
        hl = struct.unpack('<Q', f.read(8))[0]
        begin = json.loads(f.read(hl))[pc['tensor']]['data_offsets'][0]
        pos = 8 + hl + begin + 900 * 1024 * 4 + 5
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x20]))

    def rows(lo, hi):
        return {'w': ocp.Shard(np.empty((hi - lo, 1024), np.float32),
                               big.shape, (lo, 0))}
    with ocp.CheckpointManager(root) as m:
        for lo, hi in ((1024 + 100, 1024 + 400), (1000, 1100),
                       (0, 1024 + 500)):
            got = m.restore(1, args=ocp.args.StandardRestore(
                rows(lo, hi)))['w']
            assert got.data.tobytes() == big[lo:hi].tobytes(), (lo, hi)
        for lo, hi in ((1024 + 600, 1024 + 700), (1024 + 900, 1024 + 901)):
            with pytest.raises(OSError) as ei:
                m.restore(1, args=ocp.args.StandardRestore(rows(lo, hi)))
            assert "checksum mismatch for tensor 'w'" in str(ei.value)
            assert 'chunk 1)' in str(ei.value), str(ei.value)

    # column-wise pieces (every row, half the columns: 4 MiB, two chunks
    # of 1024 rows) in a target of rows: each is read in the rows it
    # holds, so only those chunks are checked
    root2 = str(tmp_path / 'c')
    with ocp.CheckpointManager(root2) as m:
        m.save(1, args=ocp.args.StandardSave({'w': [
            ocp.Shard(np.ascontiguousarray(big[:, :512]), big.shape, (0, 0)),
            ocp.Shard(np.ascontiguousarray(big[:, 512:]), big.shape,
                      (0, 512))]}))
        m.wait_until_finished()
    item = os.path.join(root2, '1', 'default')
    with open(os.path.join(item, '_METADATA')) as f:
        pieces = [lf for lf in json.load(f)['leaves'] if 'pieces' in lf][0]
    pc = [p for p in pieces['pieces'] if p['offsets'][1] == 512][0]
    with open(os.path.join(item, pc['file']), 'r+b') as f:
        hl = struct.unpack('<Q', f.read(8))[0]
        begin = json.loads(f.read(hl))[pc['tensor']]['data_offsets'][0]
        pos = 8 + hl + begin + (1500 * 512 + 7) * 4    # row 1500: chunk 1
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x20]))
    with ocp.CheckpointManager(root2) as m:
        got = m.restore(1, args=ocp.args.StandardRestore(rows(0, 1000)))
        assert got['w'].data.tobytes() == big[:1000].tobytes()
        with pytest.raises(OSError) as ei:
            m.restore(1, args=ocp.args.StandardRestore(rows(1400, 1600)))
        assert "checksum mismatch for tensor 'w'" in str(ei.value)
        assert 'chunk 1)' in str(ei.value), str(ei.value)


# ---- several processes ---------------------------------------------------------------------

def test_four_ranks_save_and_reshard(daemon, ocp, tmp_path):
    root = str(tmp_path / 'root')
    out = str(tmp_path / 'save')
    res = job(daemon, 4, 'save', root, out, '1,2,3')
    for r, rep in res.items():
        assert rep['error'] is None, rep
        assert rep['saved'] == {'1': True, '2': True, '3': True}
        assert rep['all_steps'] == [1, 2, 3]
    assert steps_on_disk(root) == [1, 2, 3]
    for step in (1, 2, 3):
        check_on_disk(root, step)

    # replicated leaves are written once: the tensors on disk hold the
    # sharded arrays once and params/b once
    item = os.path.join(root, '3', 'default')
    meta = json.load(open(os.path.join(item, '_METADATA')))
    b = [lf for lf in meta['leaves'] if read_step.path_str(lf['path']) ==
         'params/b']
    assert len(b) == 1 and 'pieces' not in b[0]
    total = 0
    for n in os.listdir(item):
        if n.endswith('.safetensors'):
            for name, arr in read_step.read_safetensors(
                    os.path.join(item, n)).items():
                if not name.startswith('__ckptd_pad_'):
                    total += arr.nbytes
    want = expected(3)
    assert total == sum(want[k].nbytes for k in dist_worker.SHARDED) + \
        want['params/b'].nbytes

    # item metadata: global shapes and the saved pieces
    with ocp.CheckpointManager(
            root, item_handlers=ocp.StandardCheckpointHandler()) as m:
        md = m.item_metadata(3)
        w = md['params']['w']
        assert w.shape == (16, 12)
        assert len(w.pieces) == 8           # 4 ranks x 2 pieces
        assert sorted(p.offsets for p in w.pieces)[:2] == [(0, 0), (2, 0)]
        assert md['params']['b'].pieces is None

    # restore with 4, 3, 2 processes into Shards of another layout, and
    # whole arrays in 1 process: the same bits
    for world in (4, 3, 2):
        rout = str(tmp_path / ('r%d' % world))
        res = job(daemon, world, 'restore', root, rout, '2')
        for r, rep in res.items():
            assert rep['error'] is None, rep
            assert rep['scalars'] == [2, 'run-2']
        check_assembled(rout, world, 2)
    rout = str(tmp_path / 'r1')
    res = job(daemon, 1, 'restore', root, rout, '3', lambda r: ['--whole'])
    assert res[0]['error'] is None, res
    z = np.load(rout + '.0.npz')
    want = expected(3)
    for k in list(dist_worker.SHARDED) + ['params/b']:
        assert z[k].dtype == want[k].dtype
        assert z[k].tobytes() == want[k].tobytes(), k


def test_rank_without_a_piece(daemon, ocp, tmp_path):
    root = str(tmp_path / 'root')
    out = str(tmp_path / 'save')
    # rank 3 holds no piece of params/w (an empty list of Shards, as a DCP
    # rank with no local shard); ranks 0-2 cover it
    all_ok(job(daemon, 4, 'save', root, out, '1', lambda r: ['--empty-w']),
           [1])
    check_on_disk(root, 1)
    meta = json.load(open(os.path.join(root, '1', 'default', '_METADATA')))
    w = [lf for lf in meta['leaves'] if read_step.path_str(lf['path']) ==
         'params/w']
    assert len(w) == 1 and len(w[0]['pieces']) == 6     # 3 ranks x 2
    # any layout restores it (4 ranks into column Shards)
    rout = str(tmp_path / 'r4')
    all_ok(job(daemon, 4, 'restore', root, rout, '1'))
    check_assembled(rout, 4, 1)


def test_array_save_of_shards(daemon, ocp, tmp_path):
    root = str(tmp_path / 'root')
    out = str(tmp_path / 'save')
    # each rank's ArraySave holds its two pieces of params/w (a sharded
    # array saved by Orbax's multi-host ArraySave)
    all_ok(job(daemon, 3, 'save', root, out, '1', lambda r: ['--array']),
           [1])
    want = expected(1)['params/w']
    with ocp.CheckpointManager(root) as m:
        got = m.restore(1, args=ocp.args.ArrayRestore())
        assert got.tobytes() == want.tobytes()
        t = [ocp.Shard(np.empty((16, 5), np.float64), (16, 12), (0, 0)),
             ocp.Shard(np.empty((16, 7), np.float32), (16, 12), (0, 5))]
        got = m.restore(1, args=ocp.args.ArrayRestore(t))
        assert [type(s) for s in got] == [ocp.Shard, ocp.Shard]
        assert np.array_equal(got[0].data, want[:, :5].astype(np.float64))
        assert got[1].data.tobytes() == want[:, 5:].tobytes()
        md = m.item_metadata(1)
        assert md.shape == (16, 12) and len(md.pieces) == 6


def test_step_listed_only_after_the_last_rank(daemon, ocp, tmp_path):
    root = str(tmp_path / 'root')
    out = str(tmp_path / 'save')
    first = [start(daemon, 4, r, 'save', root, out, '5') for r in range(3)]
    time.sleep(2.0)
    with ocp.CheckpointManager(root) as m:
        assert m.all_steps() == []
        assert m.latest_step() is None
    assert all(p.poll() is None for p in first)     # waiting for the commit
    last = start(daemon, 4, 3, 'save', root, out, '5')
    for rc, text in finish(first + [last]):
        assert rc == 0, text
    all_ok(reports(out, range(4)), [5])
    check_on_disk(root, 5)


def test_rank_killed_before_its_save(daemon, ocp, tmp_path):
    root = str(tmp_path / 'root')
    out = str(tmp_path / 'save')
    # the rank dies before any part of step 2 exists: the daemon learns of
    # it by the timeout (a rank gone after the first part: at once)
    res = job(daemon, 4, 'save', root, out, '1,2',
              lambda r: ['--timeout', '10'] +
              (['--die-before', '2'] if r == 2 else []))
    for r in (0, 1, 3):
        err = res[r]['error']
        assert err is not None, res[r]
        assert re.search(r'rank', err) and re.search(r'\b2\b', err), err
        assert res[r]['all_steps'] == [1]
    deadline = time.monotonic() + 10
    while leftovers(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(root) == []
    assert steps_on_disk(root) == [1]
    # the job restarts: the next step saves normally
    all_ok(job(daemon, 4, 'save', root, out, '3'), [1, 3])
    check_on_disk(root, 3)


def test_late_rank_told_at_once(daemon, ocp, tmp_path):
    root = str(tmp_path / 'root')
    out = str(tmp_path / 'save')
    # rank 2 dies after step 1; rank 3 is still computing when step 2
    # fails: check_for_errors raises it once, its late save of step 2
    # fails at once, not after the step's timeout (20 s; the failure
    # itself may take that long when rank 2 left before the others had
    # opened their managers: then the daemon learns of it by the timeout)
    res = job(daemon, 4, 'save', root, out, '1,2',
              lambda r: ['--timeout', '20'] +
              (['--die-before', '2'] if r == 2 else []) +
              (['--late', '2'] if r == 3 else []))
    for r in (0, 1):
        err = res[r]['error']
        assert err is not None and re.search(r'\[2\b', err), res[r]
    late = res[3]
    assert late['error'] is None, late
    assert late.get('async_error') and \
        re.search(r'step 2 failed.*\[2\b', late['async_error']), late
    assert late['async_again'] is None, late
    assert late['late_save'] and re.search(r'\[2\b', late['late_save']), late
    assert late['late_save_secs'] < 10, late
    for r in (0, 1, 3):
        assert res[r]['all_steps'] == [1], res[r]
    assert steps_on_disk(root) == [1]
    # the failure is listed like any other (`ckptctl steps`)
    assert re.search(r'(?m)^\s*2\b.*fail', ckptctl_steps(daemon, root))


def test_rank_killed_after_its_save(daemon, ocp, tmp_path):
    root = str(tmp_path / 'root')
    out = str(tmp_path / 'save')
    res = job(daemon, 4, 'save', root, out, '1',
              lambda r: ['--die-after', '1'] if r == 1 else [])
    for r in (0, 2, 3):
        assert res[r]['error'] is None, res[r]
        assert res[r]['all_steps'] == [1]
    check_on_disk(root, 1)


def test_rank_that_never_arrives(daemon, ocp, tmp_path):
    root = str(tmp_path / 'root')
    out = str(tmp_path / 'save')
    t0 = time.monotonic()
    res = job(daemon, 3, 'save', root, out, '1', lambda r: ['--timeout', '2'],
              ranks=[0, 1])
    took = time.monotonic() - t0
    for rep in res.values():
        assert rep['error'] is not None and re.search(r'\b2\b', rep['error'])
        assert rep['all_steps'] == []
    assert took < 60
    assert steps_on_disk(root) == []


@pytest.mark.parametrize('bad', ['overlap', 'missing', 'empty'])
def test_bad_pieces_fail_on_every_rank(daemon, ocp, tmp_path, bad):
    root = str(tmp_path / 'root')
    out = str(tmp_path / 'save')
    res = job(daemon, 4, 'save', root, out, '1,2',
              lambda r: ['--bad', bad] if r == 0 else [])
    for rep in res.values():
        assert rep['error'] is not None, rep
        assert 'params/w' in rep['error'] or 'params.w' in rep['error'], \
            rep['error']
        assert rep['all_steps'] == [1]
    assert steps_on_disk(root) == [1]


def test_retention_once_for_the_job(daemon, ocp, tmp_path):
    root = str(tmp_path / 'root')
    out = str(tmp_path / 'save')
    all_ok(job(daemon, 4, 'save', root, out, '1,2,3,4,5',
               lambda r: ['--max-to-keep', '2']), [4, 5])
    assert steps_on_disk(root) == [4, 5]
    assert leftovers(root) == []
    check_on_disk(root, 5)


def test_two_jobs_on_one_daemon(daemon, ocp, tmp_path):
    """Two jobs of 2 ranks save the same steps at the same time, each into
    its root; their parts do not mix."""
    roots = [str(tmp_path / 'a'), str(tmp_path / 'b')]
    outs = [str(tmp_path / 'oa'), str(tmp_path / 'ob')]
    procs = [start(daemon, 2, r, 'save', roots[j], outs[j], '1,2',
                   ['--job', 'job%d' % j])
             for r in range(2) for j in range(2)]
    for rc, text in finish(procs):
        assert rc == 0, text
    for j in range(2):
        all_ok(reports(outs[j], range(2)), [1, 2])
        assert steps_on_disk(roots[j]) == [1, 2]
        for step in (1, 2):
            check_on_disk(roots[j], step)


# ---- torch.distributed (gloo): an FSDP-style job killed and resumed ----------------------

FSDP_WORKER = os.path.join(HERE, 'fsdp_worker.py')


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def fsdp_job(daemon, world, root, out, args=(), die=None):
    port = str(free_port())
    procs = []
    for r in range(world):
        env = subprocess_env(daemon, RANK=str(r), WORLD_SIZE=str(world),
                             MASTER_ADDR='127.0.0.1', MASTER_PORT=port)
        env.pop('TORCHELASTIC_RUN_ID', None)
        env.pop('CKPT_JOB', None)
        extra = ['--die-before', str(die[1])] if die and r == die[0] else []
        procs.append(subprocess.Popen(
            [sys.executable, FSDP_WORKER, root, out, '12', '4'] +
            list(args) + extra,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = finish(procs, timeout=90)
    return outs, reports(out, range(world))


def test_torch_gloo_fsdp_killed_and_resumed(daemon, ocp, tmp_path):
    """Parameters and SGD momentum cut by rows over 4 gloo ranks, saved
    every 4 steps; rank 2 is SIGKILLed just before step 8's save: the
    other ranks' step 8 fails naming rank 2, nothing of it is left; 2
    processes resume from step 4 (resharded) and end with exactly the
    parameters of an uninterrupted run."""
    pytest.importorskip('torch')
    ref_root, ref_out = str(tmp_path / 'ref'), str(tmp_path / 'ref-out')
    outs, res = fsdp_job(daemon, 4, ref_root, ref_out)
    for rc, text in outs:
        assert rc == 0, text
    for rep in res.values():
        assert rep['error'] is None and rep['all_steps'] == [4, 8, 12], rep
    ref = np.load(ref_out + '.npz')

    root, out = str(tmp_path / 'run'), str(tmp_path / 'run-out')
    outs, res = fsdp_job(daemon, 4, root, out, die=(2, 8))
    assert outs[2][0] == -9
    for r in (0, 1, 3):
        assert outs[r][0] == 3, outs[r][1]
        err = res[r]['error']
        assert err is not None and re.search(r'rank', err) and \
            re.search(r'\b2\b', err), err
        assert res[r]['all_steps'] == [4], res[r]
    deadline = time.monotonic() + 10
    while leftovers(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(root) == []
    assert steps_on_disk(root) == [4]
    with ocp.CheckpointManager(root) as m:
        assert m.all_steps() == [4]

    out2 = str(tmp_path / 'resume-out')
    outs, res = fsdp_job(daemon, 2, root, out2, ['--resume'])
    for rc, text in outs:
        assert rc == 0, text
    for rep in res.values():
        assert rep['error'] is None and rep['start'] == 4, rep
        assert rep['all_steps'] == [4, 8, 12], rep
    import torch
    got = np.load(out2 + '.npz')
    assert sorted(got.files) == sorted(ref.files)
    for k in ref.files:
        assert torch.equal(torch.from_numpy(got[k]),
                           torch.from_numpy(ref[k])), k
    # the resumed run's step 12 is the reference's step 12, bit for bit
    a = read_step.read_item(os.path.join(root, '12', 'default'))
    b = read_step.read_item(os.path.join(ref_root, '12', 'default'))
    assert set(a) == set(b)
    for key in a:
        if key != 'step':
            assert a[key][1].tobytes() == b[key][1].tobytes(), key

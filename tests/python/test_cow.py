"""Copy-on-write saves of numpy arrays and torch tensors: save() returns
before the large arrays are copied (libckpt write-protects them with a
userfaultfd); writes right after save(), from any thread or from the
kernel (readinto), must not reach the checkpoint, which holds the values
at save() time. Also the fallback (CKPT_COW_SAVE=0): copied before save()
returns, same results."""

import mmap
import os
import threading

import numpy as np
import pytest

try:                    # not in every environment the suite runs in
    import torch
except ImportError:
    torch = None

from ckpt import _lib as L

MIB = 1 << 20


def cow_expected():
    """Whether this process may use the snapshot: a userfaultfd that also
    handles kernel faults (root, vm.unprivileged_userfaultfd=1 or a usable
    /dev/userfaultfd)."""
    if os.environ.get('CKPT_COW_SAVE') == '0':
        return False
    try:
        with open('/proc/sys/vm/unprivileged_userfaultfd') as f:
            unpriv = f.read().strip() == '1'
    except OSError:
        unpriv = False
    return os.geteuid() == 0 or unpriv or \
        os.access('/dev/userfaultfd', os.R_OK | os.W_OK)


def cow_bytes(m):
    return L.lib().ckpt_manager_cow_bytes(m._m)


def thp_buffer(nbytes):
    """nbytes of anonymous memory asked to be transparent huge pages,
    2 MiB aligned; returns (mmap, numpy uint8 view)."""
    mm = mmap.mmap(-1, nbytes + (2 << 20),
                   flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(mm, dtype=np.uint8)
    off = (-raw.ctypes.data) % (2 << 20)
    view = raw[off:off + nbytes]
    if hasattr(mm, 'madvise') and hasattr(mmap, 'MADV_HUGEPAGE'):
        mm.madvise(mmap.MADV_HUGEPAGE)
    view[:] = 1         # fault it in (huge pages when the kernel gives them)
    return mm, view


def anon_huge_kb(addr, nbytes):
    """AnonHugePages (kB) of the mappings overlapping [addr, addr+nbytes)."""
    total = 0
    cur = False
    with open('/proc/self/smaps') as f:
        for line in f:
            head = line.split()[0]
            if '-' in head and not head.endswith(':'):
                lo, hi = (int(x, 16) for x in head.split('-'))
                cur = lo < addr + nbytes and addr < hi
            elif cur and head == 'AnonHugePages:':
                total += int(line.split()[1])
    return total


def make_tree(seed):
    rng = np.random.default_rng(seed)
    # two arrays sharing a page: views of one buffer cut off a page boundary
    shared = rng.standard_normal(4 * MIB // 8 + 1000)
    cut = 2 * MIB // 8 + 123
    tree = {
        'big': rng.standard_normal(8 * MIB // 4).astype(np.float32),
        'ints': rng.integers(0, 1 << 30, size=3 * MIB // 8 + 7),
        'left': shared[:cut],
        'right': shared[cut:],
        'small': rng.standard_normal(100),
        'step': 5,
    }
    t = rng.standard_normal(2 * MIB // 4).astype(np.float32)
    tree['torch'] = torch.from_numpy(t) if torch is not None else t
    return tree


def snapshot(tree):
    out = {}
    for k, v in tree.items():
        if torch is not None and isinstance(v, torch.Tensor):
            out[k] = v.clone()
        elif isinstance(v, np.ndarray):
            out[k] = v.copy()
        else:
            out[k] = v
    return out


def scribble(tree, value):
    """Write in many places: first and last elements (first/last pages),
    the elements around the shared page, a strided sweep."""
    for k in ('big', 'ints', 'left', 'right'):
        a = tree[k]
        a[0] = value
        a[-1] = value
        a[::4099] = value
    tree['left'][-3:] = value       # the page 'right' starts in
    tree['right'][:3] = value
    tree['small'][:] = value
    tree['torch'][0] = value
    tree['torch'][-1] = value
    tree['torch'][::1000] = value


def check_restored(r, before):
    for k, v in before.items():
        if torch is not None and isinstance(v, torch.Tensor):
            assert torch.equal(r[k], v), k
        elif isinstance(v, np.ndarray):
            np.testing.assert_array_equal(r[k], v, err_msg=k)
        else:
            assert r[k] == v, k


def check_written(tree, value):
    for k in ('big', 'ints', 'left', 'right'):
        a = tree[k]
        assert a[0] == value and a[-1] == value, k
        assert (a[::4099] == value).all(), k
    assert (tree['small'] == value).all()
    assert float(tree['torch'][0]) == value


def test_write_right_after_save_same_thread(ocp, tmp_path):
    tree = make_tree(1)
    before = snapshot(tree)
    with ocp.CheckpointManager(str(tmp_path)) as m:
        assert m.save(0, args=ocp.args.StandardSave(tree))
        n = cow_bytes(m)
        if cow_expected():
            # every array of >= 1 MiB (small: copied at once)
            assert n >= (8 + 3 + 4 + 2) * MIB - 4096
        else:
            assert n == 0
        scribble(tree, 77)
        m.wait_until_finished()
        r = m.restore(0, args=ocp.args.StandardRestore(before))
    check_restored(r, before)
    check_written(tree, 77)


def test_write_from_other_threads(ocp, tmp_path):
    tree = make_tree(2)
    before = snapshot(tree)
    with ocp.CheckpointManager(str(tmp_path)) as m:
        started = threading.Barrier(4)

        def writer(key, value):
            started.wait()
            a = tree[key]
            a[::-97] = value        # from the end, against the copier
            a[0] = value

        ths = [threading.Thread(target=writer, args=(k, i + 10))
               for i, k in enumerate(('big', 'ints', 'right'))]
        for t in ths:
            t.start()
        assert m.save(0, args=ocp.args.StandardSave(tree))
        started.wait()
        tree['left'][::-31] = 3
        for t in ths:
            t.join()
        # a second save of the written arrays, while nothing writes
        after = snapshot(tree)
        assert m.save(1, args=ocp.args.StandardSave(tree))
        tree['big'][:] = 0
        m.wait_until_finished()
        r0 = m.restore(0, args=ocp.args.StandardRestore(before))
        r1 = m.restore(1, args=ocp.args.StandardRestore(after))
    check_restored(r0, before)
    check_restored(r1, after)
    assert (tree['big'][::-97] == 0).all()
    assert tree['ints'][0] == 11 and tree['right'][0] == 12


def test_readinto_a_saved_array(ocp, tmp_path):
    """read(2) writes into the array from inside the kernel."""
    tree = make_tree(3)
    before = snapshot(tree)
    src = tmp_path / 'data.bin'
    payload = np.arange(tree['big'].size, dtype=np.float32)
    payload.tofile(str(src))
    with ocp.CheckpointManager(str(tmp_path / 'root')) as m:
        assert m.save(0, args=ocp.args.StandardSave(tree))
        with open(str(src), 'rb', buffering=0) as f:
            got = f.readinto(memoryview(tree['big']).cast('B'))
        assert got == payload.nbytes
        fd = os.open(str(src), os.O_RDONLY)
        try:
            view = memoryview(tree['right']).cast('B')
            assert os.readv(fd, [view[:4096 * 3]]) == 4096 * 3
        finally:
            os.close(fd)
        m.wait_until_finished()
        r = m.restore(0, args=ocp.args.StandardRestore(before))
    check_restored(r, before)
    np.testing.assert_array_equal(tree['big'], payload)
    np.testing.assert_array_equal(
        tree['right'].view(np.uint8)[:4096 * 3], payload.view(np.uint8)[:4096 * 3])


def test_huge_pages(ocp, tmp_path):
    """Arrays backed by transparent huge pages are protected and copied."""
    mm, buf = thp_buffer(16 * MIB)
    try:
        arr = buf.view(np.int32)
        arr[:] = np.arange(arr.size, dtype=np.int32)
        with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
            thp_mode = f.read()
        huge = anon_huge_kb(arr.ctypes.data, arr.nbytes)
        if '[never]' not in thp_mode:
            assert huge > 0, 'the buffer should be on huge pages'
        before = arr.copy()
        with ocp.CheckpointManager(str(tmp_path)) as m:
            assert m.save(0, args=ocp.args.StandardSave({'h': arr}))
            assert (cow_bytes(m) == arr.nbytes) == cow_expected()
            arr[1] = -1
            arr[(2 << 20) // 4 + 5] = -2    # the second huge page
            arr[-1] = -3
            m.wait_until_finished()
            r = m.restore(0, args=ocp.args.StandardRestore({'h': before}))
        np.testing.assert_array_equal(r['h'], before)
        assert arr[1] == -1 and arr[-1] == -3
        del arr, buf, r
    finally:
        try:
            mm.close()
        except BufferError:
            pass


def test_arrays_kept_alive(ocp, tmp_path):
    """The caller may drop its arrays right after save()."""
    tree = make_tree(4)
    before = snapshot(tree)
    with ocp.CheckpointManager(str(tmp_path)) as m:
        assert m.save(0, args=ocp.args.StandardSave(tree))
        del tree
        # fresh allocations that may reuse freed memory
        junk = [np.full(4 * MIB // 8, 9.0) for _ in range(4)]
        m.wait_until_finished()
        r = m.restore(0, args=ocp.args.StandardRestore(before))
    check_restored(r, before)
    assert all((j == 9.0).all() for j in junk)


def test_fallback_cow_off(ocp, tmp_path, monkeypatch):
    monkeypatch.setenv('CKPT_COW_SAVE', '0')
    assert L.lib().ckpt_cow_available() == 0
    tree = make_tree(5)
    before = snapshot(tree)
    with ocp.CheckpointManager(str(tmp_path)) as m:
        assert m.save(0, args=ocp.args.StandardSave(tree))
        assert cow_bytes(m) == 0
        scribble(tree, 5)
        m.wait_until_finished()
        r = m.restore(0, args=ocp.args.StandardRestore(before))
    check_restored(r, before)
    check_written(tree, 5)


def test_sync_manager_copies_before_return(ocp, tmp_path):
    """enable_async_checkpointing=False: the step is committed by save()."""
    tree = make_tree(6)
    before = snapshot(tree)
    opts = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
    with ocp.CheckpointManager(str(tmp_path), options=opts) as m:
        assert m.save(0, args=ocp.args.StandardSave(tree))
        assert cow_bytes(m) == 0
        scribble(tree, 6)
        r = m.restore(0, args=ocp.args.StandardRestore(before))
    check_restored(r, before)


def test_unprivileged_process(tmp_path):
    """A process without CAP_SYS_PTRACE uses the snapshot only when the
    system lets it handle kernel faults; the library says which."""
    import pwd
    import subprocess
    import sys
    if os.geteuid() != 0:       # already one
        assert L.lib().ckpt_cow_available() == int(cow_expected())
        return
    try:
        pw = pwd.getpwnam('nobody')
    except KeyError:
        pytest.fail('no user nobody')
    with open('/proc/sys/vm/unprivileged_userfaultfd') as f:
        unpriv = f.read().strip() == '1'
    code = ('import os, sys; from ckpt import _lib as L; '
            'sys.stdout.write("%d %d" % (L.lib().ckpt_cow_available(), '
            'os.access("/dev/userfaultfd", os.R_OK | os.W_OK)))')
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, '-c', code], env=env, cwd='/',
        preexec_fn=lambda: (os.setgroups([]), os.setgid(pw.pw_gid),
                            os.setuid(pw.pw_uid)),
        capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    avail, dev = (int(x) for x in out.stdout.split())
    assert avail == int(unpriv or dev == 1)


def test_pages_never_touched(ocp, tmp_path):
    """np.zeros of 16 MiB: fresh pages never written (no page table entry
    yet) are protected too; a write after save() must not reach the
    checkpoint."""
    z = np.zeros(16 * MIB // 8)
    with ocp.CheckpointManager(str(tmp_path)) as m:
        assert m.save(0, args=ocp.args.StandardSave({'z': z}))
        assert (cow_bytes(m) == z.nbytes) == cow_expected()
        z[::512] = 1.0          # every page
        m.wait_until_finished()
        r = m.restore(0, args=ocp.args.StandardRestore({'z': z}))
    assert not r['z'].any()
    assert (z[::512] == 1.0).all()

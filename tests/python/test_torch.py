"""torch CPU tensors (bf16 included) and a training run killed mid-way."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import HERE, subprocess_env

TORCH_DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64,
                torch.int8, torch.uint8, torch.int16, torch.int32,
                torch.int64, torch.bool]


@pytest.mark.parametrize('dtype', TORCH_DTYPES, ids=str)
def test_torch_roundtrip(ocp, tmp_path, dtype):
    g = torch.Generator().manual_seed(3)
    if dtype == torch.bool:
        t = torch.randint(0, 2, (4, 5), generator=g).bool()
    elif dtype.is_floating_point:
        t = torch.randn(4, 5, generator=g).to(dtype)
    else:
        t = torch.randint(0, 100, (4, 5), generator=g).to(dtype)
    tree = {'t': t, 'view': t[:, 1:3], 'scalar': t[0, 0].clone(),
            'empty': torch.zeros(0, 3, dtype=dtype)}
    with ocp.CheckpointManager(str(tmp_path)) as m:
        m.save(0, args=ocp.args.StandardSave(tree))
        m.wait_until_finished()
        r = m.restore(0, args=ocp.args.StandardRestore(tree))
        r2 = m.restore(0, args=ocp.args.PyTreeRestore())
    for res in (r, r2):
        for k, v in tree.items():
            assert isinstance(res[k], torch.Tensor), k
            assert res[k].dtype == dtype, k
            assert res[k].shape == v.shape, k
            assert torch.equal(res[k], v.contiguous()), k


def test_bf16_bytes_on_disk_are_raw(ocp, tmp_path):
    t = torch.tensor([1.0, -2.5, 3.140625], dtype=torch.bfloat16)
    with ocp.CheckpointManager(str(tmp_path)) as m:
        m.save(0, args=ocp.args.StandardSave({'t': t}))
        m.wait_until_finished()
        meta = m.item_metadata(0)
    assert meta['t'].dtype == torch.bfloat16 and meta['t'].shape == (3,)
    from test_reader import read_safetensors_dir
    tensors = read_safetensors_dir(os.path.join(str(tmp_path), '0',
                                                'default'))
    (dt, shape, raw), = [v for v in tensors.values()]
    assert dt == 'BF16' and shape == [3]
    assert raw == t.view(torch.int16).numpy().tobytes()


def test_torch_target_casts(ocp, tmp_path):
    with ocp.CheckpointManager(str(tmp_path)) as m:
        m.save(0, args=ocp.args.StandardSave({'w': np.arange(4.0)}))
        m.wait_until_finished()
        r = m.restore(0, args=ocp.args.StandardRestore(
            {'w': torch.empty(4, dtype=torch.bfloat16)}))
    assert r['w'].dtype == torch.bfloat16
    assert torch.equal(r['w'], torch.arange(4.0).to(torch.bfloat16))


def _final_state(ocp, path, step):
    with ocp.CheckpointManager(path) as m:
        return m.restore(step, args=ocp.args.PyTreeRestore())


def _assert_same(a, b, where=''):
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for k in a:
            _assert_same(a[k], b[k], where + '/' + k)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, '%s/%d' % (where, i))
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def test_sigkill_mid_training_resumes_identically(ocp, daemon, tmp_path):
    ex = os.path.join(HERE, 'example_torch_resume.py')
    env = subprocess_env(daemon)
    killed = str(tmp_path / 'killed')
    clean = str(tmp_path / 'clean')
    total, every = 120, 10

    p = subprocess.Popen([sys.executable, ex, '--dir', killed, '--steps',
                          str(total), '--every', str(every), '--keep', '100',
                          '--sleep', '0.02'],
                         env=env, stdout=subprocess.PIPE, text=True)
    saved = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        if line.startswith('saved step'):
            saved.append(int(line.split()[-1]))
            if len(saved) >= 4:
                break
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    assert len(saved) >= 4 and saved[-1] < total, saved

    # Every step whose save() returned is committed, though the trainer
    # died: the daemon finishes the last one on its own (it may still be
    # writing it right now, so wait for it to commit).
    with ocp.CheckpointManager(killed) as m:
        steps = m.all_steps()
        if not set(saved) <= set(steps):
            m.wait_for_step(max(saved) - 1, 60)
            steps = m.all_steps()
    assert set(saved) <= set(steps), (saved, steps)
    assert max(steps) < total

    out = subprocess.run([sys.executable, ex, '--dir', killed, '--steps',
                          str(total), '--every', str(every), '--keep', '100'],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert 'resumed from step %d' % max(steps) in out.stdout, out.stdout

    out = subprocess.run([sys.executable, ex, '--dir', clean, '--steps',
                          str(total), '--every', str(every), '--keep', '100'],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr

    # Same weights at the step the kill left behind, and at the end.
    for step in (max(steps), total):
        _assert_same(_final_state(ocp, killed, step),
                     _final_state(ocp, clean, step), 'step %d' % step)


def test_identity_from_torch_distributed(ocp, tmp_path):
    """torch.distributed (gloo), when initialized, gives the identity."""
    code = (
        'import torch.distributed as d\n'
        'import ckpt\n'
        'd.init_process_group("gloo", init_method="file://%s", rank=0, '
        'world_size=1)\n'
        'ckpt.distributed.initialize()\n'
        'print(ckpt.distributed.process_index(), '
        'ckpt.distributed.process_count())\n'
        % (tmp_path / 'rdv'))
    env = dict(os.environ, RANK='7', WORLD_SIZE='9')
    got = subprocess.run([sys.executable, '-c', code], env=env,
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ['0', '1']     # torch's, not RANK's

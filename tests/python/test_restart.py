"""ckptd restarted (SIGTERM and SIGKILL) under a running torch trainer:
libckpt reconnects, re-opens the manager and settles saves in flight, so
the trainer runs to the end in one go and ends with the weights of a run
that saw no restart."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import HERE, ckptd_bin, subprocess_env, wait_for_socket
from test_torch import _assert_same, _final_state

pytest.importorskip('torch')


class RestartableDaemon:
    """A private ckptd that the test stops and starts again on the same
    socket and state directory."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix='ckpt-restart-')
        self.sock = os.path.join(self.base, 's.sock')
        self.state = os.path.join(self.base, 'state')
        self.proc = None
        self.start()

    def start(self):
        with open(os.path.join(self.base, 'ckptd.log'), 'ab') as log:
            self.proc = subprocess.Popen(
                [ckptd_bin(), '--socket', self.sock, '--state-dir',
                 self.state, '--foreground', '--workers', '2'],
                stdout=log, stderr=subprocess.STDOUT, close_fds=True)
        wait_for_socket(self.sock, self.proc)

    def restart(self, sig):
        self.proc.send_signal(sig)
        self.proc.wait(60)
        self.start()

    def log_tail(self, n=40):
        """The end of the daemons' log, for a failure's message."""
        try:
            with open(os.path.join(self.base, 'ckptd.log'), 'rb') as f:
                lines = f.read().decode(errors='replace').splitlines()
        except OSError as e:
            return 'no ckptd log: %s' % e
        return '\n'.join(['ckptd log:'] + lines[-n:])

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def private_daemon(daemon):
    d = RestartableDaemon()
    try:
        yield d
    finally:
        d.close()


def test_torch_trainer_rides_out_restarts(ocp, private_daemon, tmp_path):
    d = private_daemon
    ex = os.path.join(HERE, 'example_torch_resume.py')
    env = subprocess_env(d, CKPTD_SOCKET=d.sock)
    run, clean = str(tmp_path / 'run'), str(tmp_path / 'clean')
    total, every = 200, 10

    p = subprocess.Popen([sys.executable, ex, '--dir', run, '--steps',
                          str(total), '--every', str(every), '--keep', '100',
                          '--sleep', '0.01'],
                         env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lines, err = [], []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout))
    ereader = threading.Thread(target=lambda: err.extend(p.stderr))
    reader.start()
    ereader.start()

    def saved():
        return [int(x.split()[-1]) for x in list(lines)
                if x.startswith('saved step')]

    # SIGTERM, SIGKILL, SIGTERM, SIGKILL, each after the trainer saved a
    # few more steps: restarts land between calls and during saves.
    restarts = []
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM,
                signal.SIGKILL):
        want = len(saved()) + 3
        deadline = time.monotonic() + 120
        while len(saved()) < want and p.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        if p.poll() is not None:
            break
        d.restart(sig)
        restarts.append((sig, max(saved() or [0])))
    rc = p.wait(300)
    reader.join()
    ereader.join()
    assert rc == 0, ''.join(err) + d.log_tail()
    assert len(restarts) == 4, (restarts, saved())
    out = ''.join(lines)
    assert 'resumed' not in out, out          # never restarted itself
    assert 'finished at step %d' % total in out, out

    # The same saves and the same weights as a run that saw no restart.
    out2 = subprocess.run([sys.executable, ex, '--dir', clean, '--steps',
                           str(total), '--every', str(every), '--keep',
                           '100'],
                          env=env, capture_output=True, text=True,
                          timeout=300)
    assert out2.returncode == 0, out2.stderr
    clean_saved = [int(x.split()[-1]) for x in out2.stdout.splitlines()
                   if x.startswith('saved step')]
    # A daemon stopped by SIGTERM says the node is going down while it
    # drains its saves (preempt.c): a save() in that window is Orbax's
    # preemption save (reached_preemption), a step the undisturbed run
    # does not take. Those are the only extra steps, at most one per
    # SIGTERM; every step of the undisturbed run is there.
    extra = [s for s in saved() if s not in clean_saved]
    nterm = sum(1 for sig, _ in restarts if sig == signal.SIGTERM)
    assert len(extra) <= nterm, (saved(), clean_saved)
    assert all(s % every != 0 and s != 1 for s in extra), extra
    assert [s for s in saved() if s in clean_saved] == clean_saved, \
        (saved(), clean_saved)
    with ocp.CheckpointManager(run) as m:
        assert m.all_steps() == saved(), run
    with ocp.CheckpointManager(clean) as m:
        assert m.all_steps() == clean_saved, clean
    last = max(s for s in clean_saved if s <= restarts[-1][1])
    for step in (last, total):
        _assert_same(_final_state(ocp, run, step),
                     _final_state(ocp, clean, step), 'step %d' % step)

"""Autostart cleans up after itself: `ckptctl status` never starts a
daemon; an autostarted daemon keeps its state out of the system state
directory, leaves no lock files, and exits once idle (--idle-exit)."""

import os
import signal
import socket
import subprocess
import sys
import time

from conftest import PKG, ckptd_bin

HERE = os.path.dirname(os.path.abspath(__file__))


def _ckptctl():
    # the build tree: <build>/daemon/ckptd -> <build>/client/ckptctl
    b = os.path.dirname(os.path.dirname(ckptd_bin()))
    return os.path.join(b, 'client', 'ckptctl')


def _env(tmp_path):
    run = tmp_path / 'run'
    run.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ)
    for k in ('CKPTD_SOCKET', 'CKPTD_AUTOSTART'):
        env.pop(k, None)
    env['XDG_RUNTIME_DIR'] = str(run)
    env['XDG_STATE_HOME'] = str(tmp_path / 'state')
    env['CKPTD_BIN'] = ckptd_bin()
    env['PYTHONPATH'] = PKG
    return run, env


def _daemons_of(marker):
    pids = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b'ckptd' and \
                any(marker.encode() in a for a in argv):
            pids.append((int(pid), argv))
    return pids


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists('/proc/%d' % pid):
            return True
        try:
            with open('/proc/%d/stat' % pid) as f:
                if f.read().split(')')[-1].split()[0] == 'Z':
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_status_never_autostarts(tmp_path):
    run, env = _env(tmp_path)
    p = subprocess.run([_ckptctl(), 'status'], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert 'ckptd is not running' in p.stderr, p.stderr
    assert os.listdir(run) == [], os.listdir(run)
    assert _daemons_of(str(run)) == []


def test_autostarted_daemon_state_locks_and_idle(tmp_path):
    run, env = _env(tmp_path)
    sysdir = tmp_path / 'system-state'
    sysdir.mkdir()
    env['STATE_DIRECTORY'] = str(sysdir)     # as if under systemd
    code = '''
import numpy as np, ckpt as ocp, sys
with ocp.CheckpointManager(sys.argv[1]) as m:
    m.save(1, args=ocp.args.StandardSave({'x': np.arange(3)}))
    m.wait_until_finished()
    print(m.all_steps())
'''
    pids = []
    try:
        p = subprocess.run([sys.executable, '-c', code,
                            str(tmp_path / 'ck')], env=env,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == '[1]'
        pids = _daemons_of(str(run))
        assert len(pids) == 1, pids
        pid, argv = pids[0]
        assert b'--autostarted' in argv, argv
        # no lock file left next to the socket
        assert sorted(os.listdir(run)) == ['ckptd.sock'], os.listdir(run)
        # state in the user's state dir, never the system one
        assert os.listdir(sysdir) == []
        log = tmp_path / 'state' / 'ckptd' / 'ckptd.log'
        text = log.read_text()
        assert 'exiting after 300 s idle' in text, text
        # status talks to it without starting another
        s = subprocess.run([_ckptctl(), 'status'], env=env,
                           capture_output=True, text=True, timeout=60)
        assert s.returncode == 0, s.stderr
        assert len(_daemons_of(str(run))) == 1
    finally:
        for pid, _ in pids:
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, 30)
    assert sorted(os.listdir(run)) == [], os.listdir(run)


def test_idle_exit(tmp_path):
    run, env = _env(tmp_path)
    sock = str(run / 'idle.sock')
    state = str(tmp_path / 'st')
    subprocess.run([ckptd_bin(), '--socket', sock, '--state-dir', state,
                    '--idle-exit', '2'], env=env, check=True, timeout=60)
    (pid, _), = _daemons_of(sock)
    try:
        # a connected client keeps it alive past the idle period
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(sock)
        time.sleep(4.5)
        assert os.path.exists('/proc/%d' % pid) and not _wait_gone(pid, 0)
        c.close()
        t0 = time.monotonic()
        assert _wait_gone(pid, 30), 'ckptd did not exit when idle'
        took = time.monotonic() - t0
        assert 1.0 <= took <= 20, took
        assert os.listdir(run) == [], os.listdir(run)
        log = open(os.path.join(state, 'ckptd.log')).read()
        assert 'idle for 2 s' in log, log
    finally:
        if not _wait_gone(pid, 0):
            os.kill(pid, signal.SIGTERM)


def test_reconnect_autostarts_a_new_private_daemon(tmp_path):
    """The autostarted daemon dies under a client: the client's reconnect
    starts a new one and its manager goes on."""
    run, env = _env(tmp_path)
    code = '''
import numpy as np, ckpt as ocp, sys
with ocp.CheckpointManager(sys.argv[1]) as m:
    m.save(1, args=ocp.args.StandardSave({'x': np.arange(3)}))
    m.wait_until_finished()
    print('ready', flush=True)
    sys.stdin.readline()
    m.save(2, args=ocp.args.StandardSave({'x': np.arange(4)}))
    m.wait_until_finished()
    print(m.all_steps(), flush=True)
'''
    pids = []
    p = subprocess.Popen([sys.executable, '-c', code, str(tmp_path / 'ck')],
                         env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == 'ready', p.stderr.read()
        (first, _), = _daemons_of(str(run))
        os.kill(first, signal.SIGKILL)
        assert _wait_gone(first, 30)
        p.stdin.write('go\n')
        p.stdin.flush()
        out = p.stdout.readline().strip()
        rc = p.wait(60)
        assert rc == 0 and out == '[1, 2]', (rc, out, p.stderr.read())
        pids = _daemons_of(str(run))
        assert len(pids) == 1 and pids[0][0] != first, pids
        assert b'--autostarted' in pids[0][1]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for pid, _ in pids:
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, 30)

"""Fixtures: a private ckptd for the whole session (real daemon, real
files). CKPTD_BIN and CKPT_LIBRARY come from meson (tests/python/meson.build);
PYTHONPATH points at client/python."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'client', 'python')
if PKG not in sys.path:
    sys.path.insert(0, PKG)


def ckptd_bin():
    b = os.environ.get('CKPTD_BIN')
    if not b or not os.access(b, os.X_OK):
        raise RuntimeError('set CKPTD_BIN to the built ckptd (meson test '
                           'does this)')
    return b


def wait_for_socket(path, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError('ckptd exited early with %s' % proc.returncode)
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.02)
    raise RuntimeError('ckptd did not listen on %s' % path)


class Daemon:
    def __init__(self, base):
        self.base = base
        self.sock = os.path.join(base, 's.sock')
        self.state = os.path.join(base, 'state')
        self.log = open(os.path.join(base, 'ckptd.log'), 'wb')
        self.proc = subprocess.Popen(
            [ckptd_bin(), '--socket', self.sock, '--state-dir', self.state,
             '--foreground'],
            stdout=self.log, stderr=subprocess.STDOUT, close_fds=True)
        wait_for_socket(self.sock, self.proc)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def logtext(self):
        with open(os.path.join(self.base, 'ckptd.log'), 'rb') as f:
            return f.read().decode('utf-8', 'replace')


@pytest.fixture(scope='session')
def daemon():
    base = tempfile.mkdtemp(prefix='ckpt-pytest-')
    d = Daemon(base)
    old = {k: os.environ.get(k) for k in ('CKPTD_SOCKET', 'CKPTD_AUTOSTART')}
    os.environ['CKPTD_SOCKET'] = d.sock
    os.environ['CKPTD_AUTOSTART'] = '0'
    try:
        yield d
    finally:
        d.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ocp(daemon):
    import ckpt
    return ckpt


@pytest.fixture
def tmpdir_path(tmp_path):
    return str(tmp_path)


def subprocess_env(daemon, **extra):
    env = dict(os.environ)
    env['CKPTD_SOCKET'] = daemon.sock
    env['CKPTD_AUTOSTART'] = '0'
    pp = env.get('PYTHONPATH', '')
    env['PYTHONPATH'] = PKG + (os.pathsep + pp if pp else '')
    env.update(extra)
    return env

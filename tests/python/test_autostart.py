"""The first call starts a private daemon when none answers."""

import os
import signal
import subprocess
import sys
import time

from conftest import PKG, ckptd_bin


def test_autostart(tmp_path):
    run = tmp_path / 'run'
    run.mkdir(mode=0o700)
    env = dict(os.environ)
    env.pop('CKPTD_SOCKET', None)
    env.pop('CKPTD_AUTOSTART', None)
    env['XDG_RUNTIME_DIR'] = str(run)
    env['XDG_STATE_HOME'] = str(tmp_path / 'state')
    env['CKPTD_BIN'] = ckptd_bin()
    env['PYTHONPATH'] = PKG
    code = '''
import numpy as np, ckpt as ocp, sys
with ocp.CheckpointManager(sys.argv[1]) as m:
    m.save(1, args=ocp.args.StandardSave({'x': np.arange(3)}))
    m.wait_until_finished()
    print(m.all_steps())
'''
    sock = run / 'ckptd.sock'
    try:
        p = subprocess.run([sys.executable, '-c', code,
                            str(tmp_path / 'ck')], env=env,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == '[1]'
        assert sock.exists()
    finally:
        # stop the daemon that was started for us (found by its socket)
        pids = []
        for pid in os.listdir('/proc'):
            if not pid.isdigit():
                continue
            try:
                with open('/proc/%s/cmdline' % pid, 'rb') as f:
                    argv = f.read().split(b'\0')
            except OSError:
                continue
            mine = any(str(run).encode() in a for a in argv)
            if not mine and argv and os.path.basename(argv[0]) == b'ckptd':
                try:
                    with open('/proc/%s/environ' % pid, 'rb') as f:
                        envs = f.read().split(b'\0')
                except OSError:
                    envs = []
                mine = ('XDG_RUNTIME_DIR=%s' % run).encode() in envs
            if mine:
                pids.append(int(pid))
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        time.sleep(0.2)

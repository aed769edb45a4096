"""How long a client waits for ckptd to come back: restart a private
daemon under an open CheckpointManager (SIGTERM and SIGKILL, alternating)
and time the first call after the new daemon listens.

    CKPT_LIBRARY=build/client/libckpt.so PYTHONPATH=client/python \\
        python3 tests/bench/reconnect.py build [ROUNDS]
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np


def main():
    build = os.path.abspath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    base = tempfile.mkdtemp(prefix='ckpt-reconnect-')
    sock = os.path.join(base, 's.sock')
    os.environ['CKPTD_SOCKET'] = sock
    os.environ['CKPTD_AUTOSTART'] = '0'
    import ckpt as ocp

    def start():
        p = subprocess.Popen(
            [os.path.join(build, 'daemon', 'ckptd'), '--socket', sock,
             '--state-dir', os.path.join(base, 'state'), '--foreground'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(sock)
                return p
            except OSError:
                time.sleep(0.001)
            finally:
                s.close()

    lat = {'SIGTERM': [], 'SIGKILL': []}
    p = start()
    try:
        with ocp.CheckpointManager(os.path.join(base, 'ck')) as m:
            m.save(1, args=ocp.args.StandardSave({'x': np.arange(3)}))
            m.wait_until_finished()
            for i in range(rounds):
                sig = signal.SIGTERM if i % 2 == 0 else signal.SIGKILL
                p.send_signal(sig)
                p.wait()
                p = start()
                t0 = time.monotonic()
                assert m.latest_step() == 1
                lat[sig.name].append((time.monotonic() - t0) * 1000)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait()
        shutil.rmtree(base, ignore_errors=True)
    for k, v in lat.items():
        v.sort()
        print('%s: first call after the new daemon listens: median %.1f ms, '
              'max %.1f ms (%d restarts)' % (k, v[len(v) // 2], v[-1],
                                             len(v)))


if __name__ == '__main__':
    main()

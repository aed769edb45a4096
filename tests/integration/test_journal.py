#!/usr/bin/env python3
"""test_journal.py - ckptd's structured journal fields (TAP output).

ckptd sends its events with sd_journal_send when its stderr is the journal
(JOURNAL_STREAM names stderr's device:inode). To see exactly what it sends
without a journald, this test runs in a private mount namespace (as root)
with a fresh tmpfs on /run, where it binds the journal's native socket
(/run/systemd/journal/socket) itself and decodes the datagrams. ckptd's
stderr is a file whose device:inode is put in JOURNAL_STREAM.

Checks: a committed save gives one info entry (PRIORITY=6) with
CKPT_REQUEST_ID, CKPT_PEER_UID, CKPT_PEER_PID, CKPT_ROOT, CKPT_STEP,
CKPT_DURATION_SEC, CKPT_BLOCKING_SEC; a failed save (ENOSPC on a 1 MiB
tmpfs) a warning entry with CKPT_ERROR and CKPT_ERROR_CODE. Without
JOURNAL_STREAM the same event is a plain line with key=value fields.

Environment (from meson): CKPTD_BIN, CKPT_LIBRARY, PYTHONPATH.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

from tap import plan, report

CKPTD = os.environ['CKPTD_BIN']
def decode(data):
    """Fields of one native-protocol datagram."""
    fields = {}
    i = 0
    while i < len(data):
        nl = data.index(b'\n', i)
        line = data[i:nl]
        if b'=' in line:
            k, v = line.split(b'=', 1)
            i = nl + 1
        else:  # KEY\n<le64 length><value>\n
            k = line
            size = struct.unpack('<Q', data[nl + 1:nl + 9])[0]
            v = data[nl + 9:nl + 9 + size]
            i = nl + 9 + size + 1
        fields[k.decode()] = v.decode('utf-8', 'replace')
    return fields


def start(base, name, env):
    sock = os.path.join(base, name + '.sock')
    errpath = os.path.join(base, name + '.stderr')
    err = open(errpath, 'wb')
    st = os.fstat(err.fileno())
    env = dict(env)
    if name == 'journal':
        env['JOURNAL_STREAM'] = '%d:%d' % (st.st_dev, st.st_ino)
    p = subprocess.Popen([CKPTD, '--socket', sock, '--state-dir',
                          os.path.join(base, name + '-state'),
                          '--foreground'], stdout=subprocess.DEVNULL,
                         stderr=err, env=env, close_fds=True)
    # The socket file appears at bind(), before listen(): wait until a
    # connection is accepted, not for the file.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and p.poll() is None:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.connect(sock)
            break
        except OSError:
            time.sleep(0.05)
        finally:
            c.close()
    return p, sock, errpath


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def saves(ckpt, sock, root, small):
    """One good save (step 3), one that fails with ENOSPC."""
    os.environ['CKPTD_SOCKET'] = sock
    os.environ['CKPTD_AUTOSTART'] = '0'
    tree = {'w': np.arange(4096, dtype=np.float32)}
    with ckpt.CheckpointManager(root) as m:
        m.save(3, args=ckpt.args.StandardSave(tree))
        m.wait_until_finished()
    try:
        with ckpt.CheckpointManager(small) as m:
            m.save(0, args=ckpt.args.StandardSave(
                {'x': np.ones(1 << 20, dtype=np.float32)}))
            m.wait_until_finished()
    except OSError:
        pass


def inner():
    import ckpt
    base = tempfile.mkdtemp(prefix='ckpt-journal-')
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs',
                    '/run'], check=True)
    os.makedirs('/run/systemd/journal')
    js = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    js.bind('/run/systemd/journal/socket')
    js.settimeout(0.2)
    small = os.path.join(base, 'small')
    os.mkdir(small)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small],
                   check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ('JOURNAL_STREAM', 'NOTIFY_SOCKET', 'LISTEN_FDS')}
    try:
        p, sock, errpath = start(base, 'journal', env)
        saves(ckpt, sock, os.path.join(base, 'root'),
              os.path.join(small, 'r'))
        stop(p)
        entries = []
        while True:
            try:
                entries.append(decode(js.recv(1 << 20)))
            except socket.timeout:
                break
        ok_e = [e for e in entries if e.get('CKPT_STEP') == '3']
        report(len(ok_e) == 1, 'one journal entry for the committed save '
               '(%d entries in all)' % len(entries),
               '\n'.join(repr(e) for e in entries))
        e = ok_e[0] if ok_e else {}
        want = ['CKPT_REQUEST_ID', 'CKPT_PEER_UID', 'CKPT_PEER_PID',
                'CKPT_ROOT', 'CKPT_STEP', 'CKPT_DURATION_SEC',
                'CKPT_BLOCKING_SEC', 'CKPT_BYTES', 'MESSAGE', 'CODE_FUNC']
        report(all(k in e for k in want) and e.get('PRIORITY') == '6' and
               e.get('CKPT_PEER_UID') == str(os.getuid()) and
               e.get('CKPT_PEER_PID') == str(os.getpid()) and
               e.get('CKPT_ROOT') == os.path.join(base, 'root') and
               e.get('SYSLOG_IDENTIFIER') == 'ckptd' and
               e.get('CODE_FUNC') == 'save_finalize' and
               float(e.get('CKPT_DURATION_SEC', -1)) >= float(
                   e.get('CKPT_BLOCKING_SEC', 1e9)) >= 0 and
               e.get('CKPT_BYTES') == str(4096 * 4),
               'the save entry carries request id, peer uid/pid, root, step,'
               ' durations and bytes at info priority', repr(e))
        bad = [e for e in entries if 'CKPT_ERROR' in e]
        report(len(bad) == 1 and bad[0].get('PRIORITY') == '4' and
               bad[0].get('CKPT_ERROR_CODE') == '-7' and
               'space' in bad[0].get('CKPT_ERROR', '') and
               bad[0].get('CKPT_STEP') == '0',
               'the failed save: a warning entry with CKPT_ERROR and '
               'CKPT_ERROR_CODE', '\n'.join(repr(e) for e in bad))
        with open(errpath) as f:
            text = f.read()
        report('step=3' not in text and '<6>main_ready:' in text,
               'plain messages still go to stderr with <N> priorities; '
               'events do not', text[-2000:])

        p, sock, errpath = start(base, 'plain', env)
        saves(ckpt, sock, os.path.join(base, 'root2'),
              os.path.join(small, 'r2'))
        stop(p)
        with open(errpath) as f:
            lines = [l for l in f.read().splitlines() if ' saved: ' in l]
        report(len(lines) == 1 and ' req=' in lines[0] and
               ' uid=%d ' % os.getuid() in lines[0] and
               ' pid=%d ' % os.getpid() in lines[0] and
               ' step=3 ' in lines[0] and ' duration=' in lines[0] and
               ' info ' in lines[0],
               'without the journal: one plain info line per save with '
               'key=value fields', '\n'.join(lines))
    finally:
        subprocess.run(['umount', '-l', small])
        shutil.rmtree(base, ignore_errors=True)


def main():
    if os.geteuid() != 0:
        print('1..0 # SKIP needs root (private mount namespace)')
        return 0
    if os.environ.get('CKPT_JOURNAL_TEST_NS') != '1':
        env = dict(os.environ, CKPT_JOURNAL_TEST_NS='1')
        return subprocess.call(['unshare', '--mount', '--propagation',
                                'private', sys.executable,
                                os.path.abspath(__file__)], env=env)
    try:
        inner()
    except Exception as e:
        import traceback
        report(False, 'unexpected exception: %s' % e, traceback.format_exc())
    return plan()


if __name__ == '__main__':
    sys.exit(main())

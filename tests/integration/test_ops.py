#!/usr/bin/env python3
"""test_ops.py - what an operator uses, against a real ckptd (TAP output).

  - settings: --check-config with defaults, a file, flags over the file,
    errors with file:line and a nonzero exit;
  - /metrics: histograms, failures by reason (a real ENOSPC on a 1 MiB
    tmpfs when run as root), bytes written and read, ckptd_build_info,
    all checked with `promtool check metrics`; /healthz;
  - workers stuck on a frozen filesystem (fsfreeze on a loop-mounted
    ext4, as root): /healthz 503 and ckptd_up 0 after stall-timeout,
    healthy again after the thaw;
  - SIGHUP with a large save in flight: the save commits and restores
    intact, the live settings (memory budget, log level, s3-allow grants)
    change, a broken file is refused with file:line and the daemon keeps
    running.

Environment (from meson): CKPTD_BIN, CKPT_LIBRARY, PYTHONPATH.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np

from tap import plan, report

CKPTD = os.environ['CKPTD_BIN']
def run(*args):
    p = subprocess.run([CKPTD] + list(args), capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout, p.stderr


def http(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sample(text, name):
    """Value of the sample 'name' (with its labels) in exposition text."""
    m = re.search(r'^%s (\S+)$' % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


class Daemon:
    def __init__(self, base, conf, *extra):
        self.base = base
        self.sock = os.path.join(base, 's.sock')
        self.logpath = os.path.join(base, 'ckptd.log')
        self.log = open(self.logpath, 'ab')
        self.proc = subprocess.Popen(
            [CKPTD, '--config', conf, '--socket', self.sock, '--state-dir',
             os.path.join(base, 'state'), '--foreground',
             '--metrics-listen', '127.0.0.1:0'] + list(extra),
            stdout=self.log, stderr=subprocess.STDOUT, close_fds=True)
        self.url = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r'metrics on (http://[^/]+)/metrics', self.logtext())
            if m and os.path.exists(self.sock):
                self.url = m.group(1)
                break
            time.sleep(0.05)
        if self.url is None:
            raise RuntimeError('ckptd did not start:\n' + self.logtext())

    def logtext(self):
        with open(self.logpath, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def metrics(self):
        return http(self.url + '/metrics')[1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def promtool_ok(text):
    p = subprocess.run(['promtool', 'check', 'metrics'], input=text,
                       capture_output=True, text=True)
    return p.returncode == 0


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_check_config(base):
    conf = os.path.join(base, 'check.conf')
    rc, out, err = run('--config', os.path.join(base, 'missing.conf'),
                       '--check-config')
    report(rc != 0 and 'missing.conf' in err,
           '--check-config: a missing --config file is an error', err)

    with open(conf, 'w') as f:
        f.write('# ckptd settings\n\nworkers = 3\nmemory_budget = 512M\n'
                'log-level = "warn"\nsocket = /run/x/ckptd.sock\n')
    rc, out, err = run('--config', conf, '--check-config')
    report(rc == 0 and 'workers = 3\n' in out and
           'memory-budget = 536870912\n' in out and
           'log-level = warn\n' in out and
           'socket = /run/x/ckptd.sock\n' in out and
           out.startswith('# ' + conf),
           '--check-config prints the file\'s settings', out + err)
    rc, out, err = run('--config', conf, '--check-config', '-w', '5',
                       '--log-level', 'debug')
    report(rc == 0 and 'workers = 5\n' in out and 'log-level = debug\n' in out
           and 'memory-budget = 536870912\n' in out,
           'flags override the file', out + err)

    bad = [('workers = 3\nworkers = 4\n', ':2:', 'given twice'),
           ('# ok\nbogus = 1\n', ':2:', "unknown setting 'bogus'"),
           ('\n\nworkers = 999\n', ':3:', '1..256'),
           ('memory-budget = lots\n', ':1:', 'bad size'),
           ('log-level\n', ':1:', "expected 'key = value'"),
           ('foreground = maybe\n', ':1:', 'yes or no'),
           ('state-dir = relative/dir\n', ':1:', 'absolute path')]
    for text, where, what in bad:
        with open(conf, 'w') as f:
            f.write(text)
        rc, out, err = run('--config', conf, '--check-config')
        report(rc != 0 and (conf + where) in err and what in err,
               '--check-config refuses %r with file:line' % text.strip(),
               err)
    rc, out, err = run('--check-config', '--workers', '0')
    report(rc == 2 and 'workers' in err, 'a bad flag value exits 2', err)


def test_metrics_and_reload(base, ckpt):
    conf = os.path.join(base, 'ckptd.conf')
    with open(conf, 'w') as f:
        f.write('log-level = info\nmemory-budget = 1G\n')
    d = Daemon(base, conf)
    os.environ['CKPTD_SOCKET'] = d.sock
    os.environ['CKPTD_AUTOSTART'] = '0'
    try:
        code, body = http(d.url + '/healthz')
        report(code == 200 and body.strip() == 'ok', 'GET /healthz: 200 ok',
               body)
        code, _ = http(d.url + '/nothing')
        report(code == 404, 'other paths: 404')

        root = os.path.join(base, 'root')
        tree = {'w': np.arange(1 << 16, dtype=np.float32),
                'b': np.ones(7, dtype=np.int64)}
        with ckpt.CheckpointManager(root) as m:
            for step in range(4):
                m.save(step, args=ckpt.args.StandardSave(tree))
            m.wait_until_finished()
            r = m.restore(3, args=ckpt.args.StandardRestore(tree))
        np.testing.assert_array_equal(r['w'], tree['w'])

        enospc = False
        if os.geteuid() == 0:
            small = os.path.join(base, 'small')
            os.mkdir(small)
            subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m',
                            'tmpfs', small], check=True)
            try:
                big = {'x': np.ones(1 << 20, dtype=np.float32)}
                try:
                    with ckpt.CheckpointManager(os.path.join(small,
                                                             'r')) as m:
                        m.save(0, args=ckpt.args.StandardSave(big))
                        m.wait_until_finished()
                except OSError as e:  # the async error of the save
                    enospc = 'space' in str(e).lower()
            finally:
                subprocess.run(['umount', '-l', small])
        text = d.metrics()
        with open(os.path.join(base, 'metrics.txt'), 'w') as f:
            f.write(text)
        p = subprocess.run(['promtool', 'check', 'metrics'], input=text,
                           capture_output=True, text=True)
        report(p.returncode == 0, 'promtool check metrics accepts /metrics',
               p.stdout + p.stderr)
        report(sample(text, 'ckptd_save_blocking_seconds_count') >= 4 and
               sample(text, 'ckptd_save_durable_seconds_count') >= 4 and
               sample(text, 'ckptd_step_bytes_count') >= 4 and
               sample(text, 'ckptd_restore_seconds_count') >= 1,
               'histograms count the saves and the restore',
               '\n'.join(l for l in text.splitlines()
                         if '_count ' in l or '_sum ' in l))
        report(sample(text, 'ckptd_save_durable_seconds_bucket{le="+Inf"}') ==
               sample(text, 'ckptd_save_durable_seconds_count') and
               sample(text, 'ckptd_step_bytes_sum') >= 4 * ((1 << 18) + 56),
               'histogram buckets, sums and counts agree')
        report(sample(text, 'ckptd_bytes_written_total') >= 4 * (1 << 18) and
               sample(text, 'ckptd_bytes_read_total') >= (1 << 18),
               'bytes written and read')
        uid = os.getuid()
        report(sample(text, 'ckptd_user_saves_total{uid="%d"}' % uid) >= 4
               and sample(text, 'ckptd_user_bytes_written_total{uid="%d"}'
                          % uid) >= 4 * (1 << 18),
               'saves and bytes by the client\'s uid',
               '\n'.join(l for l in text.splitlines()
                         if l.startswith('ckptd_user_')))
        report(re.search(r'^ckptd_build_info\{version="[^"]+",'
                         r'protocol="\d+"\} 1$', text, re.M) is not None,
               'ckptd_build_info')
        if os.geteuid() == 0:
            report(enospc and sample(
                text, 'ckptd_save_failures_total{reason="ENOSPC"}') == 1,
                'a save on a full disk counts as reason="ENOSPC"',
                '\n'.join(l for l in text.splitlines()
                          if l.startswith('ckptd_save_failures_total')))

        # 34 more users (numeric uids without accounts, through setpriv):
        # per-uid series stop at 32 users, the rest is uid="other".
        if os.geteuid() == 0 and os.environ.get('CKPT_DEMO'):
            os.chmod(base, 0o711)  # the socket and shared/ for them
            shared = os.path.join(base, 'shared')
            os.mkdir(shared)
            os.chmod(shared, 0o1777)
            bad = []
            for u in range(60001, 60035):
                p = subprocess.run(
                    ['setpriv', '--reuid', str(u), '--regid', str(u),
                     '--clear-groups', os.environ['CKPT_DEMO'],
                     os.path.join(shared, str(u))], capture_output=True,
                    text=True, timeout=60)
                if p.returncode != 0:
                    bad.append('%d: %s' % (u, p.stderr.strip()))
            text = d.metrics()
            users = re.findall(r'^ckptd_user_saves_total\{uid="([^"]+)"\} '
                               r'(\d+)$', text, re.M)
            numeric = [u for u, _ in users if u != 'other']
            other = [int(v) for u, v in users if u == 'other']
            # 1 (root) + 31 of the new uids have series; 3 uids x 5 steps
            # are "other".
            report(not bad and len(numeric) == 32 and other == [15] and
                   promtool_ok(text),
                   'per-uid series are bounded: 32 uids, the rest as '
                   'uid="other"', '\n'.join(bad[:3] + ['%s %s' % x for x in
                                                       users[-3:]]))

        # SIGHUP with a large save in flight.
        with open(conf, 'w') as f:
            f.write('log-level = debug\nmemory-budget = 2G\nworkers = 7\n')
        large = {'big': np.random.default_rng(1).standard_normal(
            48 << 20 >> 2).astype(np.float32)}
        with ckpt.CheckpointManager(os.path.join(base, 'large')) as m:
            m.save(10, args=ckpt.args.StandardSave(large))
            inflight = d.metrics()
            d.proc.send_signal(signal.SIGHUP)
            m.wait_until_finished()
            steps = m.all_steps()
            r = m.restore(10, args=ckpt.args.StandardRestore(large))
        report(list(steps) == [10] and np.array_equal(r['big'], large['big']),
               'a save in flight during SIGHUP commits and restores intact',
               '\n'.join(l for l in inflight.splitlines()
                         if l.startswith(('ckptd_inflight', 'ckptd_queued'))))
        text = d.metrics()
        report(wait_for(lambda: sample(d.metrics(),
                                       'ckptd_memory_budget_bytes') ==
                        float(2 << 30)),
               'reload: memory-budget is live (1G -> 2G)')
        log = d.logtext()
        report("log-level: 'info' -> 'debug'" in log,
               'reload: log-level is live')
        report('workers changed' in log and 'after a restart' in log,
               'reload: workers is reported as needing a restart')
        # s3-allow is live: a grant added by a reload serves the managers
        # opened afterwards (the open then goes on to the store, which
        # this test has none of: any error but the grant's).
        def s3_open_error(root):
            try:
                ckpt.CheckpointManager(root).close()
                return ''
            except Exception as e:  # the daemon's message
                return str(e)
        before = s3_open_error('s3://bkt/ours/r')
        with open(conf, 'w') as f:
            f.write('log-level = debug\nmemory-budget = 2G\nworkers = 7\n'
                    's3-allow = %d:s3://bkt/ours\n' % os.getuid())
        d.proc.send_signal(signal.SIGHUP)
        report(wait_for(lambda: 's3-allow: 1 grant' in d.logtext()),
               'reload: s3-allow is live', d.logtext()[-1500:])
        after = s3_open_error('s3://bkt/ours/r')
        other = s3_open_error('s3://bkt/theirs/r')
        report('s3-allow' in before and 's3-allow' not in after and
               's3-allow' in other,
               'a grant added by a reload serves the next open; other '
               'prefixes stay refused',
               'before: %s\nafter: %s\nother: %s' % (before, after, other))
        with open(conf, 'w') as f:
            f.write('log-level = debug\nmemory-budget = 2G\nworkers = 7\n'
                    's3-allow = no-such-user-here:s3://bkt/ours\n')
        d.proc.send_signal(signal.SIGHUP)
        report(wait_for(lambda: 'the s3-allow grants held stay' in
                        d.logtext()) and
               's3-allow' not in s3_open_error('s3://bkt/ours/r'),
               'a reload naming an unknown user keeps the grants held')
        with open(conf, 'w') as f:
            f.write('memory-budget = 3G\nnot a setting\n')
        d.proc.send_signal(signal.SIGHUP)
        report(wait_for(lambda: (conf + ':2:') in d.logtext()),
               'reload of a broken file is refused with file:line')
        report(d.proc.poll() is None and sample(
            d.metrics(), 'ckptd_memory_budget_bytes') == float(2 << 30),
            'the daemon keeps running with the previous settings')
    finally:
        rc = d.stop()
    report(rc == 0, 'SIGTERM: ckptd exits 0 (%s)' % rc, d.logtext()[-3000:])


def test_relative_paths_reload(base):
    """A forked daemon (cwd "/") given relative --socket/--state-dir keeps
    them on a reload: nothing changed, nothing needs a restart."""
    sub = os.path.join(base, 'rel')
    os.mkdir(sub)
    conf = os.path.join(sub, 'c.conf')
    with open(conf, 'w') as f:
        f.write('log-level = info\n')
    p = subprocess.run([CKPTD, '--config', conf, '-s', 'r.sock', '-d',
                        'state'], cwd=sub, capture_output=True, text=True,
                       timeout=30)
    logpath = os.path.join(sub, 'state', 'ckptd.log')
    pid = None
    try:
        with open(logpath) as f:
            m = re.search(r'ckptd\[(\d+)\]', f.read())
        pid = int(m.group(1))
        os.kill(pid, signal.SIGHUP)
        ok = wait_for(lambda: 'reloaded' in open(logpath).read())
        text = open(logpath).read()
        report(p.returncode == 0 and ok and '0 settings changed' in text and
               'after a restart' not in text,
               'a forked daemon with relative paths reloads with nothing '
               'changed', text)
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not os.path.exists(os.path.join(sub, 'r.sock')))


def test_stall(base, ckpt):
    """Workers stuck on a frozen filesystem make the daemon unhealthy
    (/healthz 503, ckptd_up 0, no watchdog ping); thawing heals it."""
    if os.geteuid() != 0:
        return
    img = os.path.join(base, 'frozen.img')
    mnt = os.path.join(base, 'frozen')
    os.mkdir(mnt)
    with open(img, 'wb') as f:
        f.truncate(64 << 20)
    subprocess.run(['mkfs.ext4', '-q', '-F', img], check=True)
    subprocess.run(['mount', '-o', 'loop', img, mnt], check=True)
    conf = os.path.join(base, 'stall.conf')
    with open(conf, 'w') as f:
        f.write('stall-timeout = 2\n')
    sub = os.path.join(base, 'stall-daemon')
    os.mkdir(sub)
    d = Daemon(sub, conf)
    os.environ['CKPTD_SOCKET'] = d.sock
    frozen = False
    try:
        tree = {'x': np.ones(8 << 20 >> 2, dtype=np.float32)}
        with ckpt.CheckpointManager(os.path.join(mnt, 'r')) as m:
            subprocess.run(['fsfreeze', '-f', mnt], check=True)
            frozen = True
            m.save(1, args=ckpt.args.StandardSave(tree))
            report(wait_for(lambda: http(d.url + '/healthz')[0] == 503, 15),
                   'workers stuck on a frozen filesystem: /healthz 503',
                   http(d.url + '/healthz')[1])
            report(sample(d.metrics(), 'ckptd_up') == 0, 'ckptd_up 0')
            report(wait_for(lambda: 'the watchdog is no longer fed' in
                            d.logtext(), 5), 'the stall is logged')
            subprocess.run(['fsfreeze', '-u', mnt], check=True)
            frozen = False
            m.wait_until_finished()
            report(list(m.all_steps()) == [1], 'the save completes after '
                   'the thaw')
        report(wait_for(lambda: http(d.url + '/healthz')[0] == 200, 15) and
               sample(d.metrics(), 'ckptd_up') == 1,
               'healthy again: /healthz 200, ckptd_up 1')
    finally:
        if frozen:
            subprocess.run(['fsfreeze', '-u', mnt])
        rc = d.stop()
        subprocess.run(['umount', mnt])
    report(rc == 0, 'ckptd exits 0 after the stall')


def main():
    base = tempfile.mkdtemp(prefix='ckpt-ops-')
    try:
        import ckpt
        test_check_config(base)
        test_metrics_and_reload(base, ckpt)
        test_stall(base, ckpt)
        test_relative_paths_reload(base)
    except Exception as e:  # report, do not hide
        import traceback
        report(False, 'unexpected exception: %s' % e, traceback.format_exc())
    finally:
        if os.environ.get('CKPTD_TEST_KEEP') == '1':
            print('# kept ' + base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return plan()


if __name__ == '__main__':
    sys.exit(main())

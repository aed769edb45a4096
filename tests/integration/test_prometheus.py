#!/usr/bin/env python3
"""test_prometheus.py - a real Prometheus scrapes ckptd (TAP output).

Starts ckptd with --metrics-listen on a loopback port and the Debian
`prometheus` binary on another loopback port (a temporary config with a
1 s scrape interval and a temporary data directory), saves and restores
steps for a few seconds, then asks Prometheus' HTTP API for quantiles of
ckptd's histograms (histogram_quantile over rate() and over the raw
buckets) and checks that they are consistent with what was saved.

Environment (from meson): CKPTD_BIN, CKPT_LIBRARY, PYTHONPATH.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np

from tap import plan, report

CKPTD = os.environ['CKPTD_BIN']
def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def query(base_url, expr):
    url = base_url + '/api/v1/query?' + urllib.parse.urlencode(
        {'query': expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def scalar(res):
    """The single value of an instant-vector answer, or None."""
    if res.get('status') != 'success':
        return None
    v = res['data']['result']
    if len(v) != 1:
        return None
    return float(v[0]['value'][1])


def stop(proc, timeout=30):
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    prom_bin = shutil.which('prometheus')
    if prom_bin is None:
        print('not ok 1 - the prometheus binary is installed '
              '(scripts/install-deps.sh)')
        print('1..1')
        return 1
    import ckpt

    base = tempfile.mkdtemp(prefix='ckpt-prom-')
    ckptd = prom = None
    try:
        sock = os.path.join(base, 's.sock')
        mport = free_port()
        ckptd_log = open(os.path.join(base, 'ckptd.log'), 'wb')
        ckptd = subprocess.Popen(
            [CKPTD, '--socket', sock, '--state-dir',
             os.path.join(base, 'state'), '--foreground',
             '--metrics-listen', '127.0.0.1:%d' % mport],
            stdout=ckptd_log, stderr=subprocess.STDOUT, close_fds=True)

        pport = free_port()
        conf = os.path.join(base, 'prometheus.yml')
        with open(conf, 'w') as f:
            f.write('global:\n  scrape_interval: 1s\n'
                    '  evaluation_interval: 1s\n'
                    'scrape_configs:\n  - job_name: ckptd\n'
                    '    static_configs:\n'
                    "      - targets: ['127.0.0.1:%d']\n" % mport)
        prom_log = open(os.path.join(base, 'prometheus.log'), 'wb')
        prom = subprocess.Popen(
            [prom_bin, '--config.file=' + conf,
             '--storage.tsdb.path=' + os.path.join(base, 'tsdb'),
             '--web.listen-address=127.0.0.1:%d' % pport,
             '--log.level=warn'],
            stdout=prom_log, stderr=subprocess.STDOUT, close_fds=True,
            cwd=base)
        purl = 'http://127.0.0.1:%d' % pport

        up = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and prom.poll() is None:
            try:
                up = scalar(query(purl, 'up{job="ckptd"}'))
            except OSError:
                up = None
            if up == 1:
                break
            time.sleep(0.5)
        report(up == 1, 'Prometheus scrapes ckptd (up{job="ckptd"} == 1)')
        if up != 1:
            with open(os.path.join(base, 'prometheus.log'), 'rb') as f:
                print('\n'.join('# ' + l for l in
                                f.read().decode()[-3000:].splitlines()))
            return 1

        # Saves spread over several scrapes: 256 KiB steps.
        os.environ['CKPTD_SOCKET'] = sock
        os.environ['CKPTD_AUTOSTART'] = '0'
        tree = {'w': np.arange(1 << 16, dtype=np.float32)}
        t0 = time.monotonic()
        step = 0
        with ckpt.CheckpointManager(
                os.path.join(base, 'root'),
                options=ckpt.CheckpointManagerOptions(max_to_keep=3)) as m:
            while time.monotonic() - t0 < 5:
                m.save(step, args=ckpt.args.StandardSave(tree))
                m.wait_until_finished()
                step += 1
                time.sleep(0.1)
            r = m.restore(step - 1, args=ckpt.args.StandardRestore(tree))
        np.testing.assert_array_equal(r['w'], tree['w'])

        # Wait until Prometheus has scraped the final counts.
        got = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = scalar(query(purl, 'ckptd_save_durable_seconds_count'))
            if got == step:
                break
            time.sleep(0.5)
        report(got == step, 'Prometheus has all %d saves in '
               'ckptd_save_durable_seconds_count (%s)' % (step, got))

        expr = ('histogram_quantile(0.9, sum by (le) '
                '(rate(ckptd_save_durable_seconds_bucket[1m])))')
        res = query(purl, expr)
        q = scalar(res)
        report(q is not None and 0 < q <= 900,
               'p90 save -> durable latency through the HTTP API: %s s' % q,
               expr + '\n' + json.dumps(res)[:500])
        expr = 'histogram_quantile(0.5, ckptd_step_bytes_bucket)'
        res = query(purl, expr)
        q = scalar(res)
        # Every step holds 262144 array bytes: the (65536, 1048576] bucket.
        report(q is not None and 65536 < q <= 1048576,
               'median step size through the HTTP API: %s bytes' % q,
               expr + '\n' + json.dumps(res)[:500])
        res = query(purl, 'ckptd_build_info')
        ok = res.get('status') == 'success' and len(
            res['data']['result']) == 1 and 'version' in \
            res['data']['result'][0]['metric']
        report(ok, 'ckptd_build_info is queryable', json.dumps(res)[:500])
    except Exception as e:
        import traceback
        report(False, 'unexpected exception: %s' % e, traceback.format_exc())
    finally:
        stop(prom)
        stop(ckptd)
        if os.environ.get('CKPTD_TEST_KEEP') == '1':
            print('# kept ' + base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return plan()


if __name__ == '__main__':
    sys.exit(main())

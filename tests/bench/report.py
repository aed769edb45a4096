#!/usr/bin/python3
"""report.py - the benchmark table from the JSON lines of bench_ckpt,
peers.py and run.sh's dd runs: the median of every case over its runs,
ckptd's figure beside the limit or peer figure, their ratio and the target.

    /usr/bin/python3 report.py results.jsonl [--markdown]

Exit status 0 whatever the outcome (a benchmark reports; it does not gate).
"""

import json
import statistics
import sys

GB = 1e9
MIB = float(1 << 20)


def load(path):
    samples = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith('{'):
                continue
            try:
                s = json.loads(line)
            except ValueError:
                continue
            samples.setdefault(s['case'], []).append(float(s['value']))
    # copy baselines are timed; bandwidth rows compare with bytes/time
    if 'bytes' in samples:
        for case in ('memcpy_prefaulted', 'memcpy_fresh'):
            if case in samples:
                samples[case + '_bw'] = [samples['bytes'][0] / t
                                         for t in samples[case]]
    return samples


def fmt(v, unit):
    if v is None:
        return 'n/a'
    if unit == 's':
        if v < 1e-3:
            return '%.1f us' % (v * 1e6)
        if v < 1:
            return '%.1f ms' % (v * 1e3)
        return '%.2f s' % v
    if unit == 'B/s':
        return '%.2f GB/s' % (v / GB)
    if unit == 'B':
        if abs(v) < MIB:
            return '%.0f KiB' % (v / 1024)
        return '%.1f MiB' % (v / MIB)
    if unit == 'req/s':
        return '%.0f req/s' % v
    if unit == 'x':
        return '%.2fx' % v
    return '%g' % v


# (case label, ckptd case, baseline case or constant, baseline label, unit,
#  ratio: 'c/b' or 'b/c', target: (op, value) or None)
ROWS = [
    ('save blocking (warm staging)', 'save_blocking', 'memcpy_prefaulted',
     'memcpy into prefaulted buffer', 's', 'c/b', ('<=', 1.3)),
    ('save blocking vs numpy.save', 'save_blocking', 'numpy_save_fsync',
     'numpy.save + fsync', 's', 'b/c', ('>=', 15)),
    ('save blocking vs torch.save', 'save_blocking', 'torch_save_fsync',
     'torch.save + fsync', 's', 'b/c', ('>=', 15)),
    ('save blocking vs h5py', 'save_blocking', 'h5py_save_fsync',
     'h5py + fsync', 's', 'b/c', None),
    ('save blocking vs zarr', 'save_blocking', 'zarr_save_fsync',
     'zarr (blosc) + fsync', 's', 'b/c', None),
    ('save blocking, first save', 'save_blocking_cold_staging',
     'memcpy_fresh', 'copy into new memory', 's', 'c/b', None),
    ('Python ckpt save blocking', 'py_save_blocking', 'memcpy_prefaulted',
     'memcpy into prefaulted buffer', 's', 'c/b', None),
    ('Python ckpt vs numpy.save', 'py_save_blocking', 'numpy_save_fsync',
     'numpy.save + fsync', 's', 'b/c', None),
    ('persistence (save -> durable)', 'persist', 'dd_write',
     'dd bs=8M oflag=direct conv=fsync', 'B/s', 'c/b', ('>=', 0.9)),
    ('Python ckpt persistence', 'py_persist', 'dd_write',
     'dd bs=8M oflag=direct conv=fsync', 'B/s', 'c/b', None),
    ('restore warm -> caller buffers', 'restore_caller', 'memcpy_prefaulted_bw',
     'memcpy into prefaulted buffer', 'B/s', 'c/b', ('>=', 0.7)),
    ('restore warm -> new arrays', 'restore_new', 'memcpy_fresh_bw',
     'copy into new memory', 'B/s', 'c/b', ('>=', 0.7)),
    ('restore zero-copy views', 'restore_zero_copy', 0.010,
     'limit 10 ms', 's', 'c/b', ('<=', 1.0)),
    ('restore cold -> caller buffers', 'restore_cold', 'dd_read',
     'dd bs=8M iflag=direct', 'B/s', 'c/b', ('>=', 0.9)),
    ('  (no verify) caller buffers', 'restore_caller_noverify',
     'memcpy_prefaulted_bw', 'memcpy into prefaulted buffer', 'B/s', 'c/b',
     None),
    ('  (no verify) new arrays', 'restore_new_noverify', 'memcpy_fresh_bw',
     'copy into new memory', 'B/s', 'c/b', None),
    ('  (no verify) zero-copy views', 'restore_zero_copy_noverify', 0.010,
     'limit 10 ms', 's', 'c/b', None),
    ('Python ckpt restore -> new arrays', 'py_restore_new', 'py_copy_new',
     'numpy .copy() of the arrays', 'B/s', 'c/b', None),
    ('latest_step round trip', 'rtt_latest_step', 'rtt_ping',
     'ckpt_ping round trip', 's', 'c/b', ('<=', 1.5)),
    ('all_steps round trip', 'rtt_all_steps', 'rtt_ping',
     'ckpt_ping round trip', 's', 'c/b', ('<=', 1.5)),
    ('8 clients latest_step', 'tput_latest_step', 20000.0,
     'target 20000 req/s', 'req/s', 'c/b', ('>=', 1.0)),
    ('8 clients ping', 'tput_ping', 20000.0,
     'target 20000 req/s', 'req/s', 'c/b', None),
    ('sharing: 8 x 128 MiB aggregate', 'share_aggregate', 'dd_write',
     'dd bs=8M oflag=direct conv=fsync', 'B/s', 'c/b', ('>=', 0.85)),
    ('sharing: slowest vs fastest', 'share_slowest', 'share_fastest',
     'fastest client', 's', 'share', ('<=', 1.5)),
    ('tiny checkpoint save -> commit', 'tiny_save_commit', 'tiny_baseline',
     'write+fsync+rename+dir fsync', 's', 'c/b', ('<=', 3.0)),
    ('ckptd RSS idle', 'mem_rss_idle', 10 * MIB, 'limit 10 MiB', 'B',
     'c/b', ('<=', 1.0)),
    ('ckptd RSS growth, saves 10..100', 'mem_rss_growth', 1 * MIB,
     'tolerance 1 MiB', 'B', 'c/b', ('<=', 1.0)),
    ('ckptd RSS after the run', 'mem_rss_end', 10 * MIB, 'limit 10 MiB',
     'B', 'c/b', None),
    ('staging peak vs --memory-budget', 'budget_peak_staging',
     'budget_bytes', '--memory-budget', 'B', 'c/b', ('<=', 1.0)),
    ('saves seen waiting for memory', 'budget_max_waiting', 1.0,
     'at least 1 (status)', 'count', 'c/b', ('>=', 1.0)),
    # bench_dist / dist_bench.py: 4 processes x 256 MiB (default)
    ('dist: per-rank save blocking', 'dist_py_blocking', 'dist_py_memcpy',
     'memcpy of its part', 's', 'c/b', ('<=', 1.3)),
    ('  (wire, part handed as a memfd)', 'dist_blocking', 'dist_memcpy',
     'memcpy of its part', 's', 'c/b', None),
    ('dist: save -> global commit', 'dist_commit', 'dist_dd_write',
     'dd of the total, oflag=direct conv=fsync', 's', 'b/c', ('>=', 0.9)),
    ('dist: restore on 2 processes', 'dist_restore2_bw',
     'dist_restore2_memcpy_bw', 'memcpy warm, per process', 'B/s', 'c/b',
     ('>=', 0.7)),
    ('dist: commit vs torch.save x N', 'dist_commit',
     'dist_torch_save_fsync', 'torch.save + fsync per rank', 's', 'b/c',
     None),
    ('dist: blocking vs torch.save x N', 'dist_py_blocking',
     'dist_torch_save_fsync', 'torch.save + fsync per rank', 's', 'b/c',
     None),
    # vs_orbax.py: ckpt and orbax-checkpoint, default (async) options
    ('vs Orbax: save blocking, numpy', 'ox_ckpt_np_save_blocking',
     'ox_orbax_np_save_blocking', 'orbax', 's', 'b/c', ('>=', 10)),
    ('vs Orbax: save blocking, jax', 'ox_ckpt_jax_save_blocking',
     'ox_orbax_jax_save_blocking', 'orbax', 's', 'b/c', ('>=', 10)),
    ('vs Orbax: save blocking, numpy vs memcpy', 'ox_ckpt_np_save_blocking',
     'ox_memcpy_1thread', 'memcpy of the arrays', 's', 'c/b', None),
    ('vs Orbax: save -> durable, numpy', 'ox_ckpt_np_save_durable',
     'ox_orbax_np_save_durable', 'orbax', 's', 'c/b', ('<=', 1.0)),
    ('vs Orbax: save -> durable, jax', 'ox_ckpt_jax_save_durable',
     'ox_orbax_jax_save_durable', 'orbax', 's', 'c/b', ('<=', 1.0)),
    ('vs Orbax: restore new arrays, numpy', 'ox_ckpt_np_restore_new',
     'ox_orbax_np_restore_new', 'orbax', 'B/s', 'c/b', ('>=', 2)),
    ('vs Orbax: restore new arrays, jax', 'ox_ckpt_jax_restore_new',
     'ox_orbax_jax_restore_new', 'orbax', 'B/s', 'c/b', ('>=', 2)),
    ('vs Orbax: restore into targets, numpy', 'ox_ckpt_np_restore_target',
     'ox_orbax_np_restore_target', 'orbax', 'B/s', 'c/b', ('>=', 2)),
    ('vs Orbax: restore into targets, jax', 'ox_ckpt_jax_restore_target',
     'ox_orbax_jax_restore_target', 'orbax', 'B/s', 'c/b', ('>=', 2)),
    ('vs Orbax: training loop slowdown', 'ox_ckpt_interference',
     'ox_orbax_interference', 'orbax', 'x', 'c/b', ('<=', 0.5)),
    ('vs Orbax: training loop slowdown, jax', 'ox_ckpt_jax_interference',
     'ox_orbax_jax_interference', 'orbax', 'x', 'c/b', ('<=', 0.5)),
    ('vs Orbax: slowdown, loop writes the state', 'ox_ckpt_np_w_interference',
     'ox_orbax_np_w_interference', 'orbax', 'x', 'c/b', ('<=', 0.5)),
]


def med(samples, case):
    v = samples.get(case)
    return statistics.median(v) if v else None


def table(samples):
    out = []
    for label, ccase, base, blabel, unit, how, target in ROWS:
        c = med(samples, ccase)
        b = base if isinstance(base, float) else med(samples, base)
        ratio = None
        if how == 'share':
            ratio = med(samples, 'share_slowest_over_fastest')
        elif c is not None and b not in (None, 0) and c != 0:
            ratio = c / b if how == 'c/b' else b / c
        elif c == 0 and b:
            ratio = 0.0 if how == 'c/b' else None
        if c is None and b is None:
            continue
        if target is None:
            tgt, ok = 'info', ''
        else:
            op, tv = target
            tgt = '%s %gx' % ('<=' if op == '<=' else '>=', tv)
            if how == 'b/c':
                tgt += ' less'
            if ratio is None:
                ok = 'n/a'
            else:
                ok = 'yes' if (ratio <= tv if op == '<=' else ratio >= tv) \
                    else 'NO'
        n = len(samples.get(ccase, []))
        out.append((label, fmt(c, unit) + (' (n=%d)' % n if n > 1 else ''),
                    '%s: %s' % (blabel, fmt(b, unit)),
                    'n/a' if ratio is None else '%.2f' % ratio, tgt, ok))
    return out


def main():
    if len(sys.argv) < 2:
        raise SystemExit('usage: report.py results.jsonl [--markdown]')
    samples = load(sys.argv[1])
    rows = table(samples)
    head = ('case', 'ckptd (median)', 'baseline (what: median)', 'ratio',
            'target', 'ok?')
    if '--markdown' in sys.argv:
        print('| ' + ' | '.join(head) + ' |')
        print('|' + '---|' * len(head))
        for r in rows:
            print('| ' + ' | '.join(r) + ' |')
    else:
        w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        line = '  '.join('%-*s' % (w[i], head[i]) for i in range(len(head)))
        print(line)
        print('-' * len(line))
        for r in rows:
            print('  '.join('%-*s' % (w[i], r[i]) for i in range(len(r))))
    if 'bytes' in samples:
        print('\ndata: %.2f GiB in arrays of %s; ratios are ckptd/baseline '
              'except "less" rows (peer/ckptd).' %
              (samples['bytes'][0] / (1 << 30), 'float32'))
    missed = [r[0] for r in rows if r[5] == 'NO']
    print('targets missed: %d%s' % (len(missed),
                                     (' (' + '; '.join(missed) + ')')
                                     if missed else ''))


if __name__ == '__main__':
    main()

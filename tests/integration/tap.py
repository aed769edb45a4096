"""tap.py - TAP output for the Python integration tests: report() prints
one "ok"/"not ok" line per check (with the detail as comments) and plan()
prints the plan at the end and gives the exit status."""

import sys

_count = 0
_failed = 0


def report(ok, what, detail=''):
    global _count, _failed
    _count += 1
    if not ok:
        _failed += 1
    print('%s %d - %s' % ('ok' if ok else 'not ok', _count, what))
    for line in str(detail).splitlines():
        print('# ' + line)
    sys.stdout.flush()


def plan():
    """Print the plan; 1 when a check failed, else 0."""
    print('1..%d' % _count)
    return 1 if _failed else 0

"""Run code cells like a notebook: the value of a final expression is
printed with repr(); an exception is printed as "Type: message" and the
next cell runs. Markers separate cells on stdout and stderr.

Usage: python3 seed_runner.py CELLS.json
"""

import ast
import json
import sys


def run_cell(src, ns):
    tree = ast.parse(src, mode='exec')
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, '<cell>', 'exec'), ns)
    if last is not None:
        v = eval(compile(last, '<cell>', 'eval'), ns)
        if v is not None:
            print(repr(v))


def main():
    with open(sys.argv[1], encoding='utf-8') as f:
        cells = json.load(f)
    ns = {'__name__': '__main__'}
    for i, src in enumerate(cells):
        marker = '@@cell %d@@' % i
        print(marker, flush=True)
        print(marker, file=sys.stderr, flush=True)
        try:
            run_cell(src, ns)
        except Exception as e:  # noqa: BLE001 - printed like a notebook
            print('%s: %s' % (type(e).__name__, e), flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
    print('@@end@@', flush=True)
    print('@@end@@', file=sys.stderr, flush=True)


if __name__ == '__main__':
    main()

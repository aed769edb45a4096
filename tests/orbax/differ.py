"""Run the scenarios of scenarios.py with one implementation of the
orbax.checkpoint API and write what each printed and raised as JSON.

    python differ.py orbax|ckpt OUT.json [NAME...]

MODE picks `import orbax.checkpoint as ocp` or `import ckpt as ocp`; the
scenarios are the same code. Every value a scenario shows goes through
norm(): arrays become (kind, dtype, shape, values), paths under the
scenario's private root become <ROOT>/..., exceptions become
"raised <builtin base> <type name>: <message>". The comparison itself is
in test_differential.py.
"""

import contextlib
import datetime
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from unittest import mock

os.environ.setdefault('XLA_FLAGS',
                      '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

_BUILTIN_BASES = (StopIteration, FileNotFoundError, FileExistsError,
                  NotADirectoryError, PermissionError, TimeoutError, OSError,
                  KeyError, IndexError, LookupError, NotImplementedError,
                  RuntimeError, TypeError, ValueError, AttributeError,
                  AssertionError, Exception)


def exc_text(e):
    base = next(b for b in _BUILTIN_BASES if isinstance(e, b))
    msg = str(e)
    return 'raised %s %s: %s' % (base.__name__, type(e).__name__, msg)


COMMIT_MARKER = 'commit_success.txt'


class Env:
    """What a scenario gets besides ocp: private roots, out(), attempt(),
    a mocked clock and the mode's name (for the rare scenario that must
    reach past the common API, e.g. Orbax's module paths)."""

    def __init__(self, mode, base):
        self.mode = mode
        self.base = base
        self.lines = []
        self._n = 0
        self.now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        self._clock = None

    # -- roots and paths -----------------------------------------------------
    def root(self, name=None):
        self._n += 1
        p = os.path.join(self.base, name or 'root%d' % self._n)
        return p

    def rel(self, s):
        return s.replace(self.base, '<ROOT>')

    def listdir(self, path, marker=False):
        """Names in a step or root folder, without hidden files and
        (unless marker) Orbax's commit_success.txt, which ckptd does not
        write (scenario commit_marker shows that one difference)."""
        if marker:
            return sorted(os.listdir(path))
        try:
            names = os.listdir(path)
        except FileNotFoundError:
            return 'missing'
        return sorted(n for n in names
                      if not n.startswith('.') and n != COMMIT_MARKER)

    # -- output --------------------------------------------------------------
    def norm(self, x):
        return norm(x, self)

    def out(self, label, *values):
        self.lines.append('%s: %s' % (label, ' '.join(
            json.dumps(self.norm(v), sort_keys=True) for v in values)))

    def attempt(self, label, fn, *a, **kw):
        """Call fn; show its normalized result or what it raised."""
        try:
            v = fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - it is the result
            self.lines.append('%s: %s' % (label, self.rel(exc_text(e))))
            return None
        self.out(label, v)
        return v

    def raised(self, label, fn, *a, **kw):
        """Like attempt(), but shows only whether fn raised and the
        builtin base of what it raised (for errors whose text comes from
        the implementation's own I/O)."""
        try:
            v = fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - it is the result
            base = next(b for b in _BUILTIN_BASES if isinstance(e, b))
            self.lines.append('%s: raised %s' % (label, base.__name__))
            return None
        self.out(label, v)
        return v

    # -- the clock -----------------------------------------------------------
    @contextlib.contextmanager
    def clock(self):
        """A mocked wall clock that advance() moves: Orbax's tests patch
        datetime.datetime; ckpt's time-based policies take the save time
        from ckpt.manager._now_ns."""
        if self.mode == 'orbax':
            real_dt = datetime.datetime
            with mock.patch('datetime.datetime', autospec=True) as dt:
                dt.now.return_value = self.now
                dt.min = real_dt.min
                dt.max = real_dt.max
                dt.fromtimestamp.side_effect = real_dt.fromtimestamp
                self._clock = dt
                try:
                    yield self
                finally:
                    self._clock = None
        else:
            import ckpt.manager as m
            real = m._now_ns

            def now_ns():
                return int(self.now.timestamp()) * 1000000000
            m._now_ns = now_ns
            try:
                yield self
            finally:
                m._now_ns = real

    def advance(self, **delta):
        self.now = self.now + datetime.timedelta(**delta)
        if self._clock is not None:
            self._clock.now.return_value = self.now


def norm(x, env=None):
    import numbers
    if x is None or isinstance(x, (bool, str)):
        return env.rel(x) if isinstance(x, str) and env else x
    if isinstance(x, numbers.Integral) and not isinstance(x, np.generic):
        return x
    if isinstance(x, float):
        return ['float', x]
    if isinstance(x, np.generic):
        return ['np.' + type(x).__name__, x.item()]
    if isinstance(x, np.ndarray):
        return ['ndarray', str(x.dtype), list(x.shape), _values(x)]
    if type(x).__module__.startswith(('jax', 'jaxlib')) and hasattr(
            x, 'addressable_shards'):
        return ['jax.Array', str(x.dtype), list(x.shape),
                _values(np.asarray(x)), _sharding(x.sharding)]
    name = type(x).__name__
    if name in ('Composite', 'CompositeArgs', 'CompositeResults') or (
            hasattr(x, 'items') and hasattr(x, '__getattr__') and
            'Composite' in name):
        return ['Composite', {k: norm(v, env) for k, v in x.items()}]
    if isinstance(x, dict):
        return {str(k): norm(v, env) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [type(x).__name__] + [norm(v, env) for v in x]
    if isinstance(x, (set, frozenset)):
        return ['set'] + sorted(norm(v, env) for v in x)
    if isinstance(x, datetime.datetime):
        return ['datetime']
    if hasattr(x, 'shape') and hasattr(x, 'dtype'):
        return [name, list(x.shape), str(np.dtype(x.dtype))]
    if name.endswith('Metadata') and hasattr(x, '__dataclass_fields__'):
        return [name]
    if isinstance(x, os.PathLike):
        return env.rel(os.fspath(x)) if env else os.fspath(x)
    return [name, env.rel(repr(x)) if env else repr(x)]


def _sharding(sh):
    name = type(sh).__name__
    if name == 'NamedSharding':
        return [name, list(sh.mesh.devices.shape), list(sh.mesh.axis_names),
                str(sh.spec)]
    if name == 'SingleDeviceSharding':
        return [name, sorted(d.id for d in sh.device_set)]
    return [name, len(sh.device_set)]


def _values(a):
    a = np.asarray(a)
    if a.dtype.kind in 'biu':
        return a.tolist()
    if a.dtype.kind == 'f' or a.dtype.name in ('bfloat16',) or \
            a.dtype.name.startswith('float8'):
        return np.asarray(a, dtype=np.float64).tolist()
    return repr(a.tolist())


def load_ocp(mode):
    if mode == 'orbax':
        import orbax.checkpoint as ocp
    else:
        import ckpt as ocp
    return ocp


def run_one(mode, ocp, name, fn, timeout):
    """Run one scenario in a forked child (a failed Orbax save leaves
    threads behind that would hold up the next scenario and the exit) and
    return its lines."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        code = 0
        base = tempfile.mkdtemp(prefix='ckpt-orbax-%s-' % mode)
        env = Env(mode, base)
        try:
            fn(ocp, env)
        except Exception as e:  # noqa: BLE001 - recorded, next scenario
            env.lines.append('scenario ' + env.rel(exc_text(e)))
            print('== %s (%s)' % (name, mode), file=sys.stderr)
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            code = 1
        try:
            with os.fdopen(wfd, 'w', encoding='utf-8') as f:
                json.dump(env.lines, f)
            shutil.rmtree(base, ignore_errors=True)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(rfd, 'rb') as f:
        os.set_blocking(rfd, False)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return ['scenario timed out after %ds' % timeout]
            ready, _, _ = select.select([f], [], [], min(left, 1.0))
            if ready:
                b = f.read()
                if not b:
                    break
                chunks.append(b)
    _, status = os.waitpid(pid, 0)
    try:
        return json.loads(b''.join(chunks).decode('utf-8'))
    except ValueError:
        return ['scenario died (wait status %d)' % status]


def main():
    mode, out_path = sys.argv[1], sys.argv[2]
    wanted = sys.argv[3:]
    ocp = load_ocp(mode)
    import scenarios
    timeout = int(os.environ.get('DIFFER_TIMEOUT', '120'))
    results = {}
    for name, fn in scenarios.all_scenarios():
        if wanted and name not in wanted:
            continue
        results[name] = run_one(mode, ocp, name, fn, timeout)
    with open(out_path, 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=1, sort_keys=True)


if __name__ == '__main__':
    main()

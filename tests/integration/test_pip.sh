#!/usr/bin/env bash
# test_pip.sh - `pip install client/python` in a venv works, and the
# installed package finds libckpt through its soname (TAP output).
#
#   test_pip.sh SRCDIR LIBDIR CKPTD_BIN
#
# The venv sees Debian's numpy (--system-site-packages) and pip runs
# offline (--no-index --no-build-isolation, setuptools from the venv). The
# package is built from a copy of client/python (setuptools writes build/
# and *.egg-info next to the sources). libckpt is found as libckpt.so.0 on
# the loader's path (LIBDIR, the build's client directory), with no
# CKPT_LIBRARY and no PYTHONPATH; a private ckptd serves a save/restore.
set -uo pipefail

src=$1
libdir=$2
ckptd_bin=$3
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
diag() { sed 's/^/# /'; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-pip.XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
unset CKPT_LIBRARY PYTHONPATH

if out=$(/usr/bin/python3 -m venv --system-site-packages "$tmp/venv" 2>&1); then
	ok "python3 -m venv"
else
	not_ok "python3 -m venv (python3-venv installed?)"
	printf '%s\n' "$out" | diag
	echo "1..$n"
	exit 1
fi
# -L: ckpt/ckpt_codes.def is a link to proto/ckpt_codes.def in the tree.
cp -rL "$src/client/python" "$tmp/pkg"
rm -rf "$tmp/pkg/meson.build"
if out=$("$tmp/venv/bin/pip" install --no-index --no-build-isolation \
	--disable-pip-version-check "$tmp/pkg" 2>&1); then
	ok "pip install client/python"
else
	not_ok "pip install client/python"
fi
printf '%s\n' "$out" | tail -n 3 | diag

site=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -f "$site/ckpt/manager.py" ] && [ -f "$site/ckpt/py.typed" ]; then
	ok "the package and its py.typed marker are in the venv"
else
	not_ok "the package and its py.typed marker are in the venv ($site)"
fi

mkdir -p "$tmp/run"
"$ckptd_bin" --socket "$tmp/s.sock" --state-dir "$tmp/state" --foreground \
	2>"$tmp/ckptd.log" &
pid=$!
for _ in $(seq 1 200); do
	[ -S "$tmp/s.sock" ] && break
	sleep 0.05
done

cat >"$tmp/run/check.py" <<'PY'
import ctypes
import os
import sys
import typing

import numpy as np

import ckpt
from ckpt import _lib

root = sys.argv[1]
assert os.path.dirname(ckpt.__file__).startswith(sys.prefix), ckpt.__file__
lib = _lib.lib()
print('package', os.path.dirname(ckpt.__file__))
# Which file the loader picked for the soname.
with open('/proc/self/maps') as f:
    print('library', sorted({l.split()[-1] for l in f if 'libckpt.so' in l}))
tree = {'w': np.arange(12, dtype=np.float32).reshape(3, 4)}
with ckpt.CheckpointManager(root) as m:
    assert m.save(1, args=ckpt.args.StandardSave(tree))
    m.wait_until_finished()
    r = m.restore(1, args=ckpt.args.StandardRestore(tree))
np.testing.assert_array_equal(r['w'], tree['w'])
hints = typing.get_type_hints(ckpt.CheckpointManager.save)
assert hints['return'] is bool, hints
assert 'Save `args`' in (ckpt.CheckpointManager.save.__doc__ or '')
print('saved and restored through the soname')
PY
if out=$(cd "$tmp/run" && LD_LIBRARY_PATH=$libdir CKPTD_SOCKET=$tmp/s.sock \
	CKPTD_AUTOSTART=0 "$tmp/venv/bin/python" check.py "$tmp/root" 2>&1); then
	ok "the installed package loads libckpt.so.0 and saves/restores"
else
	not_ok "the installed package loads libckpt.so.0 and saves/restores"
fi
printf '%s\n' "$out" | tail -n 8 | diag
if printf '%s\n' "$out" | grep -q "^library \['$libdir/libckpt.so"; then
	ok "libckpt came from the loader's search path (soname)"
else
	not_ok "libckpt came from the loader's search path (soname)"
fi
if out=$(cd "$tmp/run" && LD_LIBRARY_PATH=$libdir "$tmp/venv/bin/python" -c \
	'import ckpt; help(ckpt.CheckpointManager)' 2>&1) &&
	printf '%s\n' "$out" | grep -q "wait_until_finished(self) -> None" &&
	printf '%s\n' "$out" | grep -q "Block until every save"; then
	ok "help() shows the type hints and docstrings"
else
	not_ok "help() shows the type hints and docstrings"
	printf '%s\n' "$out" | head -n 20 | diag
fi
echo "1..$n"
[ "$failed" -eq 0 ]

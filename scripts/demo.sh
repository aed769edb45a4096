#!/usr/bin/env bash
# demo.sh - build ckptd, start it on a private socket, save and restore a
# few steps with a small C program, show them with ckptctl, stop the daemon.
set -euo pipefail

cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}

if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build"
fi
ninja -C "$build"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ckptd-demo.XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid" || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

export CKPTD_SOCKET=$tmp/ckptd.sock
export CKPTD_AUTOSTART=0
ckptctl=$build/client/ckptctl

echo "==== starting ckptd on $CKPTD_SOCKET"
"$build/daemon/ckptd" --socket "$CKPTD_SOCKET" --state-dir "$tmp/state" \
	--foreground --workers 2 2>"$tmp/ckptd.log" &
pid=$!
for _ in $(seq 1 100); do
	if "$ckptctl" status >/dev/null 2>&1; then
		break
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "demo.sh: ckptd exited:" >&2
		cat "$tmp/ckptd.log" >&2
		exit 1
	fi
	sleep 0.1
done
"$ckptctl" status

echo
echo "==== saving 5 steps and restoring the latest"
"$build/tests/integration/ckpt-demo" "$tmp/ckpt"

echo
echo "==== ckptctl steps $tmp/ckpt"
"$ckptctl" steps "$tmp/ckpt"
echo
echo "==== ckptctl show $tmp/ckpt 4"
"$ckptctl" show "$tmp/ckpt" 4
echo
echo "==== ckptctl verify $tmp/ckpt"
"$ckptctl" verify "$tmp/ckpt"

echo
echo "==== files of step 4"
(cd "$tmp/ckpt" && find 4 | sort)

echo
echo "==== stopping ckptd (SIGTERM drains pending saves)"
kill -TERM "$pid"
wait "$pid"
pid=
echo "ckptd exited cleanly"

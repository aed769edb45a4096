#!/usr/bin/env bash
# valgrind.sh [TEST...] - the C integration tests under valgrind's memcheck:
# each test program runs under valgrind, and so does every ckptd it starts
# (CKPTD_BIN points at a wrapper that execs valgrind on the daemon). TEST
# names a program of tests/integration without its "test_" (default: all
# but fairness, whose latency bounds do not hold at valgrind's speed).
# Uses the normal build (build/, or BUILD_DIR). A test passes when its TAP
# has no "not ok" and valgrind found no invalid access, uninitialised use or
# definite leak in it or in any daemon; the logs are kept in a temporary
# directory named at the end. Takes about 10 minutes for all on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/.."
src=$PWD
build=${BUILD_DIR:-build}
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(roundtrip errors rawframes bounds chunks
	background concurrency crash distributed distributed_lib leftovers
	reconnect seed trust upgrade isolation)

[ -f "$build/build.ninja" ] || meson setup "$build" >/dev/null
ninja -C "$build" >/dev/null || { echo "valgrind.sh: build failed" >&2; exit 1; }
command -v valgrind >/dev/null || {
	echo "valgrind.sh: valgrind is not installed (scripts/install-deps.sh)" >&2
	exit 1
}

logs=$(mktemp -d -t ckpt-valgrind.XXXXXX)
chmod 755 "$logs"      # the second test user reaches its directory
vg=(valgrind -q --error-exitcode=99 --leak-check=full
	--show-leak-kinds=definite,indirect
	--errors-for-leak-kinds=definite,indirect)
# Each daemon logs into its test's directory (valgrind expands %q{VAR}).
cat > "$logs/ckptd" <<EOF
#!/bin/sh
exec ${vg[*]} --log-file=%q{CKPT_VG_LOGS}/ckptd.%p $src/$build/daemon/ckptd "\$@"
EOF
chmod 755 "$logs/ckptd"

passed=0 failed=0
for t in "${tests[@]}"; do
	bin=$build/tests/integration/test_$t
	if [ ! -x "$bin" ]; then
		echo "not ok - $t: no program $bin"
		failed=$((failed + 1))
		continue
	fi
	dir=$logs/$t
	mkdir "$dir"
	chmod 1777 "$dir"    # daemons of the second test user write here too
	CKPT_VG_LOGS=$dir CKPTD_BIN=$logs/ckptd \
	CKPT_TEST_SRCDIR=$src/tests/integration CKPTD_AUTOSTART=0 \
	CKPTCTL_BIN=$src/$build/client/ckptctl \
		timeout 1800 "${vg[@]}" --log-file="$dir/test.%p" "$bin" \
		> "$dir/tap" 2>&1
	rc=$?
	bad=$(grep -c '^not ok' "$dir/tap")
	reports=$(find "$dir" \( -name 'ckptd.*' -o -name 'test.*' \) -size +0 |
		sed "s|^$dir/||" | tr '\n' ' ')
	if [ "$rc" -eq 0 ] && [ "$bad" -eq 0 ] && [ -z "$reports" ]; then
		echo "ok - $t"
		passed=$((passed + 1))
	else
		echo "not ok - $t (exit $rc, $bad failed checks${reports:+; valgrind reports: $reports})"
		failed=$((failed + 1))
	fi
done
echo "logs: $logs"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

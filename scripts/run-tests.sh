#!/usr/bin/env bash
# run-tests.sh - build ckptd and run every test twice: in the normal build
# (build/) and in an AddressSanitizer + UndefinedBehaviorSanitizer build
# (build-asan/); then, when clang is installed, the libFuzzer targets of
# tests/fuzz for a bounded time each (build-fuzz/, clang, ASan+UBSan,
# suite "fuzz"). Ends with one line "N passed, N failed" summed over all
# builds; the exit status is nonzero when anything failed.
#
# Environment: BUILD_DIR, ASAN_BUILD_DIR, FUZZ_BUILD_DIR (default build,
# build-asan, build-fuzz), MESON_TEST_ARGS (extra arguments for the first
# two `meson test` runs, e.g. a test name), FUZZ_SECONDS (per fuzz target,
# default 25; 0 skips the fuzz stage).
set -uo pipefail

cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
asan=${ASAN_BUILD_DIR:-build-asan}
fuzz=${FUZZ_BUILD_DIR:-build-fuzz}
py=/usr/bin/python3
build_failures=0
extra=(${MESON_TEST_ARGS:-})

setup() { # setup DIR [meson options...]
	local dir=$1
	shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@"
	fi
}

echo "==== normal build ($build)"
rm -f "$build/meson-logs/testlog.json"
if setup "$build" && ninja -C "$build"; then
	meson test -C "$build" --print-errorlogs "${extra[@]}"
else
	echo "run-tests.sh: the normal build failed" >&2
	build_failures=$((build_failures + 1))
fi

echo "==== sanitizer build ($asan: address,undefined)"
# Not run under the sanitizers:
#  - the Python suite: the interpreter is not built with ASan, so loading
#    the sanitized libckpt.so would need libasan preloaded into python3
#    (LD_PRELOAD of the exact libasan, and leak reports from the
#    interpreter itself); the same Python tests run in the normal build.
#  - the systemd suite: it tests the unit files (sandboxing, activation),
#    not the code, and runs in the normal build.
#  - the orbax suite (Python against orbax-checkpoint), for the reason of
#    the Python suite.
rm -f "$asan/meson-logs/testlog.json"
if setup "$asan" -Db_sanitize=address,undefined -Db_lundef=false &&
	ninja -C "$asan"; then
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:print_summary=1} \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:print_summary=1} \
		meson test -C "$asan" --print-errorlogs --timeout-multiplier 3 \
		--no-suite python --no-suite systemd --no-suite orbax "${extra[@]}"
else
	echo "run-tests.sh: the sanitizer build failed" >&2
	build_failures=$((build_failures + 1))
fi

echo "==== fuzz build ($fuzz: clang, libFuzzer, address,undefined)"
rm -f "$fuzz/meson-logs/testlog.json"
if [ "${FUZZ_SECONDS:-25}" = 0 ]; then
	echo "run-tests.sh: FUZZ_SECONDS=0, fuzz targets not run"
elif ! command -v clang >/dev/null; then
	echo "run-tests.sh: clang not installed, fuzz targets not run" >&2
elif CC=clang setup "$fuzz" -Dfuzz=true -Db_sanitize=address,undefined \
	-Db_lundef=false && ninja -C "$fuzz" tests/fuzz/fuzz_frame \
	tests/fuzz/fuzz_request tests/fuzz/fuzz_save tests/fuzz/fuzz_store; then
	meson test -C "$fuzz" --no-rebuild --print-errorlogs --suite fuzz
else
	echo "run-tests.sh: the fuzz build failed" >&2
	build_failures=$((build_failures + 1))
fi

# Sum the results of all runs (one JSON object per test and line).
read -r passed failed skipped < <("$py" - "$build/meson-logs/testlog.json" \
	"$asan/meson-logs/testlog.json" "$fuzz/meson-logs/testlog.json" <<'PY'
import json
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        f = open(path)
    except OSError:
        continue
    with f:
        for line in f:
            if not line.strip():
                continue
            result = json.loads(line).get("result")
            if result in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif result == "SKIP":
                skipped += 1
            else:
                failed += 1
print(passed, failed, skipped)
PY
)
failed=$((failed + build_failures))
if [ "$skipped" -gt 0 ]; then
	echo "($skipped skipped)"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

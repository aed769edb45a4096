#!/usr/bin/env bash
# fuzz.sh [SECONDS] [TARGET...] - a longer libFuzzer run: set up the fuzz
# build (build-fuzz/: clang, -Dfuzz=true, ASan+UBSan), then run each target
# (default: frame request save store) for SECONDS (default 600) over its
# seed corpus tests/fuzz/corpus/<target>. New inputs accumulate in
# build-fuzz/fuzz-work/<target>/corpus (kept between runs), crashes in
# build-fuzz/fuzz-work/<target>/artifacts/. A crash found this way becomes
# a regression test: add the input to tests/fuzz/corpus/<target> (every CI
# run replays it) and, for a daemon bug, a test in tests/integration.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame request save store)
dir=${FUZZ_BUILD_DIR:-build-fuzz}
if [ -f "$dir/build.ninja" ]; then
	meson setup --reconfigure "$dir" >/dev/null
else
	CC=clang meson setup "$dir" -Dfuzz=true \
		-Db_sanitize=address,undefined -Db_lundef=false
fi
status=0
for t in "${targets[@]}"; do
	ninja -C "$dir" "tests/fuzz/fuzz_$t"
	echo "==== fuzz_$t for $secs s"
	tests/fuzz/run-fuzz.sh "$dir/tests/fuzz/fuzz_$t" \
		"tests/fuzz/corpus/$t" "$dir/fuzz-work/$t" "$secs" || status=1
done
exit "$status"

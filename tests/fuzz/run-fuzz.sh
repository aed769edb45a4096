#!/usr/bin/env bash
# run-fuzz.sh TARGET SEEDS WORK [SECONDS] - run one libFuzzer target for a
# bounded time (SECONDS, else $FUZZ_SECONDS, else 25) over the committed
# seed corpus SEEDS; new inputs go to WORK/corpus (SEEDS is never written),
# crashes to WORK/artifacts. Exit status: 0 when no crash, else libFuzzer's.
set -euo pipefail
target=$1 seeds=$2 work=$3
secs=${4:-${FUZZ_SECONDS:-25}}
mkdir -p "$work/corpus" "$work/artifacts" "$work/tmp"
export TMPDIR=$work/tmp
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
status=0
"$target" -max_total_time="$secs" -timeout=20 -rss_limit_mb=3072 \
	-max_len=65536 -print_final_stats=1 \
	-artifact_prefix="$work/artifacts/" "$work/corpus" "$seeds" || status=$?
rm -rf "$work/tmp"
exit "$status"

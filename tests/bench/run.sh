#!/usr/bin/env bash
# run.sh - the ckptd benchmark: ckptd beside the limits of this machine
# (memcpy, dd with O_DIRECT) and beside the tools users would otherwise use
# (numpy.save, torch.save, h5py, zarr, each with fsync), in one run, one
# table of medians.
#
#     tests/bench/run.sh                       # from the source tree
#     CKPT_BENCH_GIB=0.25 CKPT_BENCH_RUNS=3 tests/bench/run.sh   # quick
#
# Environment (defaults in brackets):
#   CKPT_BENCH_GIB [1]          data per save, in GiB
#   CKPT_BENCH_ARRAYS [64]      arrays it is split into
#   CKPT_BENCH_RUNS [5]         runs per case (the table shows the median)
#   CKPT_BENCH_CLIENTS [8]      concurrent clients (throughput, sharing)
#   CKPT_BENCH_SHARE_MIB [128]  data per client in the sharing case
#   CKPT_BENCH_PINGS [20000]    round trips per latency sample
#   CKPT_BENCH_BUDGET [256M]    --memory-budget of the back-pressure daemon
#   CKPT_BENCH_PEERS [numpy,torch,h5py,zarr,ckpt]  peers.py cases ("" = none)
#   CKPT_BENCH_ORBAX [1]        0: skip vs_orbax.py (ckpt vs orbax-checkpoint,
#                               run with the venv's python)
#   CKPT_BENCH_ORBAX_RUNS [3]   runs per vs_orbax.py case
#   CKPT_BENCH_ONLY             bench_ckpt groups (see bench_ckpt.c)
#   CKPT_BENCH_DIST [1]         0: skip the distributed rows (bench_dist and
#                               dist_bench.py: CKPT_BENCH_DIST_RANKS [4]
#                               processes x CKPT_BENCH_DIST_MIB [256] MiB);
#                               only: the distributed rows alone
#   CKPT_BENCH_DIR [<build>]    where the temporary work directory goes: it
#                               must be on the filesystem under test
#   CKPT_BENCH_BUILD [build-bench]  build directory (made if missing)
#   CKPT_BENCH_KEEP [0]         1: keep the work directory (and daemon logs)
#   CKPTD_BIN, CKPT_BENCH_BIN   use these binaries instead of building
#
# Cold restores drop the page cache, which needs root; otherwise they are
# reported as n/a. Raw samples are kept in <build>/bench-results.jsonl.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
py=/usr/bin/python3

GIB=${CKPT_BENCH_GIB:-1}
ARRAYS=${CKPT_BENCH_ARRAYS:-64}
RUNS=${CKPT_BENCH_RUNS:-5}
CLIENTS=${CKPT_BENCH_CLIENTS:-8}
SHARE_MIB=${CKPT_BENCH_SHARE_MIB:-128}
PINGS=${CKPT_BENCH_PINGS:-20000}
BUDGET=${CKPT_BENCH_BUDGET:-256M}
PEERS=${CKPT_BENCH_PEERS-numpy,torch,h5py,zarr,ckpt}
ORBAX_RUNS=${CKPT_BENCH_ORBAX_RUNS:-3}
ONLY=${CKPT_BENCH_ONLY:-}
DIST=${CKPT_BENCH_DIST:-1}
if [ "$DIST" = only ]; then
	# the distributed rows alone: no other group runs
	ONLY=
	PEERS=
	CKPT_BENCH_ORBAX=0
fi
build=${CKPT_BENCH_BUILD:-$src/build-bench}

log() { printf 'run.sh: %s\n' "$*" >&2; }

# ---- build ------------------------------------------------------------------
if [ -z "${CKPTD_BIN:-}" ] || [ -z "${CKPT_BENCH_BIN:-}" ]; then
	if [ ! -f "$build/build.ninja" ]; then
		log "configuring $build"
		meson setup "$build" "$src" -Dbuildtype=release >&2
	fi
	ninja -C "$build" >&2
fi
ckptd=${CKPTD_BIN:-$build/daemon/ckptd}
bench=${CKPT_BENCH_BIN:-$build/tests/bench/bench_ckpt}
libdir=$(dirname "$(find "$build/client" -maxdepth 1 -name 'libckpt.so*' \
	-print -quit 2>/dev/null || echo "$build/client/x")")
if [ ! -x "$bench" ]; then
	# tests/bench not part of this build: compile it against the built lib
	bench=$build/bench_ckpt
	if [ ! -x "$bench" ] || [ "$here/bench_ckpt.c" -nt "$bench" ]; then
		log "compiling $bench"
		cc -std=gnu11 -O2 -D_GNU_SOURCE -Wall -Wextra \
			-I"$src/client/include" "$here/bench_ckpt.c" \
			-L"$libdir" -Wl,-rpath,"$libdir" -lckpt -lpthread \
			-o "$bench"
	fi
fi
[ -x "$ckptd" ] || { log "no ckptd at $ckptd"; exit 1; }

# ---- private daemons on the filesystem under test --------------------------
parent=${CKPT_BENCH_DIR:-$build}
mkdir -p "$parent"
work=$(mktemp -d "$(cd "$parent" && pwd)/bench.XXXXXX")
results=$work/results.jsonl
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ "${CKPT_BENCH_KEEP:-0}" = 1 ]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_daemon() {   # name extra-args...
	local name=$1 i
	shift
	mkdir -p "$work/$name-state"
	"$ckptd" --socket "$work/$name.sock" --state-dir "$work/$name-state" \
		--foreground --log-level warn "$@" \
		</dev/null >>"$work/$name.log" 2>&1 &
	pids+=($!)
	for i in $(seq 300); do
		[ -S "$work/$name.sock" ] && return 0
		kill -0 "${pids[-1]}" 2>/dev/null || break
		sleep 0.05
	done
	log "ckptd ($name) did not start:"; tail -20 "$work/$name.log" >&2
	exit 1
}
start_daemon main
main_pid=${pids[-1]}
start_daemon budget --memory-budget "$BUDGET"

fs=$(findmnt -no FSTYPE -T "$work" 2>/dev/null || stat -f -c %T "$work")
dev=$(df -P "$work" | awk 'NR==2 {print $1}')
log "work directory $work ($fs on $dev), $GIB GiB x $RUNS runs"

emit() { printf '{"case": "%s", "run": %d, "value": %s, "unit": "%s"}\n' \
	"$1" "$2" "$3" "$4" >>"$results"; }

# every run starts from the same state: an empty page cache
if [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; then
	sync; echo 3 >/proc/sys/vm/drop_caches
fi

# ---- dd: the physical limits of the filesystem ------------------------------
count=$(awk -v g="$GIB" 'BEGIN { c = int(g * 128 + 0.5); print c < 1 ? 1 : c }')
ddfile=$work/dd.bin
dd_rate() {   # dd's summary line -> bytes per second
	awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) t = $(i-1);
		print $1 / t }'
}
if [ -z "$ONLY" ] && [ "$DIST" != only ]; then
	log "dd baselines ($count x 8 MiB)"
	for r in $(seq 0 $((RUNS - 1))); do
		rm -f "$ddfile"; sync
		v=$(LC_ALL=C dd if=/dev/zero of="$ddfile" bs=8M count="$count" \
			oflag=direct conv=fsync 2>&1 | dd_rate)
		emit dd_write "$r" "$v" B/s
	done
	for r in $(seq 0 $((RUNS - 1))); do
		v=$(LC_ALL=C dd if="$ddfile" of=/dev/null bs=8M iflag=direct 2>&1 |
			dd_rate)
		emit dd_read "$r" "$v" B/s
	done
	rm -f "$ddfile"
fi

# ---- ckptd through libckpt ---------------------------------------------------------
drop=()
if [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; then
	drop=(--drop-caches)
else
	log "not root: cold restore will be n/a"
fi
only=()
[ -n "$ONLY" ] && only=(--only "$ONLY")
if [ "$DIST" != only ]; then
	log "bench_ckpt"
	"$bench" --socket "$work/main.sock" \
		--budget-socket "$work/budget.sock" --root "$work/ckpt" \
		--daemon-pid "$main_pid" --gib "$GIB" --arrays "$ARRAYS" \
		--runs "$RUNS" --clients "$CLIENTS" --share-mib "$SHARE_MIB" \
		--pings "$PINGS" "${drop[@]}" "${only[@]}" >>"$results" ||
		log "bench_ckpt failed (status $?); the table is partial"
fi

# ---- a distributed step: N ranks x M MiB -------------------------------------
DRANKS=${CKPT_BENCH_DIST_RANKS:-4}
DMIB=${CKPT_BENCH_DIST_MIB:-256}
bench_dist=$build/tests/bench/bench_dist
if [ "$DIST" != 0 ] && [ -z "$ONLY" ]; then
	if [ -x "$bench_dist" ]; then
		log "bench_dist ($DRANKS x $DMIB MiB)"
		"$bench_dist" "$work/main.sock" "$work/dist" "$DMIB" "$DRANKS" \
			"$RUNS" >>"$results" ||
			log "bench_dist failed (status $?); the table is partial"
	fi
	# dd of the step's total, in seconds, beside dist_commit
	dcount=$((DRANKS * DMIB / 8))
	for r in $(seq 0 $((RUNS - 1))); do
		rm -f "$ddfile"; sync
		v=$(LC_ALL=C dd if=/dev/zero of="$ddfile" bs=8M count="$dcount" \
			oflag=direct conv=fsync 2>&1 |
			awk '/copied/ { for (i = 1; i <= NF; i++)
				if ($i ~ /^s,?$/) t = $(i-1); print t }')
		emit dist_dd_write "$r" "$v" s
	done
	rm -f "$ddfile"
	log "dist_bench.py (restore on 2 processes, torch.save x $DRANKS)"
	CKPTD_SOCKET=$work/main.sock CKPTD_AUTOSTART=0 \
	CKPT_LIBRARY=$(ls "$libdir"/libckpt.so* 2>/dev/null | head -1) \
	PYTHONPATH=$src/client/python${PYTHONPATH:+:$PYTHONPATH} \
		"$py" "$here/dist_bench.py" --dir "$work/distpy" --mib "$DMIB" \
		--ranks "$DRANKS" --runs "$RUNS" >>"$results" ||
		log "dist_bench.py failed (status $?); the table is partial"
fi

# ---- peers (and the Python client) ------------------------------------------
if [ -n "$PEERS" ] && [ -z "$ONLY" ]; then
	log "peers.py ($PEERS)"
	CKPTD_SOCKET=$work/main.sock CKPTD_AUTOSTART=0 \
	CKPT_LIBRARY=$(ls "$libdir"/libckpt.so* 2>/dev/null | head -1) \
	PYTHONPATH=$src/client/python${PYTHONPATH:+:$PYTHONPATH} \
		"$py" "$here/peers.py" --dir "$work/peers" --gib "$GIB" \
		--arrays "$ARRAYS" --runs "$RUNS" --only "$PEERS" >>"$results" ||
		log "peers.py failed (status $?); the table is partial"
fi

# ---- against orbax-checkpoint (the venv of scripts/install-deps.sh) -----------
venv_py=$src/.venv/bin/python
if [ "${CKPT_BENCH_ORBAX:-1}" = 1 ] && [ -z "$ONLY" ]; then
	if [ -x "$venv_py" ]; then
		log "vs_orbax.py"
		CKPTD_SOCKET=$work/main.sock CKPTD_AUTOSTART=0 \
		CKPT_LIBRARY=$(ls "$libdir"/libckpt.so* 2>/dev/null | head -1) \
		PYTHONPATH=$src/client/python${PYTHONPATH:+:$PYTHONPATH} \
			"$venv_py" "$here/vs_orbax.py" --dir "$work/orbax" \
			--gib "$GIB" --arrays "$ARRAYS" --runs "$ORBAX_RUNS" \
			>>"$results" ||
			log "vs_orbax.py failed (status $?); the table is partial"
	else
		log "no $venv_py (scripts/install-deps.sh makes it): no Orbax rows"
	fi
fi

# idle RSS once more, now that everything ran
if [ -r "/proc/$main_pid/status" ]; then
	rss=$(awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$main_pid/status")
	emit mem_rss_end 0 "$rss" B
fi

cp "$results" "$build/bench-results.jsonl" 2>/dev/null || true
echo
echo "ckptd benchmark: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $fs on $dev, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
"$py" "$here/report.py" "$results"

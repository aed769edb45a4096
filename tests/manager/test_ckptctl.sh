#!/bin/bash
# test_ckptctl.sh - ckptctl against a private ckptd: steps (committed and
# failed saves with the reason), show, delete, wait --after, --json,
# preempt.
#
# Needs CKPTD_BIN, CKPTCTL_BIN and TRAINER_BIN (set by meson). TAP output.
set -u

PY=/usr/bin/python3
n=0
failed=0

ok() {   # ok STATUS DESCRIPTION (one line: newlines become spaces)
	local desc=${2//$'\n'/ }
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $desc"
	else
		echo "not ok $n - $desc"
		failed=$((failed + 1))
	fi
}
check() {   # check DESCRIPTION COMMAND...
	local desc=$1
	shift
	"$@"
	ok $? "$desc"
}
diag() { printf '%s\n' "$@" | sed 's/^/# /'; }
skip() { n=$((n + 1)); echo "ok $n # skip $1"; }

for v in CKPTD_BIN CKPTCTL_BIN TRAINER_BIN; do
	if [ -z "${!v:-}" ]; then
		echo "Bail out! $v is not set"
		exit 1
	fi
done

DIR=$(mktemp -d /tmp/ckpt-ctltest.XXXXXX)
SOCK=$DIR/s.sock
ROOT=$DIR/run
SMALL=$DIR/small
export CKPTD_SOCKET=$SOCK CKPTD_AUTOSTART=0
DPID=
MOUNTED=

cleanup() {
	if [ -n "$DPID" ]; then
		kill -TERM "$DPID" 2>/dev/null
		for _ in $(seq 1 600); do
			kill -0 "$DPID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$DPID" 2>/dev/null
		wait "$DPID" 2>/dev/null
	fi
	[ -n "$MOUNTED" ] && { umount "$SMALL" 2>/dev/null || umount -l "$SMALL"; }
	if [ "${CKPTD_TEST_KEEP:-0}" = 1 ]; then
		echo "# kept $DIR"
	else
		rm -rf "$DIR"
	fi
}
trap cleanup EXIT

"$CKPTD_BIN" --socket "$SOCK" --state-dir "$DIR/state" --foreground \
	--workers 2 >>"$DIR/ckptd.log" 2>&1 &
DPID=$!
up=1
for _ in $(seq 1 400); do
	if $PY -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' \
		"$SOCK" 2>/dev/null; then
		up=0
		break
	fi
	kill -0 "$DPID" 2>/dev/null || break
	sleep 0.05
done
if [ $up -ne 0 ]; then
	echo "Bail out! ckptd did not start"
	sed 's/^/# ckptd| /' "$DIR/ckptd.log" | tail -20
	exit 1
fi

ctl() { "$CKPTCTL_BIN" "$@"; }

# steps --json normalised to "1:committed,2:failed" (list or {"steps": [...]};
# state as 0/1/2 or a name).
steps_json() {
	$PY -c '
import json, sys
d = json.load(sys.stdin)
steps = d["steps"] if isinstance(d, dict) else d
names = {0: "committed", 1: "pending", 2: "failed"}
def st(e):
    s = e.get("state")
    return names.get(s, str(s)) if isinstance(s, int) else str(s).lower()
print(",".join("%d:%s" % (e["step"], st(e)) for e in steps))
'
}

# ---- a trainer commits 1..3 -----------------------------------------------
out=$("$TRAINER_BIN" "$ROOT" 1 2 3 2>&1)
ok $? "trainer commits steps 1..3"
diag "$out"

# ---- steps ------------------------------------------------------------------------
out=$(ctl steps "$ROOT" 2>&1)
ok $? "ckptctl steps DIR exits 0"
diag "$out"
for s in 1 2 3; do
	grep -Eq "(^|[^0-9])$s([^0-9]|\$)" <<<"$out"
	ok $? "ckptctl steps lists step $s"
done
grep -qi committed <<<"$out"
ok $? "ckptctl steps shows the committed state"

out=$(ctl --json steps "$ROOT" 2>/dev/null)
ok $? "ckptctl --json steps DIR exits 0"
norm=$(steps_json <<<"$out" 2>&1 | tail -1)
[ "$norm" = "1:committed,2:committed,3:committed" ]
ok $? "steps --json parses: 1,2,3 committed (got: $norm)"
# The global options may also follow the command.
norm=$(ctl steps "$ROOT" --json 2>/dev/null | steps_json 2>&1 | tail -1)
[ "$norm" = "1:committed,2:committed,3:committed" ]
ok $? "ckptctl steps DIR --json is the same (got: $norm)"
$PY -c '
import json, sys
d = json.load(sys.stdin)
steps = d["steps"] if isinstance(d, dict) else d
e = [x for x in steps if x["step"] == 1]
sys.exit(0 if e and abs(e[0]["metrics"]["loss"] - 0.5) < 1e-6 else 1)
' <<<"$out" 2>/dev/null
ok $? "steps --json carries each step's metrics (step 1: loss 0.5)"

# ---- show ---------------------------------------------------------------------------
out=$(ctl show "$ROOT" 2 2>&1)
ok $? "ckptctl show DIR 2 exits 0"
diag "$out"
grep -q default <<<"$out"
ok $? "ckptctl show names the default item"
grep -qi standard <<<"$out"
ok $? "ckptctl show names the item's handler (from item_handlers)"
grep -q F32 <<<"$out"
ok $? "ckptctl show lists the F32 leaf w"
out=$(ctl --json show "$ROOT" 2 2>/dev/null)
ok $? "ckptctl --json show DIR 2 exits 0"
$PY -c '
import json, sys
d = json.load(sys.stdin)
def walk(x):
    yield x
    if isinstance(x, dict):
        for v in x.values():
            yield from walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from walk(v)
nodes = list(walk(d))
item = any(isinstance(x, dict) and x.get("name") == "default" and
           str(x.get("handler", "")).lower() == "standard" for x in nodes)
leaf = any(isinstance(x, dict) and x.get("path") == "w" and
           x.get("dtype") == "F32" and x.get("shape") == [1024] for x in nodes)
step = isinstance(d, dict) and d.get("step") == 2
sys.exit(0 if item and leaf and step else 1)
' <<<"$out"
ok $? "show --json: step 2, item default (standard), leaf w F32 [1024]"
ctl show "$ROOT" 9 >/dev/null 2>&1
[ $? -ne 0 ]
ok $? "ckptctl show of an unknown step fails"

# ---- delete ---------------------------------------------------------------------------
out=$(ctl delete "$ROOT" 2 2>&1)
ok $? "ckptctl delete DIR 2 exits 0"
diag "$out"
[ ! -e "$ROOT/2" ]
ok $? "step 2's directory is gone"
norm=$(ctl --json steps "$ROOT" 2>/dev/null | steps_json 2>&1)
[ "$norm" = "1:committed,3:committed" ]
ok $? "steps after delete: 1,3 (got: $norm)"
out=$(ctl delete "$ROOT" 9 2>&1)
rc=$?
[ $rc -ne 0 ]
ok $? "ckptctl delete of an unknown step fails (exit $rc)"
grep -q "Requested deleting a non-existent step: 9." <<<"$out"
ok $? "with Orbax's message (got: $out)"

# ---- wait --after ---------------------------------------------------------------------------
ctl wait "$ROOT" --after 3 >"$DIR/wait.out" 2>&1 &
WPID=$!
sleep 1
kill -0 "$WPID" 2>/dev/null
ok $? "ckptctl wait --after 3 is still waiting (no step > 3 yet)"
[ -s "$DIR/wait.out" ]
ok $? "ckptctl wait printed a progress line while waiting"
diag "$(cat "$DIR/wait.out")"
out=$("$TRAINER_BIN" "$ROOT" 4 2>&1)
ok $? "trainer commits step 4"
rc=124
for _ in $(seq 1 200); do
	if ! kill -0 "$WPID" 2>/dev/null; then
		wait "$WPID"
		rc=$?
		break
	fi
	sleep 0.05
done
[ $rc -eq 124 ] && kill "$WPID" 2>/dev/null
[ $rc -eq 0 ]
ok $? "ckptctl wait returns (exit 0) when step 4 commits (exit $rc)"
grep -Eq "(^|[^0-9])4([^0-9]|\$)" "$DIR/wait.out"
ok $? "ckptctl wait names step 4"
diag "$(cat "$DIR/wait.out")"

out=$(ctl --json wait "$ROOT" --after 2 2>/dev/null)
ok $? "ckptctl --json wait DIR --after 2 returns at once (steps 3, 4 exist)"
$PY -c '
import json, sys
d = json.load(sys.stdin)
s = d["step"] if isinstance(d, dict) else d
sys.exit(0 if isinstance(s, int) and s > 2 else 1)
' <<<"$out"
ok $? "wait --json parses to a step > 2 (got: $out)"

# ---- failed saves: ENOSPC on a small tmpfs ---------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
	skip "failed-save listing needs root to mount a tmpfs (CI runs as root)"
else
	mkdir -p "$SMALL"
	if mount -t tmpfs -o size=4m tmpfs "$SMALL"; then
		MOUNTED=1
		out=$("$TRAINER_BIN" "$SMALL/run" 1 2>&1)
		ok $? "trainer commits step 1 on a 4 MiB tmpfs"
		out=$("$TRAINER_BIN" --bytes 6291456 "$SMALL/run" 2 2>&1)
		[ $? -ne 0 ]
		ok $? "a 6 MiB step 2 fails on the 4 MiB tmpfs"
		diag "$out"
		out=$(ctl steps "$SMALL/run" 2>&1)
		ok $? "ckptctl steps on the tmpfs root exits 0"
		diag "$out"
		grep -qi failed <<<"$out"
		ok $? "ckptctl steps shows the failed save"
		grep -qi space <<<"$out"
		ok $? "and the reason (no space)"
		out=$(ctl --json steps "$SMALL/run" 2>/dev/null)
		norm=$(steps_json <<<"$out" 2>&1 | tail -1)
		[ "$norm" = "1:committed,2:failed" ]
		ok $? "steps --json: 1 committed, 2 failed (got: $norm)"
		$PY -c '
import json, sys
d = json.load(sys.stdin)
steps = d["steps"] if isinstance(d, dict) else d
e = [x for x in steps if x["step"] == 2]
sys.exit(0 if e and "space" in str(e[0].get("error", "")).lower() else 1)
' <<<"$out"
		ok $? "steps --json: step 2's error mentions space"
	else
		ok 1 "mount a 4 MiB tmpfs"
	fi
fi

# ---- status ------------------------------------------------------------------------------------
out=$(ctl status 2>&1)
ok $? "ckptctl status exits 0"
diag "$out"
grep -Eq '^coordination +local \(no --etcd\)$' <<<"$out"
ok $? "ckptctl status: coordination local without --etcd"
out=$(ctl --json status 2>/dev/null)
$PY -c 'import json, sys; d = json.load(sys.stdin); sys.exit(0 if d["workers"] == 2 else 1)' <<<"$out"
ok $? "ckptctl --json status parses (workers: 2)"
$PY -c 'import json, sys; d = json.load(sys.stdin); sys.exit(0 if d["coordination"] == "local (no --etcd)" else 1)' <<<"$out"
ok $? "ckptctl --json status: coordination local"

# ---- preempt (last: it marks the node as going down) -------------------------------------
ctl preempt extra >/dev/null 2>&1
[ $? -eq 2 ]
ok $? "ckptctl preempt takes no arguments (exit 2)"
ctl preempt
ok $? "ckptctl preempt exits 0"
grep -q "preemption: announced by uid" "$DIR/ckptd.log"
ok $? "the daemon logs the preemption"
kill -0 "$DPID" 2>/dev/null
ok $? "the daemon stays up after ckptctl preempt"

echo "1..$n"
if ! kill -0 "$DPID" 2>/dev/null; then
	echo "# ckptd died during the test"
	sed 's/^/# ckptd| /' "$DIR/ckptd.log" | tail -20
	exit 1
fi
[ $failed -eq 0 ]

#!/usr/bin/env bash
# test_systemd.sh - check the systemd units for real (TAP output).
#
#   test_systemd.sh CKPTD_BIN UNITS_SRCDIR CKPTCTL_BIN DEMO_BIN [SRCDIR]
#
# 1. systemd-analyze verify on the system and user units (ExecStart pointing
#    at the built ckptd).
# 2. A real systemd (PID 1 of a private PID/mount/UTS/IPC namespace) runs
#    the system units: starting ckptd.socket, a first connection activates
#    ckptd (Type=notify must make it "active"), ckptctl status and a small
#    save/restore go through /run/ckptd/ckptd.sock under the unit's
#    sandboxing, `systemctl stop` drains and exits 0, and the socket
#    activates it again afterwards.
# 3. With SRCDIR: the Debian package built by scripts/build-deb.sh is
#    installed with dpkg -i into the same namespace (its /usr, /etc and
#    dpkg database are overlays there; the distribution's units and
#    enablement links are hidden), which must enable and start
#    ckptd.socket; then the *installed* units are driven with systemctl:
#    status, reload with a save in flight (ckptd.conf changes applied, the
#    save intact, same PID), restart, stop while a save is in flight (it
#    is drained to disk), Restart=on-failure after SIGKILL, the watchdog
#    (kept alive while healthy, a stopped daemon is killed and restarted),
#    `systemd-analyze security` (reported), and dpkg -r / --purge.
#
# The private systemd must not touch the host: inside the namespace the root
# filesystem, /proc/sys and /sys are read-only, /run and /var are fresh
# tmpfs, and SYSTEMD_UNIT_PATH restricts systemd to the units written here
# (ours plus minimal targets), so no distribution unit (tmpfiles, sysctl,
# udev...) is ever started. Needs root.
set -euo pipefail

ckptd_bin=$1
units_src=$2
ckptctl_bin=$3
demo_bin=$4
srcdir=${5:-}

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
check() { # check DESCRIPTION COMMAND...
	local what=$1
	shift
	if "$@"; then ok "$what"; else not_ok "$what"; fi
}
diag() { sed 's/^/# /'; }

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (runs systemd in a private namespace)"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-systemd.XXXXXX")
chmod 755 "$work"
sd_pid=
unshare_pid=
cg=

cleanup() {
	if [ -n "$sd_pid" ] && kill -0 "$sd_pid" 2>/dev/null; then
		kill -KILL "$sd_pid" 2>/dev/null || true
	fi
	if [ -n "$unshare_pid" ]; then
		wait "$unshare_pid" 2>/dev/null || true
	fi
	# The cgroups systemd made for its units are below $cg: remove them.
	if [ -n "$cg" ] && [ -d "$cg" ]; then
		for _ in $(seq 1 25); do
			find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
			[ -d "$cg" ] || break
			sleep 0.2
		done
	fi
	if [ "${CKPTD_TEST_KEEP:-0}" = 1 ]; then
		echo "# kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

# ---- units pointing at the built binary -------------------------------------
mkdir -p "$work/units" "$work/user-units" "$work/data" "$work/xdg"
units_sed="s|@bindir@/ckptd|$ckptd_bin|; s|@docdir@|/usr/share/doc/ckptd|"
sed "$units_sed" "$units_src/ckptd.service.in" >"$work/units/ckptd.service"
sed "$units_sed" "$units_src/ckptd.socket.in" >"$work/units/ckptd.socket"
sed "$units_sed" "$units_src/user/ckptd.service.in" >"$work/user-units/ckptd.service"
sed "$units_sed" "$units_src/user/ckptd.socket.in" >"$work/user-units/ckptd.socket"

# ---- 1. systemd-analyze verify -------------------------------------------------
if out=$(cd "$work/units" && systemd-analyze verify --man=no ckptd.socket ckptd.service 2>&1); then
	ok "systemd-analyze verify: system units"
else
	not_ok "systemd-analyze verify: system units"
fi
printf '%s\n' "$out" | sed '/^$/d' | diag
if out=$(cd "$work/user-units" && XDG_RUNTIME_DIR=$work/xdg systemd-analyze --user verify --man=no \
	ckptd.socket ckptd.service 2>&1); then
	ok "systemd-analyze verify: user units"
else
	not_ok "systemd-analyze verify: user units"
fi
printf '%s\n' "$out" | sed '/^$/d' | diag
check "the installed service runs ckptd with Type=notify" \
	grep -qx 'Type=notify' "$work/units/ckptd.service"
check "the socket listens on /run/ckptd/ckptd.sock" \
	grep -qx 'ListenStream=/run/ckptd/ckptd.sock' "$work/units/ckptd.socket"
all_documented() {
	for f in "$@"; do
		grep -qx 'Documentation=file:///usr/share/doc/ckptd/README.md' \
			"$f" || return 1
	done
}
check "every unit names its documentation" all_documented \
	"$work/units/ckptd.service" "$work/units/ckptd.socket" \
	"$work/user-units/ckptd.service" "$work/user-units/ckptd.socket"

# ---- the Debian package (phase 3) ------------------------------------------------
deb=
if [ -n "$srcdir" ]; then
	if out=$("$srcdir/scripts/build-deb.sh" "$work/deb" 2>&1); then
		deb=$(printf '%s\n' "$out" | tail -n 1)
		ok "scripts/build-deb.sh builds $(basename "$deb")"
	else
		not_ok "scripts/build-deb.sh builds the package"
		printf '%s\n' "$out" | tail -n 20 | diag
	fi
fi

# ---- 2. a real systemd in a private namespace -------------------------------------
# Minimal targets: enough for DefaultDependencies= of our units.
mkdir -p "$work/rt"
cp "$work/units/ckptd.service" "$work/units/ckptd.socket" "$work/rt/"
for t in sysinit sockets paths timers slices local-fs; do
	printf '[Unit]\nDescription=%s (test)\nDefaultDependencies=no\n' "$t" >"$work/rt/$t.target"
done
printf '[Unit]\nDescription=basic (test)\nRequires=sysinit.target\nWants=sockets.target\nAfter=sysinit.target sockets.target\n' \
	>"$work/rt/basic.target"
printf '[Unit]\nDescription=multi-user (test)\nRequires=basic.target\nAfter=basic.target\n' \
	>"$work/rt/multi-user.target"
printf '[Unit]\nDescription=shutdown (test)\nDefaultDependencies=no\nRefuseManualStart=yes\n' \
	>"$work/rt/shutdown.target"
printf '[Unit]\nDescription=system slice (test)\nDefaultDependencies=no\n' >"$work/rt/system.slice"

# Test-only drop-in: the service's output goes to a file we can show.
mkdir -p "$work/rt/ckptd.service.d"
printf '[Service]\nStandardOutput=append:/run/ckptd-test.log\nStandardError=append:/run/ckptd-test.log\n' \
	>"$work/rt/ckptd.service.d/test-log.conf"

# The namespace gets fresh tmpfs mounts on /tmp and /var; directories of
# ours that live there (this test's work dir, the build tree with the
# binaries under test) are carried over by bind mounts.
build_root=$(cd "$(dirname "$ckptd_bin")/.." && pwd)
keep_dirs=$work
case $build_root in
/tmp/* | /var/*) keep_dirs="$keep_dirs $build_root" ;;
esac

cat >"$work/boot.sh" <<EOF
#!/bin/sh
# Runs as PID 1 of the new namespaces (in a fresh cgroup namespace), then
# becomes systemd. Everything mounted here is private to the namespace.
set -e
mount -t tmpfs -o mode=0755 tmpfs /run
i=0
for d in $keep_dirs; do
	mkdir -p /run/ckpt-keep/\$i
	mount --bind "\$d" /run/ckpt-keep/\$i
	i=\$((i + 1))
done
# Nothing of the host is writable from here: root, /proc/sys and /sys are
# read-only (per-mount flags, this namespace only).
mount -o remount,bind,ro /
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -o remount,bind,ro /sys
# Writable overlays of /usr, /etc and the dpkg database (upper layers on
# the /run tmpfs), for installing the package; the distribution's units
# and enablement links are hidden, and policy-rc.d (which forbids starting
# services in containers) is removed, in this namespace only.
mkdir -p /run/ov/usr/u /run/ov/usr/w /run/ov/etc/u /run/ov/etc/w \
	/run/ov/dpkg/u /run/ov/dpkg/w /run/ov/dpkg/lower
mount --bind /var/lib/dpkg /run/ov/dpkg/lower
mount -t overlay overlay -o lowerdir=/usr,upperdir=/run/ov/usr/u,workdir=/run/ov/usr/w /usr
mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/ov/etc/u,workdir=/run/ov/etc/w /etc
mount -t tmpfs -o mode=0755 tmpfs /usr/lib/systemd/system
mount -t tmpfs -o mode=0755 tmpfs /etc/systemd/system
rm -f /usr/sbin/policy-rc.d
# A cgroup2 tree of our own (the root of this cgroup namespace): systemd
# runs in unified mode and mounts or remounts no host cgroup filesystem.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# A writable /tmp (PrivateDevices= makes its scratch dir there) and /var.
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /var
mkdir -p /var/lib/dpkg /var/log /var/tmp /var/cache
mount -t overlay overlay -o lowerdir=/run/ov/dpkg/lower,upperdir=/run/ov/dpkg/u,workdir=/run/ov/dpkg/w /var/lib/dpkg
i=0
for d in $keep_dirs; do
	mkdir -p "\$d"
	mount --bind /run/ckpt-keep/\$i "\$d"
	umount /run/ckpt-keep/\$i
	i=\$((i + 1))
done
rm -rf /run/ckpt-keep
mkdir -p /run/systemd/system
cp -r "$work"/rt/* /run/systemd/system/
export SYSTEMD_UNIT_PATH=/run/systemd/system:/etc/systemd/system:/usr/lib/systemd/system
export container=ckpttest
exec /lib/systemd/systemd --system --unit=basic.target --log-level=info \\
	--show-status=no
EOF
chmod +x "$work/boot.sh"

# A fresh cgroup (v2) for the namespace: everything systemd creates stays
# below it and is removed at the end.
cg_root=$(findmnt -n -o TARGET -t cgroup2 | head -n 1)
if [ -z "$cg_root" ]; then
	not_ok "a cgroup2 hierarchy is mounted (needed to run systemd)"
	echo "1..$n"
	exit 1
fi
cg=$cg_root/ckpt-systemd-test.$$
mkdir "$cg"
(
	echo "$BASHPID" >"$cg/cgroup.procs"
	exec unshare --cgroup --pid --fork --mount --uts --ipc --mount-proc \
		--propagation private "$work/boot.sh" </dev/null >"$work/systemd.log" 2>&1
) &
unshare_pid=$!

# systemd's PID (the child of unshare), as seen from here.
for _ in $(seq 1 100); do
	sd_pid=$(cat "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null | awk '{ print $1 }') || true
	[ -n "$sd_pid" ] && break
	sleep 0.05
done
ns() { timeout 30 nsenter -t "$sd_pid" -m -p "$@"; }
sctl() { ns systemctl "$@"; }

state=
if [ -n "$sd_pid" ]; then
	for _ in $(seq 1 150); do
		state=$(sctl is-system-running 2>/dev/null) || true
		case $state in running | degraded) break ;; esac
		sleep 0.2
	done
fi
if ! check "a private systemd boots to basic.target (state: ${state:-none})" \
	test "$state" = running -o "$state" = degraded; then
	diag <"$work/systemd.log"
	echo "1..$n"
	exit 1
fi

# wait_state UNIT STATE: poll `systemctl is-active` for up to 20 s.
wait_state() {
	local s=
	for _ in $(seq 1 100); do
		s=$(sctl is-active "$1" 2>/dev/null) || true
		[ "$s" = "$2" ] && return 0
		sleep 0.2
	done
	echo "# $1 is $s, not $2"
	return 1
}

check "systemctl start ckptd.socket" sctl start ckptd.socket
check "ckptd.socket is active" wait_state ckptd.socket active
check "ckptd.service is not started before a connection" wait_state ckptd.service inactive
check "the socket file exists with mode 0666" \
	ns sh -c 'test "$(stat -c %a /run/ckptd/ckptd.sock)" = 666'

# The first connection starts ckptd; Type=notify makes it active.
export CKPTD_AUTOSTART=0
if out=$(ns env CKPTD_SOCKET=/run/ckptd/ckptd.sock "$ckptctl_bin" status 2>&1); then
	ok "ckptctl status through the socket (activates ckptd)"
else
	not_ok "ckptctl status through the socket (activates ckptd)"
fi
printf '%s\n' "$out" | diag
check "ckptd.service is active (sd_notify READY=1 received)" wait_state ckptd.service active
sctl show -p Type -p MainPID -p StatusText -p NRestarts ckptd.service | diag || true

if out=$(ns env CKPTD_SOCKET=/run/ckptd/ckptd.sock "$demo_bin" "$work/data/demo" 2>&1); then
	ok "save and restore through the activated, sandboxed daemon"
else
	not_ok "save and restore through the activated, sandboxed daemon"
fi
printf '%s\n' "$out" | diag
check "the steps are on disk" test -f "$work/data/demo/4/_CHECKPOINT_METADATA"

# Another user through the same daemon: its files must be its own (the
# sandbox leaves ckptd the capabilities to take the client's identity).
user=ckpttest
if ! id -u "$user" >/dev/null 2>&1; then
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin "$user" || true
fi
mkdir -p "$work/data/$user"
chown "$user:" "$work/data/$user"
if out=$(ns setpriv --reuid "$user" --regid "$user" --clear-groups \
	env CKPTD_SOCKET=/run/ckptd/ckptd.sock "$demo_bin" "$work/data/$user/demo" 2>&1); then
	ok "user $user saves and restores through the same daemon"
else
	not_ok "user $user saves and restores through the same daemon"
fi
printf '%s\n' "$out" | tail -n 4 | diag
check "files of $user's steps belong to $user" \
	test "$(stat -c %U "$work/data/$user/demo/4/default/_METADATA" 2>/dev/null)" = "$user"
if out=$(ns setpriv --reuid "$user" --regid "$user" --clear-groups \
	env CKPTD_SOCKET=/run/ckptd/ckptd.sock "$demo_bin" "$work/data/demo" 2>&1); then
	not_ok "$user may not write into root's checkpoint root"
else
	ok "$user may not write into root's checkpoint root"
fi
printf '%s\n' "$out" | tail -n 2 | diag
check "the state directory (StateDirectory=ckptd) holds the index" \
	ns sh -c 'test -n "$(ls -A /var/lib/ckptd 2>/dev/null)"'

# `systemctl restart ckptd` under a client blocked in wait_for_step: the
# client reconnects through the socket (kept by ckptd.socket), re-opens its
# manager, and its wait returns the step saved after the restart.
mkdir -p "$work/data/restart"
ns env CKPTD_SOCKET=/run/ckptd/ckptd.sock "$ckptctl_bin" wait \
	"$work/data/restart" --after -1 --timeout 60 >"$work/wait.out" 2>&1 &
waiter=$!
sleep 1
pid_before=$(sctl show -p MainPID --value ckptd.service 2>/dev/null) || true
check "systemctl restart ckptd.service under a waiting client" \
	sctl restart ckptd.service
check "ckptd.service is active after the restart" wait_state ckptd.service active
pid_after=$(sctl show -p MainPID --value ckptd.service 2>/dev/null) || true
check "a new ckptd runs ($pid_before -> $pid_after)" \
	test -n "$pid_after" -a "$pid_after" != "$pid_before" -a "$pid_after" != 0
if out=$(ns env CKPTD_SOCKET=/run/ckptd/ckptd.sock "$demo_bin" "$work/data/restart" 2>&1); then
	ok "save after the restart"
else
	not_ok "save after the restart"
fi
printf '%s\n' "$out" | tail -n 2 | diag
if wait "$waiter"; then
	ok "the waiting client saw the new step across the restart"
else
	not_ok "the waiting client saw the new step across the restart"
fi
diag <"$work/wait.out"

check "systemctl stop ckptd.service" sctl stop ckptd.service
check "ckptd.service is inactive" wait_state ckptd.service inactive
result=$(sctl show -p Result --value ckptd.service 2>/dev/null) || true
status=$(sctl show -p ExecMainStatus --value ckptd.service 2>/dev/null) || true
check "SIGTERM: ckptd exited 0 (Result=$result, ExecMainStatus=$status)" \
	test "$result" = success -a "$status" = 0
check "the socket is still active after the service stopped" wait_state ckptd.socket active

if out=$(ns env CKPTD_SOCKET=/run/ckptd/ckptd.sock "$ckptctl_bin" status 2>&1); then
	ok "a later connection activates ckptd again"
else
	not_ok "a later connection activates ckptd again"
fi
printf '%s\n' "$out" | diag
check "ckptd.service is active again" wait_state ckptd.service active
check "systemctl stop ckptd.socket ckptd.service" sctl stop ckptd.socket ckptd.service
check "ckptd.service is inactive at the end" wait_state ckptd.service inactive

# ---- 3. the Debian package, installed into this namespace ------------------------
if [ -n "$deb" ]; then
	# The source units of phase 2 must not shadow the package's.
	ns rm -f /run/systemd/system/ckptd.service /run/systemd/system/ckptd.socket
	sctl daemon-reload
	if out=$(timeout 120 nsenter -t "$sd_pid" -m -p dpkg -i "$deb" 2>&1); then
		ok "dpkg -i $(basename "$deb")"
	else
		not_ok "dpkg -i $(basename "$deb")"
	fi
	printf '%s\n' "$out" | tail -n 5 | diag
	check "the package enabled ckptd.socket" \
		test "$(sctl is-enabled ckptd.socket 2>&1)" = enabled
	check "the package started ckptd.socket" wait_state ckptd.socket active
	check "the installed units come from the package" \
		ns test -f /lib/systemd/system/ckptd.service -a -f /etc/ckptd/ckptd.conf
	check "ckptd --check-config reads /etc/ckptd/ckptd.conf" \
		ns sh -c '/usr/bin/ckptd --check-config | head -n 1 | grep -qx "# /etc/ckptd/ckptd.conf"'
	sock_env=(env -u PYTHONPATH -u CKPT_LIBRARY CKPTD_SOCKET=/run/ckptd/ckptd.sock CKPTD_AUTOSTART=0)
	if out=$(ns "${sock_env[@]}" /usr/bin/ckptctl status 2>&1); then
		ok "the installed ckptctl activates the installed ckptd"
	else
		not_ok "the installed ckptctl activates the installed ckptd"
	fi
	printf '%s\n' "$out" | diag
	check "ckptd.service (package) is active" wait_state ckptd.service active
	sleep 1.5 # one health tick: STATUS= with the queue depth
	out=$(sctl status --no-pager ckptd.service 2>&1) || true
	printf '%s\n' "$out" | head -n 12 | diag
	check "systemctl status shows ckptd's STATUS= (queue depth)" \
		grep -q 'Status: ".*saves writing.*queued' <<<"$out"
	check "the unit has WatchdogSec=30s" \
		test "$(sctl show -p WatchdogUSec --value ckptd.service)" = 30s

	# Python from the package (no PYTHONPATH): saves a 256 MiB step and runs
	# COMMAND while the save is in flight, then checks the step.
	cat >"$work/inflight.py" <<'PY'
import os
import subprocess
import sys

import numpy as np

import ckpt

# COMMAND must find the step in the daemon: no copy-on-write snapshot,
# whose copy (and hand-off) would still run in this process.
os.environ['CKPT_COW_SAVE'] = '0'
root, step, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
tree = {'big': np.random.default_rng(step).standard_normal(
    64 << 20).astype(np.float32)}
print('ckpt from', os.path.dirname(ckpt.__file__))
m = ckpt.CheckpointManager(root)
assert m.save(step, args=ckpt.args.StandardSave(tree))
subprocess.run(cmd, check=True)
try:
    m.wait_until_finished()
    r = m.restore(step, args=ckpt.args.StandardRestore(tree))
    assert np.array_equal(r['big'], tree['big'])
    print('step %d restored intact' % step)
    m.close()
except OSError as e:  # the daemon went away (stop): checked by the caller
    print('after the command: %s' % e)
PY
	chmod 644 "$work/inflight.py"
	pid_before=$(sctl show -p MainPID --value ckptd.service)
	ns sh -c 'printf "log-level = debug\nmemory-budget = 1G\n" >/etc/ckptd/ckptd.conf'
	if out=$(ns "${sock_env[@]}" /usr/bin/python3 "$work/inflight.py" "$work/data/pkg" 1 \
		systemctl reload ckptd.service 2>&1); then
		ok "systemctl reload with a save in flight; the step restores intact"
	else
		not_ok "systemctl reload with a save in flight; the step restores intact"
	fi
	printf '%s\n' "$out" | tail -n 5 | diag
	check "the package's Python module was used" \
		grep -q '^ckpt from /usr/lib/python3/dist-packages/ckpt$' <<<"$out"
	check "reload kept the same process (MainPID $pid_before)" \
		test "$(sctl show -p MainPID --value ckptd.service)" = "$pid_before"
	log=$(ns cat /run/ckptd-test.log 2>/dev/null) || true
	check "reload applied ckptd.conf (log-level info -> debug, memory-budget)" \
		grep -q "log-level: 'info' -> 'debug'" <<<"$log"
	reload_line=$(grep -n 'main_reload: reloaded' <<<"$log" | tail -n 1 | cut -d: -f1)
	saved_line=$(grep -n '/pkg/1 saved:' <<<"$log" | tail -n 1 | cut -d: -f1)
	check "the save was in flight during the reload (committed after it)" \
		test -n "$reload_line" -a -n "$saved_line" -a "${saved_line:-0}" -gt "${reload_line:-0}"

	check "systemctl restart ckptd.service" sctl restart ckptd.service
	check "restarted: active with a new MainPID" \
		sh -c "test \"\$(timeout 30 nsenter -t $sd_pid -m -p systemctl show -p MainPID --value ckptd.service)\" != \"$pid_before\""
	check "active after restart" wait_state ckptd.service active

	# stop while a save is in flight: the daemon drains it to disk first.
	out=$(ns "${sock_env[@]}" /usr/bin/python3 "$work/inflight.py" "$work/data/pkg" 2 \
		systemctl stop ckptd.service 2>&1) || true
	printf '%s\n' "$out" | tail -n 3 | diag
	check "systemctl stop with a save in flight: ckptd.service is inactive" \
		wait_state ckptd.service inactive
	result=$(sctl show -p Result --value ckptd.service 2>/dev/null) || true
	check "stop drained and exited 0 (Result=$result)" test "$result" = success
	check "the step saved during the stop is committed on disk" \
		test -f "$work/data/pkg/2/_CHECKPOINT_METADATA"
	log=$(ns cat /run/ckptd-test.log 2>/dev/null) || true
	stop_line=$(grep -n 'stopping; 1 saves pending' <<<"$log" | tail -n 1 | cut -d: -f1)
	saved_line=$(grep -n '/pkg/2 saved:' <<<"$log" | tail -n 1 | cut -d: -f1)
	check "SIGTERM found the save pending and logged its commit before exiting" \
		test -n "$stop_line" -a -n "$saved_line" -a "${saved_line:-0}" -gt "${stop_line:-0}"
	if out=$(ns "${sock_env[@]}" /usr/bin/ckptctl verify "$work/data/pkg" 2 2>&1); then
		ok "the drained step verifies (socket activation started ckptd again)"
	else
		not_ok "the drained step verifies (socket activation started ckptd again)"
	fi
	printf '%s\n' "$out" | tail -n 3 | diag

	# Restart=on-failure after SIGKILL.
	check "ckptd.service is active" wait_state ckptd.service active
	pid_before=$(sctl show -p MainPID --value ckptd.service)
	restarts=$(sctl show -p NRestarts --value ckptd.service)
	check "systemctl kill -s SIGKILL ckptd.service" sctl kill -s SIGKILL ckptd.service
	restarted() {
		local p r
		for _ in $(seq 1 100); do
			p=$(sctl show -p MainPID --value ckptd.service) || true
			r=$(sctl show -p NRestarts --value ckptd.service) || true
			if [ "$r" -gt "$1" ] 2>/dev/null && [ "$p" != 0 ] && [ "$p" != "$2" ] &&
				[ "$(sctl is-active ckptd.service)" = active ]; then
				return 0
			fi
			sleep 0.2
		done
		echo "# NRestarts=$r MainPID=$p"
		return 1
	}
	check "Restart=on-failure: systemd started ckptd again" restarted "$restarts" "$pid_before"

	# The watchdog: a test drop-in with a short interval.
	ns sh -c 'printf "[Service]\nWatchdogSec=2s\nTimeoutAbortSec=2s\n" >/run/systemd/system/ckptd.service.d/test-watchdog.conf'
	sctl daemon-reload
	sctl restart ckptd.service
	check "WatchdogSec=2s (test drop-in) is in effect" \
		test "$(sctl show -p WatchdogUSec --value ckptd.service)" = 2s
	pid_before=$(sctl show -p MainPID --value ckptd.service)
	restarts=$(sctl show -p NRestarts --value ckptd.service)
	sleep 5
	check "a healthy ckptd feeds the watchdog (same PID after 2.5 intervals)" \
		test "$(sctl show -p MainPID --value ckptd.service)" = "$pid_before" -a \
		"$(sctl show -p NRestarts --value ckptd.service)" = "$restarts"
	check "systemd saw watchdog pings" \
		test "$(sctl show -p WatchdogTimestampMonotonic --value ckptd.service)" -gt 0
	sctl kill --kill-who=main -s SIGSTOP ckptd.service
	# Until RestartSec= has passed, the unit shows why it died.
	watchdog_result() {
		for _ in $(seq 1 200); do
			[ "$(sctl show -p Result --value ckptd.service)" = watchdog ] && return 0
			sleep 0.05
		done
		return 1
	}
	check "systemd stopped the hung ckptd for its watchdog (Result=watchdog)" \
		watchdog_result
	check "and restarted it (Restart=on-failure)" restarted "$restarts" "$pid_before"
	ns rm -f /run/systemd/system/ckptd.service.d/test-watchdog.conf
	sctl daemon-reload

	if out=$(sctl --version >/dev/null && ns systemd-analyze security --no-pager ckptd.service 2>&1); then
		ok "systemd-analyze security ckptd.service: $(grep -o 'Overall exposure level.*' <<<"$out")"
	else
		not_ok "systemd-analyze security ckptd.service"
	fi
	printf '%s\n' "$out" | grep -E '^✗|Overall' | diag

	check "systemctl stop ckptd.service" sctl stop ckptd.service
	if out=$(timeout 120 nsenter -t "$sd_pid" -m -p dpkg -r ckptd 2>&1); then
		ok "dpkg -r ckptd"
	else
		not_ok "dpkg -r ckptd"
	fi
	printf '%s\n' "$out" | tail -n 3 | diag
	check "removal stopped ckptd.socket" wait_state ckptd.socket inactive
	check "removal removed the binaries, kept the conffile" \
		ns sh -c 'test ! -e /usr/bin/ckptd -a -f /etc/ckptd/ckptd.conf'
	if out=$(timeout 120 nsenter -t "$sd_pid" -m -p dpkg --purge ckptd 2>&1); then
		ok "dpkg --purge ckptd"
	else
		not_ok "dpkg --purge ckptd"
	fi
	check "purge removed the conffile and the enablement link" \
		ns sh -c 'test ! -e /etc/ckptd/ckptd.conf -a ! -e /etc/systemd/system/sockets.target.wants/ckptd.socket'
fi

if [ "$failed" -gt 0 ]; then
	echo "# ---- systemctl status ----"
	sctl status --no-pager -l ckptd.socket ckptd.service 2>&1 | diag || true
	echo "# ---- ckptd output ----"
	ns cat /run/ckptd-test.log 2>&1 | tail -n 40 | diag || true
	echo "# ---- systemd output ----"
	tail -n 40 "$work/systemd.log" | diag
fi
echo "1..$n"
[ "$failed" -eq 0 ]

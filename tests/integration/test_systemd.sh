#!/usr/bin/env bash
# test_systemd.sh - check the systemd units for real (TAP output).
#
#   test_systemd.sh CKPTD_BIN UNITS_SRCDIR CKPTCTL_BIN DEMO_BIN
#
# 1. systemd-analyze verify on the system and user units (ExecStart pointing
#    at the built ckptd).
# 2. A real systemd (PID 1 of a private PID/mount/UTS/IPC namespace) runs
#    the system units: starting ckptd.socket, a first connection activates
#    ckptd (Type=notify must make it "active"), ckptctl status and a small
#    save/restore go through /run/ckptd/ckptd.sock under the unit's
#    sandboxing, `systemctl stop` drains and exits 0, and the socket
#    activates it again afterwards.
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
# A cgroup2 tree of our own (the root of this cgroup namespace): systemd
# runs in unified mode and mounts or remounts no host cgroup filesystem.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# A writable /tmp (PrivateDevices= makes its scratch dir there) and /var.
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /var
mkdir -p /var/lib /var/log /var/tmp /var/cache
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
export SYSTEMD_UNIT_PATH=/run/systemd/system
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

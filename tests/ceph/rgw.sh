#!/usr/bin/env bash
# rgw.sh - a throwaway single-node Ceph cluster with an S3 gateway (radosgw),
# for the object-store tests and benchmarks.
#
#   rgw.sh start [DIR]     make DIR (default: mktemp -d), start one monitor,
#                          one OSD on memstore (RAM, no block device), and
#                          radosgw on a free loopback port; create an S3 user
#                          and a bucket-less account; print the environment
#                          to use as shell assignments (eval "$(rgw.sh start)")
#   rgw.sh stop DIR        stop every daemon of DIR (by the PIDs it recorded)
#                          and remove DIR
#   rgw.sh kill-rgw DIR    SIGKILL radosgw only (the cluster stays)
#   rgw.sh start-rgw DIR   start radosgw again on the same port
#   rgw.sh quota DIR BUCKET BYTES
#                          limit BUCKET (which must exist) to BYTES
#
# Runs as root (Ceph's daemons keep running as the calling user). Nothing is
# written outside DIR. Needs the Debian packages ceph-mon, ceph-osd, radosgw
# and ceph-common (scripts/install-deps.sh).
#
# Environment: CEPH_OSD_BYTES (default 6 GiB) bounds the memstore OSD, which
# holds every object in memory.
set -euo pipefail

die() {
	echo "rgw.sh: $*" >&2
	exit 1
}

free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# wait_for SECONDS CMD...: run CMD until it succeeds or SECONDS pass.
wait_for() {
	local secs=$1
	shift
	local end=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.2
	done
}

cephc() {
	ceph -c "$dir/ceph.conf" --connect-timeout 10 "$@"
}

rgw_up() {
	curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$(cat "$dir/rgw.port")/"
}

start_rgw() {
	radosgw -c "$dir/ceph.conf" -n client.rgw.a \
		--pid-file "$dir/run/rgw.pid" --log-file "$dir/log/rgw.log" \
		>>"$dir/log/daemons.out" 2>&1 ||
		die "radosgw did not start (see $dir/log/rgw.log)"
	wait_for 60 rgw_up || die "radosgw does not answer (see $dir/log/rgw.log)"
}

# kill_pidfiles SIG FILE...: signal the PIDs recorded in FILEs, wait up to
# 10 s for all of them to exit, SIGKILL what is left.
kill_pidfiles() {
	local sig=$1 f pid pids=()
	shift
	for f in "$@"; do
		[ -s "$f" ] || continue
		pid=$(cat "$f")
		kill "-$sig" "$pid" 2>/dev/null && pids+=("$pid")
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	done
	rm -f "$@"
}

cmd=${1:-}
case $cmd in
start)
	dir=${2:-}
	if [ -z "$dir" ]; then
		dir=$(mktemp -d -t ckpt-ceph.XXXXXX)
	else
		mkdir -p "$dir"
	fi
	dir=$(cd "$dir" && pwd)
	[ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
	mkdir -p "$dir/run" "$dir/log" "$dir/mon" "$dir/osd"
	mon_port=$(free_port)
	rgw_port=$(free_port)
	echo "$rgw_port" > "$dir/rgw.port"
	fsid=$(cat /proc/sys/kernel/random/uuid)
	osd_bytes=${CEPH_OSD_BYTES:-$((6 << 30))}

	cat > "$dir/ceph.conf" <<-EOF
	[global]
	fsid = $fsid
	mon host = v1:127.0.0.1:$mon_port
	public network = 127.0.0.0/8
	auth cluster required = none
	auth service required = none
	auth client required = none
	run dir = $dir/run
	admin socket = $dir/run/\$name.asok
	log file = $dir/log/\$name.log
	crash dir = $dir/crash
	pid file = $dir/run/\$name.pid
	osd pool default size = 1
	osd pool default min size = 1
	osd pool default pg num = 1
	osd pool default pgp num = 1
	osd pool default pg autoscale mode = off
	osd crush chooseleaf type = 0
	mon allow pool size one = true
	mon warn on pool no redundancy = false
	ms bind ipv6 = false
	[mon]
	mon data = $dir/mon/\$name
	mon cluster log file = $dir/log/cluster.log
	# Start in seconds: propose map changes (RGW's pools) at once.
	paxos propose interval = 0.01
	paxos min wait = 0.01
	[osd]
	osd data = $dir/osd/\$name
	osd objectstore = memstore
	# The crush map is set up by this script: no commands to the monitor at
	# start-up (they race with the first monitor map and fail the OSD).
	osd class update on start = false
	osd crush update on start = false
	memstore device bytes = $osd_bytes
	osd max object size = 1073741824
	[client.rgw.a]
	rgw frontends = beast endpoint=127.0.0.1:$rgw_port
	rgw dns name = 127.0.0.1
	rgw data = $dir/rgw
	# Free the RAM of deleted and overwritten objects soon.
	rgw gc obj min wait = 10
	rgw gc processor period = 10
	EOF

	monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$mon_port]" \
		"$dir/monmap" >/dev/null
	ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. \
		--cap mon 'allow *' >/dev/null
	ceph-mon -c "$dir/ceph.conf" -i a --mkfs --monmap "$dir/monmap" \
		--keyring "$dir/mon.keyring" ||
		die "ceph-mon --mkfs failed"
	ceph-mon -c "$dir/ceph.conf" -i a >>"$dir/log/daemons.out" 2>&1 ||
		die "ceph-mon did not start"
	wait_for 30 cephc mon stat || die "the monitor does not answer"

	osd_uuid=$(cat /proc/sys/kernel/random/uuid)
	osd_id=$(cephc osd new "$osd_uuid" 0)
	[ "$osd_id" = 0 ] || die "unexpected OSD id $osd_id"
	mkdir -p "$dir/osd/osd.0"
	ceph-osd -c "$dir/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" \
		>"$dir/log/osd-mkfs.log" 2>&1 ||
		die "ceph-osd --mkfs failed (see $dir/log/osd-mkfs.log)"
	cephc osd crush add osd.0 1.0 host=localhost root=default \
		>>"$dir/log/daemons.out" 2>&1 || die "ceph osd crush add failed"
	ceph-osd -c "$dir/ceph.conf" -i 0 >>"$dir/log/daemons.out" 2>&1 ||
		die "ceph-osd did not start"
	osd_up() {
		cephc osd dump | grep -q '^osd\.0 up'
	}
	wait_for 60 osd_up || die "the OSD did not come up (see $dir/log/osd.0.log)"

	start_rgw
	access=CKPT$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
	secret=$(head -c 30 /dev/urandom | base64 | tr -d '/+=\n')
	radosgw-admin -c "$dir/ceph.conf" user create --uid ckpt \
		--display-name ckpt --access-key "$access" --secret-key "$secret" \
		>/dev/null || die "radosgw-admin user create failed"
	umask 077
	cat > "$dir/env" <<-EOF
	CEPH_DIR=$dir
	AWS_ENDPOINT_URL=http://127.0.0.1:$rgw_port
	AWS_REGION=us-east-1
	AWS_ACCESS_KEY_ID=$access
	AWS_SECRET_ACCESS_KEY=$secret
	EOF
	sed 's/^/export /' "$dir/env"
	;;
stop)
	dir=${2:-}
	[ -n "$dir" ] && [ -f "$dir/ceph.conf" ] || die "usage: rgw.sh stop DIR"
	kill_pidfiles TERM "$dir/run/rgw.pid" "$dir/run/osd.0.pid" "$dir/run/mon.a.pid"
	rm -rf "$dir"
	;;
kill-rgw)
	dir=${2:-}
	[ -n "$dir" ] && [ -f "$dir/ceph.conf" ] || die "usage: rgw.sh kill-rgw DIR"
	kill_pidfiles KILL "$dir/run/rgw.pid"
	;;
start-rgw)
	dir=${2:-}
	[ -n "$dir" ] && [ -f "$dir/ceph.conf" ] || die "usage: rgw.sh start-rgw DIR"
	start_rgw
	;;
quota)
	dir=${2:-}
	[ -n "$dir" ] && [ -f "$dir/ceph.conf" ] && [ $# -eq 4 ] ||
		die "usage: rgw.sh quota DIR BUCKET BYTES"
	radosgw-admin -c "$dir/ceph.conf" quota set --quota-scope=bucket \
		--bucket="$3" --max-size="$4" >/dev/null &&
		radosgw-admin -c "$dir/ceph.conf" quota enable --quota-scope=bucket \
			--bucket="$3" >/dev/null || die "radosgw-admin quota failed"
	;;
*)
	die "usage: rgw.sh start [DIR] | stop DIR | kill-rgw DIR | start-rgw DIR |" \
		"quota DIR BUCKET BYTES"
	;;
esac

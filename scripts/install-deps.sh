#!/usr/bin/env bash
# install-deps.sh - install every Debian package needed to build ckptd, run
# its tests (normal and ASan+UBSan builds), the demo and the benchmarks.
#
# Idempotent and non-interactive; run as root on Debian 12 (bookworm):
#     scripts/install-deps.sh   (re-runs itself with sudo when not root)
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		exec sudo "$0" "$@"
	fi
	echo "install-deps.sh: must run as root (no sudo found)" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive

packages=(
	# build
	build-essential meson ninja-build pkg-config
	libevent-dev libprotobuf-c-dev protobuf-c-compiler libjansson-dev
	liblmdb-dev libsystemd-dev libxxhash-dev
	# tests
	libcmocka-dev valgrind clang libclang-rt-14-dev
	python3 python3-numpy python3-pytest python3-torch python3-h5py
	python3-zarr
	# integration tests: a second Unix user (useradd), running as it
	# (setpriv, unshare, nsenter, mount), process tools, systemd itself for
	# the unit tests in a private namespace
	passwd util-linux mount procps systemd
	# power-loss test: the crashfs FUSE filesystem (tests/crashfs)
	libfuse3-dev fuse3
	# benchmarks
	fio
	# operations: promtool and a real Prometheus for the metrics tests;
	# venv for the Python packaging test; dpkg-deb builds the package
	prometheus python3-venv dpkg-dev
	# manual page and bash completion checks
	man-db groff-base bash-completion
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ "${#missing[@]}" -eq 0 ]; then
	echo "install-deps.sh: all ${#packages[@]} packages already installed"
	exit 0
fi

echo "install-deps.sh: installing ${missing[*]}"
apt-get update -q
apt-get install -y -q --no-install-recommends \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	"${missing[@]}"

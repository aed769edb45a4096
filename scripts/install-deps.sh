#!/usr/bin/env bash
# install-deps.sh - install every Debian package needed to build ckptd, run
# its tests (normal and ASan+UBSan builds), the demo and the benchmarks.
#
# Idempotent and non-interactive; run as root on Debian 12 (bookworm):
#     scripts/install-deps.sh   (re-runs itself with sudo when not root)
#
# Then it makes the virtual environment .venv at the top of the source tree
# (Debian's python3, without the system site packages, so that its numpy 2
# stays out of /usr/bin/python3) with the pinned packages of
# tests/orbax/requirements.txt: orbax-checkpoint and jax (CPU) for the
# Orbax comparison suite. VENV_DIR overrides where it goes.
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
	# the S3 client and the etcd v3 JSON gateway client
	libcurl4-openssl-dev
	# tests
	libcmocka-dev valgrind clang libclang-rt-14-dev
	python3 python3-numpy python3-pytest python3-torch python3-h5py
	python3-zarr python3-venv
	# integration tests: a second Unix user (useradd), running as it
	# (setpriv, unshare, nsenter, mount), process tools, systemd itself for
	# the unit tests in a private namespace
	passwd util-linux mount procps systemd
	# multi-node tests: etcd members in network namespaces (ip netns)
	etcd-server iproute2
	# power-loss test: the crashfs FUSE filesystem (tests/crashfs)
	libfuse3-dev fuse3
	# benchmarks
	fio
	# object-store tests: a throwaway Ceph with its S3 gateway (tests/ceph),
	# curl for the comparison benchmark
	ceph-mon ceph-osd ceph-common radosgw curl
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
else
	echo "install-deps.sh: installing ${missing[*]}"
	apt-get update -q
	apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}"
fi

# The virtual environment for the Orbax comparison. Re-running installs
# nothing when the pins are already met (pip checks them), and a venv left
# half made by an interrupted run is made again.
top=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV_DIR:-$top/.venv}
reqs=$top/tests/orbax/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
	rm -rf "$venv"
	/usr/bin/python3 -m venv "$venv"
fi
stamp=$venv/.requirements
if ! cmp -s "$reqs" "$stamp" ||
	! "$venv/bin/python" -c 'import orbax.checkpoint, jax, ml_dtypes' 2>/dev/null; then
	echo "install-deps.sh: installing tests/orbax/requirements.txt into $venv"
	"$venv/bin/python" -m pip install -q --disable-pip-version-check \
		--no-input -r "$reqs"
	cp "$reqs" "$stamp"
else
	echo "install-deps.sh: $venv is up to date"
fi

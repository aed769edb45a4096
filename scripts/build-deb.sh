#!/usr/bin/env bash
# build-deb.sh - build the Debian package of ckptd with one command:
#
#     scripts/build-deb.sh [OUTDIR]        (default OUTDIR: build-deb)
#
# A release build with prefix /usr in OUTDIR/build, `meson install` into a
# staging directory, the package's control files written here, then
# dpkg-deb. The package holds the daemon, ckptctl, libckpt (+ header and
# pkg-config file), the Python package for /usr/bin/python3, the system
# and user units, the manual pages, the bash completion and
# /etc/ckptd/ckptd.conf (a conffile, every setting commented out). On
# installation it enables and starts ckptd.socket (as dh_installsystemd
# would: deb-systemd-helper / deb-systemd-invoke, so policy-rc.d is
# honoured); the first connection starts ckptd.service. Prints the path of
# the .deb on its last line.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$src/build-deb}" && cd "${1:-$src/build-deb}" && pwd)
bdir=$out/build
stage=$out/stage
arch=$(dpkg --print-architecture)
version=$(sed -n "s/^  version : '\([^']*\)',$/\1/p" "$src/meson.build")
debver=$version-1
[ -n "$version" ] || { echo "build-deb.sh: no version in meson.build" >&2; exit 1; }

if [ -f "$bdir/build.ninja" ]; then
	meson setup --reconfigure "$bdir" >/dev/null
else
	meson setup "$bdir" "$src" --prefix=/usr --sysconfdir=/etc \
		--localstatedir=/var --buildtype=release -Dtests=false \
		-Db_ndebug=if-release >/dev/null
fi
ninja -C "$bdir" -j"${CKPT_BUILD_JOBS:-2}" >/dev/null
rm -rf "$stage"
DESTDIR=$stage meson install -C "$bdir" --no-rebuild --quiet

# Debian layout: the settings file, compressed manual pages, copyright.
install -D -m 0644 "$src/daemon/ckptd.conf" "$stage/etc/ckptd/ckptd.conf"
find "$stage/usr/share/man" -type f ! -name '*.gz' -exec gzip -9n {} +
install -d "$stage/usr/share/doc/ckptd"
cat >"$stage/usr/share/doc/ckptd/copyright" <<'COPY'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ckptd
License: MIT

Files: *
License: MIT
COPY
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
	"$stage/usr/bin/ckptd" "$stage/usr/bin/ckptctl" \
	"$stage"/usr/lib/*/libckpt.so.*.*.* 2>/dev/null || true

# Shared-library dependencies (dpkg-shlibdeps wants a debian/ directory).
shl=$out/shlibdeps
rm -rf "$shl"
mkdir -p "$shl/debian"
printf 'Source: ckptd\n\nPackage: ckptd\nArchitecture: any\n' >"$shl/debian/control"
libdir=$(cd "$stage" && dirname "$(ls usr/lib/*/libckpt.so.*.*.* | head -n 1)")/
depends=$(cd "$shl" && dpkg-shlibdeps -O --ignore-missing-info -l"$stage/$libdir" \
	"$stage/usr/bin/ckptd" "$stage/usr/bin/ckptctl" \
	"$stage"/"$libdir"libckpt.so.*.*.* 2> >(grep -v "should already be installed" >&2) |
	sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build-deb.sh: dpkg-shlibdeps found nothing" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)

mkdir -p "$stage/DEBIAN"
cat >"$stage/DEBIAN/control" <<CTRL
Package: ckptd
Version: $debver
Architecture: $arch
Maintainer: ckptd maintainers <ckptd@localhost>
Installed-Size: $size
Depends: $depends
Recommends: python3, python3-numpy
Section: admin
Priority: optional
Description: checkpoint daemon for machine-learning training jobs
 ckptd takes checkpoints off the critical path of training: clients hand
 it the arrays of a step in a sealed memory file, and it writes, fsyncs
 and commits the step (Orbax layout) in the background, applies
 retention policies and serves restores. Socket-activated system service
 (ckptd.socket), with Prometheus metrics, structured journal fields and
 a watchdog.
 .
 Includes ckptctl, the C library libckpt and the Python package ckpt.
CTRL
echo /etc/ckptd/ckptd.conf >"$stage/DEBIAN/conffiles"
echo "activate-noawait ldconfig" >"$stage/DEBIAN/triggers"

cat >"$stage/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
case "$1" in
configure | abort-upgrade | abort-deconfigure | abort-remove)
	# Enable the socket (was-enabled is true on a first installation);
	# ckptd.service starts on the first connection.
	deb-systemd-helper unmask ckptd.socket >/dev/null || true
	if deb-systemd-helper --quiet was-enabled ckptd.socket; then
		deb-systemd-helper enable ckptd.socket >/dev/null || true
	else
		deb-systemd-helper update-state ckptd.socket >/dev/null || true
	fi
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		# An upgrade restarts a running daemon (it drains its saves).
		if [ -n "$2" ]; then
			deb-systemd-invoke try-restart ckptd.service >/dev/null || true
		fi
		deb-systemd-invoke start ckptd.socket >/dev/null || true
	fi
	;;
esac
exit 0
SH
cat >"$stage/DEBIAN/prerm" <<'SH'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	# Stopping the service waits for the saves it has accepted.
	deb-systemd-invoke stop ckptd.socket ckptd.service >/dev/null || true
fi
exit 0
SH
cat >"$stage/DEBIAN/postrm" <<'SH'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
case "$1" in
remove)
	deb-systemd-helper mask ckptd.socket ckptd.service >/dev/null || true
	;;
purge)
	deb-systemd-helper purge ckptd.socket ckptd.service >/dev/null || true
	deb-systemd-helper unmask ckptd.socket ckptd.service >/dev/null || true
	rm -rf /var/lib/ckptd
	;;
esac
exit 0
SH
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

deb=$out/ckptd_${debver}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"

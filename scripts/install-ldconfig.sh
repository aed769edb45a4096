#!/bin/sh
# install-ldconfig.sh LIBDIR - run by `ninja install` (meson install
# script): refresh the dynamic linker's cache so that the libckpt.so.0 just
# installed in LIBDIR is found at once (ckptctl, Python's ctypes). Skipped
# for staged installs (DESTDIR; packaging runs ldconfig itself) and when
# not root. A LIBDIR outside the linker's search path is served by the
# rpath the executables get at install time instead (meson.build).
set -eu
libdir=$1
if [ -n "${DESTDIR:-}" ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-ldconfig.sh: not root, not running ldconfig for $libdir"
	exit 0
fi
ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
echo "install-ldconfig.sh: $ldconfig ($libdir)"
exec "$ldconfig"

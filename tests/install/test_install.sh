#!/usr/bin/env bash
# test_install.sh SOURCE_ROOT - `ninja install` to a fresh prefix gives
# programs that work at once: ckptctl finds libckpt without
# LD_LIBRARY_PATH (rpath for a prefix outside the linker's path; the
# install script runs ldconfig), the docs and the LICENSE are installed,
# and every unit names documentation that exists. TAP output.
set -u
src=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=1; echo "not ok $n - $1"; }
check() { # check DESCRIPTION COMMAND...
	local what=$1
	shift
	if "$@"; then ok "$what"; else not_ok "$what"; fi
}
diag() { sed 's/^/# /'; }

prefix=$work/prefix
if ! meson setup "$work/build" "$src" --prefix="$prefix" -Dtests=false \
	-Dpython=false -Dsystemdsystemunitdir="$prefix/lib/systemd/system" \
	-Dsystemduserunitdir="$prefix/lib/systemd/user" >"$work/setup.log" 2>&1 ||
	! ninja -C "$work/build" >"$work/build.log" 2>&1; then
	echo "Bail out! cannot build the tree to install"
	tail -20 "$work/setup.log" "$work/build.log" | diag
	exit 1
fi
if ninja -C "$work/build" install >"$work/install.log" 2>&1; then
	ok "ninja install to $prefix"
else
	not_ok "ninja install to $prefix"
	tail -20 "$work/install.log" | diag
fi
check "the install script ran (ldconfig step)" \
	grep -q 'install-ldconfig.sh' "$work/install.log"

ctl=$prefix/bin/ckptctl
out=$(env -u LD_LIBRARY_PATH "$ctl" --help 2>&1)
check "installed ckptctl runs at once, no LD_LIBRARY_PATH" \
	grep -q '^usage: ckptctl' <<<"$out"
out=$(env -u LD_LIBRARY_PATH CKPTD_SOCKET="$work/none.sock" "$ctl" status 2>&1)
rc=$?
check "installed ckptctl status with no daemon: exit 3, says so" \
	test "$rc" = 3 -a -n "$(grep 'ckptd is not running' <<<"$out")"
check "no daemon was started for status" test ! -e "$work/none.sock"

doc=$prefix/share/doc/ckptd
check "LICENSE installed with the docs" cmp -s "$src/LICENSE" "$doc/LICENSE"
check "the LICENSE is the Apache License 2.0" \
	grep -q 'Apache License' "$doc/LICENSE"
check "meson.build declares the same license" \
	grep -q "license : 'Apache-2.0'" "$src/meson.build"
check "README installed" test -s "$doc/README.md"

documented() { # every Documentation= of the unit (file://, man:) is installed
	local f=$1 any=0 url page sec
	for url in $(sed -n 's/^Documentation=//p' "$f"); do
		any=1
		case $url in
		file://*) test -e "${url#file://}" || return 1 ;;
		man:*)
			page=${url#man:}
			sec=${page##*(}
			sec=${sec%)}
			page=${page%(*}
			test -e "$prefix/share/man/man$sec/$page.$sec" || return 1
			;;
		*) return 1 ;;
		esac
	done
	test "$any" = 1
}
for u in system/ckptd.service system/ckptd.socket user/ckptd.service \
	user/ckptd.socket; do
	check "$u names installed documentation" \
		documented "$prefix/lib/systemd/$u"
done
python_listed() { # every module of the package is in its install list
	local f
	for f in "$src"/client/python/ckpt/*.py "$src"/client/python/ckpt/py.typed; do
		grep -qF "'ckpt/${f##*/}'" "$src/client/python/meson.build" || return 1
	done
}
check "every module of the Python package is installed by ninja install" \
	python_listed
echo "1..$n"
exit $failed

#!/usr/bin/env bash
# test_docs.sh - the manual pages render without warnings, ckptd.conf(5)
# and the example file document every setting, and the bash completion of
# ckptctl completes commands, options and step numbers (TAP output).
#
#   test_docs.sh SRCDIR CKPTD_BIN
set -uo pipefail

src=$1
ckptd_bin=$2
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }

for page in daemon/ckptd.8 daemon/ckptd.conf.5 client/ckptctl/ckptctl.1 \
	client/lib/libckpt.3; do
	out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$src/$page" 2>&1 >/dev/null)
	text=$(LC_ALL=C.UTF-8 MANWIDTH=80 man -E UTF-8 -l "$src/$page" 2>/dev/null)
	if [ -z "$out" ] && printf '%s' "$text" | grep -q '^NAME'; then
		ok "$page renders without warnings"
	else
		not_ok "$page renders without warnings"
		printf '%s\n' "$out" | sed 's/^/# /'
	fi
done

# Every setting the daemon prints with --check-config is documented in
# ckptd.conf(5), ckptd(8) and the example file.
keys=$("$ckptd_bin" --config "$src/daemon/ckptd.conf" --check-config |
	sed -n 's/^\([a-z-]*\) = .*/\1/p')
if [ -n "$keys" ]; then
	ok "ckptd --check-config accepts the example file"
else
	not_ok "ckptd --check-config accepts the example file"
fi
for key in $keys; do
	rkey=${key//-/\\-}             # as written in roff: state\-dir
	if grep -qF ".BI $rkey \"" "$src/daemon/ckptd.conf.5" &&
		grep -qE "^#?$key = " "$src/daemon/ckptd.conf" &&
		grep -qF -- "\\-\\-$rkey" "$src/daemon/ckptd.8"; then
		ok "$key is documented (ckptd.conf(5), ckptd(8), example file)"
	else
		not_ok "$key is documented (ckptd.conf(5), ckptd(8), example file)"
	fi
done

bc=/usr/share/bash-completion/bash_completion
if [ ! -r "$bc" ]; then
	not_ok "bash-completion is installed (scripts/install-deps.sh)"
	echo "1..$n"
	exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/5" "$tmp/root/12" "$tmp/root/notastep"
# complete_line LINE: the candidates bash offers for LINE (cursor at the end).
complete_line() {
	bash --norc --noprofile -c '
		source "$1"; source "$2"
		read -ra COMP_WORDS <<<"$3"
		[[ $3 == *" " ]] && COMP_WORDS+=("")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		COMP_LINE=$3; COMP_POINT=${#3}
		_ckptctl ckptctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
		printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "
	' _ "$bc" "$src/client/ckptctl/ckptctl.bash" "$1"
}
check_completion() { # check_completion LINE EXPECTED
	local got
	got=$(complete_line "$1")
	if [ "$got" = "$2" ]; then
		ok "completion of '$1': $2"
	else
		not_ok "completion of '$1': expected '$2', got '$got'"
	fi
}
check_completion "ckptctl st" "status steps "
check_completion "ckptctl --j" "--json "
check_completion "ckptctl wait $tmp/root --a" "--after "
check_completion "ckptctl show $tmp/root " "12 5 "
check_completion "ckptctl --json delete $tmp/root 1" "12 "

echo "1..$n"
[ "$failed" -eq 0 ]

# bash completion for ckptctl(1)

_ckptctl()
{
	local cur prev words cword
	_init_completion || return

	local commands='status steps show delete verify wait preempt import help'
	local opts='--socket --json --step-prefix --help --version'
	local i cmd= nargs=0

	case $prev in
	--socket)
		_filedir
		return
		;;
	--step-prefix | --after | --timeout | --best-metric)
		return
		;;
	--best-mode)
		COMPREPLY=($(compgen -W "min max" -- "$cur"))
		return
		;;
	esac

	# The command and how many of its arguments precede the cursor.
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		--socket | --step-prefix | --after | --timeout | --best-metric | \
		    --best-mode)
			((i++))
			;;
		-*) ;;
		*)
			if [[ -z $cmd ]]; then
				cmd=${words[i]}
			else
				((nargs++))
			fi
			;;
		esac
	done

	if [[ $cur == -* ]]; then
		case $cmd in
		wait) opts="$opts --after --timeout" ;;
		import) opts="$opts --best-metric --best-mode -q" ;;
		esac
		COMPREPLY=($(compgen -W "$opts" -- "$cur"))
		return
	fi
	if [[ -z $cmd ]]; then
		COMPREPLY=($(compgen -W "$commands" -- "$cur"))
		return
	fi
	case $cmd in
	import)
		((nargs < 2)) && _filedir -d
		;;
	steps | show | delete | verify | wait)
		if ((nargs == 0)); then
			_filedir -d
		elif [[ $cmd != steps && $cmd != wait ]] && ((nargs == 1)); then
			# Step numbers: the numeric directories of the root.
			local root=${words[cword - 1]} d steps=
			for d in "$root"/*/; do
				d=${d%/}
				d=${d##*/}
				d=${d##*_}
				[[ $d =~ ^[0-9]+$ ]] && steps+=" $d"
			done
			COMPREPLY=($(compgen -W "$steps" -- "$cur"))
		fi
		;;
	esac
} &&
	complete -F _ckptctl ckptctl

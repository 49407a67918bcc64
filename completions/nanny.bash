# bash completion for nanny (Service Nanny)                    -*- shell-script -*-
# shellcheck shell=bash
#
# Installed by `meson install` as share/bash-completion/completions/nanny, where
# bash-completion loads it on demand; or load it by hand: . completions/nanny.bash
#
# Completes the commands, each command's options and their fixed values, files and
# folders, key names for `keys rm`, and service names for the commands that take one,
# asked of the daemon with `nanny ls --json` (with the --url, --key and --cacert already
# on the command line, else NANNY_URL, NANNY_KEY and NANNY_CACERT). Needs no jq.

_nanny_commands="serve new keys ls ps check version health status start stop restart
rediscover logs mcp help"
_nanny_client_opts="--url --key --cacert --help -h"

# The options of command $1, one string.
_nanny_opts() {
    case $1 in
    ls | ps | health | status | rediscover) echo "--json $_nanny_client_opts" ;;
    start) echo "--force --wait --timeout $_nanny_client_opts" ;;
    stop | restart | mcp) echo "$_nanny_client_opts" ;;
    logs) echo "-n --lines -f --follow $_nanny_client_opts" ;;
    check) echo "-c --config -h --help" ;;
    new) echo "-g --gpu -p --port -s --services -t --template -h --help" ;;
    keys) echo "-r --role -k --keys -c --config --state-dir --json -h --help" ;;
    serve)
        echo "-l --listen -s --services -c --config --state-dir --log-level --log-format
            --insecure --keys --tls-cert --tls-key --stop-services-on-exit
            --compose-command --docker-host --max-connections-per-client --no-resume
            --trusted-proxies --nvml-library --nvidia-smi -h --help"
        ;;
    esac
}

# Whether option $2 of command $1 takes a value (the next word).
_nanny_takes_value() {
    case $2 in
    --url | --key | --cacert | --timeout | --lines | --config | --port | --services | \
        --template | --role | --keys | --state-dir | --listen | --log-level | --log-format | \
        --tls-cert | --tls-key | --compose-command | --docker-host | \
        --max-connections-per-client | --trusted-proxies | --nvml-library | --nvidia-smi)
        return 0
        ;;
    -n) [[ $1 == logs ]] ;;
    -c | -s) [[ $1 == check || $1 == new || $1 == keys || $1 == serve ]] ;;
    -p | -t) [[ $1 == new ]] ;;
    -r | -k) [[ $1 == keys ]] ;;
    -l) [[ $1 == serve ]] ;;
    *) return 1 ;;
    esac
}

# The values of "name" members at the first level of the objects of the JSON that
# `nanny ls --json` or `nanny keys ls --json` print (two spaces a level, one member a
# line); GET /services' "errors" come after its "services" and are not read.
_nanny_json_names() {
    sed -n -e '/^  "errors"/q' \
        -e 's/^      "name": "\([a-z0-9][a-z0-9._-]*\)",\{0,1\}$/\1/p'
}

# The words of the line being completed, split on blanks only (COMP_WORDS splits
# --url=http://host:8080 at "=" and ":").
_nanny_line_words() {
    local line=${COMP_LINE:-${COMP_WORDS[*]}}
    read -r -a _nanny_words <<<"${line:0:${COMP_POINT:-${#line}}}"
}

# The nanny being completed ($1, with a leading ~ expanded), else the one on PATH.
_nanny_exe() {
    local exe=${1/#\~/$HOME}
    if [[ $exe == */* && -x $exe ]]; then
        printf '%s' "$exe"
    else
        printf 'nanny'
    fi
}

# Print the service names (the daemon's, $2 empty) or the key names ($2 "keys"), asked
# of nanny $1 with the options of the line being completed that pick the daemon or the
# keys file.
_nanny_names() {
    local exe=$1 kind=$2 w i
    local -a client=() keys=() _nanny_words=()
    _nanny_line_words
    for ((i = 2; i < ${#_nanny_words[@]}; i++)); do
        w=${_nanny_words[i]}
        case $w in
        --url | --key | --cacert)
            ((i + 1 < ${#_nanny_words[@]})) && client+=("$w" "${_nanny_words[i + 1]/#\~/$HOME}")
            i=$((i + 1))
            ;;
        --url=* | --key=* | --cacert=*) client+=("$w") ;;
        --keys | -k | --config | -c | --state-dir)
            ((i + 1 < ${#_nanny_words[@]})) && keys+=("$w" "${_nanny_words[i + 1]/#\~/$HOME}")
            i=$((i + 1))
            ;;
        --keys=* | --config=* | --state-dir=*) keys+=("$w") ;;
        esac
    done
    if [[ $kind == keys ]]; then
        "$exe" keys ls --json "${keys[@]}" 2>/dev/null | _nanny_json_names
    elif command -v timeout >/dev/null 2>&1; then
        # Bounded: a daemon that does not answer must not hang the shell.
        timeout 3 "$exe" ls --json "${client[@]}" 2>/dev/null | _nanny_json_names
    else
        "$exe" ls --json "${client[@]}" 2>/dev/null | _nanny_json_names
    fi
}

# Set COMPREPLY to the words of list $1 that start with $2.
_nanny_reply() {
    local IFS=$' \t\n'
    # shellcheck disable=SC2207 # compgen's words hold no blanks
    COMPREPLY=($(compgen -W "$1" -- "$2"))
}

_nanny_files() { # $1: -f (files) or -d (folders), $2: the word
    local IFS=$'\n'
    compopt -o filenames 2>/dev/null
    # shellcheck disable=SC2207
    COMPREPLY=($(compgen "$1" -- "$2"))
}

_nanny() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev="" cmd="" sub="" exe w i operands=0
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    COMPREPLY=()
    exe=$(_nanny_exe "${COMP_WORDS[0]}")

    if ((COMP_CWORD == 1)); then
        _nanny_reply "$_nanny_commands --help --version" "$cur"
        return 0
    fi
    cmd=${COMP_WORDS[1]}

    # --opt=VALUE: COMP_WORDS holds --opt, =, VALUE (bash splits at "=").
    if [[ $prev == = ]] && ((COMP_CWORD >= 3)); then
        prev=${COMP_WORDS[COMP_CWORD - 2]}
    elif [[ $cur == = ]]; then
        cur=""
    fi

    # The value of an option.
    case $prev in
    --cacert | --tls-cert | --tls-key | --keys | --config | -c | -k)
        _nanny_files -f "$cur"
        return 0
        ;;
    --services | --template | --state-dir | -s | -t)
        _nanny_files -d "$cur"
        return 0
        ;;
    --role | -r)
        [[ $cmd == keys ]] && _nanny_reply "user viewer operator admin" "$cur"
        return 0
        ;;
    --log-level)
        _nanny_reply "error warning info debug" "$cur"
        return 0
        ;;
    --log-format)
        _nanny_reply "text json" "$cur"
        return 0
        ;;
    --compose-command)
        _nanny_reply "docker-compose" "$cur"
        return 0
        ;;
    esac
    if _nanny_takes_value "$cmd" "$prev"; then
        return 0 # a URL, a key, a number, a duration: nothing to offer
    fi

    # The operands already given: the words before the one being completed that are
    # neither options nor their values (split on blanks: COMP_WORDS splits at "=", ":").
    local -a _nanny_words=()
    local line=${COMP_LINE:-${COMP_WORDS[*]}} ndone
    _nanny_line_words
    ndone=${#_nanny_words[@]}
    line=${line:0:${COMP_POINT:-${#line}}}
    [[ -n $line && $line != *[[:blank:]] ]] && ndone=$((ndone - 1))
    for ((i = 2; i < ndone; i++)); do
        w=${_nanny_words[i]}
        if [[ $w == -*=* ]]; then
            continue
        elif [[ $w == -* ]]; then
            _nanny_takes_value "$cmd" "$w" && i=$((i + 1))
        else
            operands=$((operands + 1))
            ((operands == 1)) && sub=$w
        fi
    done

    if [[ $cur == -* ]]; then
        _nanny_reply "$(_nanny_opts "$cmd")" "$cur"
        return 0
    fi
    case $cmd in
    status | start | stop | restart | logs)
        ((operands == 0)) && _nanny_reply "$(_nanny_names "$exe" "")" "$cur"
        ;;
    check)
        ((operands == 0)) && _nanny_files -d "$cur"
        ;;
    keys)
        if ((operands == 0)); then
            _nanny_reply "add ls rm" "$cur"
        elif [[ $sub == rm ]] && ((operands == 1)); then
            _nanny_reply "$(_nanny_names "$exe" keys)" "$cur"
        fi
        ;;
    esac
    return 0
}

complete -F _nanny nanny

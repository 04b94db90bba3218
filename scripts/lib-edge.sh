# shellcheck shell=bash
# Helpers shared by the edge scripts. Sourced, not run, once SCRIPT_NAME (the prefix of the
# script's messages) is set:
#   readonly SCRIPT_NAME=install-edge
#   # shellcheck source=scripts/lib-edge.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/lib-edge.sh"
# Each script then defines `main` and ends with `main "$@"`.

# die MESSAGE [CODE]: prints "SCRIPT_NAME: MESSAGE" on stderr and exits with CODE (default 1).
die() {
    echo "$SCRIPT_NAME: $1" >&2
    exit "${2:-1}"
}

# say MESSAGE: prints "SCRIPT_NAME: MESSAGE" on stdout.
say() {
    echo "$SCRIPT_NAME: $1"
}

# print_help: the script's header comment (from its second line to the first line that is
# not a comment), without the leading "# ".
print_help() {
    sed -n '2,/^[^#]/p' "$0" | sed -e '/^[^#]/d' -e 's/^# \{0,1\}//'
}

# read_options NAME:VARIABLE... -- ARGS...: reads ARGS as options that take a value,
# `--NAME VALUE` or `--NAME=VALUE`, and sets each one's VARIABLE to its value. -h or
# --help prints the help and exits 0; any other word, or a NAME without its value, is the
# script's `usage`. (Its locals start with `opt_`, so that they never hide a VARIABLE.)
read_options() {
    local opt_pairs=() opt_pair opt_name opt_value opt_variable
    while [[ $1 != -- ]]; do
        opt_pairs+=("$1")
        shift
    done
    shift
    while [[ $# -gt 0 ]]; do
        case $1 in
            -h | --help)
                print_help
                exit 0
                ;;
            --*=*)
                opt_name=${1%%=*}
                opt_value=${1#*=}
                shift
                ;;
            --*)
                [[ $# -ge 2 ]] || usage
                opt_name=$1
                opt_value=$2
                shift 2
                ;;
            *)
                usage
                ;;
        esac
        opt_variable=''
        for opt_pair in "${opt_pairs[@]}"; do
            if [[ --${opt_pair%%:*} == "$opt_name" ]]; then
                opt_variable=${opt_pair#*:}
            fi
        done
        [[ -n $opt_variable ]] || usage
        printf -v "$opt_variable" '%s' "$opt_value"
    done
}

# clear_mytunnel_environment: unsets every MYTUNNEL_* variable, so that mytunneld reads its
# configuration from the env file only, as the service does.
clear_mytunnel_environment() {
    local var
    while IFS= read -r var; do
        unset "$var"
    done < <(compgen -e | grep '^MYTUNNEL_' || true)
}

# env_value KEY FILE: the value of the last KEY=VALUE line (as mytunneld reads it). Only for
# edge_settings' fallback, when no mytunneld can answer.
env_value() {
    [[ -r $2 ]] || return 1
    awk -v key="$1" '
        {
            line = $0
            sub(/^[ \t]+/, "", line); sub(/[ \t\r]+$/, "", line)
            if (line == "" || substr(line, 1, 1) == "#") next
            if (substr(line, 1, 7) == "export ") { line = substr(line, 8); sub(/^[ \t]+/, "", line) }
            eq = index(line, "="); if (eq == 0) next
            k = substr(line, 1, eq - 1); sub(/[ \t]+$/, "", k)
            if (k != key) next
            v = substr(line, eq + 1); sub(/^[ \t]+/, "", v)
            q = substr(v, 1, 1)
            if (q == "\"" || q == "\047") { rest = substr(v, 2); e = index(rest, q); if (e > 0) v = substr(rest, 1, e - 1) }
            found = 1; value = v
        }
        END { if (found) print value; else exit 1 }' "$2"
}

# mytunneld's defaults of the settings the scripts read, used only when no mytunneld can
# answer `config --json` (none installed yet, one older than `mytunneld config`, or a broken
# one): see edge_settings. '' stands for no default. mytunnel-cli/tests/settings_table.rs
# keeps them the settings table's.
declare -grA FALLBACK_DEFAULTS=(
    [MYTUNNEL_DB_PATH]=/var/lib/mytunneld/leases.db
    [MYTUNNEL_BASE_DOMAIN]=''
    [MYTUNNEL_CADDY_ADMIN_URL]=http://127.0.0.1:2019
    [MYTUNNEL_ROUTE_MODE]=routes
    [MYTUNNEL_SOCKET_DIR]=/var/lib/mytunnel-sockets
    [MYTUNNEL_KEYS_DIR]=/etc/mytunneld/keys
)

# What edge_settings read, by variable name (MYTUNNEL_DB_PATH).
declare -gA setting_value=() setting_source=() setting_error=()
settings_problem=''

# edge_settings ENV_FILE BINARY...: every setting as mytunneld resolves it from ENV_FILE alone
# (`BINARY --env-file ENV_FILE config --json` without this environment's MYTUNNEL_*, the
# first BINARY that answers; python3 reads the document), into
#   setting_value[NAME]   the value ('' when unset)
#   setting_source[NAME]  flag, environment, env_file or default
#   setting_error[NAME]   why mytunneld refuses the value ('' when it takes it)
# Status 0 when a BINARY answered. Otherwise status 1 and settings_problem says why, and
# the arrays hold the settings of FALLBACK_DEFAULTS as ENV_FILE's own lines give them
# (env_value), else those defaults, with no error known: the fallback for where no
# mytunneld can run yet.
# shellcheck disable=SC2034 # the arrays and settings_problem are read by the scripts
edge_settings() {
    local env_file=$1 bin out rc name source value error
    shift
    setting_value=()
    setting_source=()
    setting_error=()
    settings_problem="no mytunneld to ask"
    for bin in "$@"; do
        if [[ ! -x $bin ]]; then
            settings_problem="no executable $bin"
            continue
        fi
        if ! command -v python3 >/dev/null; then
            settings_problem="python3 is needed to read \`mytunneld config --json\`"
            break
        fi
        rc=0
        out=$(clear_mytunnel_environment && timeout --kill-after=5 30 "$bin" --env-file "$env_file" config --json 2>&1) || rc=$?
        # 0: every value valid, 1: some refused (all still printed); anything else is no answer.
        if [[ $rc -le 1 ]]; then
            while IFS= read -r -d '' name && IFS= read -r -d '' source &&
                IFS= read -r -d '' value && IFS= read -r -d '' error; do
                setting_value[$name]=$value
                setting_source[$name]=$source
                setting_error[$name]=$error
            done < <(python3 -c '
import json, sys
for s in json.load(sys.stdin)["settings"]:
    for field in (s["env"], s["source"], s["value"] or "", s["error"] or ""):
        sys.stdout.write(str(field) + "\0")
' <<<"$out" 2>/dev/null)
            [[ ${#setting_value[@]} -gt 0 ]] && return 0
        fi
        settings_problem="$bin --env-file $env_file config --json: exit $rc${out:+: $(printable "${out:0:300}")}"
    done
    for name in "${!FALLBACK_DEFAULTS[@]}"; do
        if value=$(env_value "$name" "$env_file"); then
            setting_source[$name]=env_file
        else
            value=${FALLBACK_DEFAULTS[$name]}
            setting_source[$name]=default
        fi
        setting_value[$name]=$value
        setting_error[$name]=''
    done
    return 1
}

# edge_path NAME DESTDIR: the path setting NAME as edge_settings read it; its default is
# taken inside DESTDIR (an install under --destdir keeps its files there).
edge_path() {
    if [[ ${setting_source[$1]:-default} == default ]]; then
        echo "$2${setting_value[$1]:-}"
    else
        echo "${setting_value[$1]:-}"
    fi
}

# edge_health BINARY ENV_FILE: runs `BINARY --env-file ENV_FILE ctl health` (it asks the
# running `mytunneld serve`); sets health_rc and health_text (its output). Status 0 when
# it answers healthy.
health_rc=0
health_text=''
edge_health() {
    health_rc=0
    health_text=$(timeout --kill-after=5 30 "$1" --env-file "$2" ctl health 2>&1) || health_rc=$?
    [[ $health_rc -eq 0 && $health_text == *'"healthy":true'* ]]
}

# Where the Debian package `mytunneld` puts its binary and its systemd unit.
# shellcheck disable=SC2034 # read by the scripts
readonly PACKAGED_BINARY=/usr/bin/mytunneld PACKAGED_UNIT=/lib/systemd/system/mytunneld.service

# installed_binary DESTDIR: the mytunneld this edge runs. DESTDIR/usr/local/bin/mytunneld
# (install-edge.sh from the source tree) when it is there, else DESTDIR/usr/bin/mytunneld
# (the Debian package) when that is, else the first, where install-edge.sh would put it.
# The same order as PATH's, and as the unit's: a source install's unit in /etc overrides
# the package's.
installed_binary() {
    local candidate
    for candidate in "$1/usr/local/bin/mytunneld" "$1$PACKAGED_BINARY"; do
        if [[ -x $candidate ]]; then
            echo "$candidate"
            return 0
        fi
    done
    echo "$1/usr/local/bin/mytunneld"
}

# binary_version BINARY: what `BINARY --version` prints, or that it is unknown.
binary_version() {
    "$1" --version 2>/dev/null || echo 'mytunneld (version unknown)'
}

# install_binary SOURCE DEST: installs SOURCE as DEST (0755 root:root) under a temporary
# name in DEST's directory, then renames it into place: DEST never holds a half-written
# file.
install_binary_tmp=''
install_binary() {
    install_binary_tmp=$(mktemp "$(dirname "$2")/.mytunneld.XXXXXX")
    trap 'rm -f "$install_binary_tmp"' EXIT
    install -m 0755 -o root -g root "$1" "$install_binary_tmp"
    mv -f "$install_binary_tmp" "$2"
    trap - EXIT
}

# stop_service_for_change DESTDIR: stops mytunneld when systemd runs it and DESTDIR is
# empty (an install under --destdir is never a running service); sets restart_service to
# 1 when it did, for start_service_after_change.
restart_service=0
# shellcheck disable=SC2034 # restart_service is read by the scripts
stop_service_for_change() {
    restart_service=0
    if [[ -z $1 && -d /run/systemd/system ]] && systemctl is-active --quiet mytunneld; then
        systemctl stop mytunneld
        restart_service=1
        say "stopped mytunneld"
    fi
}

# printable TEXT: TEXT with control characters shown as '?' (file names in the database
# directory may come from a tunnel user of an older install).
printable() {
    local text=$1
    echo "${text//[[:cntrl:]]/?}"
}

# kind_of PATH: what PATH is, in words (a symbolic link is never followed).
kind_of() {
    local path=$1
    if [[ -L $path ]]; then
        echo 'symbolic link'
    elif [[ -f $path ]]; then
        echo 'file'
    elif [[ -d $path ]]; then
        echo 'directory'
    elif [[ -S $path ]]; then
        echo 'socket'
    elif [[ -p $path ]]; then
        echo 'fifo'
    elif [[ -b $path || -c $path ]]; then
        echo 'device'
    else
        echo 'special file'
    fi
}

# The MaxStartups install-edge.sh writes unless told otherwise (--max-startups), and what
# check-edge.sh expects of an edge whose drop-in sets none: see install-edge.sh's header.
# shellcheck disable=SC2034 # used by the scripts that source this file
DEFAULT_MAX_STARTUPS=256:30:1024

# parse_max_startups VALUE: sshd's MaxStartups VALUE (START:RATE:FULL, or one number N,
# which sshd reads as N:30:N) printed as "START RATE FULL"; status 1 when sshd would
# refuse it (or it is not plain decimal numbers).
parse_max_startups() {
    local value=$1 start rate full
    if [[ $value =~ ^([0-9]{1,6})$ ]]; then
        start=$((10#${BASH_REMATCH[1]}))
        rate=30
        full=$start
    elif [[ $value =~ ^([0-9]{1,6}):([0-9]{1,3}):([0-9]{1,6})$ ]]; then
        start=$((10#${BASH_REMATCH[1]}))
        rate=$((10#${BASH_REMATCH[2]}))
        full=$((10#${BASH_REMATCH[3]}))
    else
        return 1
    fi
    ((start >= 1 && start <= full && rate >= 1 && rate <= 100)) || return 1
    echo "$start $rate $full"
}

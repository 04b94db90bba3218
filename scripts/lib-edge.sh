# shellcheck shell=bash
# Helpers shared by the edge scripts (install, check, keys, upgrade, rollback). Sourced, not run:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib-edge.sh"

# env_value KEY FILE: the value of the last KEY=VALUE line (as mytunneld reads it).
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

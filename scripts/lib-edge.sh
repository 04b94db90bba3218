# shellcheck shell=bash
# Helpers shared by the edge scripts (check, upgrade, rollback). Sourced, not run:
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

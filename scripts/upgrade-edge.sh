#!/usr/bin/env bash
# Upgrades the edge's mytunneld binary with a tested rollback.
#
#   upgrade-edge.sh NEW_BINARY [--destdir DIR] [--force]
#
# 1. Checks that the installed edge is healthy (`mytunneld ctl health`); an unhealthy edge
#    is not upgraded, since a failed check afterwards would prove nothing (--force skips
#    this).
# 2. Stops mytunneld when systemd manages it (never with --destdir).
# 3. Backs up the installed binary to DIR/var/backups/mytunneld/mytunneld.<STAMP> and the
#    database files (<db>, <db>-wal, <db>-shm) alongside as <db>*.<STAMP>.
# 4. Installs NEW_BINARY (0755 root:root) under a temporary name and renames it into
#    place, so the path never holds a half-written file. Starts the service again.
# 5. Runs `mytunneld ctl health` with the installed env file. Healthy: prints the new
#    version, exit 0. Unhealthy: rollback-edge.sh restores the backup (binary and
#    database) and checks health again; exit 1 with "upgrade failed: … rolled back to …".
#
# Exit codes: 0 upgraded and healthy, 1 failed (rolled back), 2 usage error.
set -euo pipefail

usage() {
    echo "usage: $0 NEW_BINARY [--destdir DIR] [--force]" >&2
    exit 2
}

die() {
    echo "upgrade-edge: $1" >&2
    exit "${2:-1}"
}

say() {
    echo "upgrade-edge: $1"
}

new_binary=''
destdir=''
force=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --destdir)
            [[ $# -ge 2 ]] || usage
            destdir=$2
            shift 2
            ;;
        --force)
            force=1
            shift
            ;;
        -*)
            usage
            ;;
        *)
            [[ -z $new_binary ]] || usage
            new_binary=$1
            shift
            ;;
    esac
done
[[ -n $new_binary ]] || usage
if [[ -n $destdir ]]; then
    [[ $destdir == /* ]] || die "--destdir must be an absolute path: $destdir" 2
    destdir=${destdir%/}
fi
[[ -f $new_binary && -r $new_binary ]] || die "cannot read new binary $new_binary" 2
[[ $(id -u) -eq 0 ]] || die "must run as root"

# The configuration comes from the env file only, as for the service.
while IFS= read -r var; do
    unset "$var"
done < <(compgen -e | grep '^MYTUNNEL_' || true)

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin_path=$destdir/usr/local/bin/mytunneld
env_file=$destdir/etc/mytunneld/mytunneld.env
backup_dir=$destdir/var/backups/mytunneld
[[ -f $bin_path ]] || die "no mytunneld installed at $bin_path: run install-edge.sh first"

# shellcheck source=scripts/lib-edge.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-edge.sh"

# health: runs `ctl health`; sets health_output; status 0 when healthy.
health_output=''
health() {
    local rc=0
    health_output=$(timeout --kill-after=5 30 "$bin_path" --env-file "$env_file" ctl health 2>&1) || rc=$?
    [[ $rc -eq 0 && $health_output == *'"healthy":true'* ]] && return 0
    health_output="exit $rc: ${health_output:0:400}"
    return 1
}

db_path=$(env_value MYTUNNEL_DB_PATH "$env_file") || db_path=/var/lib/mytunneld/leases.db
db_name=$(basename "$db_path")
old_version=$("$bin_path" --version 2>/dev/null || echo 'mytunneld (version unknown)')

if [[ $force -eq 0 ]] && ! health; then
    die "the installed edge is unhealthy, not upgrading ($health_output); fix it first (check-edge.sh) or pass --force"
fi

# --- stop, back up -----------------------------------------------------------------------
restart_service=0
if [[ -z $destdir && -d /run/systemd/system ]] && systemctl is-active --quiet mytunneld; then
    systemctl stop mytunneld
    restart_service=1
    say "stopped mytunneld"
fi

stamp=$(date -u +%Y%m%dT%H%M%S.%N)
install -d -m 0700 -o root -g root "$backup_dir"
cp -p "$bin_path" "$backup_dir/mytunneld.$stamp"
for suffix in '' -wal -shm; do
    if [[ -f $db_path$suffix ]]; then
        cp -p "$db_path$suffix" "$backup_dir/$db_name$suffix.$stamp"
    fi
done
say "backed up $old_version and $db_path to $backup_dir (backup $stamp)"

# --- install -----------------------------------------------------------------------------
tmp=$(mktemp "$(dirname "$bin_path")/.mytunneld.XXXXXX")
trap 'rm -f "$tmp"' EXIT
install -m 0755 -o root -g root "$new_binary" "$tmp"
mv -f "$tmp" "$bin_path"
trap - EXIT
say "installed $new_binary as $bin_path"
if [[ $restart_service -eq 1 ]]; then
    systemctl start mytunneld || say "mytunneld did not start"
fi

# --- check, roll back on failure -----------------------------------------------------------
healthy=0
if health; then
    if [[ $restart_service -eq 1 ]] && ! systemctl is-active --quiet mytunneld; then
        health_output='the mytunneld service did not stay running'
    else
        healthy=1
    fi
fi
if [[ $healthy -eq 1 ]]; then
    new_version=$("$bin_path" --version 2>/dev/null || echo 'mytunneld (version unknown)')
    say "upgraded: $old_version -> $new_version (healthy; previous binary in $backup_dir/mytunneld.$stamp)"
    exit 0
fi
reason=$health_output
echo "upgrade-edge: the new binary is unhealthy ($reason); rolling back" >&2
rollback=("$script_dir/rollback-edge.sh" --backup "$stamp")
[[ -n $destdir ]] && rollback+=(--destdir "$destdir")
if "${rollback[@]}"; then
    echo "upgrade-edge: upgrade failed: new binary unhealthy ($reason); rolled back to $old_version (backup $stamp), healthy again" >&2
else
    echo "upgrade-edge: upgrade failed: new binary unhealthy ($reason); rolled back to $old_version (backup $stamp), but the edge is STILL UNHEALTHY: run check-edge.sh" >&2
fi
exit 1

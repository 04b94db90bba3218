#!/usr/bin/env bash
# Restores the newest backup made by upgrade-edge.sh: the mytunneld binary and the lease
# database, then checks the edge's health.
#
#   rollback-edge.sh [--destdir DIR] [--backup STAMP]
#
# Backups live in DIR/var/backups/mytunneld: mytunneld.<STAMP> (the binary) and
# <db>.<STAMP>, <db>-wal.<STAMP>, <db>-shm.<STAMP> (the database files, <db> being the
# file name of MYTUNNEL_DB_PATH). --backup picks one STAMP instead of the newest.
# The database files being replaced are kept there as <db>*.<NOW>.replaced: leases
# written since the backup are not lost for good.
#
# When systemd manages mytunneld (no --destdir), the service is stopped for the restore
# and started again after it.
#
# Exit codes: 0 restored and healthy, 1 restored but unhealthy or failure, 2 usage error.
set -euo pipefail

usage() {
    echo "usage: $0 [--destdir DIR] [--backup STAMP]" >&2
    exit 2
}

die() {
    echo "rollback-edge: $1" >&2
    exit "${2:-1}"
}

say() {
    echo "rollback-edge: $1"
}

destdir=''
stamp=''
while [[ $# -gt 0 ]]; do
    case $1 in
        --destdir | --backup)
            [[ $# -ge 2 ]] || usage
            if [[ $1 == --destdir ]]; then
                destdir=$2
            else
                stamp=$2
            fi
            shift 2
            ;;
        *)
            usage
            ;;
    esac
done
if [[ -n $destdir ]]; then
    [[ $destdir == /* ]] || die "--destdir must be an absolute path: $destdir" 2
    destdir=${destdir%/}
fi
stamp_re='^[0-9]{8}T[0-9]{6}\.[0-9]{9}$'
[[ -z $stamp || $stamp =~ $stamp_re ]] || die "invalid backup stamp: $stamp" 2
[[ $(id -u) -eq 0 ]] || die "must run as root"

# The configuration comes from the env file only, as for the service.
while IFS= read -r var; do
    unset "$var"
done < <(compgen -e | grep '^MYTUNNEL_' || true)

bin_path=$destdir/usr/local/bin/mytunneld
env_file=$destdir/etc/mytunneld/mytunneld.env
backup_dir=$destdir/var/backups/mytunneld

# shellcheck source=scripts/lib-edge.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-edge.sh"

db_path=$(env_value MYTUNNEL_DB_PATH "$env_file") || db_path=/var/lib/mytunneld/leases.db
db_name=$(basename "$db_path")

# --- which backup ------------------------------------------------------------------------
if [[ -z $stamp ]]; then
    [[ -d $backup_dir ]] || die "no backups in $backup_dir"
    while IFS= read -r name; do
        candidate=${name#mytunneld.}
        [[ $candidate =~ $stamp_re ]] && stamp=$candidate
    done < <(LC_ALL=C find "$backup_dir" -maxdepth 1 -type f -name 'mytunneld.*' -printf '%f\n' | LC_ALL=C sort)
    [[ -n $stamp ]] || die "no backups in $backup_dir"
fi
backup_bin=$backup_dir/mytunneld.$stamp
[[ -f $backup_bin ]] || die "no backup $backup_bin"

# --- stop the service while files change ----------------------------------------------------
restart_service=0
if [[ -z $destdir && -d /run/systemd/system ]] && systemctl is-active --quiet mytunneld; then
    systemctl stop mytunneld
    restart_service=1
    say "stopped mytunneld"
fi

# --- binary ------------------------------------------------------------------------------
tmp=$(mktemp "$(dirname "$bin_path")/.mytunneld.XXXXXX")
trap 'rm -f "$tmp"' EXIT
install -m 0755 -o root -g root "$backup_bin" "$tmp"
mv -f "$tmp" "$bin_path"
say "restored $bin_path from $backup_bin"

# --- database ----------------------------------------------------------------------------
if [[ -f $backup_dir/$db_name.$stamp ]]; then
    now=$(date -u +%Y%m%dT%H%M%S.%N)
    db_dir=$(dirname "$db_path")
    for suffix in '' -wal -shm; do
        if [[ -f $db_path$suffix ]]; then
            cp -p "$db_path$suffix" "$backup_dir/$db_name$suffix.$now.replaced"
        fi
    done
    # A WAL that does not belong to the restored file must never be applied to it.
    rm -f "$db_path-wal" "$db_path-shm"
    for suffix in -wal -shm ''; do
        src=$backup_dir/$db_name$suffix.$stamp
        [[ -f $src ]] || continue
        tmp=$(mktemp "$db_dir/.$db_name$suffix.XXXXXX")
        cp -p "$src" "$tmp"
        mv -f "$tmp" "$db_path$suffix"
    done
    say "restored $db_path from $backup_dir/$db_name.$stamp (replaced files kept as *.$now.replaced)"
else
    say "no database in backup $stamp: $db_path left as it is"
fi

if [[ $restart_service -eq 1 ]]; then
    systemctl start mytunneld
    say "started mytunneld"
fi

# --- health ------------------------------------------------------------------------------
version=$("$bin_path" --version 2>/dev/null || echo 'mytunneld (version unknown)')
rc=0
health=$(timeout --kill-after=5 30 "$bin_path" --env-file "$env_file" ctl health 2>&1) || rc=$?
if [[ $rc -eq 0 && $health == *'"healthy":true'* ]]; then
    say "rolled back to $version (backup $stamp): healthy"
    exit 0
fi
echo "rollback-edge: rolled back to $version (backup $stamp) but the edge is unhealthy (exit $rc): ${health:0:400}" >&2
echo "rollback-edge: hint: run check-edge.sh${destdir:+ --destdir $destdir}" >&2
exit 1

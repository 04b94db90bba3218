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
# An edge whose mytunneld is the Debian package's (/usr/bin/mytunneld, no
# /usr/local/bin/mytunneld) is refused (exit 2): install the older package instead.
#
# Exit codes: 0 restored and healthy, 1 restored but unhealthy or failure, 2 usage error.
set -euo pipefail

readonly SCRIPT_NAME=rollback-edge
# shellcheck source=scripts/lib-edge.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-edge.sh"

usage() {
    echo "usage: $0 [--destdir DIR] [--backup STAMP]" >&2
    exit 2
}

main() {
    local destdir='' stamp=''
    local stamp_re='^[0-9]{8}T[0-9]{6}\.[0-9]{9}$'
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
    [[ -z $stamp || $stamp =~ $stamp_re ]] || die "invalid backup stamp: $stamp" 2
    [[ $(id -u) -eq 0 ]] || die "must run as root"

    # The configuration comes from the env file only, as for the service.
    clear_mytunnel_environment

    local bin_path env_file backup_dir name candidate backup_bin db_path db_name
    bin_path=$(installed_binary "$destdir")
    if [[ $bin_path == "$destdir$PACKAGED_BINARY" ]]; then
        die "mytunneld here comes from the Debian package ($bin_path): roll back by installing the older .deb (apt-get install ./mytunneld_VERSION_ARCH.deb --allow-downgrades)" 2
    fi
    env_file=$destdir/etc/mytunneld/mytunneld.env
    backup_dir=$destdir/var/backups/mytunneld

    # --- which backup --------------------------------------------------------------------
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

    # The database as the installed binary resolves it, else as the backup does (the one
    # being rolled back from may be broken, the backup older than `mytunneld config`); when
    # neither answers, the env file's own line (edge_settings' fallback).
    edge_settings "$env_file" "$bin_path" "$backup_bin" || true
    db_path=$(edge_path MYTUNNEL_DB_PATH "$destdir")
    db_name=$(basename "$db_path")

    # --- stop the service while files change ---------------------------------------------
    stop_service_for_change "$destdir"

    # --- binary --------------------------------------------------------------------------
    install_binary "$backup_bin" "$bin_path"
    say "restored $bin_path from $backup_bin"

    # --- database ------------------------------------------------------------------------
    local now db_dir suffix src tmp
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

    # --- health --------------------------------------------------------------------------
    local version
    version=$(binary_version "$bin_path")
    if edge_health "$bin_path" "$env_file"; then
        say "rolled back to $version (backup $stamp): healthy"
        exit 0
    fi
    echo "rollback-edge: rolled back to $version (backup $stamp) but the edge is unhealthy (exit $health_rc): ${health_text:0:400}" >&2
    echo "rollback-edge: hint: run check-edge.sh${destdir:+ --destdir $destdir}" >&2
    exit 1
}

main "$@"

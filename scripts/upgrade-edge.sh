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
# An edge whose mytunneld is the Debian package's (/usr/bin/mytunneld, no
# /usr/local/bin/mytunneld) is refused (exit 2): apt upgrades it, restarting the service.
#
# Exit codes: 0 upgraded and healthy, 1 failed (rolled back), 2 usage error.
set -euo pipefail

readonly SCRIPT_NAME=upgrade-edge
# shellcheck source=scripts/lib-edge.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-edge.sh"

usage() {
    echo "usage: $0 NEW_BINARY [--destdir DIR] [--force]" >&2
    exit 2
}

# health: runs `ctl health` with the installed binary; sets health_output; status 0 when
# healthy.
health_output=''
health() {
    edge_health "$bin_path" "$env_file" && return 0
    health_output="exit $health_rc: ${health_text:0:400}"
    return 1
}

main() {
    local new_binary='' destdir='' force=0
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
    clear_mytunnel_environment

    local script_dir backup_dir db_path db_name old_version stamp suffix
    script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    bin_path=$(installed_binary "$destdir")
    if [[ $bin_path == "$destdir$PACKAGED_BINARY" ]]; then
        die "mytunneld here comes from the Debian package ($bin_path): upgrade with apt-get install ./mytunneld_VERSION_ARCH.deb (it restarts the service), roll back by installing the older .deb" 2
    fi
    env_file=$destdir/etc/mytunneld/mytunneld.env
    backup_dir=$destdir/var/backups/mytunneld
    [[ -f $bin_path ]] || die "no mytunneld installed at $bin_path: run install-edge.sh first"

    # The database the installed binary uses, else the one the new binary would (the
    # installed one may be older than `mytunneld config`); when neither answers, the env
    # file's own line (edge_settings' fallback).
    edge_settings "$env_file" "$bin_path" "$new_binary" || true
    db_path=$(edge_path MYTUNNEL_DB_PATH "$destdir")
    db_name=$(basename "$db_path")
    old_version=$(binary_version "$bin_path")

    if [[ $force -eq 0 ]] && ! health; then
        die "the installed edge is unhealthy, not upgrading ($health_output); fix it first (check-edge.sh) or pass --force"
    fi

    # --- stop, back up -------------------------------------------------------------------
    stop_service_for_change "$destdir"

    stamp=$(date -u +%Y%m%dT%H%M%S.%N)
    install -d -m 0700 -o root -g root "$backup_dir"
    cp -p "$bin_path" "$backup_dir/mytunneld.$stamp"
    for suffix in '' -wal -shm; do
        if [[ -f $db_path$suffix ]]; then
            cp -p "$db_path$suffix" "$backup_dir/$db_name$suffix.$stamp"
        fi
    done
    say "backed up $old_version and $db_path to $backup_dir (backup $stamp)"

    # --- install -------------------------------------------------------------------------
    install_binary "$new_binary" "$bin_path"
    say "installed $new_binary as $bin_path"
    if [[ $restart_service -eq 1 ]]; then
        systemctl start mytunneld || say "mytunneld did not start"
    fi

    # --- check, roll back on failure -----------------------------------------------------
    local healthy=0 new_version reason rollback
    if health; then
        if [[ $restart_service -eq 1 ]] && ! systemctl is-active --quiet mytunneld; then
            health_output='the mytunneld service did not stay running'
        else
            healthy=1
        fi
    fi
    if [[ $healthy -eq 1 ]]; then
        new_version=$(binary_version "$bin_path")
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
}

main "$@"

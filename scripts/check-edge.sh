#!/usr/bin/env bash
# Checks an installed edge: file modes, tunnel keys, sshd's MaxStartups, a loopback Caddy
# admin URL, tunnel users' sockets outside their directory, and the service's health.
#
#   check-edge.sh [--destdir DIR] [--group NAME] [--user NAME] [--proxy-group NAME]
#                 [--sshd-config FILE] [--caddyfile FILE]
#
# GROUP (--group) is the tunnel group (default mytunnel), USER (--user) the service user
# that runs `mytunneld serve` (default mytunneld), as given to install-edge.sh.
#
# Prints one line per check, `ok <check> <detail>` or `fail <check> <detail>` followed by
# `  hint: …`, then a summary line. Checks:
#   binary     the installed mytunneld (DIR/usr/local/bin/mytunneld, else the Debian
#              package's DIR/usr/bin/mytunneld) is mode 0755, owned by root
#   env-file   DIR/etc/mytunneld/mytunneld.env is 0600 or 0640 (never world-readable)
#   state-dir  the database's directory (that of MYTUNNEL_DB_PATH, normally
#              DIR/var/lib/mytunneld) is a directory owned by the service user, not
#              writable by group or others, holding nothing but the database's regular
#              files <db>, <db>-wal, <db>-shm, <db>-journal (any other entry, a socket
#              named <db>-journal above all, is named)
#   database   MYTUNNEL_DB_PATH and its -wal/-shm/-journal, when present, are 0600 or
#              0660 and owned by the service user
#   keys-dir   MYTUNNEL_KEYS_DIR, when set, is a directory of root:root, not writable by
#              group or others (sshd's AuthorizedKeysCommand trusts what it holds)
#   tunnel-keys  every key of a GROUP member (but USER) carries `pty` and a `command=`
#              (the gate): what `mytunneld authorized-keys` prints for each file of
#              MYTUNNEL_KEYS_DIR when it is set, else each member's ~/.ssh/authorized_keys.
#              Clients hold their session on a terminal (`ssh -tt`, so ssh and sshd set
#              TCP_NODELAY): on a key without `pty` that fails, and clients fall back to a
#              connection on which small responses wait for delayed ACKs. A key without
#              `command=` would give its user a shell
#   sockets    MYTUNNEL_SOCKET_DIR (default /var/lib/mytunnel-sockets, where serve binds
#              control.sock) is 0755 USER:GROUP, its hosts/ is 0755 USER:GROUP, owners/ is
#              0755 root:root, and each owners/<user> is 2750 <user>:PROXY (default caddy)
#   stray-sockets  no member of GROUP holds a socket file outside DIR/…/owners/<user>: bound
#              sockets anywhere (/proc/net/unix), and socket files in /tmp, /var/tmp,
#              /dev/shm and the users' home directories (a tunnel user can bind a socket
#              wherever it may write; each one takes an inode of that filesystem)
#   sshd       `sshd -T -f FILE` (--sshd-config, default DIR/etc/ssh/sshd_config) reports a
#              maxstartups whose START and FULL are at least those of the MaxStartups
#              install-edge.sh wrote in DIR/etc/ssh/sshd_config.d/mytunnel.conf (256:30:1024
#              when it wrote none): sshd keeps the last MaxStartups it reads, so a later
#              file or line can shrink it, and a reconnect storm then loses logins
#   admin-url  mytunneld takes MYTUNNEL_CADDY_ADMIN_URL: http://localhost, 127.x.y.z or
#              [::1] (optional :PORT), or a unix socket (unix//PATH, unix:///PATH)
#   health     `mytunneld ctl health` answers healthy (it asks `mytunneld serve`, which
#              must be running)
#   tls-ask    on-demand TLS: with MYTUNNEL_TLS_ASK_LISTEN set, serve answers Caddy's ask
#              there (`GET /ask?domain=…` for a host no lease holds: 404), and Caddy's
#              Caddyfile (--caddyfile, default DIR/etc/caddy/Caddyfile), when it has an
#              `ask` line, asks exactly there. Unset, it passes unless the Caddyfile asks
#              somewhere: then nobody answers Caddy, and no tunnel host gets a certificate
#
# The settings (the database path, the keys and socket directories, the admin URL) are
# what the installed binary resolves from the env file: `mytunneld --env-file FILE config
# --json`, read with python3. When it cannot answer, paths come from the env file's own
# lines and mytunneld's defaults, and admin-url fails: nothing else can tell what
# mytunneld would accept.
#
# Exit codes: 0 all checks pass, 1 a check failed, 2 usage error.
set -euo pipefail

readonly SCRIPT_NAME=check-edge
# shellcheck source=scripts/lib-edge.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-edge.sh"

usage() {
    echo "usage: $0 [--destdir DIR] [--group NAME] [--user NAME] [--proxy-group NAME] [--sshd-config FILE] [--caddyfile FILE]" >&2
    exit 2
}

failed=()
checks=0

pass() {
    checks=$((checks + 1))
    echo "ok $1 $2"
}

fail() {
    checks=$((checks + 1))
    failed+=("$1")
    echo "fail $1 $2"
    echo "  hint: $3"
}

# mode_of PATH: the permission bits as 4 octal digits (e.g. 0755, 2770).
mode_of() {
    printf '%04o' "$((8#$(stat -c '%a' "$1")))"
}

check_binary() {
    local mode owner
    if [[ ! -f $bin_path ]]; then
        fail binary "$bin_path is missing" "run install-edge.sh"
        return
    fi
    mode=$(mode_of "$bin_path")
    owner=$(stat -c '%U' "$bin_path")
    if [[ $mode == 0755 && $owner == root ]]; then
        pass binary "$bin_path mode $mode owner $owner"
    else
        fail binary "$bin_path mode $mode owner $owner (want 0755, root)" \
            "chown root:root $bin_path && chmod 0755 $bin_path"
    fi
}

check_env_file() {
    local mode
    if [[ ! -f $env_file ]]; then
        fail env-file "$env_file is missing" "run install-edge.sh, then set MYTUNNEL_BASE_DOMAIN in it"
        return
    fi
    mode=$(mode_of "$env_file")
    if [[ $mode == 0600 || $mode == 0640 ]]; then
        pass env-file "$env_file mode $mode group $(stat -c '%G' "$env_file")"
    else
        fail env-file "$env_file mode $mode (want 0600 or 0640, never world-readable)" \
            "chmod 0640 $env_file && chgrp $group $env_file"
    fi
}

# Only serve (the service user) opens the database: nobody else may add, replace or bind
# anything there (a socket named <db>-journal locks every tenant out). Sets db_dir_visible.
check_state_dir() {
    local mode owner entry name
    local problems=() strays=()
    db_dir_visible=0
    if [[ -L $db_dir || ! -d $db_dir ]]; then
        fail state-dir "$db_dir is missing or not a directory" "run install-edge.sh"
        return
    fi
    if [[ ! -r $db_dir || ! -x $db_dir ]]; then
        fail state-dir "cannot look into $db_dir as $(id -un)" "run check-edge.sh as root"
        return
    fi
    db_dir_visible=1
    mode=$(mode_of "$db_dir")
    owner=$(stat -c '%U:%G' "$db_dir")
    if [[ ${owner%%:*} != "$user" || $((8#$mode & 8#022)) -ne 0 ]]; then
        problems+=("$db_dir is $mode $owner (want owner $user, not writable by group or others)")
    fi
    while IFS= read -r -d '' entry; do
        name=${entry##*/}
        if [[ -f $entry && ! -L $entry ]]; then
            case $name in
                "$db_name" | "$db_name-wal" | "$db_name-shm" | "$db_name-journal") continue ;;
            esac
        fi
        strays+=("$(printable "$entry") ($(kind_of "$entry"))")
    done < <(find "$db_dir" -mindepth 1 -maxdepth 1 -print0 2>/dev/null)
    if [[ ${#strays[@]} -gt 0 ]]; then
        problems+=("$db_dir holds what is not the database's: ${strays[*]}")
    fi
    if [[ ${#problems[@]} -eq 0 ]]; then
        pass state-dir "$db_dir mode $mode owner $owner, only the database's files"
    else
        fail state-dir "${problems[*]}" \
            "rerun install-edge.sh: it makes $db_dir 0700 $user:$group and removes what is not a regular file; move other files elsewhere"
    fi
}

check_database() {
    local file mode owner
    local bad=() present=()
    for file in "$db_path" "$db_path-wal" "$db_path-shm" "$db_path-journal"; do
        [[ -f $file && ! -L $file ]] || continue
        mode=$(mode_of "$file")
        owner=$(stat -c '%U' "$file")
        present+=("$(printable "$(basename "$file")") $mode $owner")
        [[ ($mode == 0600 || $mode == 0660) && $owner == "$user" ]] || bad+=("$(printable "$file")")
    done
    if [[ $db_dir_visible -eq 0 ]]; then
        fail database "cannot see $db_path" "see state-dir above"
    elif [[ ${#present[@]} -eq 0 ]]; then
        pass database "$db_path not created yet (the service creates it 0600)"
    elif [[ ${#bad[@]} -eq 0 ]]; then
        pass database "$db_path: ${present[*]}"
    else
        fail database "${bad[*]} not 0600 or 0660 of $user (${present[*]})" \
            "rerun install-edge.sh (it makes them 0600 $user:$group)"
    fi
}

# Only when the env file sets MYTUNNEL_KEYS_DIR (an install from before route modes has none).
check_keys_dir() {
    local keys_dir mode owner
    [[ ${setting_source[MYTUNNEL_KEYS_DIR]:-default} != default ]] || return 0
    keys_dir=${setting_value[MYTUNNEL_KEYS_DIR]}
    if [[ ! -d $keys_dir ]]; then
        fail keys-dir "$keys_dir is missing" "run install-edge.sh (it creates it 0755 root:root)"
        return
    fi
    mode=$(mode_of "$keys_dir")
    owner=$(stat -c '%U:%G' "$keys_dir")
    if [[ $owner == root:root && $((8#$mode & 8#022)) -eq 0 ]]; then
        pass keys-dir "$keys_dir mode $mode owner $owner"
    else
        fail keys-dir "$keys_dir mode $mode owner $owner (want root:root, not group/other-writable)" \
            "chown root:root $keys_dir && chmod 0755 $keys_dir"
    fi
}

# keys_without_pty: reads authorized_keys lines on stdin and prints the number of each key
# line (not blank, not a comment) whose options lack `pty` or a `command=`. Quoted values
# are emptied first: a command may hold commas and blanks.
keys_without_pty() {
    awk '
        /^[[:space:]]*(#|$)/ { next }
        {
            line = $0
            gsub(/"[^"]*"/, "\"\"", line)
            sub(/^[[:space:]]+/, "", line)
            split(line, words, /[[:space:]]+/)
            options = tolower(words[1])
            if (options ~ /^(ssh-|ecdsa-|sk-)/) options = ""
            n = split(options, opts, ",")
            pty = 0
            command = 0
            for (i = 1; i <= n; i++) {
                if (opts[i] == "pty") pty = 1
                if (opts[i] ~ /^command=/) command = 1
            }
            if (!pty || !command) print NR
        }'
}

# Tunnel keys get a terminal and the gate. With MYTUNNEL_KEYS_DIR, sshd reads them from the
# installed binary (an older one prints no `pty`); else from each member's ~/.ssh.
check_tunnel_keys() {
    local members member file text line keys=0 users=0 from hint
    local bad=()
    local from_dir=0
    [[ ${setting_source[MYTUNNEL_KEYS_DIR]:-default} != default ]] && from_dir=1
    members=$(getent group "$group" | cut -d: -f4 | tr ',' ' ' || true)
    for member in $members; do
        [[ $member == "$user" ]] && continue
        if [[ $from_dir -eq 1 ]]; then
            file=${setting_value[MYTUNNEL_KEYS_DIR]}/$member
            [[ -f $file && ! -L $file ]] || continue
            if ! text=$("$bin_path" --env-file "$env_file" authorized-keys "$member" 2>&1); then
                bad+=("$member:$(printable "${text:0:200}")")
                continue
            fi
        else
            file=$(getent passwd "$member" | cut -d: -f6)/.ssh/authorized_keys
            # A regular file only: never follow a tenant's link or block on its FIFO.
            [[ -f $file && ! -L $file ]] || continue
            text=$(head -n 10000 -- "$file" 2>/dev/null) || continue
        fi
        users=$((users + 1))
        keys=$((keys + $(grep -cvE '^[[:space:]]*(#|$)' <<<"$text" || true)))
        while IFS= read -r line; do
            bad+=("$member:$line")
        done < <(keys_without_pty <<<"$text")
    done
    if [[ $from_dir -eq 1 ]]; then
        from="mytunneld authorized-keys"
        hint="install the current mytunneld (upgrade-edge.sh): it prints every key with pty"
    else
        from="their ~/.ssh/authorized_keys"
        hint="rerun install-edge-ssh-key.sh USER KEYFILE for each: it writes restrict,port-forwarding,pty,command=…"
    fi
    if [[ ${#bad[@]} -eq 0 ]]; then
        pass tunnel-keys "$keys key(s) of $users $group member(s) carry pty and a command ($from)"
    else
        fail tunnel-keys "${#bad[@]} key(s) without pty or a command ($from, user:line): ${bad[*]:0:5}; clients get no terminal with them, so no TCP_NODELAY" \
            "$hint"
    fi
}

# want PATH MODE OWNER GROUP: adds to the caller's problems when PATH is not a directory of
# that mode, owner and group.
want() {
    local path=$1 mode=$2 owner=$3 grp=$4 got
    if [[ -L $path || ! -d $path ]]; then
        problems+=("$path is not a directory")
        return
    fi
    got="$(mode_of "$path") $(stat -c '%U %G' "$path")"
    if [[ $got != "$mode $owner $grp" ]]; then
        problems+=("$path is $got (want $mode $owner $grp)")
    fi
}

# serve binds control.sock in the socket directory; every lease binds a socket in
# owners/<user> (both modes).
check_sockets() {
    local dir summary
    local problems=()
    local owners=0
    want "$socket_dir" 0755 "$user" "$group"
    want "$socket_dir/hosts" 0755 "$user" "$group"
    want "$socket_dir/owners" 0755 root root
    if [[ -d $socket_dir/owners && ! -L $socket_dir/owners ]]; then
        for dir in "$socket_dir"/owners/*; do
            [[ -e $dir || -L $dir ]] || continue
            owners=$((owners + 1))
            want "$dir" 2750 "$(basename "$dir")" "$proxy_group"
        done
    fi
    summary="$socket_dir 0755 $user: hosts 0755, owners 0755 root, $owners owner directories 2750 <user>:$proxy_group"
    if [[ ${#problems[@]} -eq 0 ]]; then
        pass sockets "$summary"
    else
        fail sockets "${problems[*]}" \
            "rerun install-edge.sh for the layout, install-edge-ssh-key.sh USER KEY --socket-dir $socket_dir --proxy-group $proxy_group for an owner directory"
    fi
}

# outside PATH OWNER: whether PATH is not in OWNER's own socket directory.
outside() {
    local dir
    dir=$(dirname -- "$1")
    [[ $dir != "$socket_dir/owners/$2" ]]
}

# A tunnel user may bind a unix socket with `ssh -R PATH:…` wherever it may write; serve
# sweeps only owners/<user>. Report what lies elsewhere (docs/operations.md says what to do).
check_stray_sockets() {
    local members member home path owner
    local stray=() candidates=() homes=()
    local -A is_member=() seen=()
    members=$(getent group "$group" | cut -d: -f4 | tr ',' ' ' || true)
    if [[ -n $members ]]; then
        for member in $members; do
            is_member[$member]=1
        done
        # The service user is in the group too; its sockets (control.sock) are the edge's own.
        unset "is_member[$user]"
        # Bound sockets anywhere: the path column of /proc/net/unix.
        while IFS= read -r path; do
            candidates+=("$path")
        done < <(awk 'NR > 1 && $8 ~ /^\// { print $8 }' /proc/net/unix 2>/dev/null | sort -u | head -n 100000)
        # Socket files nothing holds, in the places every user may write, and the homes.
        for member in $members; do
            home=$(getent passwd "$member" | cut -d: -f6)
            [[ -n $home && -d $home && $home != / ]] && homes+=("$home")
        done
        while IFS= read -r path; do
            candidates+=("$path")
        done < <(find /tmp /var/tmp /dev/shm "${homes[@]}" -xdev -maxdepth 4 -type s 2>/dev/null | head -n 100000)
        for path in "${candidates[@]}"; do
            [[ -n ${seen[$path]:-} ]] && continue
            seen[$path]=1
            [[ -S $path ]] || continue
            owner=$(stat -c '%U' -- "$path" 2>/dev/null) || continue
            if [[ -n ${is_member[$owner]:-} ]] && outside "$path" "$owner"; then
                stray+=("$owner:$(printable "$path")")
            fi
        done
    fi
    if [[ ${#stray[@]} -eq 0 ]]; then
        pass stray-sockets "no socket of a $group member outside its owners/<user> directory"
    else
        fail stray-sockets "${#stray[@]} socket(s) of $group members outside their directory: ${stray[*]:0:5}" \
            "remove them (rm); keep tunnel users from writing on the database's filesystem (docs/operations.md, hardening)"
    fi
}

# When sshd restarts every tunnel reconnects at once; with fewer handshakes allowed at once
# than install-edge.sh sized, sshd drops logins (clients see kex_exchange_identification).
check_sshd() {
    local dropin=$destdir/etc/ssh/sshd_config.d/mytunnel.conf
    local want=$DEFAULT_MAX_STARTUPS
    local want_from="install-edge.sh's default"
    local set_in_dropin sshd_bin wanted effective got got_parts want_start want_full got_start got_full
    if [[ -f $dropin ]]; then
        set_in_dropin=$(awk 'tolower($1) == "maxstartups" { value = $2 } END { print value }' "$dropin")
        if [[ -n $set_in_dropin ]]; then
            want=$set_in_dropin
            want_from=$dropin
        fi
    fi
    sshd_bin=/usr/sbin/sshd
    [[ -x $sshd_bin ]] || sshd_bin=$(command -v sshd || echo /usr/sbin/sshd)
    if ! wanted=$(parse_max_startups "$want"); then
        fail sshd "MaxStartups $(printable "$want") in $want_from is not START:RATE:FULL" \
            "rerun install-edge.sh (--max-startups START:RATE:FULL)"
    elif [[ ! -x $sshd_bin ]]; then
        fail sshd "no sshd binary to ask (sshd -T)" "install openssh-server"
    elif ! effective=$("$sshd_bin" -T -f "$sshd_config" 2>&1); then
        fail sshd "sshd -T -f $sshd_config failed: $(printable "$(tail -n 3 <<<"$effective")")" \
            "run check-edge.sh as root; fix what \`sshd -t -f $sshd_config\` reports"
    else
        got=$(awk '$1 == "maxstartups" { print $2 }' <<<"$effective")
        read -r want_start _ want_full <<<"$wanted"
        if got_parts=$(parse_max_startups "$got"); then
            read -r got_start _ got_full <<<"$got_parts"
        else
            got_start=0
            got_full=0
        fi
        if ((got_start >= want_start && got_full >= want_full)); then
            pass sshd "sshd -T: maxstartups $got (want at least $want, from $want_from)"
        else
            fail sshd "sshd -T: maxstartups ${got:-unset}, less than $want (from $want_from): a reconnect storm after an sshd restart loses logins" \
                "sshd keeps the last MaxStartups it reads: remove the one after $dropin (grep -ri maxstartups /etc/ssh), then systemctl reload ssh"
        fi
    fi
}

# The admin API can rewrite every route: mytunneld refuses any address that is not
# loopback, and check-edge asks it rather than parse the URL again.
check_admin_url() {
    local admin_url=${setting_value[MYTUNNEL_CADDY_ADMIN_URL]}
    local hint="the admin API can rewrite every route: use http://127.0.0.1:2019 or unix//run/caddy/admin.sock"
    if [[ $settings_known -eq 0 ]]; then
        fail admin-url "cannot ask mytunneld whether MYTUNNEL_CADDY_ADMIN_URL=$(printable "${admin_url:0:200}") is loopback: $settings_problem" \
            "see the binary and health checks; check-edge reads \`mytunneld config --json\` with python3"
    elif [[ -z ${setting_error[MYTUNNEL_CADDY_ADMIN_URL]} ]]; then
        pass admin-url "MYTUNNEL_CADDY_ADMIN_URL=$admin_url is loopback"
    else
        fail admin-url "MYTUNNEL_CADDY_ADMIN_URL=$(printable "${admin_url:0:200}") is not loopback: $(printable "${setting_error[MYTUNNEL_CADDY_ADMIN_URL]:0:300}")" \
            "$hint"
    fi
}

check_health() {
    if [[ ! -x $bin_path ]]; then
        fail health "no executable $bin_path" "run install-edge.sh"
    elif edge_health "$bin_path" "$env_file"; then
        pass health "mytunneld ctl health: healthy"
    else
        fail health "mytunneld ctl health exit $health_rc: ${health_text:0:400}" \
            "is mytunneld serve running (systemctl status mytunneld)? is Caddy running with its admin API at the configured URL?"
    fi
}

# caddyfile_ask FILE: the URL FILE's `ask` line names (on_demand_tls), if it has one.
caddyfile_ask() {
    [[ -r $1 ]] || return 0
    sed -n 's/^[[:space:]]*ask[[:space:]]\{1,\}\([^[:space:]#]\{1,\}\).*/\1/p' "$1" | head -n 1
}

# ask_answer URL: the status serve's ask at URL gives a host no lease holds, or why none.
ask_answer() {
    python3 - "$1?domain=check-edge.invalid" <<'PY'
import sys
import urllib.error
import urllib.request

try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as answer:
        print(answer.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception as e:  # refused, timed out: no HTTP answer at all
    print("no answer (%s)" % e)
PY
}

# On-demand TLS: Caddy asks serve before it gets a certificate for a host.
check_tls_ask() {
    local listen=${setting_value[MYTUNNEL_TLS_ASK_LISTEN]:-} error=${setting_error[MYTUNNEL_TLS_ASK_LISTEN]:-}
    local asked want answer
    asked=$(caddyfile_ask "$caddyfile")
    if [[ -n $error ]]; then
        fail tls-ask "MYTUNNEL_TLS_ASK_LISTEN=$(printable "${listen:0:200}") is refused: $(printable "${error:0:300}")" \
            "give a loopback IP:PORT, e.g. 127.0.0.1:2020, in $env_file"
        return
    fi
    if [[ -z $listen ]]; then
        if [[ -n $asked ]]; then
            fail tls-ask "$caddyfile asks $(printable "$asked") before each on-demand certificate, but MYTUNNEL_TLS_ASK_LISTEN is not set: nobody answers, so no tunnel host gets a certificate" \
                "set MYTUNNEL_TLS_ASK_LISTEN to the ask line's IP:PORT in $env_file and restart mytunneld (install-edge.sh --tls-mode on-demand does both)"
        else
            pass tls-ask "off: MYTUNNEL_TLS_ASK_LISTEN is not set and $caddyfile asks nowhere"
        fi
        return
    fi
    want=http://$listen/ask
    if [[ -n $asked && $asked != "$want" ]]; then
        fail tls-ask "$caddyfile asks $(printable "$asked"), but serve answers at $want (MYTUNNEL_TLS_ASK_LISTEN)" \
            "make them agree: install-edge.sh --tls-mode on-demand rewrites the Caddyfile from the env file"
        return
    fi
    answer=$(ask_answer "$want")
    if [[ $answer == 404 ]]; then
        pass tls-ask "serve answers Caddy's ask at $want${asked:+ (the Caddyfile asks there)}"
    else
        fail tls-ask "serve's ask at $want answered $(printable "${answer:0:300}"), not 404, for a host no lease holds" \
            "is mytunneld serve running (systemctl status mytunneld), and listening there (journalctl -u mytunneld)?"
    fi
}

main() {
    destdir=''
    group=mytunnel
    user=mytunneld
    proxy_group=caddy
    sshd_config=''
    caddyfile=''
    while [[ $# -gt 0 ]]; do
        case $1 in
            --destdir | --group | --user | --proxy-group | --sshd-config | --caddyfile)
                [[ $# -ge 2 ]] || usage
                case $1 in
                    --caddyfile) caddyfile=$2 ;;
                    --destdir) destdir=$2 ;;
                    --group) group=$2 ;;
                    --user) user=$2 ;;
                    --proxy-group) proxy_group=$2 ;;
                    --sshd-config) sshd_config=$2 ;;
                esac
                shift 2
                ;;
            *)
                usage
                ;;
        esac
    done
    destdir=${destdir%/}
    sshd_config=${sshd_config:-$destdir/etc/ssh/sshd_config}
    caddyfile=${caddyfile:-$destdir/etc/caddy/Caddyfile}

    # The configuration comes from the env file only, as for the service.
    clear_mytunnel_environment

    bin_path=$(installed_binary "$destdir")
    env_file=$destdir/etc/mytunneld/mytunneld.env
    settings_known=1
    edge_settings "$env_file" "$bin_path" || settings_known=0
    db_path=$(edge_path MYTUNNEL_DB_PATH "$destdir")
    db_dir=$(dirname "$db_path")
    db_name=$(basename "$db_path")
    socket_dir=$(edge_path MYTUNNEL_SOCKET_DIR "$destdir")

    check_binary
    check_env_file
    check_state_dir
    check_database
    check_keys_dir
    check_tunnel_keys
    check_sockets
    check_stray_sockets
    check_sshd
    check_admin_url
    check_health
    check_tls_ask

    if [[ ${#failed[@]} -eq 0 ]]; then
        echo "check-edge: all $checks checks passed"
        exit 0
    fi
    echo "check-edge: ${#failed[@]} of $checks checks failed: ${failed[*]}"
    exit 1
}

main "$@"

#!/usr/bin/env bash
# Installs the mytunnel edge service: binary, group and service user, directories, env
# file, a hardened systemd unit and the sshd settings of the route mode.
#
#   install-edge.sh [--destdir DIR | --packaged] [--binary PATH] [--group NAME] [--user NAME]
#                   [--base-domain D] [--caddy-admin-url URL] [--no-systemd]
#                   [--route-mode static|routes] [--proxy-group NAME] [--socket-dir DIR]
#                   [--sshd-dropin] [--max-startups START:RATE:FULL] [TLS OPTIONS]
#   install-edge.sh --print-sshd-dropin [--destdir DIR] [--route-mode static|routes]
#                   [--group NAME] [--user NAME] [--proxy-group NAME]
#                   [--max-startups START:RATE:FULL]
#   install-edge.sh --print-unit [--packaged] [--group NAME] [--user NAME] [--socket-dir DIR]
#   install-edge.sh --print-caddyfile --tls-mode wildcard|on-demand --base-domain D
#                   [TLS OPTIONS] [--caddy-admin-url URL] [--route-mode static|routes]
#                   [--socket-dir DIR] [--destdir DIR]
#
# TLS OPTIONS (Caddy's Caddyfile; see "Caddy" below):
#   --tls-mode wildcard|on-demand   write the Caddyfile for this mode (none written without it)
#   --dns-provider NAME             wildcard with the acme issuer: the caddy-dns module (infomaniak)
#   --dns-token-env VAR             the variable holding its token (default NAME uppercased,
#                                   - as _, then _TOKEN: INFOMANIAK_TOKEN)
#   --tls-issuer acme|internal      acme (default), or Caddy's own local CA (a LAN or test edge)
#   --acme-ca URL                   another ACME directory (Let's Encrypt staging, a local ACME server)
#   --tls-ask-listen IP:PORT        on-demand: where mytunneld serve answers Caddy's ask
#                                   (default 127.0.0.1:2020; loopback only)
#   --caddy-http-port N             Caddy's HTTP port (default 80)
#   --caddy-https-port N            Caddy's HTTPS port (default 443)
#   --caddyfile PATH                default /etc/caddy/Caddyfile (under --destdir DIR)
#
# Installs, every path under DIR when --destdir is given:
#   /usr/local/bin/mytunneld                 0755  root:root   (not with --packaged)
#   /etc/mytunneld                           0750  root:GROUP
#   /etc/mytunneld/mytunneld.env             0640  root:GROUP  (created once, never overwritten)
#   /var/lib/mytunneld                       0700  USER:GROUP  (the lease database: only
#                                                               `mytunneld serve` opens it)
#   /etc/mytunneld/keys                      0755  root:root   (tunnel keys, one file per user)
#   /etc/systemd/system/mytunneld.service    0644  root:root   (with --packaged only when it
#                                                               differs from the package's)
#   /etc/ssh/sshd_config.d/mytunnel.conf     0644  root:root   (see "sshd" below)
#   SOCKETS                                  0755  USER:GROUP  (MYTUNNEL_SOCKET_DIR, default
#                                                               /var/lib/mytunnel-sockets: serve
#                                                               binds control.sock there, 0660,
#                                                               which every ctl asks)
#   SOCKETS/hosts                            0755  USER:GROUP  (host links, written by serve)
#   SOCKETS/owners                           0755  root:root   (install-edge-ssh-key.sh makes
#                                                               owners/<user>, user:PROXY 2750)
#   CADDYFILE                                0644  root:root   (only with --tls-mode; see "Caddy")
# The group (default mytunnel) and the service user (default mytunneld, a --system user
# without a login shell, member of the group) are created on this machine, also with
# --destdir. With --destdir the env file's paths and the sshd drop-in's keys command point
# inside DIR, so the installed binary works there (DIR is then an absolute path of
# [A-Za-z0-9/._-]: sshd splits the command at spaces and expands %). The unit keeps the
# paths of an install at /.
#
# --packaged: the Debian package `mytunneld` installed the binary (/usr/bin/mytunneld) and
# the unit (/lib/systemd/system/mytunneld.service); `mytunneld-setup` runs this script
# with it. Nothing is copied: the unit names /usr/bin/mytunneld, the drop-in's keys
# command too, and /etc/systemd/system/mytunneld.service is written only when --user,
# --group or --socket-dir make it differ from the package's unit (a local unit wins over
# the package's). Not with --destdir or --binary.
# --print-unit prints the unit for the given flags (with --packaged: the package's) and
# exits, changing nothing and needing no root.
#
# An edge installed before the control socket kept the database in /var/lib/mytunneld
# 2770 root:GROUP, written by the tunnel users' own ctl processes. A run migrates it in
# place without touching a lease: the directory becomes 0700 USER:GROUP first (tunnel
# users can no longer enter it), then every entry in it that is not a regular file (a
# socket, fifo, symlink, directory: a tunnel user could leave one named like the
# database's journal and lock every tenant out) is removed, and the database files
# (MYTUNNEL_DB_PATH, else /var/lib/mytunneld/leases.db, with -wal and -shm) become 0600
# USER:GROUP; their contents are never touched. Other regular files are left and named.
# A database path that is a symbolic link is refused (exit 1): move the file into place.
#
# Route mode (MYTUNNEL_ROUTE_MODE): a new env file gets --route-mode (default static) and
# MYTUNNEL_KEYS_DIR (and, in both modes, MYTUNNEL_SOCKET_DIR unless it is the default). An
# existing env file is never changed: its MYTUNNEL_ROUTE_MODE is used, and one without it
# means routes (installs from before route modes keep working). --proxy-group (default
# caddy) is the group of the proxy that connects to the tunnel sockets; it is checked here
# and given to install-edge-ssh-key.sh when users are enrolled.
# An existing env file is read as mytunneld reads it: `BINARY --env-file FILE config
# --json` (with python3), so a value the binary would refuse is never taken for another.
# (One exception to "never changed": --tls-mode on-demand appends MYTUNNEL_TLS_ASK_LISTEN
# to an env file without it, see "Caddy".)
#
# sshd: /etc/ssh/sshd_config.d/mytunnel.conf holds a `Match Group GROUP` block: tunnel keys
# come only from `mytunneld authorized-keys %u` (run as USER), which forces the gate on
# each key with the gate of the binary sshd ran (`/usr/local/bin/mytunneld authorized-keys
# %u`; with --packaged /usr/bin/mytunneld; with --destdir `DIR/usr/local/bin/mytunneld
# --env-file DIR/etc/mytunneld/mytunneld.env authorized-keys %u`, the install's own binary
# and env file); in both route modes tunnels bind unix sockets in their owner's directory and
# may not listen on any TCP port. It is written for a new env file, when it exists already, or
# with --sshd-dropin: on an older install it would disable the keys in users'
# ~/.ssh/authorized_keys, so move them first (install-edge-ssh-key.sh --keys-dir). sshd
# is not reloaded: check with `sshd -t`, then `systemctl reload ssh`.
# Before the Match block (a global keyword cannot go inside one), the drop-in sets
# `MaxStartups` (--max-startups, default 256:30:1024): how many connections may be in
# the handshake at once before sshd drops new ones (START), at what rate it starts
# dropping (RATE %), and where it drops them all (FULL). sshd's own default, 10:30:100,
# drops logins as soon as a dozen clients connect at once: when sshd restarts, every
# tunnel reconnects at the same moment, one SSH connection per client (two per tunnel
# with --no-ssh-mux: one per ctl call and its ssh -N -R). 256 lets a restart under 128 tunnels through
# untouched; above that sshd sheds some handshakes at random, which the client retries
# with jittered backoff, up to 1024 at once. FULL also bounds what unauthenticated
# connections can cost (each is two sshd processes, a few MB): lower both on a small
# machine. sshd keeps the last MaxStartups it reads: check-edge.sh fails when another
# file sets a smaller one.
# --print-sshd-dropin prints that drop-in for the given mode (default static) and exits,
# changing nothing and needing no root: to review it, or for test harnesses, which run
# sshd with exactly these settings.
#
# Caddy: with --tls-mode, CADDYFILE (--caddyfile, default /etc/caddy/Caddyfile) is written
# for Caddy's certificate for the tunnel hosts; without it no Caddyfile is touched (an
# edge with a hand-written one keeps it).
#   wildcard   one certificate for *.BASE_DOMAIN through the ACME DNS-01 challenge:
#              `tls { dns NAME {env.VAR} }` (--dns-provider, --dns-token-env). Needs a Caddy
#              built with that module (xcaddy build --with github.com/caddy-dns/NAME; Debian's
#              caddy has none) and VAR in Caddy's environment
#              (dns-bootstrap-infomaniak.sh --dropin writes INFOMANIAK_TOKEN).
#   on-demand  Debian's stock Caddy, any DNS provider: a certificate per tunnel host,
#              obtained at its first TLS handshake, only when Caddy's `ask`
#              (http://ADDR/ask?domain=HOST) answers 200. `mytunneld serve` answers it on
#              MYTUNNEL_TLS_ASK_LISTEN (--tls-ask-listen, default 127.0.0.1:2020), 200 only
#              for hosts of active leases; a host without a tunnel gets no certificate, so
#              its TLS handshake fails. With an ACME CA each certificate is logged in
#              Certificate Transparency: tunnel names become public there.
# --tls-issuer internal has Caddy's own local CA sign (a LAN or test edge, whose clients
# trust that CA; `skip_install_trust`): in wildcard mode it signs the wildcard directly, no
# DNS provider needed. --acme-ca URL sets Caddy's `acme_ca` (acme issuer only). The admin
# line is mytunneld's admin URL (http://127.0.0.1:2019 -> `admin 127.0.0.1:2019`; a unix
# socket as unix//PATH), refused unless loopback; --caddy-http-port/--caddy-https-port
# (1-65535) are written as `http_port`/`https_port` unless 80/443 (an edge behind NAT).
# The site block's comment says what a host without a tunnel gets in the route mode: in
# static mode 502 (serve's wildcard route in front of it dials the host link, which does
# not exist), in routes mode the block's own `respond "no tunnel here" 404`.
# An existing env file wins over the flags for the base domain, the admin URL and the ask
# address (what serve uses; a flag that differs is named and ignored). In on-demand mode a
# new env file gets MYTUNNEL_TLS_ASK_LISTEN; an existing one without it gets the line
# appended (and the service restarts to listen there).
# Written atomically; an existing file with other content is first copied to
# CADDYFILE.before-mytunnel.<UTC time> (never lost); the same content is "up to date".
# Checked with `caddy validate` (in a throwaway HOME) when caddy is on PATH: a failure
# stops the run before the file is replaced, except a missing DNS module (stock Caddy in
# wildcard mode), which is a warning: the file is written, Caddy not reloaded. Without
# --destdir and --no-systemd, when systemd runs and Caddy is active, a changed file is
# loaded with `systemctl reload caddy`, then `mytunneld ctl reconcile` puts back the routes
# serve added through the admin API (a reload drops them).
# --print-caddyfile prints the Caddyfile for the given flags (no env file is read) and
# exits, changing nothing and needing no root.
#
# --binary defaults to target/release/mytunneld of this repository, else `mytunneld` on
# PATH. systemd is reloaded and the service enabled and started only when systemd runs,
# without --destdir and without --no-systemd; a running service is restarted when this
# run changed its binary or its unit.
#
# Idempotent: a second run changes nothing. Exit codes: 0 done, 2 usage error, 1 failure.
set -euo pipefail

readonly SCRIPT_NAME=install-edge
# shellcheck source=scripts/lib-edge.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-edge.sh"

usage() {
    echo "usage: $0 [--destdir DIR | --packaged] [--binary PATH] [--group NAME] [--user NAME] [--base-domain D] [--caddy-admin-url URL] [--no-systemd] [--route-mode static|routes] [--proxy-group NAME] [--socket-dir DIR] [--sshd-dropin] [--max-startups START:RATE:FULL] [TLS OPTIONS]" >&2
    echo "       $0 --print-unit [--packaged] [--group NAME] [--user NAME] [--socket-dir DIR]" >&2
    echo "       $0 --print-sshd-dropin [--destdir DIR] [--route-mode static|routes] [--group NAME] [--user NAME] [--proxy-group NAME] [--max-startups START:RATE:FULL]" >&2
    echo "       $0 --print-caddyfile --tls-mode wildcard|on-demand --base-domain D [TLS OPTIONS] [--caddy-admin-url URL] [--route-mode static|routes] [--socket-dir DIR] [--destdir DIR]" >&2
    echo "TLS OPTIONS: --tls-mode wildcard|on-demand [--dns-provider NAME] [--dns-token-env VAR] [--tls-issuer acme|internal] [--acme-ca URL] [--tls-ask-listen IP:PORT] [--caddy-http-port N] [--caddy-https-port N] [--caddyfile PATH]" >&2
    exit 2
}

# parse_args ARGS...: sets the options' variables.
parse_args() {
    local value
    destdir=''
    binary=''
    group=mytunnel
    user=mytunneld
    base_domain=''
    admin_url='http://127.0.0.1:2019'
    systemd=1
    route_mode_flag=''
    proxy_group=caddy
    socket_dir_flag=''
    sshd_dropin_flag=0
    print_dropin=0
    max_startups=''
    admin_url_flag=''
    # The TLS options, each '' unless given (check_tls_args sets the defaults).
    tls_mode=''
    dns_provider=''
    dns_token_env=''
    tls_issuer=''
    acme_ca=''
    ask_listen_flag=''
    http_port=''
    https_port=''
    caddyfile_flag=''
    print_caddyfile=0
    packaged=0
    print_unit=0
    while [[ $# -gt 0 ]]; do
        case $1 in
            --destdir | --binary | --group | --user | --base-domain | --caddy-admin-url | \
                --route-mode | --proxy-group | --socket-dir | --max-startups | --tls-mode | \
                --dns-provider | --dns-token-env | --tls-issuer | --acme-ca | --tls-ask-listen | \
                --caddy-http-port | --caddy-https-port | --caddyfile)
                [[ $# -ge 2 ]] || usage
                value=$2
                case $1 in
                    --destdir) destdir=$value ;;
                    --binary) binary=$value ;;
                    --group) group=$value ;;
                    --user) user=$value ;;
                    --base-domain) base_domain=$value ;;
                    --caddy-admin-url) admin_url=$value admin_url_flag=$value ;;
                    --route-mode) route_mode_flag=$value ;;
                    --proxy-group) proxy_group=$value ;;
                    --socket-dir) socket_dir_flag=$value ;;
                    --max-startups) max_startups=$value ;;
                    --tls-mode) tls_mode=$value ;;
                    --dns-provider) dns_provider=$value ;;
                    --dns-token-env) dns_token_env=$value ;;
                    --tls-issuer) tls_issuer=$value ;;
                    --acme-ca) acme_ca=$value ;;
                    --tls-ask-listen) ask_listen_flag=$value ;;
                    --caddy-http-port) http_port=$value ;;
                    --caddy-https-port) https_port=$value ;;
                    --caddyfile) caddyfile_flag=$value ;;
                esac
                shift 2
                ;;
            -h | --help)
                print_help
                exit 0
                ;;
            --print-caddyfile)
                print_caddyfile=1
                shift
                ;;
            --print-unit)
                print_unit=1
                shift
                ;;
            --packaged)
                packaged=1
                shift
                ;;
            --no-systemd)
                systemd=0
                shift
                ;;
            --sshd-dropin)
                sshd_dropin_flag=1
                shift
                ;;
            --print-sshd-dropin)
                print_dropin=1
                shift
                ;;
            *)
                usage
                ;;
        esac
    done
}

# The socket directory is spliced into Caddy's dial address and every socket path (as
# mytunneld checks it): absolute, plain characters, no . or .. components.
check_socket_dir() {
    local dir=$1
    [[ $dir == /* && $dir =~ ^[A-Za-z0-9/._-]+$ ]] || return 1
    [[ /$dir/ != */./* && /$dir/ != */../* ]]
}

# check_args: refuses (exit 2) what cannot be installed.
check_args() {
    local name_re='^[a-z_][a-z0-9_-]{0,31}$' value
    [[ $group =~ $name_re ]] || die "invalid group name: $group" 2
    [[ $user =~ $name_re ]] || die "invalid user name: $user" 2
    [[ $proxy_group =~ $name_re ]] || die "invalid proxy group name: $proxy_group" 2
    case $route_mode_flag in
        '' | static | routes) ;;
        *) die "--route-mode must be static or routes: $route_mode_flag" 2 ;;
    esac
    if [[ -n $socket_dir_flag ]]; then
        socket_dir_flag=${socket_dir_flag%/}
        check_socket_dir "$socket_dir_flag" || die "invalid --socket-dir: $socket_dir_flag (an absolute path of [A-Za-z0-9/._-])" 2
    fi
    if [[ -n $destdir ]]; then
        [[ $destdir == /* ]] || die "--destdir must be an absolute path: $destdir" 2
        destdir=${destdir%/}
        # sshd's AuthorizedKeysCommand names the binary and env file inside it: sshd splits
        # that command at spaces and expands %.
        [[ $destdir =~ ^[A-Za-z0-9/._-]+$ ]] || die "--destdir must be an absolute path of [A-Za-z0-9/._-]: $destdir" 2
    fi
    [[ $((print_dropin + print_caddyfile + print_unit)) -le 1 ]] || die "--print-sshd-dropin, --print-caddyfile and --print-unit print one file each: give one" 2
    if [[ $packaged -eq 1 ]]; then
        [[ -z $destdir ]] || die "--packaged installs at / (the package's files are there): not with --destdir" 2
        [[ -z $binary ]] || die "--packaged uses the package's $PACKAGED_BINARY: not with --binary (install-edge.sh --binary PATH installs another one at /usr/local/bin)" 2
        bin_path=$PACKAGED_BINARY
    else
        bin_path=$destdir/usr/local/bin/mytunneld
    fi
    # Values written into the env file: one line each, no quotes to confuse the parser.
    for value in "$base_domain" "$admin_url"; do
        if [[ $value =~ [[:cntrl:]] || $value == *[\"\'\ ]* ]]; then
            die "--base-domain and --caddy-admin-url must not contain spaces, quotes or control characters" 2
        fi
    done
    [[ -z $base_domain || $base_domain =~ ^[A-Za-z0-9.-]+$ ]] || die "invalid base domain: $base_domain" 2
    [[ -n $admin_url ]] || die "--caddy-admin-url must not be empty" 2
    max_startups=${max_startups:-$DEFAULT_MAX_STARTUPS}
    parse_max_startups "$max_startups" >/dev/null ||
        die "--max-startups must be START:RATE:FULL (1 <= START <= FULL, RATE 1-100) or one number: $max_startups" 2
    check_tls_args
}

# The address mytunneld serve answers Caddy's on-demand `ask` on, unless told otherwise.
readonly DEFAULT_TLS_ASK_LISTEN=127.0.0.1:2020

# loopback_listen ADDR: status 0 when ADDR is a loopback IP:PORT, 127.0.0.0/8 or [::1],
# port 1-65535 (what MYTUNNEL_TLS_ASK_LISTEN takes).
loopback_listen() {
    local addr=$1 octet port
    if [[ $addr =~ ^127\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3}):([0-9]{1,5})$ ]]; then
        for octet in "${BASH_REMATCH[@]:1:3}"; do
            ((10#$octet <= 255)) || return 1
        done
        port=${BASH_REMATCH[4]}
    elif [[ $addr =~ ^\[::1\]:([0-9]{1,5})$ ]]; then
        port=${BASH_REMATCH[1]}
    else
        return 1
    fi
    ((10#$port >= 1 && 10#$port <= 65535))
}

# caddy_admin_listen URL: Caddy's `admin` address for mytunneld's admin URL URL
# (http://127.0.0.1:2019 -> 127.0.0.1:2019, unix//PATH or unix:///PATH -> unix//PATH);
# status 1 unless it is loopback (localhost, 127.0.0.0/8, [::1]) or a unix socket.
caddy_admin_listen() {
    local url=$1 authority host port
    case $url in
        unix://*) url=unix/${url#unix://} ;;
    esac
    if [[ $url == unix/* ]]; then
        [[ $url =~ ^unix//[A-Za-z0-9/._-]*[A-Za-z0-9._-]$ ]] || return 1
        echo "$url"
        return 0
    fi
    [[ $url == http://* ]] || return 1
    authority=${url#http://}
    authority=${authority%/}
    if [[ $authority =~ ^(\[[^]]*\])(:([0-9]{1,5}))?$ || $authority =~ ^([^:]*)(:([0-9]{1,5}))?$ ]]; then
        host=${BASH_REMATCH[1]}
        port=${BASH_REMATCH[3]:-80}
    else
        return 1
    fi
    # mytunneld's own check (loopback, port 1-65535) through loopback_listen's.
    case $host in
        localhost) loopback_listen "127.0.0.1:$port" || return 1 ;;
        *) loopback_listen "$host:$port" || return 1 ;;
    esac
    echo "$host:$port"
}

# check_port OPTION VARIABLE DEFAULT: sets VARIABLE (DEFAULT when empty) to its port number
# 1-65535, leading zeros dropped, or exits 2 naming OPTION.
check_port() {
    local value=${!2:-$3}
    if [[ ! $value =~ ^[0-9]{1,5}$ ]] || ((10#$value < 1 || 10#$value > 65535)); then
        die "$1 must be a port number 1-65535: $value" 2
    fi
    printf -v "$2" '%s' $((10#$value))
}

# check_tls_args: refuses (exit 2) TLS options that cannot make a Caddyfile, and any of
# them without --tls-mode (nothing would use it); sets their defaults.
check_tls_args() {
    local given=()
    if [[ -z $tls_mode ]]; then
        [[ -n $dns_provider ]] && given+=(--dns-provider)
        [[ -n $dns_token_env ]] && given+=(--dns-token-env)
        [[ -n $tls_issuer ]] && given+=(--tls-issuer)
        [[ -n $acme_ca ]] && given+=(--acme-ca)
        [[ -n $ask_listen_flag ]] && given+=(--tls-ask-listen)
        [[ -n $http_port ]] && given+=(--caddy-http-port)
        [[ -n $https_port ]] && given+=(--caddy-https-port)
        [[ -n $caddyfile_flag ]] && given+=(--caddyfile)
        [[ $print_caddyfile -eq 1 ]] && given+=(--print-caddyfile)
        if [[ ${#given[@]} -gt 0 ]]; then
            die "${given[0]} needs --tls-mode wildcard|on-demand (no Caddyfile is written without it)" 2
        fi
        return 0
    fi
    case $tls_mode in
        wildcard | on-demand) ;;
        *) die "--tls-mode must be wildcard or on-demand: $tls_mode" 2 ;;
    esac
    tls_issuer=${tls_issuer:-acme}
    case $tls_issuer in
        acme | internal) ;;
        *) die "--tls-issuer must be acme or internal: $tls_issuer" 2 ;;
    esac
    if [[ $tls_mode == wildcard && $tls_issuer == acme ]]; then
        # A wildcard certificate from an ACME CA: only through the DNS-01 challenge.
        [[ -n $dns_provider ]] || die "--tls-mode wildcard needs --dns-provider NAME (the caddy-dns module that solves the DNS-01 challenge, e.g. infomaniak), or --tls-issuer internal" 2
        [[ $dns_provider =~ ^[a-z0-9][a-z0-9_-]{0,63}$ ]] || die "invalid --dns-provider: $dns_provider (a caddy-dns module name, e.g. infomaniak)" 2
        if [[ -z $dns_token_env ]]; then
            dns_token_env=${dns_provider^^}
            dns_token_env=${dns_token_env//-/_}_TOKEN
        fi
        [[ $dns_token_env =~ ^[A-Za-z_][A-Za-z0-9_]{0,63}$ ]] || die "invalid --dns-token-env: $dns_token_env (an environment variable name)" 2
    else
        [[ -z $dns_provider ]] || die "--dns-provider is only for --tls-mode wildcard with --tls-issuer acme (the DNS-01 challenge): $tls_mode mode with issuer $tls_issuer needs no DNS provider" 2
        [[ -z $dns_token_env ]] || die "--dns-token-env is only for --tls-mode wildcard with --tls-issuer acme" 2
    fi
    if [[ -n $acme_ca ]]; then
        [[ $tls_issuer == acme ]] || die "--acme-ca is only for --tls-issuer acme (internal signs with Caddy's own CA)" 2
        # One Caddyfile token: no spaces, quotes, braces or backslashes.
        if [[ ! $acme_ca =~ ^https?://[A-Za-z0-9] || $acme_ca =~ [[:space:][:cntrl:]] || $acme_ca == *[\"\'{}\\]* ]]; then
            die "invalid --acme-ca: $acme_ca (an http(s) URL without spaces, quotes, braces or backslashes)" 2
        fi
    fi
    if [[ $tls_mode == on-demand ]]; then
        tls_ask_listen=${ask_listen_flag:-$DEFAULT_TLS_ASK_LISTEN}
        loopback_listen "$tls_ask_listen" || die "--tls-ask-listen must be a loopback IP:PORT (127.0.0.0/8 or [::1], port 1-65535): $tls_ask_listen" 2
    else
        [[ -z $ask_listen_flag ]] || die "--tls-ask-listen is only for --tls-mode on-demand (a wildcard certificate needs no ask)" 2
        tls_ask_listen=''
    fi
    check_port --caddy-http-port http_port 80
    check_port --caddy-https-port https_port 443
    [[ $http_port -ne $https_port ]] || die "--caddy-http-port and --caddy-https-port must differ: $http_port" 2
    caddyfile=${caddyfile_flag:-/etc/caddy/Caddyfile}
    [[ $caddyfile == /* && ! $caddyfile =~ [[:cntrl:]] && $caddyfile != */ ]] || die "--caddyfile must be an absolute file path: $caddyfile" 2
    caddyfile=$destdir$caddyfile
    caddy_admin_listen "$admin_url" >/dev/null ||
        die "--caddy-admin-url must be loopback (http://127.0.0.1:PORT, http://[::1]:PORT, http://localhost:PORT) or unix//PATH for Caddy's admin line: $admin_url" 2
    if [[ $print_caddyfile -eq 1 ]]; then
        [[ -n $base_domain ]] || die "--print-caddyfile needs --base-domain" 2
    fi
}

# The sshd drop-in of route mode $1 for $group, its keys from mytunneld run as $user.
sshd_dropin() {
    local route_mode=$1
    echo "# mytunnel tunnel users (group $group), route mode $route_mode. Written by install-edge.sh;"
    echo "# rewritten on every run. Check with \`sshd -t\`, then \`systemctl reload ssh\`."
    echo "# Global (before the Match block): how many handshakes may run at once. Every tunnel"
    echo "# reconnects when sshd restarts, one SSH connection per client; sshd's default"
    echo "# 10:30:100 drops logins of a dozen at once. Set with --max-startups."
    echo "MaxStartups $max_startups"
    echo "Match Group $group"
    echo "    # Tunnels bind unix sockets in owners/<user> (user:$proxy_group 2750), never TCP ports,"
    echo "    # in both route modes. sshd grants remote socket forwards from the remote TCP"
    echo "    # permission: keep it, and refuse every TCP listen (no ssh -L either)."
    echo "    AllowTcpForwarding remote"
    echo "    PermitListen none"
    echo "    AllowStreamLocalForwarding remote"
    echo "    # Sockets 0660: the owner and the proxy's group."
    echo "    StreamLocalBindMask 0117"
    echo "    # Never unlink before binding: a user could remove any file in a directory it can write."
    echo "    StreamLocalBindUnlink no"
    echo "    # Keys come only from mytunneld: each one gated, no TCP listen, a pty for the gate."
    echo "    AuthorizedKeysFile none"
    if [[ -n $destdir ]]; then
        # The install's own binary and env file (its keys directory is inside DIR).
        echo "    AuthorizedKeysCommand $bin_path --env-file $destdir/etc/mytunneld/mytunneld.env authorized-keys %u"
    else
        echo "    AuthorizedKeysCommand $bin_path authorized-keys %u"
    fi
    echo "    AuthorizedKeysCommandUser $user"
}

# caddyfile_text: Caddy's Caddyfile for --tls-mode, from caddy_domain, caddy_admin,
# caddy_route_mode, caddy_socket_dir, tls_ask_listen and the TLS options.
caddyfile_text() {
    local tab=$'\t'
    comment '' <<<"Caddy for the mytunnel edge *.$caddy_domain: TLS mode $tls_mode, issuer $tls_issuer, route mode $caddy_route_mode. Written by install-edge.sh --tls-mode on every such run; other content it replaces is kept as <file>.before-mytunnel.<time>."
    echo "# Check: caddy validate --adapter caddyfile --config $caddyfile"
    echo "{"
    echo "$tab# The admin API can rewrite every route: loopback only (mytunneld refuses anything else)."
    echo "${tab}admin $caddy_admin"
    if [[ -n $acme_ca ]]; then
        echo "${tab}acme_ca $acme_ca"
    fi
    if [[ $tls_issuer == internal ]]; then
        echo "$tab# Caddy's own local CA signs; its root is not added to this machine's trust store."
        echo "${tab}skip_install_trust"
    fi
    if [[ $http_port -ne 80 ]]; then
        echo "${tab}http_port $http_port"
    fi
    if [[ $https_port -ne 443 ]]; then
        echo "${tab}https_port $https_port"
    fi
    if [[ $tls_mode == on-demand ]]; then
        echo "$tab# A certificate per tunnel host at its first TLS handshake, only when mytunneld serve"
        echo "$tab# answers 200 here (MYTUNNEL_TLS_ASK_LISTEN): for hosts of active leases."
        echo "${tab}on_demand_tls {"
        echo "$tab${tab}ask http://$tls_ask_listen/ask"
        echo "$tab}"
    fi
    echo "}"
    echo
    echo "*.$caddy_domain {"
    case $tls_mode/$tls_issuer in
        wildcard/acme)
            echo "$tab# One wildcard certificate through the ACME DNS-01 challenge: needs a Caddy built with"
            echo "$tab# the $dns_provider module (xcaddy build --with github.com/caddy-dns/$dns_provider) and"
            echo "$tab# $dns_token_env in its environment."
            echo "${tab}tls {"
            echo "$tab${tab}dns $dns_provider {env.$dns_token_env}"
            echo "$tab}"
            ;;
        wildcard/internal)
            echo "$tab# One wildcard certificate from Caddy's own local CA."
            echo "${tab}tls internal"
            ;;
        on-demand/acme)
            echo "${tab}tls {"
            echo "$tab${tab}on_demand"
            echo "$tab}"
            ;;
        on-demand/internal)
            echo "${tab}tls internal {"
            echo "$tab${tab}on_demand"
            echo "$tab}"
            ;;
    esac
    unknown_host_comment | comment "$tab"
    echo "${tab}respond \"no tunnel here\" 404"
    echo "}"
}

# comment INDENT: stdin's text as Caddyfile comment lines of at most 88 columns after
# INDENT (words are never split).
comment() {
    fold -s -w 86 | sed -e 's/ *$//' -e "s/^/$1# /"
}

# unknown_host_comment: what a host without a tunnel gets, in caddy_route_mode and
# tls_mode (one paragraph). Static mode: serve's wildcard route in front of the site block
# dials a host link that does not exist (502). Routes mode: no route of serve's matches,
# the site block's respond answers (404). On-demand: no certificate at all first.
unknown_host_comment() {
    local text=''
    if [[ $tls_mode == on-demand ]]; then
        text="A host without a tunnel gets no certificate (serve's ask answers 200 only for hosts of active leases), so its TLS handshake fails. Past the handshake (a host whose tunnel ended keeps the certificate Caddy got for it) it gets "
    else
        text="A host without a tunnel gets "
    fi
    if [[ $caddy_route_mode == static ]]; then
        text+="502 (Bad Gateway): mytunneld serve adds one route in front of this block through the admin API (route mode static) that takes every *.$caddy_domain to $caddy_socket_dir/hosts/<slug>.sock, and no such link exists. The 404 below answers only while that route is missing: after Caddy loads this file, until serve's next reconcile (\`mytunneld ctl reconcile\`)."
    else
        text+="404, from the respond below: mytunneld serve adds a route in front of this block for each active lease's host (route mode routes, through the admin API), and none for another host."
    fi
    echo "$text"
}

# find_binary: sets binary to the one to install when --binary did not name it (with
# --packaged: checks the package's is there).
find_binary() {
    local script_dir candidate
    if [[ $packaged -eq 1 ]]; then
        [[ -x $PACKAGED_BINARY ]] || die "--packaged: no $PACKAGED_BINARY (install the mytunneld package: apt-get install ./mytunneld_VERSION_ARCH.deb)" 2
        binary=$PACKAGED_BINARY
        return 0
    fi
    if [[ -z $binary ]]; then
        script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
        candidate=$script_dir/../target/release/mytunneld
        if [[ -x $candidate ]]; then
            binary=$candidate
        elif binary=$(command -v mytunneld); then
            :
        else
            die "no mytunneld binary: build it (cargo build --release -p mytunnel-cli) or pass --binary PATH" 2
        fi
    fi
    [[ -f $binary && -r $binary ]] || die "cannot read binary $binary" 2
}

# read_settings: the route mode and the paths, from a new env file's flags, else from the
# existing file as the binary to install resolves it. Sets new_env, route_mode, socket_dir
# (as the unit names it), env_socket_dir (inside --destdir), keys_dir and db_path.
read_settings() {
    new_env=1
    [[ -e $env_file ]] && new_env=0
    # The binary to install reads the env file (its defaults when there is none yet). One
    # that cannot run here yet (another architecture, one from before `mytunneld config`)
    # leaves edge_settings' fallback: the file's own lines and mytunneld's defaults.
    edge_settings "$env_file" "$binary" || true
    if [[ $new_env -eq 1 ]]; then
        route_mode=${route_mode_flag:-static}
        default_socket_dir=${setting_value[MYTUNNEL_SOCKET_DIR]}
        socket_dir=${socket_dir_flag:-$default_socket_dir}
        # The env file's paths point inside --destdir.
        env_socket_dir=$destdir$socket_dir
    else
        route_mode=${setting_value[MYTUNNEL_ROUTE_MODE]}
        env_socket_dir=$(edge_path MYTUNNEL_SOCKET_DIR "$destdir")
        socket_dir=${env_socket_dir#"$destdir"}
        keys_dir=$(edge_path MYTUNNEL_KEYS_DIR "$destdir")
        if [[ -n $route_mode_flag && $route_mode_flag != "$route_mode" ]]; then
            say "--route-mode $route_mode_flag ignored: $env_file says $route_mode (change MYTUNNEL_ROUTE_MODE there)"
        fi
        if [[ -n $socket_dir_flag && $socket_dir_flag != "$socket_dir" ]]; then
            say "--socket-dir $socket_dir_flag ignored: $env_file uses $env_socket_dir"
        fi
    fi
    case $route_mode in
        static | routes) ;;
        *) die "MYTUNNEL_ROUTE_MODE in $env_file must be static or routes: $route_mode" ;;
    esac
    # Both modes: serve's control socket lives there. <dir>/hosts/<63-byte slug>.sock must fit
    # a unix socket address (mytunneld's limit).
    check_socket_dir "$env_socket_dir" || die "invalid socket directory: $env_socket_dir" 2
    if [[ ${#env_socket_dir} -gt 32 ]]; then
        if [[ $new_env -eq 1 ]]; then
            die "socket directory $env_socket_dir is longer than 32 bytes: choose a shorter --socket-dir${destdir:+ or --destdir}" 2
        fi
        die "socket directory $env_socket_dir is longer than 32 bytes: set a shorter MYTUNNEL_SOCKET_DIR in $env_file" 2
    fi
    # The lease database, whose files the migration gives to the service user.
    db_path=$state_dir/leases.db
    if [[ $new_env -eq 0 ]]; then
        db_path=$(edge_path MYTUNNEL_DB_PATH "$destdir")
    fi
}

ensure_group_and_user() {
    local nologin
    if getent group "$group" >/dev/null; then
        say "group $group exists"
    else
        # Tolerate a concurrent creation.
        groupadd --system "$group" || getent group "$group" >/dev/null || die "groupadd $group failed"
        say "created group $group"
    fi
    if id -u "$user" >/dev/null 2>&1; then
        say "user $user exists"
    else
        nologin=/usr/sbin/nologin
        [[ -x $nologin ]] || nologin=/bin/false
        useradd --system --gid "$group" --no-create-home --home-dir /nonexistent \
            --shell "$nologin" "$user" || id -u "$user" >/dev/null 2>&1 || die "useradd $user failed"
        say "created service user $user"
    fi
    if ! id -nG "$user" | tr ' ' '\n' | grep -qxF "$group"; then
        usermod -a -G "$group" "$user"
        say "added $user to group $group"
    fi
}

# ensure_dir PATH MODE OWNER GROUP: creates it, or fixes a mode or owner that differs.
ensure_dir() {
    local path=$1 mode=$2 owner=$3 grp=$4
    if [[ ! -d $path ]]; then
        install -d -m "$mode" -o "$owner" -g "$grp" "$path"
        # install -d leaves parents it creates at 0755; this one gets its exact mode.
        chmod "$mode" "$path"
        say "created $path"
        return
    fi
    if [[ $(stat -c '%U:%G' "$path") != "$owner:$grp" ]]; then
        chown "$owner:$grp" "$path"
        say "fixed owner of $path"
    fi
    # 4-digit octal; 02770 -> 2770 as stat prints it.
    local want=$((8#$mode))
    if [[ $((8#$(stat -c '%a' "$path"))) -ne $want ]]; then
        # A leading 0 keeps GNU chmod from preserving a setgid bit we do not want.
        chmod "0$mode" "$path"
        say "fixed mode of $path"
    fi
}

# make_directories: every directory of the install; sets state_dir_existed.
make_directories() {
    if [[ -n $destdir ]]; then
        mkdir -p "$destdir"
    fi
    [[ $packaged -eq 1 ]] || ensure_dir "$(dirname "$bin_path")" 0755 root root
    ensure_dir "$etc_dir" 0750 root "$group"
    # Only serve opens the lease database: tunnel users do not even enter its directory.
    # Made 0700 before anything in it is looked at, so nobody else changes it meanwhile.
    state_dir_existed=0
    [[ -d $state_dir ]] && state_dir_existed=1
    ensure_dir "$state_dir" 0700 "$user" "$group"
    ensure_dir "$keys_dir" 0755 root root
    ensure_dir "$unit_dir" 0755 root root
    # serve binds its control socket here; tunnels bind owners/<user>/<lease>.sock, which
    # Caddy dials (static mode through the host links hosts/<slug>.sock). Both route modes.
    ensure_dir "$env_socket_dir" 0755 "$user" "$group"
    # Only serve (USER) writes host links; only root makes the per-owner directories.
    ensure_dir "$env_socket_dir/hosts" 0755 "$user" "$group"
    ensure_dir "$env_socket_dir/owners" 0755 root root
    if getent group "$proxy_group" >/dev/null; then
        # serve connects to a lease's socket to find the ssh connection to end with it.
        if ! id -nG "$user" | tr ' ' '\n' | grep -qx -- "$proxy_group"; then
            usermod -a -G "$proxy_group" "$user"
            say "added $user to $proxy_group (it reaches tunnel sockets to end them with their lease)"
        fi
    else
        say "warning: group $proxy_group (--proxy-group) does not exist yet: install Caddy, then run this again"
    fi
}

# The lease database: the service user's alone.
secure_database() {
    local db_name db_dir db_changed=0 entry name shown journal_owner quarantine kind suffix file was
    db_name=$(basename "$db_path")
    db_dir=$(dirname "$db_path")
    if [[ -L $db_path ]]; then
        die "$(printable "$db_path") is a symbolic link (to $(printable "$(readlink -- "$db_path")")), not the lease database file: put the database file itself there, or point MYTUNNEL_DB_PATH in $env_file at it, then rerun"
    fi
    # Until this release the directory was 2770 root:GROUP and every tunnel user wrote it.
    # SQLite makes only regular files: anything else was left by a tunnel user (a socket or
    # fifo named <db>-journal stops every open of the database, a symlink redirects a write).
    while IFS= read -r -d '' entry; do
        name=${entry##*/}
        shown=$(printable "$entry")
        if [[ -f $entry && ! -L $entry ]]; then
            if [[ $db_dir == "$state_dir" ]]; then
                case $name in
                    "$db_name" | "$db_name-wal" | "$db_name-shm")
                        continue
                        ;;
                    "$db_name-journal")
                        journal_owner=$(stat -c '%U' -- "$entry")
                        if [[ $journal_owner == "$user" ]]; then
                            say "warning: $shown is a rollback journal of $user: left for SQLite, which applies it when serve opens the database"
                        else
                            # The database runs in WAL mode and keeps no rollback journal; one
                            # the service did not write would be applied to the database when
                            # serve opens it. Kept, not deleted, for the operator to look at.
                            quarantine=$state_dir.quarantine
                            install -d -m 0700 -o root -g root "$quarantine"
                            mv -- "$entry" "$quarantine/$name.$(date -u +%Y%m%dT%H%M%SZ)"
                            say "moved $shown (owner $journal_owner) to $quarantine: SQLite would apply a journal the service did not write to the lease database when serve starts"
                            db_changed=1
                        fi
                        continue
                        ;;
                esac
            fi
            say "$shown is not a file of the lease database: left alone (check-edge.sh fails until it is moved elsewhere)"
            continue
        fi
        kind="a $(kind_of "$entry")"
        rm -rf --one-file-system -- "$entry"
        db_changed=1
        if [[ $name == "$db_name-journal" ]]; then
            say "removed $shown, $kind: SQLite cannot open a journal that is not a regular file, so every open of the lease database failed (a tunnel user can lock all tenants out this way)"
        else
            say "removed $shown, $kind: the database directory holds only the database's regular files (a tunnel user could leave one while the directory was group-writable)"
        fi
    done < <(find "$state_dir" -mindepth 1 -maxdepth 1 -print0)
    # The database files: the service user's, 0600 (serve creates new ones so); contents are
    # never touched.
    for suffix in '' -wal -shm; do
        file=$db_path$suffix
        shown=$(printable "$file")
        if [[ -L $file || (-e $file && ! -f $file) ]]; then
            # Outside the state directory (the loop above removed these inside it).
            say "warning: $shown is a $(kind_of "$file"), not a database file: left alone outside $state_dir; remove it before serve starts"
            continue
        fi
        [[ -f $file ]] || continue
        was=$(stat -c '%U:%G' -- "$file")
        if [[ $was != "$user:$group" ]]; then
            chown -h -- "$user:$group" "$file"
            say "fixed owner of $shown ($was -> $user:$group): only the service opens the lease database"
            db_changed=1
        fi
        was=$(stat -c '%a' -- "$file")
        if [[ $was != 600 ]]; then
            chmod 0600 -- "$file"
            say "fixed mode of $shown ($was -> 600)"
            db_changed=1
        fi
    done
    if [[ $db_changed -eq 0 && $state_dir_existed -eq 1 ]]; then
        say "$state_dir and the lease database are up to date"
    fi
}

# install_file SRC DEST MODE OWNER GROUP: replaces DEST atomically when its content
# differs (and sets file_replaced=1); fixes mode and owner otherwise.
file_replaced=0
install_file() {
    local src=$1 dest=$2 mode=$3 owner=$4 grp=$5 tmp
    file_replaced=0
    if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
        if [[ $(stat -c '%U:%G' "$dest") != "$owner:$grp" ]]; then
            chown "$owner:$grp" "$dest"
            say "fixed owner of $dest"
        fi
        if [[ $((8#$(stat -c '%a' "$dest"))) -ne $((8#$mode)) ]]; then
            chmod "$mode" "$dest"
            say "fixed mode of $dest"
        fi
        say "$dest is up to date"
        return
    fi
    tmp=$(mktemp "$(dirname "$dest")/.$(basename "$dest").XXXXXX")
    if ! install -m "$mode" -o "$owner" -g "$grp" "$src" "$tmp"; then
        rm -f "$tmp"
        die "cannot install $dest"
    fi
    mv -f "$tmp" "$dest"
    file_replaced=1
    say "installed $dest"
}

# The env file: created once, never overwritten (on-demand TLS may append its ask line).
write_env_file() {
    local tmp
    if [[ -e $env_file ]]; then
        if [[ $append_ask_line -eq 1 ]]; then
            append_env_ask_line
        else
            say "$env_file exists: left untouched (edit it by hand; check-edge.sh checks its mode)"
        fi
        return
    fi
    tmp=$(mktemp "$etc_dir/.mytunneld.env.XXXXXX")
    {
        echo "# mytunneld settings, KEY=VALUE (see \`mytunneld serve --help\`)."
        echo "# Read by \`mytunneld serve\` and by every \`mytunneld ctl\`; keep it 0640 root:$group."
        if [[ -n $base_domain ]]; then
            echo "MYTUNNEL_BASE_DOMAIN=$base_domain"
        else
            echo "# Required: tunnels are published at https://<slug>.<base domain>."
            echo "# MYTUNNEL_BASE_DOMAIN=tunnel.example.com"
        fi
        echo "# Caddy's admin API: loopback or a unix socket only."
        echo "MYTUNNEL_CADDY_ADMIN_URL=$admin_url"
        echo "MYTUNNEL_DB_PATH=$state_dir/leases.db"
        echo "# How hosts reach tunnels: static (one Caddy route, unix sockets) or routes."
        echo "MYTUNNEL_ROUTE_MODE=$route_mode"
        if [[ $env_socket_dir != "$default_socket_dir" ]]; then
            echo "# serve's control socket (and in static mode the tunnel sockets) live here."
            echo "MYTUNNEL_SOCKET_DIR=$env_socket_dir"
        fi
        echo "# Tunnel keys, <dir>/<user>, read by \`mytunneld authorized-keys\` (sshd)."
        echo "MYTUNNEL_KEYS_DIR=$keys_dir"
        if [[ $tls_mode == on-demand ]]; then
            ask_line_text
        fi
    } >"$tmp"
    chown "root:$group" "$tmp"
    chmod 0640 "$tmp"
    mv -f "$tmp" "$env_file"
    say "created $env_file"
}

# ask_line_text: the env file's lines for on-demand TLS.
ask_line_text() {
    echo "# Caddy's on-demand TLS asks serve here (GET /ask?domain=HOST) before it gets a host a"
    echo "# certificate; 200 only for hosts of active leases. Loopback only."
    echo "MYTUNNEL_TLS_ASK_LISTEN=$tls_ask_listen"
}

# append_env_ask_line: an existing env file without MYTUNNEL_TLS_ASK_LISTEN gets it, atomically
# (a copy with its mode and owner, renamed into place); the service restarts to listen there.
append_env_ask_line() {
    local tmp
    tmp=$(mktemp "$etc_dir/.mytunneld.env.XXXXXX")
    cp -p -- "$env_file" "$tmp"
    {
        # A last line without its newline is ended first.
        [[ -z $(tail -c 1 -- "$env_file") ]] || echo
        ask_line_text
    } >>"$tmp"
    mv -f "$tmp" "$env_file"
    service_changed=1
    say "added MYTUNNEL_TLS_ASK_LISTEN=$tls_ask_listen to $env_file (Caddy's on-demand TLS asks serve there)"
}

# env_ask_listen: sets env_ask to MYTUNNEL_TLS_ASK_LISTEN of the existing env file ('' when
# unset), as `mytunneld config --json` reported it (edge_settings; a value it refuses stops
# the run). A mytunneld from before that setting, or none that runs here, reports nothing
# for it: then env_ask is the file's own last line for it, checked here.
env_ask=''
env_ask_listen() {
    local name=MYTUNNEL_TLS_ASK_LISTEN
    env_ask=''
    if [[ -v "setting_source[$name]" ]]; then
        [[ -z ${setting_error[$name]} ]] || die "$name in $env_file: ${setting_error[$name]}"
        [[ ${setting_source[$name]} == default ]] || env_ask=${setting_value[$name]}
    else
        env_ask=$(env_value "$name" "$env_file") || env_ask=''
        if [[ -n $env_ask ]] && ! loopback_listen "$env_ask"; then
            die "$name in $env_file must be a loopback IP:PORT (127.0.0.0/8 or [::1]): $env_ask"
        fi
    fi
}

# resolve_caddy_settings: what the Caddyfile takes from the install. The route mode and
# socket directory as read_settings found them; the base domain, admin URL and ask address
# of an existing env file (serve uses those; a flag that differs is named and ignored),
# else the flags'. Sets caddy_domain, caddy_admin, caddy_route_mode, caddy_socket_dir,
# tls_ask_listen and append_ask_line. Changes nothing.
append_ask_line=0
resolve_caddy_settings() {
    local admin=$admin_url env_value_of
    caddy_domain=$base_domain
    caddy_route_mode=$route_mode
    caddy_socket_dir=$env_socket_dir
    append_ask_line=0
    if [[ $new_env -eq 0 ]]; then
        env_value_of=${setting_value[MYTUNNEL_BASE_DOMAIN]:-}
        if [[ -n $env_value_of ]]; then
            if [[ -n $base_domain && $base_domain != "$env_value_of" ]]; then
                say "--base-domain $base_domain ignored: $env_file says $env_value_of (the Caddyfile is for that one)"
            fi
            caddy_domain=$env_value_of
        fi
        admin=${setting_value[MYTUNNEL_CADDY_ADMIN_URL]:-$admin_url}
        if [[ -n $admin_url_flag && $admin_url_flag != "$admin" ]]; then
            say "--caddy-admin-url $admin_url_flag ignored: $env_file says $admin (the Caddyfile's admin line is serve's)"
        fi
        if [[ $tls_mode == on-demand ]]; then
            env_ask_listen
            if [[ -z $env_ask ]]; then
                append_ask_line=1
            else
                if [[ $env_ask != "$tls_ask_listen" ]]; then
                    say "$env_file sets MYTUNNEL_TLS_ASK_LISTEN=$env_ask: the Caddyfile asks serve there${ask_listen_flag:+ (--tls-ask-listen $ask_listen_flag ignored)}"
                fi
                tls_ask_listen=$env_ask
            fi
        fi
    fi
    [[ -n $caddy_domain ]] || die "--tls-mode needs the base domain: --base-domain D, or MYTUNNEL_BASE_DOMAIN in $env_file" 2
    [[ $caddy_domain =~ ^[A-Za-z0-9.-]+$ ]] || die "invalid base domain for the Caddyfile: $caddy_domain"
    caddy_admin=$(caddy_admin_listen "$admin") ||
        die "MYTUNNEL_CADDY_ADMIN_URL in $env_file is not loopback (http://127.0.0.1:PORT, http://[::1]:PORT, http://localhost:PORT) or unix//PATH: $admin"
    [[ ! -d $caddyfile ]] || die "$caddyfile is a directory" 2
}

# check_caddyfile FILE: `caddy validate` of FILE when caddy is on PATH, in a throwaway HOME
# (Caddy's local CA and storage are made there, not in root's). Dies when Caddy refuses
# it, unless the refusal is a missing DNS provider module (stock Caddy, wildcard mode):
# then a warning, and caddy_loadable=0.
caddy_loadable=1
check_caddyfile() {
    local file=$1 caddy_bin home out rc=0
    caddy_loadable=1
    if ! caddy_bin=$(command -v caddy); then
        say "caddy is not on PATH: $caddyfile is not checked (caddy validate --adapter caddyfile --config $caddyfile once it is installed)"
        return 0
    fi
    home=$(mktemp -d)
    out=$(HOME=$home XDG_DATA_HOME=$home/data XDG_CONFIG_HOME=$home/config \
        timeout --kill-after=5 60 "$caddy_bin" validate --adapter caddyfile --config "$file" 2>&1) || rc=$?
    rm -rf -- "$home"
    if [[ $rc -eq 0 ]]; then
        say "caddy validate: the Caddyfile is valid"
        return 0
    fi
    if [[ -n $dns_provider && $out == *"module not registered: dns.providers.$dns_provider"* ]]; then
        caddy_loadable=0
        say "warning: $caddy_bin has no dns.providers.$dns_provider module, so it cannot load $caddyfile: the edge needs a Caddy built with it (xcaddy build --with github.com/caddy-dns/$dns_provider, see docs/edge-setup.md)"
        return 0
    fi
    die "caddy validate refuses the Caddyfile for these options, $caddyfile not written: $(printable "$(grep -v '"level":"info"' <<<"$out" | tail -n 3)")"
}

# write_caddyfile: installs caddyfile_tmp (checked by check_caddyfile) as CADDYFILE (0644
# root:root); an existing file with other content is copied to
# CADDYFILE.before-mytunnel.<UTC time> first. Sets caddyfile_changed.
caddyfile_changed=0
write_caddyfile() {
    local backup n=0
    caddyfile_changed=0
    if [[ ! -d $(dirname "$caddyfile") ]]; then
        install -d -m 0755 -o root -g root "$(dirname "$caddyfile")"
        say "created $(dirname "$caddyfile")"
    fi
    if [[ -e $caddyfile ]] && ! cmp -s "$caddyfile_tmp" "$caddyfile"; then
        backup=$caddyfile.before-mytunnel.$(date -u +%Y%m%dT%H%M%SZ)
        while [[ -e $backup || -L $backup ]]; do
            n=$((n + 1))
            backup=${backup%.before-mytunnel.*}.before-mytunnel.$(date -u +%Y%m%dT%H%M%SZ).$n
        done
        cp -p -- "$caddyfile" "$backup"
        say "kept a copy of $caddyfile as $backup (this run writes other content)"
    fi
    install_file "$caddyfile_tmp" "$caddyfile" 0644 root root
    caddyfile_changed=$file_replaced
}

# reload_caddy: a changed Caddyfile is loaded (systemctl reload caddy), then serve puts back
# the routes it added through the admin API, which the reload dropped (`mytunneld ctl
# reconcile`, as root: an admin). Only without --destdir or --no-systemd, when systemd
# runs, caddy is active and the file is the one its unit loads.
reload_caddy() {
    local out
    [[ $caddyfile_changed -eq 1 ]] || return 0
    if [[ -n $destdir ]]; then
        say "caddy not reloaded (--destdir)"
    elif [[ $caddy_loadable -eq 0 ]]; then
        say "caddy not reloaded: it cannot load $caddyfile without the dns.providers.$dns_provider module"
    elif [[ $systemd -eq 0 ]]; then
        say "caddy not reloaded (--no-systemd): systemctl reload caddy, then mytunneld ctl reconcile"
    elif [[ ! -d /run/systemd/system ]]; then
        say "caddy not reloaded (systemd is not running): reload it, then run mytunneld ctl reconcile"
    elif [[ $caddyfile != /etc/caddy/Caddyfile ]]; then
        say "caddy not reloaded (--caddyfile: caddy.service loads /etc/caddy/Caddyfile): load $caddyfile yourself, then run mytunneld ctl reconcile"
    elif ! systemctl is-active --quiet caddy; then
        say "caddy is not running: systemctl start caddy loads $caddyfile (serve's next reconcile pass adds its routes)"
    else
        systemctl reload caddy ||
            die "systemctl reload caddy failed: Caddy keeps its previous configuration (journalctl -u caddy); $caddyfile is written"
        say "reloaded caddy (systemctl reload caddy)"
        if out=$(timeout --kill-after=5 60 "$bin_path" --env-file "$env_file" ctl reconcile 2>&1); then
            say "mytunneld ctl reconcile: serve put back its routes, which the reload dropped"
        else
            say "warning: mytunneld ctl reconcile failed ($(printable "${out:0:300}")): serve's next reconcile pass puts back its routes, which the reload dropped"
        fi
    fi
}

# unit_text: the systemd unit (the paths of an install at /, also with --destdir).
unit_text() {
    cat <<UNIT
[Unit]
Description=mytunnel edge: lease cleanup and Caddy route reconcile
After=network-online.target caddy.service
Wants=network-online.target

[Service]
Type=simple
ExecStart=${bin_path#"$destdir"} serve
EnvironmentFile=-/etc/mytunneld/mytunneld.env
User=$user
Group=$group
# The database and everything serve creates are its own; it gives control.sock its mode.
UMask=0077
Restart=on-failure
RestartSec=2s

NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/lib/mytunneld
# control.sock, and in static mode the host links.
ReadWritePaths=$socket_dir
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
# One capability: to end the ssh connection of a lease that ended (a tenant's sshd
# process), found by the socket it listens on. Nothing else.
CapabilityBoundingSet=CAP_KILL
AmbientCapabilities=CAP_KILL

[Install]
WantedBy=multi-user.target
UNIT
}

# The sshd drop-in: for a new env file, when it exists already, or with --sshd-dropin.
write_sshd_dropin() {
    sshd_dropin "$route_mode" >"$dropin_tmp"
    if [[ $new_env -eq 1 || $sshd_dropin_flag -eq 1 || -e $sshd_dropin ]]; then
        ensure_dir "$sshd_dir" 0755 root root
        install_file "$dropin_tmp" "$sshd_dropin" 0644 root root
        if [[ -z $destdir ]] && [[ -x /usr/sbin/sshd ]] && ! /usr/sbin/sshd -t >/dev/null 2>&1; then
            say "warning: sshd -t fails with $sshd_dropin: fix it before reloading sshd"
        fi
    else
        say "$sshd_dropin not written (an install from before route modes): tunnel keys still come"
        say "from ~/.ssh/authorized_keys and may listen on TCP ports. Move each key with"
        say "install-edge-ssh-key.sh USER KEY --keys-dir $keys_dir, then rerun with --sshd-dropin"
    fi
}

# start_service: reloads systemd and (re)starts mytunneld, when systemd runs it here.
start_service() {
    if [[ -n $destdir ]]; then
        say "systemd skipped (--destdir)"
    elif [[ $systemd -eq 0 ]]; then
        say "systemd skipped (--no-systemd)"
    elif [[ ! -d /run/systemd/system ]]; then
        say "systemd skipped (systemd is not running)"
    else
        systemctl daemon-reload
        if [[ $service_changed -eq 1 ]] && systemctl is-active --quiet mytunneld; then
            # Until it restarts, a service from before the control socket answers no ctl.
            systemctl enable mytunneld
            systemctl restart mytunneld
            say "mytunneld enabled and restarted (its binary or unit changed)"
        else
            systemctl enable --now mytunneld
            say "mytunneld enabled and started"
        fi
    fi
}

main() {
    parse_args "$@"
    check_args
    if [[ $print_dropin -eq 1 ]]; then
        sshd_dropin "${route_mode_flag:-static}"
        exit 0
    fi
    if [[ $print_unit -eq 1 ]]; then
        socket_dir=${socket_dir_flag:-${FALLBACK_DEFAULTS[MYTUNNEL_SOCKET_DIR]}}
        unit_text
        exit 0
    fi
    if [[ $print_caddyfile -eq 1 ]]; then
        # As a new install with these flags would write it.
        caddy_domain=$base_domain
        caddy_admin=$(caddy_admin_listen "$admin_url")
        caddy_route_mode=${route_mode_flag:-static}
        caddy_socket_dir=$destdir${socket_dir_flag:-${FALLBACK_DEFAULTS[MYTUNNEL_SOCKET_DIR]}}
        caddyfile_text
        exit 0
    fi
    find_binary
    [[ $(id -u) -eq 0 ]] || die "must run as root"

    etc_dir=$destdir/etc/mytunneld
    env_file=$etc_dir/mytunneld.env
    keys_dir=$etc_dir/keys
    state_dir=$destdir/var/lib/mytunneld
    unit_dir=$destdir/etc/systemd/system
    unit_file=$unit_dir/mytunneld.service
    sshd_dir=$destdir/etc/ssh/sshd_config.d
    sshd_dropin=$sshd_dir/mytunnel.conf

    unit_tmp=$(mktemp)
    dropin_tmp=$(mktemp)
    caddyfile_tmp=$(mktemp)
    trap 'rm -f "$unit_tmp" "$dropin_tmp" "$caddyfile_tmp"' EXIT

    read_settings
    if [[ -n $tls_mode ]]; then
        # Before any change: a Caddyfile Caddy refuses stops the run here.
        resolve_caddy_settings
        caddyfile_text >"$caddyfile_tmp"
        check_caddyfile "$caddyfile_tmp"
    fi
    ensure_group_and_user
    make_directories
    secure_database

    if [[ $packaged -eq 1 ]]; then
        say "binary: the package's $bin_path ($(binary_version "$bin_path"))"
        service_changed=0
    else
        install_file "$binary" "$bin_path" 0755 root root
        # A running service keeps the old binary and unit until it restarts.
        service_changed=$file_replaced
    fi

    write_env_file

    unit_text >"$unit_tmp"
    if [[ $packaged -eq 1 ]] && cmp -s "$unit_tmp" "$PACKAGED_UNIT"; then
        say "unit: the package's $PACKAGED_UNIT"
        if [[ -e $unit_file ]]; then
            say "warning: $unit_file overrides the package's unit (an install from the source tree?): remove it unless you wrote it, then systemctl daemon-reload"
        fi
    else
        install_file "$unit_tmp" "$unit_file" 0644 root root
        [[ $file_replaced -eq 0 ]] || service_changed=1
    fi

    write_sshd_dropin
    if [[ -n $tls_mode ]]; then
        # Loaded (reload_caddy) once serve runs, whose reconcile puts its routes back.
        write_caddyfile
    fi
    start_service
    reload_caddy
    if [[ -z $base_domain && -z ${setting_value[MYTUNNEL_BASE_DOMAIN]} ]]; then
        say "set MYTUNNEL_BASE_DOMAIN in $env_file before clients allocate tunnels"
    fi
    say "route mode $route_mode: enroll users with $([[ $packaged -eq 1 ]] && echo mytunneld-add-key || echo install-edge-ssh-key.sh) USER KEY --group $group --keys-dir $keys_dir --socket-dir $env_socket_dir --proxy-group $proxy_group"
    say "done"
}

main "$@"

#!/usr/bin/env bash
# Installs the mytunnel edge service: binary, group and service user, directories, env
# file and a hardened systemd unit.
#
#   install-edge.sh [--destdir DIR] [--binary PATH] [--group NAME] [--user NAME]
#                   [--base-domain D] [--caddy-admin-url URL] [--no-systemd]
#
# Installs (SPEC section 8 modes), every path under DIR when --destdir is given:
#   /usr/local/bin/mytunneld                 0755  root:root
#   /etc/mytunneld                           0750  root:GROUP
#   /etc/mytunneld/mytunneld.env             0640  root:GROUP  (created once, never overwritten)
#   /var/lib/mytunneld                       2770  root:GROUP  (setgid: the DB is shared)
#   /etc/systemd/system/mytunneld.service    0644  root:root
# The group (default mytunnel) and the service user (default mytunneld, a --system user
# without a login shell, member of the group) are created on this machine, also with
# --destdir. With --destdir the env file's paths point inside DIR, so the installed
# binary works there.
#
# --binary defaults to target/release/mytunneld of this repository, else `mytunneld` on
# PATH. systemd is reloaded and the service enabled and started only when systemd runs,
# without --destdir and without --no-systemd.
#
# Idempotent: a second run changes nothing. Exit codes: 0 done, 2 usage error, 1 failure.
set -euo pipefail

usage() {
    echo "usage: $0 [--destdir DIR] [--binary PATH] [--group NAME] [--user NAME] [--base-domain D] [--caddy-admin-url URL] [--no-systemd]" >&2
    exit 2
}

die() {
    echo "install-edge: $1" >&2
    exit "${2:-1}"
}

say() {
    echo "install-edge: $1"
}

destdir=''
binary=''
group=mytunnel
user=mytunneld
base_domain=''
admin_url='http://127.0.0.1:2019'
systemd=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --destdir | --binary | --group | --user | --base-domain | --caddy-admin-url)
            [[ $# -ge 2 ]] || usage
            value=$2
            case $1 in
                --destdir) destdir=$value ;;
                --binary) binary=$value ;;
                --group) group=$value ;;
                --user) user=$value ;;
                --base-domain) base_domain=$value ;;
                --caddy-admin-url) admin_url=$value ;;
            esac
            shift 2
            ;;
        --no-systemd)
            systemd=0
            shift
            ;;
        *)
            usage
            ;;
    esac
done

# --- validation --------------------------------------------------------------------------
name_re='^[a-z_][a-z0-9_-]{0,31}$'
[[ $group =~ $name_re ]] || die "invalid group name: $group" 2
[[ $user =~ $name_re ]] || die "invalid user name: $user" 2
if [[ -n $destdir ]]; then
    [[ $destdir == /* ]] || die "--destdir must be an absolute path: $destdir" 2
    destdir=${destdir%/}
    [[ $destdir =~ [[:cntrl:]] ]] && die "--destdir must not contain control characters" 2
fi
# Values written into the env file: one line each, no quotes to confuse the parser.
for value in "$base_domain" "$admin_url"; do
    if [[ $value =~ [[:cntrl:]] || $value == *[\"\'\ ]* ]]; then
        die "--base-domain and --caddy-admin-url must not contain spaces, quotes or control characters" 2
    fi
done
[[ -z $base_domain || $base_domain =~ ^[A-Za-z0-9.-]+$ ]] || die "invalid base domain: $base_domain" 2
[[ -n $admin_url ]] || die "--caddy-admin-url must not be empty" 2

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

[[ $(id -u) -eq 0 ]] || die "must run as root"

bin_dir=$destdir/usr/local/bin
bin_path=$bin_dir/mytunneld
etc_dir=$destdir/etc/mytunneld
env_file=$etc_dir/mytunneld.env
state_dir=$destdir/var/lib/mytunneld
unit_dir=$destdir/etc/systemd/system
unit_file=$unit_dir/mytunneld.service

# --- group and service user --------------------------------------------------------------
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

# --- directories -------------------------------------------------------------------------
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

if [[ -n $destdir ]]; then
    mkdir -p "$destdir"
fi
ensure_dir "$bin_dir" 0755 root root
ensure_dir "$etc_dir" 0750 root "$group"
ensure_dir "$state_dir" 02770 root "$group"
ensure_dir "$unit_dir" 0755 root root

# install_file SRC DEST MODE OWNER GROUP: replaces DEST atomically when its content
# differs; fixes mode and owner otherwise.
install_file() {
    local src=$1 dest=$2 mode=$3 owner=$4 grp=$5 tmp
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
    say "installed $dest"
}

install_file "$binary" "$bin_path" 0755 root root

# --- env file: created once, never overwritten ---------------------------------------------
if [[ -e $env_file ]]; then
    say "$env_file exists: left untouched (edit it by hand; check-edge.sh checks its mode)"
else
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
    } >"$tmp"
    chown "root:$group" "$tmp"
    chmod 0640 "$tmp"
    mv -f "$tmp" "$env_file"
    say "created $env_file"
fi

# --- systemd unit ------------------------------------------------------------------------
unit_tmp=$(mktemp)
trap 'rm -f "$unit_tmp"' EXIT
cat >"$unit_tmp" <<EOF
[Unit]
Description=mytunnel edge: lease cleanup and Caddy route reconcile
After=network-online.target caddy.service
Wants=network-online.target

[Service]
Type=simple
ExecStart=/usr/local/bin/mytunneld serve
EnvironmentFile=-/etc/mytunneld/mytunneld.env
User=$user
Group=$group
UMask=0007
Restart=on-failure
RestartSec=2s

NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/lib/mytunneld
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
CapabilityBoundingSet=

[Install]
WantedBy=multi-user.target
EOF
install_file "$unit_tmp" "$unit_file" 0644 root root

# --- systemd -----------------------------------------------------------------------------
if [[ -n $destdir ]]; then
    say "systemd skipped (--destdir)"
elif [[ $systemd -eq 0 ]]; then
    say "systemd skipped (--no-systemd)"
elif [[ ! -d /run/systemd/system ]]; then
    say "systemd skipped (systemd is not running)"
else
    systemctl daemon-reload
    systemctl enable --now mytunneld
    say "mytunneld enabled and started"
fi
if [[ -z $base_domain ]] && ! grep -q '^[[:space:]]*\(export[[:space:]]\+\)\?MYTUNNEL_BASE_DOMAIN=' "$env_file"; then
    say "set MYTUNNEL_BASE_DOMAIN in $env_file before clients allocate tunnels"
fi
say "done"

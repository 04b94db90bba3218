#!/usr/bin/env bash
# Installs a tunnel key for a dedicated SSH user on the edge.
#
#   install-edge-ssh-key.sh <user> <pubkey-file> [--gate-command CMD] [--group G] [--remove]
#                           [--keys-dir DIR] [--socket-dir DIR] [--proxy-group G]
#                           [--env-file FILE] [--socket-inodes N] [--fstab FILE]
#
# - Creates <user> if missing (useradd -m -s /bin/bash) and unlocks it for key login without
#   a password (usermod -p '*'): sshd with UsePAM no refuses keys of a locked account.
#   sshd runs the forced command with the user's shell; bash replaces itself with it, where
#   dash (Debian's /bin/sh) stays beside every held session, so an existing user whose shell
#   is not bash gets a note saying so.
# - Adds <user> to group G with --group (the tunnel group that may read the edge's env
#   file and write the lease database).
# - Writes ~<user>/.ssh (0700) and ~<user>/.ssh/authorized_keys (0600), both owned by the
#   user, with one line per key:
#       restrict,port-forwarding,pty,command="<CMD>" <key>
#   CMD defaults to the installed binary's gate: `/usr/local/bin/mytunneld gate`, or
#   `/usr/bin/mytunneld gate` on an edge installed from the Debian package. `pty` lets the client hold its session
#   on a terminal (so ssh and sshd set TCP_NODELAY); sshd still runs only CMD on it.
# - With --keys-dir DIR, or when the edge's env file (--env-file, default
#   /etc/mytunneld/mytunneld.env) sets MYTUNNEL_KEYS_DIR, writes the key without options to
#   DIR/<user> (0644, DIR 0755, both root:root) instead: sshd's AuthorizedKeysCommand
#   (`mytunneld authorized-keys %u`, see install-edge.sh) adds the options at each login.
#   ~/.ssh is not touched then, and --gate-command is refused (exit 2): the forced command
#   is the one `mytunneld authorized-keys` prints, the gate of the binary sshd ran (with
#   its --env-file) unless sshd's AuthorizedKeysCommand passes it `--gate-command CMD`
#   (install-edge.sh's drop-in does not, and rewrites that line on every run). This script
#   could not honour it.
# - With --socket-dir DIR, or when the env file exists (its MYTUNNEL_SOCKET_DIR, default
#   /var/lib/mytunnel-sockets; both route modes), creates DIR/owners/<user>,
#   owned by the user, group --proxy-group (default caddy), mode 2750: the user's tunnel
#   sockets, reachable by the proxy only. An existing one owned by someone else is refused.
# - With --socket-inodes N (8-65536), the user's socket directory is its own small
#   filesystem: a tmpfs of N inodes (1 MiB, nosuid,nodev,noexec, the same owner, group and
#   mode) mounted there now and at every boot (a line in --fstab FILE, default
#   /etc/fstab, replacing any line for that mount point). A tenant who binds socket after
#   socket then fills only its own directory, never the filesystem other tenants' sockets
#   or the database live on. A tmpfs forgets its files at reboot: sockets are live state.
# - Idempotent: a line for the same key is replaced, never duplicated. Other keys are
#   kept. The file is replaced atomically (rename), so a concurrent login never reads a
#   half-written file; concurrent runs for one user are serialised with flock.
# - --remove removes the key's line instead (the user is left as it is).
#
# Exit codes: 0 done, 2 usage error or malformed key, 1 any other failure.
# Key material is never printed: only its fingerprint.
set -euo pipefail

readonly SCRIPT_NAME=install-edge-ssh-key
# shellcheck source=scripts/lib-edge.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-edge.sh"

usage() {
    echo "usage: $0 <user> <pubkey-file> [--gate-command CMD] [--group G] [--remove] [--keys-dir DIR] [--socket-dir DIR] [--proxy-group G] [--env-file FILE] [--socket-inodes N] [--fstab FILE]" >&2
    exit 2
}

# parse_args ARGS...: sets user, pubkey_file and the options' variables.
parse_args() {
    [[ $# -ge 2 ]] || usage
    user=$1
    pubkey_file=$2
    shift 2
    # The installed binary's gate, as `mytunneld authorized-keys` forces its own.
    gate_command="$(installed_binary '') gate"
    gate_command_given=0
    group=''
    remove=0
    keys_dir=''
    socket_dir=''
    proxy_group=''
    env_file=/etc/mytunneld/mytunneld.env
    socket_inodes=''
    socket_inodes_given=0
    fstab=/etc/fstab
    while [[ $# -gt 0 ]]; do
        case $1 in
            --keys-dir | --socket-dir | --proxy-group | --env-file | --socket-inodes | --fstab)
                [[ $# -ge 2 ]] || usage
                case $1 in
                    --keys-dir) keys_dir=$2 ;;
                    --socket-dir) socket_dir=$2 ;;
                    --proxy-group) proxy_group=$2 ;;
                    --env-file) env_file=$2 ;;
                    --socket-inodes) socket_inodes=$2 socket_inodes_given=1 ;;
                    --fstab) fstab=$2 ;;
                esac
                shift 2
                ;;
            --gate-command)
                [[ $# -ge 2 ]] || usage
                gate_command=$2
                gate_command_given=1
                shift 2
                ;;
            --gate-command=*)
                gate_command=${1#--gate-command=}
                gate_command_given=1
                shift
                ;;
            --group)
                [[ $# -ge 2 ]] || usage
                group=$2
                shift 2
                ;;
            --group=*)
                group=${1#--group=}
                shift
                ;;
            --remove)
                remove=1
                shift
                ;;
            *)
                usage
                ;;
        esac
    done
}

# check_args: refuses (exit 2) bad names, directories and options; takes the keys and
# socket directories from the edge's env file when not given.
check_args() {
    local dir
    # A user name useradd accepts, and that cannot be read as an option.
    [[ $user =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "invalid user name: $user" 2
    if [[ -n $group && ! $group =~ ^[a-z_][a-z0-9_-]{0,31}$ ]]; then
        die "invalid group name: $group" 2
    fi
    # What the edge's env file says, unless given here: as the installed mytunneld reads
    # it. Before mytunneld is installed, the file's own lines (edge_settings' fallback).
    if [[ -z $keys_dir || (-z $socket_dir && -f $env_file) ]]; then
        edge_settings "$env_file" "$(installed_binary '')" || true
    fi
    # The keys directory only when the env file sets it (an install from before route
    # modes keeps keys in ~/.ssh).
    if [[ -z $keys_dir && ${setting_source[MYTUNNEL_KEYS_DIR]:-default} != default ]]; then
        keys_dir=${setting_value[MYTUNNEL_KEYS_DIR]}
    fi
    # Every lease binds a socket in the owner's directory (both route modes).
    if [[ -z $socket_dir && -f $env_file ]]; then
        socket_dir=${setting_value[MYTUNNEL_SOCKET_DIR]}
    fi
    proxy_group=${proxy_group:-caddy}
    for dir in "$keys_dir" "$socket_dir"; do
        if [[ -n $dir && ! $dir =~ ^/[A-Za-z0-9/._-]*$ ]]; then
            die "invalid directory: $dir (an absolute path of [A-Za-z0-9/._-])" 2
        fi
    done
    keys_dir=${keys_dir%/}
    socket_dir=${socket_dir%/}
    # A key in the keys directory is written bare: its options, the forced command among
    # them, are what `mytunneld authorized-keys` adds at each login.
    if [[ -n $keys_dir && $gate_command_given -eq 1 ]]; then
        die "--gate-command has no effect with a keys directory ($keys_dir): the key is written without options and \`mytunneld authorized-keys\` forces its own gate command at each login (its own binary's gate unless sshd's AuthorizedKeysCommand passes it --gate-command CMD). Leave --gate-command out, or set it on that command line" 2
    fi
    [[ $proxy_group =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "invalid proxy group name: $proxy_group" 2
    if [[ $socket_inodes_given -eq 1 ]]; then
        if ! [[ $socket_inodes =~ ^[0-9]{1,5}$ ]] || ((10#$socket_inodes < 8 || 10#$socket_inodes > 65536)); then
            die "--socket-inodes must be a number from 8 to 65536: $socket_inodes" 2
        fi
        socket_inodes=$((10#$socket_inodes))
        [[ -n $socket_dir ]] || die "--socket-inodes needs a socket directory (--socket-dir, or the env file's)" 2
    fi
    # The command goes between double quotes in authorized_keys.
    if [[ -z $gate_command || $gate_command == *'"'* || $gate_command == *\\* || $gate_command =~ [[:cntrl:]] ]]; then
        die "the gate command must be non-empty, without quotes, backslashes or control characters" 2
    fi
}

# read_key: the key, exactly one line "<type> <base64> [comment]" that ssh-keygen reads;
# sets key_type, key_blob, comment and fingerprint.
read_key() {
    local lines key_line key_re
    [[ -f $pubkey_file && -r $pubkey_file ]] || die "cannot read $pubkey_file" 2
    lines=$(grep -c '' "$pubkey_file" || true)
    [[ $lines -eq 1 ]] || die "$pubkey_file must hold exactly one public key line" 2
    IFS= read -r key_line <"$pubkey_file" || true
    key_line=${key_line%$'\r'}
    key_re='^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) ([A-Za-z0-9+/]+={0,3})( [^[:cntrl:]]*)?$'
    [[ $key_line =~ $key_re ]] || die "$pubkey_file is not a public key (expected '<type> <base64> [comment]')" 2
    key_type=${BASH_REMATCH[1]}
    key_blob=${BASH_REMATCH[2]}
    comment=${BASH_REMATCH[3]# }
    if ! fingerprint=$(ssh-keygen -l -f "$pubkey_file" 2>/dev/null); then
        die "$pubkey_file is not a valid public key (ssh-keygen cannot read it)" 2
    fi
    # Keep only the fingerprint itself ("256 SHA256:… comment (ED25519)" -> "SHA256:…").
    fingerprint=$(awk '{print $2}' <<<"$fingerprint")
}

# ensure_user: creates the user when missing, unlocks it for key login, adds it to the
# group.
ensure_user() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    if ! id -u "$user" >/dev/null 2>&1; then
        [[ $remove -eq 0 ]] || die "no user $user" 2
        # 9: created meanwhile by a concurrent run.
        useradd -m -s /bin/bash "$user" || id -u "$user" >/dev/null 2>&1 || die "useradd $user failed"
        echo "created user $user"
    elif [[ $remove -eq 0 ]]; then
        local shell
        shell=$(getent passwd "$user" | cut -d: -f7)
        if [[ $(basename -- "$(readlink -f -- "$shell" 2>/dev/null || echo "$shell")") != bash ]]; then
            echo "note: $user's shell is $shell; sshd runs the gate through it, and a shell other than bash stays alive beside every held session (usermod -s /bin/bash $user saves that process)"
        fi
    fi
    if [[ $remove -eq 0 ]]; then
        # A locked account ('!' in the password field) cannot log in with a key under UsePAM no.
        usermod -p '*' "$user"
        if [[ -n $group ]]; then
            getent group "$group" >/dev/null || groupadd -f "$group"
            usermod -a -G "$group" "$user"
        fi
    fi
}

# make_socket_dir: the user's socket directory, owners/<user>, the user's and the proxy's
# group's only (optionally its own small filesystem).
make_socket_dir() {
    local owners user_sockets options fstab_tmp
    owners=$socket_dir/owners
    [[ -d $owners ]] || die "$owners does not exist: run install-edge.sh first"
    getent group "$proxy_group" >/dev/null || die "no group $proxy_group (--proxy-group): install the proxy first"
    user_sockets=$owners/$user
    if [[ -L $user_sockets || (-e $user_sockets && ! -d $user_sockets) ]]; then
        die "$user_sockets exists and is not a directory: refusing"
    fi
    if [[ -d $user_sockets ]]; then
        [[ $(stat -c '%u' "$user_sockets") == "$(id -u "$user")" ]] ||
            die "$user_sockets is owned by $(stat -c '%U' "$user_sockets"), not $user: refusing"
    else
        mkdir "$user_sockets" || [[ -d $user_sockets ]] || die "cannot create $user_sockets"
    fi
    if [[ -n $socket_inodes ]]; then
        # The user's own small filesystem: a flood of sockets fills only this directory.
        options="size=1m,nr_inodes=$socket_inodes,mode=2750,uid=$(id -u "$user"),gid=$(getent group "$proxy_group" | cut -d: -f3),nosuid,nodev,noexec"
        if mountpoint -q "$user_sockets"; then
            mount -o "remount,$options" "$user_sockets" || die "cannot remount $user_sockets"
        else
            mount -t tmpfs -o "$options" tmpfs "$user_sockets" || die "cannot mount a tmpfs on $user_sockets"
        fi
        fstab_tmp=$(mktemp "$(dirname "$fstab")/.fstab.XXXXXX")
        if [[ -f $fstab ]]; then
            awk -v dir="$user_sockets" '$2 != dir' "$fstab" >"$fstab_tmp"
            chmod --reference="$fstab" "$fstab_tmp"
        else
            chmod 0644 "$fstab_tmp"
        fi
        printf 'tmpfs %s tmpfs %s 0 0\n' "$user_sockets" "$options" >>"$fstab_tmp"
        mv -f "$fstab_tmp" "$fstab"
        echo "socket filesystem $user_sockets: tmpfs of $socket_inodes inodes (in $fstab)"
    fi
    chown "$user:$proxy_group" "$user_sockets"
    # setgid: sockets made inside get the proxy's group.
    chmod 2750 "$user_sockets"
    echo "socket directory $user_sockets ($user:$proxy_group 2750)"
}

# rewrite_key_file FILE OWNER MODE [LINE]: replaces FILE atomically (a temporary file in
# its directory, renamed into place, so a concurrent login never reads a half-written
# file), one writer at a time (flock on the directory): every line of FILE except those
# carrying this key, whatever their options, then LINE when given.
key_tmp=''
rewrite_key_file() {
    local file=$1 owner=$2 mode=$3 line=${4:-} dir
    dir=$(dirname "$file")
    exec 9<"$dir"
    flock 9
    key_tmp=$(mktemp "$dir/.$(basename "$file").XXXXXX")
    trap 'rm -f "$key_tmp"' EXIT
    if [[ -f $file ]]; then
        awk -v blob="$key_blob" '{
            keep = 1
            for (i = 1; i <= NF; i++) if ($i == blob) keep = 0
            if (keep) print
        }' "$file" >"$key_tmp"
    fi
    if [[ -n $line ]]; then
        printf '%s\n' "$line" >>"$key_tmp"
    fi
    chown "$owner" "$key_tmp"
    chmod "$mode" "$key_tmp"
    mv -f "$key_tmp" "$file"
    trap - EXIT
}

# The keys directory: the key without options, read by `mytunneld authorized-keys`.
install_in_keys_dir() {
    local keys_dir_mode keys_file line=''
    if [[ ! -d $keys_dir ]]; then
        install -d -m 0755 -o root -g root "$keys_dir"
    fi
    # mytunneld refuses keys in a directory others may write (like sshd's StrictModes);
    # an existing one is checked, never loosened or taken over.
    keys_dir_mode=$(stat -c '%a' "$keys_dir")
    if [[ -L $keys_dir || $(stat -c '%u' "$keys_dir") != 0 || $((8#$keys_dir_mode & 8#022)) -ne 0 ]]; then
        die "$keys_dir must be a directory of root, not writable by group or others (mode $keys_dir_mode owner $(stat -c '%U' "$keys_dir"))"
    fi
    keys_file=$keys_dir/$user
    if [[ $remove -eq 0 ]]; then
        line="$key_type $key_blob"
        [[ -n $comment ]] && line+=" $comment"
    fi
    rewrite_key_file "$keys_file" root:root 0644 "$line"
    if [[ $remove -eq 1 ]]; then
        echo "removed key $fingerprint from $keys_file"
    else
        echo "installed key $fingerprint for $user in $keys_file"
    fi
}

# ~<user>/.ssh/authorized_keys: the key with the gate's options.
install_in_authorized_keys() {
    local home ssh_dir auth line=''
    home=$(getent passwd "$user" | cut -d: -f6)
    [[ -n $home && $home == /* ]] || die "user $user has no home directory"
    if [[ ! -d $home ]]; then
        mkdir -p "$home"
        chown "$user:" "$home"
        chmod 0755 "$home"
    fi
    ssh_dir=$home/.ssh
    auth=$ssh_dir/authorized_keys
    if [[ ! -d $ssh_dir ]]; then
        install -d -m 0700 -o "$user" -g "$(id -g "$user")" "$ssh_dir"
    fi
    chown "$user:" "$ssh_dir"
    chmod 0700 "$ssh_dir"
    if [[ $remove -eq 0 ]]; then
        line="restrict,port-forwarding,pty,command=\"$gate_command\" $key_type $key_blob"
        [[ -n $comment ]] && line+=" $comment"
    fi
    rewrite_key_file "$auth" "$user:" 0600 "$line"
    if [[ $remove -eq 1 ]]; then
        echo "removed key $fingerprint from $auth"
    else
        echo "installed key $fingerprint for $user in $auth"
    fi
}

main() {
    parse_args "$@"
    check_args
    read_key
    ensure_user
    if [[ -n $socket_dir && $remove -eq 0 ]]; then
        make_socket_dir
    fi
    if [[ -n $keys_dir ]]; then
        install_in_keys_dir
    else
        install_in_authorized_keys
    fi
}

main "$@"

#!/usr/bin/env bash
# Creates or updates the wildcard A record of the tunnel domain at Infomaniak.
#
#   dns-bootstrap-infomaniak.sh --zone ZONE --name NAME --target IP
#                               [--ttl SECONDS] [--api-base URL] [--token-file FILE]
#                               [--dropin DIR]
#
# The record is `*.NAME.ZONE` (source `*.NAME` in the zone), or `*.ZONE` (source `*`) when
# NAME is `@`, type A, pointing at IP, TTL 300 unless --ttl says otherwise. Idempotent: the
# zone's records are listed first; a missing record is created, one with another target is
# updated, a matching one is left alone.
#
# API shape: Infomaniak's public API v2 for DNS zones (developer.infomaniak.com), Bearer
# token auth (a token with the "domain" scope), base https://api.infomaniak.com:
#     GET  {base}/2/zones/{zone}/records              list
#     POST {base}/2/zones/{zone}/records              {"source":"*.NAME","type":"A","target":"IP","ttl":300}
#     PUT  {base}/2/zones/{zone}/records/{id}         {"target":"IP","ttl":300}
# Replies are {"result":"success","data":…} or {"result":"error","error":{"code","description"}}
# (an error may come with HTTP 200; both are checked). --api-base overrides the base URL
# (for a test double); plain http:// is accepted only for a loopback host.
#
# The token, first found of:
#   --token-file FILE   first line of FILE; FILE must not be readable or writable by group or
#                       others (mode 0600 or 0400), else the script refuses;
#   INFOMANIAK_TOKEN    environment variable (removed from the environment of every
#                       command the script runs);
#   a prompt            read -rs, only when stdin is a terminal.
# The token never appears on a command line (curl reads the Authorization header from a 0600
# file in a private temp dir, removed on exit), is never echoed or logged, and is written
# nowhere else, except: with --dropin DIR, after the record is in place, the script writes
# DIR/10-infomaniak-token.conf (mode 0600) as a systemd drop-in
#     [Service]
#     Environment=INFOMANIAK_TOKEN=…
# for a future DNS-01 Caddy setup, e.g. DIR=/etc/systemd/system/caddy.service.d.
#
# Exit codes: 0 done (created, updated or unchanged), 1 API or other failure, 2 usage error,
# bad token file or refused input.
set -euo pipefail

readonly SCRIPT_NAME=dns-bootstrap-infomaniak
# shellcheck source=scripts/lib-edge.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-edge.sh"

readonly DEFAULT_API_BASE='https://api.infomaniak.com'
readonly DROPIN_NAME='10-infomaniak-token.conf'

usage() {
    echo "usage: $0 --zone ZONE --name NAME|@ --target IPV4 [--ttl SECONDS] [--api-base URL] [--token-file FILE] [--dropin DIR]" >&2
    exit 2
}

# parse_args ARGS...: sets the options' variables.
parse_args() {
    zone=''
    name=''
    target=''
    ttl=300
    api_base=$DEFAULT_API_BASE
    token_file=''
    dropin=''
    read_options zone:zone name:name target:target ttl:ttl api-base:api_base \
        token-file:token_file dropin:dropin -- "$@"
    [[ -n $zone && -n $name && -n $target ]] || usage
}

# check_inputs: normalises and checks the options (exit 2 on a bad one); sets source_name
# and fqdn.
check_inputs() {
    local label octet tool
    label='[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?'
    zone=${zone,,}
    zone=${zone%.}
    [[ $zone =~ ^$label(\.$label)+$ && ${#zone} -le 253 ]] || die "invalid zone: $zone" 2
    name=${name,,}
    if [[ $name == '@' ]]; then
        source_name='*'
        fqdn="*.$zone"
    else
        [[ $name =~ ^$label(\.$label)*$ ]] || die "invalid name: $name (a DNS name inside the zone, or @)" 2
        source_name="*.$name"
        fqdn="*.$name.$zone"
    fi
    [[ ${#fqdn} -le 253 ]] || die "the name $fqdn is too long" 2
    octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
    [[ $target =~ ^$octet\.$octet\.$octet\.$octet$ ]] || die "invalid IPv4 address: $target" 2
    [[ $ttl =~ ^[0-9]{1,7}$ && $ttl -ge 60 && $ttl -le 86400 ]] || die "invalid --ttl $ttl (60..86400 seconds)" 2
    api_base=${api_base%/}
    if [[ $api_base =~ ^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?$ ]]; then
        :
    elif [[ $api_base =~ ^http://(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|localhost|\[::1\])(:[0-9]{1,5})?$ ]]; then
        : # plain http only to loopback (a test double): the token must not cross a network in clear
    else
        die "invalid --api-base $api_base (https://HOST[:PORT], or http:// to a loopback address)" 2
    fi
    if [[ -n $dropin && ( $dropin != /* || $dropin =~ [[:cntrl:]] ) ]]; then
        die "--dropin must be an absolute directory path" 2
    fi
    for tool in curl python3; do
        command -v "$tool" >/dev/null || die "$tool is required" 2
    done
}

# read_token: the token from --token-file, INFOMANIAK_TOKEN or a prompt; sets token.
read_token() {
    local mode
    token=''
    if [[ -n $token_file ]]; then
        [[ -f $token_file && -r $token_file ]] || die "cannot read token file $token_file" 2
        mode=$(stat -L -c '%a' "$token_file")
        if (((8#$mode & 8#077) != 0)); then
            die "token file $token_file has mode $mode; it must be 0600 (chmod 600 $token_file)" 2
        fi
        IFS= read -r token <"$token_file" || true
    elif [[ -n ${INFOMANIAK_TOKEN:-} ]]; then
        token=$INFOMANIAK_TOKEN
    elif [[ -t 0 ]]; then
        IFS= read -rs -p 'Infomaniak API token (input hidden): ' token || true
        echo >&2
    else
        die "no token: give --token-file FILE (mode 0600), set INFOMANIAK_TOKEN, or run on a terminal to be asked" 2
    fi
    # Neither curl nor python3 inherits it.
    unset INFOMANIAK_TOKEN
    token=${token%$'\r'}
    [[ -n $token ]] || die "the token is empty" 2
    # A token is one word of URL-safe characters: anything else would break the HTTP header or
    # the systemd drop-in, so it is refused (and not shown).
    [[ ${#token} -le 1024 && $token =~ ^[A-Za-z0-9._~+/=-]+$ ]] ||
        die "the token holds characters an Infomaniak API token does not have (not shown)" 2
}

dropin_tmp=''
workdir=''
cleanup() {
    if [[ -n $workdir ]]; then rm -rf "$workdir"; fi
    if [[ -n $dropin_tmp ]]; then rm -f "$dropin_tmp"; fi
}

# make_workdir: a private work dir, removed on exit, holding the Authorization header.
make_workdir() {
    umask 077
    workdir=$(mktemp -d "${TMPDIR:-/tmp}/dns-bootstrap.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    header_file=$workdir/auth.header
    # printf is a bash builtin: no process gets the token as an argument.
    printf 'Authorization: Bearer %s\n' "$token" >"$header_file"
}

# Prints a text with the token blanked out (API replies never should hold it; be sure).
redact() {
    local text=$1
    printf '%s' "${text//"$token"/[token]}"
}

# api METHOD PATH [BODY_FILE]: the reply body is left in $workdir/reply. Dies with the API's
# error message on an HTTP error, a transport error or a {"result":"error"} reply.
api() {
    local method=$1 path=$2 body=${3:-} rc=0 status
    local args=(--fail-with-body --silent --show-error --proto "=https,http"
        --connect-timeout 10 --max-time 60
        -H "@$header_file" -H 'Accept: application/json'
        -X "$method" -o "$workdir/reply" -w '%{http_code}')
    if [[ -n $body ]]; then
        args+=(-H 'Content-Type: application/json' --data-binary "@$body")
    fi
    : >"$workdir/reply"
    status=$(curl "${args[@]}" "$api_base$path" 2>"$workdir/curl.err") || rc=$?
    if ! python3 - "$workdir/reply" >"$workdir/error" <<'PY'; then
import json, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
try:
    doc = json.loads(text)
except ValueError:
    print(text.strip()[:300] or "(empty reply)")
    sys.exit(1)
if not isinstance(doc, dict) or doc.get("result") != "success":
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        parts = [str(err.get(k)) for k in ("code", "description") if err.get(k)]
        print(": ".join(parts) or json.dumps(err)[:300])
    else:
        print(text.strip()[:300])
    sys.exit(1)
PY
        local message
        message=$(<"$workdir/error")
        if [[ $rc -ne 0 && ! -s $workdir/reply ]]; then
            message=$(<"$workdir/curl.err")
        fi
        die "$method $path failed (HTTP ${status:-none}): $(redact "$message")"
    fi
    if [[ $rc -ne 0 ]]; then
        die "$method $path failed (HTTP ${status:-none}): $(redact "$(<"$workdir/curl.err")")"
    fi
}

# upsert_record: lists the zone's records, then creates, updates or leaves alone the A
# record of the name.
upsert_record() {
    local records_path="/2/zones/$zone/records" existing=() record_id='' current='' line id value
    api GET "$records_path"
    # "<id> <target>" of each A record for this name; the zone's list may give the source
    # relative ("*.tunnel") or as a full name.
    mapfile -t existing < <(python3 - "$workdir/reply" "$source_name" "$zone" <<'PY'
import json, sys
path, source, zone = sys.argv[1:4]
data = json.load(open(path, encoding="utf-8")).get("data") or []
full = source + "." + zone
for r in data if isinstance(data, list) else []:
    if not isinstance(r, dict) or str(r.get("type", "")).upper() != "A":
        continue
    s = str(r.get("source", "")).lower().rstrip(".")
    if s in (source, full):
        print(r.get("id"), str(r.get("target", "")).strip())
PY
    )
    for line in "${existing[@]}"; do
        id=${line%% *}
        value=${line#* }
        if [[ $value == "$target" ]]; then
            record_id=$id
            current=$value
            break
        fi
        if [[ -z $record_id ]]; then
            record_id=$id
            current=$value
        fi
    done
    if [[ ${#existing[@]} -gt 1 ]]; then
        echo "warning: $fqdn has ${#existing[@]} A records; only record $record_id is managed here" >&2
    fi

    if [[ -z $record_id ]]; then
        python3 -c 'import json, sys; print(json.dumps({"source": sys.argv[1], "type": "A", "target": sys.argv[2], "ttl": int(sys.argv[3])}))' \
            "$source_name" "$target" "$ttl" >"$workdir/body"
        api POST "$records_path" "$workdir/body"
        echo "created A $fqdn -> $target (ttl $ttl)"
    elif [[ $current == "$target" ]]; then
        echo "unchanged: A $fqdn -> $target (record $record_id)"
    else
        [[ $record_id =~ ^[0-9A-Za-z_-]+$ ]] || die "unexpected record id from the API: $record_id"
        python3 -c 'import json, sys; print(json.dumps({"target": sys.argv[1], "ttl": int(sys.argv[2])}))' \
            "$target" "$ttl" >"$workdir/body"
        api PUT "$records_path/$record_id" "$workdir/body"
        echo "updated A $fqdn -> $target (was $current, record $record_id)"
    fi
}

# write_dropin: the systemd drop-in DIR/10-infomaniak-token.conf with the token, for a
# future DNS-01 Caddy setup.
write_dropin() {
    if [[ ! -d $dropin ]]; then
        (umask 022 && mkdir -p "$dropin")
    fi
    dropin_tmp=$(mktemp "$dropin/.$DROPIN_NAME.XXXXXX")
    chmod 0600 "$dropin_tmp"
    printf '[Service]\nEnvironment=INFOMANIAK_TOKEN=%s\n' "$token" >"$dropin_tmp"
    mv -f "$dropin_tmp" "$dropin/$DROPIN_NAME"
    dropin_tmp=''
    echo "wrote $dropin/$DROPIN_NAME (mode 0600); run: systemctl daemon-reload"
}

main() {
    parse_args "$@"
    check_inputs
    read_token
    make_workdir
    upsert_record
    if [[ -n $dropin ]]; then
        write_dropin
    fi
}

main "$@"

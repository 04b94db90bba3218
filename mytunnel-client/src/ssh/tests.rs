//! Unit tests of the ssh transport's pure parts and its retry rules.

use super::forward::{describe_end, StderrRing};
use super::*;
use mytunnel_core::protocol::{AllocateRequest, ApiError, ErrorCode, ListScope, Takeover};
use mytunnel_core::transport::TransportError;

fn config() -> SshConfig {
    let mut c = SshConfig::new("alice@edge");
    c.extra_options = vec!["Port=2222".into()];
    c
}

fn program(cipher: Option<&str>) -> SshProgram {
    SshProgram {
        ssh_bin: PathBuf::from("/usr/bin/ssh"),
        guard: ParentDeath::Watchdog,
        cipher: cipher.map(str::to_owned),
    }
}

fn allocate() -> CtlRequest {
    CtlRequest::Allocate(AllocateRequest {
        local_port: Some(3000),
        name: Some("portal".parse().unwrap()),
        ttl: Some(Duration::from_secs(5400)),
        takeover: Takeover::Refuse,
        replaces: None,
    })
}

#[test]
fn refused_handshakes_are_told_from_other_failures() {
    // What OpenSSH 9.2 prints when sshd drops a connection past MaxStartups, closes it
    // before the banner, or is not listening (restarting); as our messages carry it.
    for refused in [
        "ssh exited with status 255; ssh said: kex_exchange_identification: read: Connection reset by peer; Connection reset by 127.0.0.1 port 22",
        "kex_exchange_identification: Connection closed by remote host",
        "kex_exchange_identification: banner line 0: Exceeded MaxStartups",
        "ssh_exchange_identification: Connection closed by remote host",
        "ssh to alice@edge failed (exit status: 255); ssh said: ssh: connect to host edge port 22: Connection refused",
        "ssh: connect to host 127.0.0.1 port 2222: Connection refused",
        "Connection timed out during banner exchange",
        "the forward 127.0.0.1:21000 -> 127.0.0.1:3000 did not come up: ssh exited (exit status: 255); last output: kex_exchange_identification: read: Connection reset by peer",
    ] {
        assert!(is_refused_handshake(refused), "{refused}");
    }
    for other in [
        "alice@edge: Permission denied (publickey).",
        "Host key verification failed.",
        "ssh: Could not resolve hostname edge: Name or service not known",
        "ssh: connect to host edge port 22: Connection timed out",
        "ssh: connect to host edge port 22: No route to host",
        "Error: remote port forwarding failed for listen port 21000",
        "kex_exchange_identification: banner line contains invalid characters",
        // After login (sshd killed while the command ran): the command may have run.
        "Connection closed by 127.0.0.1 port 22",
        "Connection reset by 127.0.0.1 port 22",
        "`allocate` got no answer within 40s",
        "",
    ] {
        assert!(!is_refused_handshake(other), "{other}");
    }
}

#[test]
fn giving_up_says_how_often_and_how_long() {
    let text = gave_up_on_refusals(
        "ssh: connect to host edge port 22: Connection refused",
        7,
        Duration::from_millis(30_400),
        Duration::from_secs(30),
    );
    assert!(
        text.starts_with("ssh: connect to host edge port 22: Connection refused ("),
        "{text}"
    );
    assert!(text.contains("7 times in 30.4s"), "{text}");
    assert!(
        text.contains("gave up after the 30s retry budget"),
        "{text}"
    );
    let off = gave_up_on_refusals("x", 1, Duration::ZERO, Duration::ZERO);
    assert!(off.contains("retrying is off"), "{off}");
}

#[tokio::test(start_paused = true)]
async fn refused_handshakes_are_retried_with_backoff_within_the_budget() {
    let refused = || {
        Err::<(), _>(TransportError::Unreachable(
            "kex_exchange_identification: read: Connection reset by peer".to_owned(),
        ))
    };
    // Refused twice, then through.
    let mut tries = 0;
    let start = tokio::time::Instant::now();
    let result = retry_refused_handshake(&config(), || {
        tries += 1;
        let outcome = if tries <= 2 { refused() } else { Ok(()) };
        async move { outcome }
    })
    .await;
    assert_eq!(result, Ok(()));
    assert_eq!(tries, 3);
    // 0.5 s and 1 s, each ±25%.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1125) && waited <= Duration::from_millis(1875),
        "{waited:?}"
    );

    // Always refused: given up once the budget is spent, not before, not much after.
    let mut c = config();
    c.handshake_retry = Duration::from_secs(20);
    let mut tries = 0;
    let start = tokio::time::Instant::now();
    let result = retry_refused_handshake(&c, || {
        tries += 1;
        async move { refused() }
    })
    .await;
    assert_eq!(start.elapsed(), Duration::from_secs(20));
    match result {
        Err(TransportError::Unreachable(m)) => {
            assert!(m.contains("Connection reset by peer"), "{m}");
            assert!(m.contains(&format!("{tries} times in 20.0s")), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // 0.5 + 1 + 2 + 4 + 8 (±25%) then the rest of the 20 s: 6 or 7 tries.
    assert!((6..=7).contains(&tries), "{tries}");

    // Any other failure is final at once.
    let mut tries = 0;
    let result = retry_refused_handshake(&config(), || {
        tries += 1;
        async {
            Err::<(), _>(TransportError::Unreachable(
                "alice@edge: Permission denied (publickey).".to_owned(),
            ))
        }
    })
    .await;
    assert_eq!(tries, 1);
    assert!(matches!(result, Err(TransportError::Unreachable(m)) if m.ends_with("(publickey).")));
}

#[test]
fn defaults() {
    let c = SshConfig::new("edge");
    assert_eq!(c.ssh_bin, PathBuf::from("ssh"));
    assert_eq!(c.remote_bin, "mytunneld");
    assert_eq!(c.multiplexing, Multiplexing::Shared);
    assert_eq!(c.connect_timeout, Duration::from_secs(10));
    assert!(c.remote_overrides.is_empty() && c.extra_options.is_empty());
    assert_eq!(c.ctl_timeout(), Duration::from_secs(40));
    assert_eq!(c.forward_timeout(), Duration::from_secs(25));
    assert_eq!(c.handshake_retry, Duration::from_secs(30));
}

#[test]
fn connect_timeout_rounds_up_to_whole_seconds() {
    assert_eq!(
        connect_timeout_option(Duration::from_secs(10)),
        "ConnectTimeout=10"
    );
    assert_eq!(
        connect_timeout_option(Duration::from_millis(1500)),
        "ConnectTimeout=2"
    );
    assert_eq!(connect_timeout_option(Duration::ZERO), "ConnectTimeout=1");
    assert_eq!(
        connect_timeout_option(Duration::MAX),
        format!("ConnectTimeout={}", u64::MAX)
    );
}

#[test]
fn per_command_arguments() {
    let args = per_command_args(&config(), &program(None), &allocate());
    assert_eq!(
        args,
        [
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "Port=2222",
            "--",
            "alice@edge",
            "mytunneld ctl allocate --local-port 3000 --name portal --ttl '1h 30m'",
        ]
    );
}

#[test]
fn overrides_follow_the_request_words() {
    let mut c = config();
    assert_eq!(ctl_words(&c, &CtlRequest::Stats), ["ctl", "stats"]);
    c.remote_overrides = vec![("--db-path".into(), "/var/lib/my db".into())];
    c.remote_bin = "/opt/x/mytunneld".into();
    assert_eq!(
        ctl_words(&c, &CtlRequest::List(ListScope::All)),
        ["ctl", "list", "--all", "--db-path", "/var/lib/my db"]
    );
    assert_eq!(
        remote_command(&c, &CtlRequest::Stats),
        "/opt/x/mytunneld ctl stats --db-path '/var/lib/my db'"
    );
}

#[test]
fn forward_arguments() {
    let args = forward_args(
        &config(),
        &program(Some("Ciphers=x")),
        &ForwardSpec {
            edge_bind: mytunnel_core::BindTarget::LoopbackPort(21007),
            local_port: 3000,
        },
    );
    let joined = args.join(" ");
    assert!(joined.starts_with("-N -T -v -o ExitOnForwardFailure=yes -o ControlMaster=no -o ControlPath=none -o BatchMode=yes -o ServerAliveInterval=10 -o ServerAliveCountMax=3 -o ConnectTimeout=10 -o Port=2222 -o Ciphers=x "), "{joined}");
    assert!(joined.ends_with("-R 127.0.0.1:21007:127.0.0.1:3000 -- alice@edge"));
}

#[test]
fn the_master_is_interactive_and_stays_in_the_foreground() {
    let args = master_args(
        &config(),
        &program(Some("Ciphers=x")),
        Terminal::Pty,
        Path::new("/d/master"),
        Path::new("/d/log"),
    );
    let joined: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        joined.join(" "),
        "-tt -M -S /d/master -o ControlPersist=no -o BatchMode=yes -o ServerAliveInterval=10 \
         -o ServerAliveCountMax=3 -o ConnectTimeout=10 -E /d/log -o Port=2222 -o Ciphers=x \
         -- alice@edge"
    );
    assert!(!joined.iter().any(|a| a == "-f" || a == "-N"));
}

#[test]
fn aes_gcm_goes_first_only_over_the_default_list_and_with_aes() {
    let default = format!("user alice\nciphers {OPENSSH_DEFAULT}\nport 22\n");
    assert_eq!(
        cipher_option(&default, true).as_deref(),
        Some(format!("Ciphers={AES_GCM_FIRST}").as_str())
    );
    assert_eq!(cipher_option(&default, false), None);
    // The user's configuration chose: theirs stands.
    assert_eq!(
        cipher_option("ciphers chacha20-poly1305@openssh.com\n", true),
        None
    );
    assert_eq!(cipher_option("port 22\n", true), None);
    // Same ciphers, another order: only the order changes.
    let mut ours: Vec<&str> = AES_GCM_FIRST.split(',').collect();
    let mut theirs: Vec<&str> = OPENSSH_DEFAULT.split(',').collect();
    ours.sort_unstable();
    theirs.sort_unstable();
    assert_eq!(ours, theirs);
}

#[test]
fn a_missing_ssh_is_reported_before_anything_runs() {
    let e = locate_program(Path::new("no-such-ssh-binary-here")).unwrap_err();
    assert!(e.to_string().contains("not found in PATH"), "{e}");
    let e = locate_program(Path::new("/nonexistent/ssh")).unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
    assert!(locate_program(Path::new("sh")).unwrap().is_absolute());
}

#[test]
fn destinations_that_look_like_options_are_refused() {
    for bad in ["", "  ", "-oProxyCommand=sh", "edge\nx"] {
        assert!(
            matches!(check_destination(bad), Err(TransportError::Unreachable(_))),
            "{bad:?}"
        );
    }
    assert!(check_destination("alice@edge.example.com").is_ok());
}

#[test]
fn stderr_filtering() {
    assert!(keep_stderr_line(
        "debug1: remote forward success for: listen 127.0.0.1:21000, connect 127.0.0.1:3000"
    ));
    assert!(keep_stderr_line(
        "Error: remote port forwarding failed for listen port 21000"
    ));
    assert!(keep_stderr_line(
        "alice@edge: Permission denied (publickey)."
    ));
    assert!(keep_stderr_line(
        "debug1: Authenticated to edge ([127.0.0.1]:22) using \"publickey\"."
    ));
    assert!(!keep_stderr_line(
        "debug1: Reading configuration data /etc/ssh/ssh_config"
    ));
    assert!(!keep_stderr_line("debug2: channel 0: open confirm"));
    assert!(!keep_stderr_line(
        "Warning: Permanently added 'edge' (ED25519) to the list of known hosts."
    ));
    assert!(!keep_stderr_line(""));
    assert!(is_forward_success(
        "debug1: remote forward success for: listen 127.0.0.1:21000, connect 127.0.0.1:3000"
    ));
    assert!(!is_forward_success(
        "debug1: remote forward failure for: listen 127.0.0.1:21000, connect 127.0.0.1:3000"
    ));
}

#[test]
fn lines_are_cleaned_and_bounded() {
    assert_eq!(clean_line(b"Error: x\r\n"), "Error: x");
    assert_eq!(
        clean_line(b"\x1b[2Jbad \xff byte\n"),
        "[2Jbad \u{fffd} byte"
    );
    assert_eq!(clean_line(&[b'a'; 10_000]).chars().count(), MAX_LINE_CHARS);
    assert_eq!(
        tail_of_text("debug1: noise\none\ntwo\n\nthree\n", 2),
        "two; three"
    );
    assert_eq!(tail_of_text("", 5), "");
}

#[test]
fn ring_keeps_the_last_lines() {
    let mut ring = StderrRing::default();
    for i in 0..(STDERR_RING + 7) {
        ring.push(format!("line {i}"));
    }
    assert_eq!(ring.lines.len(), STDERR_RING);
    assert_eq!(ring.lines.front().map(String::as_str), Some("line 7"));
    assert_eq!(
        ring.tail(2),
        format!("line {}; line {}", STDERR_RING + 5, STDERR_RING + 6)
    );
}

#[test]
fn replies_map_to_transport_errors() {
    let health = r#"{"healthy":true,"version":"0.1.0","base_domain":"t.example","db":{"ok":true,"detail":"ok"},"caddy":{"ok":true,"detail":"ok"}}"#;
    assert!(matches!(
        interpret_reply(Verb::Health, Some(0), health.as_bytes(), ""),
        Ok(CtlResponse::Health(h)) if h.healthy
    ));
    // A success document with a failure status is not trusted.
    assert!(matches!(
        interpret_reply(Verb::Health, Some(2), health.as_bytes(), ""),
        Err(TransportError::Malformed(_))
    ));
    let refusal = ApiError::new(ErrorCode::SlugTaken, "portal is taken");
    assert_eq!(
        interpret_reply(
            Verb::Allocate,
            Some(1),
            refusal.to_envelope_json().as_bytes(),
            ""
        ),
        Err(TransportError::Refused(refusal))
    );
    match interpret_reply(
        Verb::List,
        Some(255),
        b"",
        "alice@edge: Permission denied (publickey).",
    ) {
        Err(TransportError::Unreachable(m)) => {
            assert!(m.contains("Permission denied (publickey)."), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        interpret_reply(Verb::List, None, b"", ""),
        Err(TransportError::Unreachable(_))
    ));
    match interpret_reply(
        Verb::List,
        Some(127),
        b"",
        "bash: line 1: mytunneld: command not found",
    ) {
        Err(TransportError::Malformed(m)) => {
            assert!(m.contains("command not found"), "{m}");
            assert!(m.contains("127"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        interpret_reply(Verb::List, Some(0), &[0xff, 0xfe, b'{'], ""),
        Err(TransportError::Malformed(_))
    ));
}

#[test]
fn log_tail_reads_the_end_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut text = "x\n".repeat(20_000);
    text.push_str("debug1: noise\nssh: connect to host edge port 22: Connection refused\n");
    std::fs::write(&path, text).unwrap();
    assert_eq!(
        log_tail(&path),
        "x; x; x; x; ssh: connect to host edge port 22: Connection refused"
    );
    assert_eq!(log_tail(&dir.path().join("missing")), "");
}

#[test]
fn private_dir_is_0700() {
    let dir = private_dir().unwrap();
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    let path = dir.path().to_owned();
    drop(dir);
    assert!(!path.exists());
}

#[test]
fn forward_end_describes_status_and_output() {
    use std::os::unix::process::ExitStatusExt;
    let reason = describe_end(
        &Ok(ExitStatus::from_raw(255 << 8)),
        "Error: remote port forwarding failed for listen port 21000",
    );
    assert!(reason.contains("255"), "{reason}");
    assert!(reason.contains("remote port forwarding failed"), "{reason}");
}

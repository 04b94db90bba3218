//! The OpenSSH transport against a recording fake `ssh` (tests/fixtures/fake-ssh.sh): the
//! exact options of every ssh invocation, the reply mapping, forward readiness and
//! shutdown, and the shared connection's launch and private directory. No sshd, no ports.
//! (A fake cannot answer OpenSSH's mux protocol: ctl calls and forwards on the shared
//! connection are tested against real sshd, in mytunnel-cli's end-to-end suite.)

// test code: a panic is a failed assertion
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mytunnel_client::ssh::{Multiplexing, SshConfig, SshTransport};
use mytunnel_core::gate::{parse_original_command, GateConfig, GateDecision};
use mytunnel_core::protocol::{
    AllocateRequest, CtlRequest, CtlResponse, LeaseDto, ListScope, Takeover,
};
use mytunnel_core::transport::{ForwardSpec, Transport, TransportError};
use mytunnel_core::ErrorCode;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const DESTINATION: &str = "alice@edge";
/// Bound on every await of a test: a hang is a failure, not a stuck CI job.
const LIMIT: Duration = Duration::from_secs(30);

/// One recorded ssh invocation.
#[derive(Debug, Clone)]
struct Invocation {
    pid: u32,
    args: Vec<String>,
}

impl Invocation {
    fn has(&self, word: &str) -> bool {
        self.args.iter().any(|a| a == word)
    }

    /// Whether `flag value` appear next to each other.
    fn has_pair(&self, flag: &str, value: &str) -> bool {
        self.args.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    fn value_of(&self, flag: &str) -> Option<&str> {
        self.args
            .windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].as_str())
    }
}

/// A fake ssh in its own directory: a wrapper `ssh` that sets the fake's environment and
/// runs the fixture script, its invocation log and its behaviour files.
struct Fake {
    dir: tempfile::TempDir,
    bin: PathBuf,
    log: PathBuf,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("invocations.log");
        let quote = |p: &Path| shell_words::quote(p.to_str().unwrap()).into_owned();
        let wrapper = format!(
            "#!/usr/bin/env bash\nexport FAKE_SSH_LOG={}\nexport FAKE_SSH_DIR={}\nexport FAKE_SSH_REPLY={}\nexec bash {} \"$@\"\n",
            quote(&log),
            quote(dir.path()),
            quote(&dir.path().join("reply.json")),
            quote(&Path::new(FIXTURES).join("fake-ssh.sh")),
        );
        let source = dir.path().join("ssh.src");
        std::fs::write(&source, wrapper).unwrap();
        // Installed by another process: no fd of ours ever writes the executable, so a
        // process forked by a parallel test cannot make exec fail with ETXTBSY.
        let bin = dir.path().join("ssh");
        let status = std::process::Command::new("install")
            .args(["-m", "0755"])
            .arg(&source)
            .arg(&bin)
            .status()
            .unwrap();
        assert!(status.success());
        Fake { dir, bin, log }
    }

    fn config(&self, multiplexing: Multiplexing) -> SshConfig {
        let mut config = SshConfig::new(DESTINATION);
        config.ssh_bin = self.bin.clone();
        config.multiplexing = multiplexing;
        config.extra_options = vec!["Port=2222".to_owned()];
        config
    }

    /// Writes one behaviour file (see the fixture's header).
    fn set(&self, name: &str, value: &str) {
        std::fs::write(self.dir.path().join(name), value).unwrap();
    }

    fn reply_with_fixture(&self, fixture: &str, exit_code: i32) {
        std::fs::copy(
            Path::new(FIXTURES).join(fixture),
            self.dir.path().join("reply.json"),
        )
        .unwrap();
        self.set("exit_code", &exit_code.to_string());
    }

    /// Every invocation but `ssh -G` (the transport asks it once, for the cipher list).
    fn invocations(&self) -> Vec<Invocation> {
        self.all_invocations()
            .into_iter()
            .filter(|i| !i.has("-G"))
            .collect()
    }

    fn all_invocations(&self) -> Vec<Invocation> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| {
                let mut fields = line.split('\t');
                let pid = fields.next().unwrap().parse().unwrap();
                Invocation {
                    pid,
                    args: fields.map(str::to_owned).collect(),
                }
            })
            .collect()
    }

    fn only(&self, role: &str) -> Invocation {
        let found: Vec<Invocation> = self
            .invocations()
            .into_iter()
            .filter(|i| i.has(role))
            .collect();
        assert_eq!(found.len(), 1, "one {role} invocation: {found:?}");
        found[0].clone()
    }

    /// Polls until the fake created a file in its directory.
    async fn wait_for_file(&self, name: &str) {
        let deadline = Instant::now() + LIMIT;
        while !self.dir.path().join(name).exists() {
            assert!(Instant::now() < deadline, "the fake never created {name}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls until an invocation with `role` was recorded.
    async fn wait_for_invocation(&self, role: &str) -> Invocation {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(found) = self.invocations().into_iter().find(|i| i.has(role)) {
                return found;
            }
            assert!(Instant::now() < deadline, "no {role} invocation recorded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Fake {
    /// Kills, by pid, any fake still running (only after a failed assertion).
    fn drop(&mut self) {
        let marker = self.dir.path().to_string_lossy().into_owned();
        for invocation in self.invocations() {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", invocation.pid))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            if alive(invocation.pid) && (cmdline.contains(&marker) || cmdline == "sleep 1000 ") {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &invocation.pid.to_string()])
                    .status();
            }
        }
    }
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S …`: the state follows the last parenthesis.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("timed out")
}

async fn connect(config: SshConfig) -> SshTransport {
    within(SshTransport::connect(config)).await.unwrap()
}

fn lease_fixture() -> LeaseDto {
    serde_json::from_str(&std::fs::read_to_string(Path::new(FIXTURES).join("lease.json")).unwrap())
        .unwrap()
}

fn allocate(name: &str) -> CtlRequest {
    CtlRequest::Allocate(AllocateRequest {
        local_port: Some(3000),
        name: Some(name.parse().unwrap()),
        ttl: None,
        takeover: Takeover::Refuse,
        replaces: None,
    })
}

const SPEC: ForwardSpec = ForwardSpec {
    edge_bind: mytunnel_core::BindTarget::LoopbackPort(21007),
    local_port: 3000,
};

// ---------------------------------------------------------------------------------------
// Data plane

#[tokio::test]
async fn forward_has_the_exact_options_and_is_up_only_after_the_success_line() {
    let fake = Fake::new();
    fake.set("forward_mode", "wait-go");
    let transport = Arc::new(connect(fake.config(Multiplexing::PerCommand)).await);
    let opening = tokio::spawn({
        let transport = Arc::clone(&transport);
        async move { transport.open_forward(SPEC).await }
    });

    let invocation = fake.wait_for_invocation("-R").await;
    fake.wait_for_file("waiting-go").await;
    // ssh runs and has printed its first lines, not the success line: not up yet.
    assert!(alive(invocation.pid));
    assert!(
        !opening.is_finished(),
        "open_forward returned before success"
    );
    fake.set("go", "");
    let mut forward = within(opening).await.unwrap().unwrap();

    assert!(invocation.has("-N"));
    for option in [
        "ExitOnForwardFailure=yes",
        "ControlMaster=no",
        "ControlPath=none",
        "BatchMode=yes",
        "ServerAliveInterval=10",
        "ServerAliveCountMax=3",
        "ConnectTimeout=10",
        "Port=2222",
    ] {
        assert!(
            invocation.has_pair("-o", option),
            "-o {option}: {invocation:?}"
        );
    }
    assert!(invocation.has_pair("-R", "127.0.0.1:21007:127.0.0.1:3000"));
    assert_eq!(invocation.args.last().unwrap(), DESTINATION);
    assert!(!invocation.has("-S") && !invocation.has("-M"));

    assert!(alive(invocation.pid));
    within(forward.stop()).await;
    assert!(!alive(invocation.pid), "ssh still runs after stop()");
    // A stopped forward has ended.
    let end = within(forward.ended()).await;
    assert!(
        end.reason.contains("SIGTERM"),
        "stopped by SIGTERM: {}",
        end.reason
    );
}

#[tokio::test]
async fn a_refused_forward_is_unreachable_with_the_ssh_message() {
    let fake = Fake::new();
    fake.set("forward_mode", "fail");
    let transport = connect(fake.config(Multiplexing::PerCommand)).await;
    let err = within(transport.open_forward(SPEC)).await.unwrap_err();
    match err {
        TransportError::Unreachable(message) => {
            assert!(
                message.contains("remote port forwarding failed for listen port 21007"),
                "{message}"
            );
            assert!(message.contains("255"), "{message}");
            assert!(!message.contains("Reading configuration data"), "{message}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(!alive(fake.only("-R").pid));
}

#[tokio::test]
async fn ended_reports_the_exit_status_and_last_stderr_lines() {
    let fake = Fake::new();
    fake.set("forward_mode", "drop");
    let transport = connect(fake.config(Multiplexing::PerCommand)).await;
    let mut forward = within(transport.open_forward(SPEC)).await.unwrap();
    let pid = fake.only("-R").pid;
    assert!(alive(pid));

    fake.set("release", "");
    let end = within(forward.ended()).await;
    assert!(end.reason.contains("255"), "{}", end.reason);
    assert!(
        end.reason.contains("Timeout, server edge not responding."),
        "{}",
        end.reason
    );
    assert!(
        !end.reason.contains("Reading configuration"),
        "{}",
        end.reason
    );
    assert!(!alive(pid));
    // Asking again gives the same answer at once.
    assert_eq!(within(forward.ended()).await, end);
}

#[tokio::test]
async fn dropping_a_forward_kills_ssh() {
    let fake = Fake::new();
    let transport = connect(fake.config(Multiplexing::PerCommand)).await;
    let forward = within(transport.open_forward(SPEC)).await.unwrap();
    let pid = fake.only("-R").pid;
    assert!(alive(pid));
    drop(forward);
    let deadline = Instant::now() + LIMIT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "ssh {pid} survived its forward");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Control plane, one ssh per command

#[tokio::test]
async fn per_command_ctl_sends_one_remote_word_and_decodes_the_dto() {
    let fake = Fake::new();
    fake.reply_with_fixture("lease.json", 0);
    let transport = connect(fake.config(Multiplexing::PerCommand)).await;
    assert!(fake.invocations().is_empty(), "PerCommand starts nothing");

    let response = within(transport.ctl(&allocate("portal"))).await.unwrap();
    assert_eq!(response, CtlResponse::Lease(lease_fixture()));

    let invocation = fake.only("-T");
    assert!(invocation.has_pair("-o", "ControlMaster=no"));
    assert!(invocation.has_pair("-o", "ControlPath=none"));
    assert!(invocation.has_pair("-o", "BatchMode=yes"));
    assert!(invocation.has_pair("-o", "ConnectTimeout=10"));
    assert!(invocation.has_pair("-o", "Port=2222"));
    let at = invocation
        .args
        .iter()
        .position(|a| a == DESTINATION)
        .unwrap();
    assert_eq!(
        &invocation.args[at + 1..],
        ["mytunneld ctl allocate --local-port 3000 --name portal"]
    );
    assert!(!invocation.args.iter().any(|a| a.contains("--db-path")));
}

#[tokio::test]
async fn quoted_words_round_trip_through_the_gate() {
    let fake = Fake::new();
    fake.reply_with_fixture("lease.json", 0);
    let mut config = fake.config(Multiplexing::PerCommand);
    config.remote_bin = "/opt/x/mytunneld".to_owned();
    let transport = connect(config).await;
    let gate = GateConfig {
        program_paths: vec!["/opt/x/mytunneld".into()],
    };
    // A slug never needs quotes; a TTL is written `1h 30m`, which does.
    let requests = [
        CtlRequest::Allocate(AllocateRequest {
            local_port: Some(3000),
            name: Some("portal".parse().unwrap()),
            ttl: Some(Duration::from_secs(5400)),
            takeover: Takeover::Force,
            replaces: Some("lease_abcdefghijklmnop".parse().unwrap()),
        }),
        CtlRequest::Heartbeat {
            lease: "lease_abcdefghijklmnop".parse().unwrap(),
        },
    ];
    for request in &requests {
        within(transport.ctl(request)).await.unwrap();
    }
    let words: Vec<String> = fake
        .invocations()
        .iter()
        .map(|i| i.args.last().unwrap().clone())
        .collect();
    assert_eq!(
        words[0],
        "/opt/x/mytunneld ctl allocate --local-port 3000 --name portal --ttl '1h 30m' --force \
         --replaces lease_abcdefghijklmnop"
    );
    for (word, request) in words.iter().zip(requests) {
        assert!(word.starts_with("/opt/x/mytunneld ctl "), "{word}");
        assert_eq!(
            parse_original_command(word, &gate).unwrap(),
            GateDecision::Ctl(request)
        );
    }
}

#[tokio::test]
async fn override_flags_are_sent_only_when_configured() {
    let fake = Fake::new();
    fake.set("reply.json", "[]");
    let mut config = fake.config(Multiplexing::PerCommand);
    let plain = connect(config.clone()).await;
    config.remote_overrides = vec![("--db-path".to_owned(), "/x".to_owned())];
    let overridden = connect(config).await;

    let list = CtlRequest::List(ListScope::Own);
    assert_eq!(
        within(plain.ctl(&list)).await.unwrap(),
        CtlResponse::Leases(vec![])
    );
    within(overridden.ctl(&list)).await.unwrap();
    let words: Vec<String> = fake
        .invocations()
        .iter()
        .map(|i| i.args.last().unwrap().clone())
        .collect();
    assert_eq!(
        words,
        ["mytunneld ctl list", "mytunneld ctl list --db-path /x"]
    );
    // Through a gate such a command is refused; the flags are for edges without one.
    assert_eq!(
        parse_original_command(&words[1], &GateConfig::default())
            .unwrap_err()
            .code,
        ErrorCode::OverrideNotAllowed
    );
}

#[tokio::test]
async fn an_error_envelope_is_refused_with_its_code() {
    let fake = Fake::new();
    fake.reply_with_fixture("slug_taken.json", 1);
    let transport = connect(fake.config(Multiplexing::PerCommand)).await;
    match within(transport.ctl(&allocate("portal"))).await {
        Err(TransportError::Refused(api)) => {
            assert_eq!(api.code, ErrorCode::SlugTaken);
            assert_eq!(api.message, "portal is held by another active lease");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn an_ssh_failure_is_unreachable_with_its_message() {
    let fake = Fake::new();
    fake.set("exit_code", "255");
    fake.set("stderr_text", "alice@edge: Permission denied (publickey).");
    let transport = connect(fake.config(Multiplexing::PerCommand)).await;
    match within(transport.ctl(&CtlRequest::Health)).await {
        Err(TransportError::Unreachable(message)) => {
            assert!(
                message.contains("Permission denied (publickey)."),
                "{message}"
            );
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_non_json_answer_is_malformed_with_stderr() {
    let fake = Fake::new();
    fake.set("reply.json", "not json\n");
    fake.set("exit_code", "127");
    fake.set("stderr_text", "bash: line 1: mytunneld: command not found");
    let transport = connect(fake.config(Multiplexing::PerCommand)).await;
    match within(transport.ctl(&CtlRequest::Health)).await {
        Err(TransportError::Malformed(message)) => {
            assert!(message.contains("command not found"), "{message}");
            assert!(message.contains("127"), "{message}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Control plane, shared master

fn control_dir(master: &Invocation) -> PathBuf {
    Path::new(master.value_of("-S").expect("-S <socket>"))
        .parent()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_shared_connection_is_interactive_in_the_foreground_in_a_private_directory() {
    let fake = Fake::new();
    let err = within(SshTransport::connect(fake.config(Multiplexing::Shared)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("fake ssh: no multiplexer here"),
        "{err}"
    );

    let master = fake.only("-M");
    assert!(master.has("-tt"), "a pty: {master:?}");
    for flag in ["-f", "-N", "-O"] {
        assert!(!master.has(flag), "{flag}: {master:?}");
    }
    for option in [
        "ControlPersist=no",
        "BatchMode=yes",
        "ServerAliveInterval=10",
        "ServerAliveCountMax=3",
        "ConnectTimeout=10",
        "Port=2222",
    ] {
        assert!(master.has_pair("-o", option), "-o {option}: {master:?}");
    }
    assert_eq!(master.args.last().unwrap(), DESTINATION);
    let socket = PathBuf::from(master.value_of("-S").unwrap());
    assert_eq!(socket.file_name().unwrap(), "master");
    let dir = control_dir(&master);
    assert_eq!(Path::new(master.value_of("-E").unwrap()), dir.join("log"));
    let mode = std::fs::read_to_string(fake.dir.path().join("master_dir_mode")).unwrap();
    assert_eq!(mode.trim(), "700", "{}", dir.display());
    assert!(!dir.exists(), "{} left behind", dir.display());
    // ssh -G was asked what the user's configuration sets, once.
    assert_eq!(
        fake.all_invocations()
            .iter()
            .filter(|i| i.has("-G"))
            .count(),
        1
    );
}

#[tokio::test]
async fn an_edge_that_refuses_a_pty_gets_a_connection_without_one() {
    let fake = Fake::new();
    fake.set("master_mode", "pty-refused");
    let err = within(SshTransport::connect(fake.config(Multiplexing::Shared)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("fake ssh: no multiplexer here"),
        "{err}"
    );
    let masters: Vec<Invocation> = fake
        .invocations()
        .into_iter()
        .filter(|i| i.has("-M"))
        .collect();
    assert_eq!(masters.len(), 2, "{masters:?}");
    assert!(masters[0].has("-tt") && !masters[0].has("-T"));
    assert!(masters[1].has("-T") && !masters[1].has("-tt"));
}

#[tokio::test]
async fn a_failing_master_is_unreachable_with_its_message() {
    let fake = Fake::new();
    fake.set("master_mode", "fail");
    fake.set(
        "master_message",
        "alice@edge: Permission denied (publickey).",
    );
    let err = within(SshTransport::connect(fake.config(Multiplexing::Shared)))
        .await
        .unwrap_err();
    match err {
        TransportError::Unreachable(message) => {
            assert!(
                message.contains("Permission denied (publickey)."),
                "{message}"
            );
            assert!(message.contains("255"), "{message}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // A failed login is not retried.
    let dir = control_dir(&fake.only("-M"));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn a_master_refused_before_login_is_retried_then_given_up_with_a_note() {
    let fake = Fake::new();
    fake.set("master_mode", "fail");
    fake.set(
        "master_message",
        "ssh: connect to host edge port 2222: Connection refused",
    );
    let mut config = fake.config(Multiplexing::Shared);
    config.handshake_retry = Duration::from_secs(2);
    let started = Instant::now();
    let err = within(SshTransport::connect(config)).await.unwrap_err();
    let took = started.elapsed();
    let masters: Vec<Invocation> = fake
        .invocations()
        .into_iter()
        .filter(|i| i.has("-M"))
        .collect();
    // 0.5 s and 1 s (±25%) apart, then the rest of the 2 s.
    assert!((3..=4).contains(&masters.len()), "{masters:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    match err {
        TransportError::Unreachable(message) => {
            assert!(
                message.contains("connect to host edge port 2222: Connection refused"),
                "{message}"
            );
            assert!(
                message.contains(&format!(
                    "refused the connection before login {} times",
                    masters.len()
                )),
                "{message}"
            );
            assert!(
                message.contains("gave up after the 2s retry budget"),
                "{message}"
            );
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    for master in &masters {
        let dir = control_dir(master);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// sshd past its MaxStartups drops a connection before the banner; the next try gets
/// through. The connection, a per-command ctl call and a forward each try again.
#[tokio::test]
async fn connections_dropped_past_max_startups_are_tried_again() {
    let fake = Fake::new();
    let count = |flag: &str| fake.invocations().iter().filter(|i| i.has(flag)).count();
    fake.set("master_refusals", "2");
    // Past the two refusals the fake master logs in but has no multiplexer.
    let err = within(SshTransport::connect(fake.config(Multiplexing::Shared)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no multiplexer"), "{err}");
    assert_eq!(count("-M"), 3);
    assert_eq!(
        std::fs::read_to_string(fake.dir.path().join("master_refusals")).unwrap(),
        "0"
    );

    let transport = connect(fake.config(Multiplexing::PerCommand)).await;
    fake.reply_with_fixture("lease.json", 0);
    fake.set("ctl_refusals", "1");
    let lease = within(transport.ctl(&allocate("portal"))).await;
    assert!(matches!(lease, Ok(CtlResponse::Lease(_))), "{lease:?}");
    assert_eq!(count("-T"), 2);

    fake.set("forward_refusals", "2");
    let forward = within(transport.open_forward(ForwardSpec {
        edge_bind: mytunnel_core::BindTarget::LoopbackPort(21000),
        local_port: 3000,
    }))
    .await;
    assert!(forward.is_ok(), "{forward:?}");
    assert_eq!(count("-R"), 3);
    within(transport.close()).await;
}

#[tokio::test]
async fn a_destination_that_looks_like_an_option_is_refused_before_ssh_runs() {
    let fake = Fake::new();
    let mut config = fake.config(Multiplexing::Shared);
    config.destination = "-oProxyCommand=touch /tmp/owned".to_owned();
    let err = within(SshTransport::connect(config)).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    assert!(fake.invocations().is_empty());
}

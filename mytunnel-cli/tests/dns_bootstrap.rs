//! `scripts/dns-bootstrap-infomaniak.sh` against a local fake of Infomaniak's DNS API.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mytunnel_test_support::{cmdline, pids, LoopbackServer};
use serde_json::{json, Value};

const ZONE: &str = "example.com";

/// One request the fake received: method, path and JSON body.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

/// A request the fake holds: it tells `arrived` and answers once `release` fires.
#[derive(Debug)]
struct Hold {
    arrived: Sender<()>,
    release: Receiver<()>,
}

#[derive(Debug, Default)]
struct State {
    records: Vec<Value>,
    next_id: u64,
    seen: Vec<Seen>,
    hold: Option<Hold>,
}

/// The API: `/2/zones/example.com/records` (GET, POST) and `/records/{id}` (PUT), Bearer
/// auth, Infomaniak's `{"result": …}` envelope. One connection at a time.
#[derive(Debug)]
struct FakeApi {
    server: LoopbackServer,
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    fn start(token: &str) -> FakeApi {
        let state = Arc::new(Mutex::new(State {
            next_id: 1,
            ..State::default()
        }));
        let server = {
            let state = Arc::clone(&state);
            let expected = format!("Bearer {token}");
            LoopbackServer::start_serial(move |stream| serve_one(stream, &state, &expected))
                .unwrap()
        };
        FakeApi { server, state }
    }

    fn base(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    fn records(&self) -> Vec<Value> {
        self.state.lock().unwrap().records.clone()
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn methods(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.method).collect()
    }

    /// Holds the next request until the returned sender fires; the receiver says it arrived.
    fn hold_next(&self) -> (Receiver<()>, Sender<()>) {
        let (arrived_tx, arrived_rx) = channel();
        let (release_tx, release_rx) = channel();
        self.state.lock().unwrap().hold = Some(Hold {
            arrived: arrived_tx,
            release: release_rx,
        });
        (arrived_rx, release_tx)
    }
}

fn serve_one(stream: TcpStream, state: &Mutex<State>, expected_auth: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut auth = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "authorization" => value.trim().clone_into(&mut auth),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    let hold = {
        let mut state = state.lock().unwrap();
        state.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
        });
        state.hold.take()
    };
    if let Some(hold) = hold {
        hold.arrived.send(()).unwrap();
        hold.release.recv().unwrap();
    }

    let (status, reply) = if auth != expected_auth {
        (
            401,
            json!({"result": "error", "error": {"code": "not_authorized",
                "description": "Authorization required: the API token is not valid"}}),
        )
    } else {
        route(&method, &path, &body, &mut state.lock().unwrap())
    };
    let reply = reply.to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = stream.flush();
}

fn route(method: &str, path: &str, body: &Value, state: &mut State) -> (u16, Value) {
    let prefix = format!("/2/zones/{ZONE}/records");
    let not_found = (
        404,
        json!({"result": "error", "error": {"code": "not_found", "description": "no such zone or record"}}),
    );
    match (method, path) {
        ("GET", p) if p == prefix => (200, json!({"result": "success", "data": state.records})),
        ("POST", p) if p == prefix => {
            let id = state.next_id;
            state.next_id += 1;
            let mut record = body.clone();
            record["id"] = json!(id);
            state.records.push(record);
            (200, json!({"result": "success", "data": id}))
        }
        ("PUT", p) if p.starts_with(&format!("{prefix}/")) => {
            let id: u64 = p[prefix.len() + 1..].parse().unwrap_or(0);
            let Some(record) = state.records.iter_mut().find(|r| r["id"] == json!(id)) else {
                return not_found;
            };
            for key in ["target", "ttl"] {
                if let Some(value) = body.get(key) {
                    record[key] = value.clone();
                }
            }
            (200, json!({"result": "success", "data": true}))
        }
        _ => not_found,
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/dns-bootstrap-infomaniak.sh")
        .canonicalize()
        .unwrap()
}

fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("tok-{}-{nanos}-SeCrEt", std::process::id())
}

fn token_file(dir: &Path, name: &str, token: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// The script with a clean environment (PATH only) and no terminal on stdin.
fn command(api: &FakeApi, args: &[&str]) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(script())
        .args(["--zone", ZONE, "--api-base", &api.base()])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_no_token(output: &Output, token: &str) {
    let (stdout, stderr) = text(output);
    assert!(!stdout.contains(token), "token in stdout: {stdout}");
    assert!(!stderr.contains(token), "token in stderr: {stderr}");
}

/// Every process and its arguments (`/proc/<pid>/cmdline`): (pid, arguments joined by
/// spaces).
fn all_cmdlines() -> Vec<(String, String)> {
    pids()
        .into_iter()
        .map(|pid| (pid.to_string(), cmdline(pid).join(" ")))
        .collect()
}

#[test]
fn creates_keeps_and_updates_the_wildcard_record_without_leaking_the_token() {
    let token = token();
    let api = FakeApi::start(&token);
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path(), "token", &token, 0o600);
    let file = file.to_str().unwrap();

    // 1. Created. The fake holds the first request while every cmdline is scanned.
    let (arrived, release) = api.hold_next();
    let child = command(
        &api,
        &[
            "--name",
            "tunnel",
            "--target",
            "203.0.113.7",
            "--token-file",
            file,
        ],
    )
    .spawn()
    .unwrap();
    let child_pid = child.id();
    let scanned = arrived.recv_timeout(Duration::from_secs(60));
    let cmdlines = all_cmdlines();
    release.send(()).unwrap();
    let output = child.wait_with_output().unwrap();
    scanned.expect("the script never reached the API");
    for (pid, cmdline) in &cmdlines {
        assert!(
            !cmdline.contains(&token),
            "process {pid} has the token on its command line"
        );
    }
    // The scan ran while the script's curl was talking to the API.
    assert!(
        cmdlines
            .iter()
            .any(|(_, c)| c.contains("curl") && c.contains(&api.base())),
        "no curl process was seen during the scan"
    );
    assert!(cmdlines
        .iter()
        .any(|(pid, _)| *pid == child_pid.to_string()));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("created A *.tunnel.example.com -> 203.0.113.7"),
        "{stdout}"
    );
    assert_no_token(&output, &token);
    assert_eq!(api.methods(), ["GET", "POST"]);
    let seen = api.seen();
    assert_eq!(seen[1].path, "/2/zones/example.com/records");
    assert_eq!(
        seen[1].body,
        json!({"source": "*.tunnel", "type": "A", "target": "203.0.113.7", "ttl": 300})
    );
    let records = api.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["source"], "*.tunnel");
    assert_eq!(records[0]["type"], "A");
    assert_eq!(records[0]["target"], "203.0.113.7");

    // 2. Unchanged: listed, nothing written. The token comes from the environment this time.
    let output = command(&api, &["--name", "tunnel", "--target", "203.0.113.7"])
        .env("INFOMANIAK_TOKEN", &token)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("unchanged"), "{stdout}");
    assert_no_token(&output, &token);
    assert_eq!(api.methods(), ["GET", "POST", "GET"]);

    // 3. Another target: updated in place, and the drop-in written.
    let dropin = dir.path().join("caddy.service.d");
    let output = command(
        &api,
        &[
            "--name",
            "tunnel",
            "--target",
            "203.0.113.8",
            "--token-file",
            file,
            "--dropin",
            dropin.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("updated A *.tunnel.example.com -> 203.0.113.8 (was 203.0.113.7"),
        "{stdout}"
    );
    assert_no_token(&output, &token);
    assert_eq!(api.methods(), ["GET", "POST", "GET", "GET", "PUT"]);
    let seen = api.seen();
    assert_eq!(seen[4].path, "/2/zones/example.com/records/1");
    let records = api.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["target"], "203.0.113.8");

    let conf = dropin.join("10-infomaniak-token.conf");
    let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "drop-in mode {mode:o}");
    let content = std::fs::read_to_string(&conf).unwrap();
    assert_eq!(content.matches(&token).count(), 1, "{content}");
    assert_eq!(
        content,
        format!("[Service]\nEnvironment=INFOMANIAK_TOKEN={token}\n")
    );
    // Nothing else was left in the drop-in directory.
    assert_eq!(std::fs::read_dir(&dropin).unwrap().count(), 1);

    // 4. The zone apex: `*.example.com` is source `*`.
    let output = command(
        &api,
        &[
            "--name",
            "@",
            "--target",
            "203.0.113.9",
            "--token-file",
            file,
        ],
    )
    .output()
    .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("created A *.example.com -> 203.0.113.9"),
        "{stdout}"
    );
    assert_no_token(&output, &token);
    let records = api.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["source"], "*");
}

#[test]
fn a_wrong_token_fails_with_the_api_message() {
    let token = token();
    let api = FakeApi::start(&token);
    let dir = tempfile::tempdir().unwrap();
    let wrong = format!("{token}-wrong");
    let file = token_file(dir.path(), "token", &wrong, 0o600);
    let dropin = dir.path().join("dropin");
    let output = command(
        &api,
        &[
            "--name",
            "tunnel",
            "--target",
            "203.0.113.7",
            "--token-file",
            file.to_str().unwrap(),
            "--dropin",
            dropin.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("Authorization required: the API token is not valid"),
        "{stderr}"
    );
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert_no_token(&output, &wrong);
    assert_no_token(&output, &token);
    assert_eq!(api.methods(), ["GET"]);
    assert!(api.records().is_empty());
    assert!(
        !dropin.exists(),
        "a drop-in was written for a refused token"
    );
}

#[test]
fn a_token_file_readable_by_others_is_refused() {
    let token = token();
    let api = FakeApi::start(&token);
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path(), "token", &token, 0o644);
    let output = command(
        &api,
        &[
            "--name",
            "tunnel",
            "--target",
            "203.0.113.7",
            "--token-file",
            file.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("has mode 644"), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert_no_token(&output, &token);
    assert!(api.seen().is_empty(), "the API was called");
}

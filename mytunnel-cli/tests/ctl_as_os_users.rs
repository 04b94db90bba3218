//! Owner scoping with real OS users: the built `mytunneld ctl` runs as different users
//! (`runuser -u`) and asks one `mytunneld serve`, run as its own service user, which alone
//! opens the lease database (in a directory only it may enter) and talks to a real Caddy.
//! The owner must come from the uid alone (the kernel's peer credentials on serve's
//! control socket); another user's lease must look missing; a tunnel user cannot open the
//! database, nor name another owner in a request crafted by hand.
//!
//! Needs root (to create users and switch to them), as `cargo xtask ci` runs.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mytunnel_test_support::{
    copy_executable, make_owner_dirs, mytunneld_command, stdout_json, RealCaddy, ServeProcess,
};
use serde_json::Value;

const GROUP: &str = "mytunnel-t";
const ALICE: &str = "mtt-alice";
const BOB: &str = "mtt-bob";
const OPS: &str = "mtt-ops";
/// The users whose leases bind sockets here.
const USERS_WITH_SOCKETS: [&str; 3] = [ALICE, BOB, OPS];
/// The service user `serve` runs as (in the group, as install-edge.sh makes it).
const SERVICE: &str = "mtt-svc";
/// Set for a child of this test binary that sends one crafted request and prints the answer.
const CRAFTED_SOCKET: &str = "MYTUNNEL_TEST_CRAFTED_SOCKET";
const CRAFTED_LINE: &str = "MYTUNNEL_TEST_CRAFTED_LINE";

/// Creates the group and users if missing (idempotent, safe to race).
fn ensure_users() {
    assert!(
        nix::unistd::getuid().is_root(),
        "this test creates OS users and must run as root (cargo xtask ci does)"
    );
    let status = Command::new("groupadd")
        .arg("-f")
        .arg(GROUP)
        .status()
        .unwrap();
    assert!(status.success(), "groupadd {GROUP}");
    for user in [ALICE, BOB, OPS, SERVICE] {
        if nix::unistd::User::from_name(user).unwrap().is_some() {
            continue;
        }
        let status = Command::new("useradd")
            .args(["-M", "-N", "-g", GROUP, "-s", "/usr/sbin/nologin", user])
            .status()
            .unwrap();
        // 9: created meanwhile by a concurrent test process.
        assert!(
            status.success() || status.code() == Some(9),
            "useradd {user}: {status}"
        );
    }
}

#[derive(Debug)]
struct Edge {
    // Dropped first: serve, then Caddy and the directory.
    _serve: ServeProcess,
    dir: tempfile::TempDir,
    caddy: RealCaddy,
}

fn uid_of(user: &str) -> nix::unistd::Uid {
    nix::unistd::User::from_name(user).unwrap().unwrap().uid
}

impl Edge {
    fn new() -> Edge {
        ensure_users();
        let caddy = RealCaddy::start().unwrap();
        let dir = tempfile::Builder::new()
            .prefix("mtt")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let group = nix::unistd::Group::from_name(GROUP).unwrap().unwrap();
        let service = uid_of(SERVICE);
        // The database directory is the service user's alone; the socket directory is
        // the service user's and readable by all (tunnel users reach serve there).
        for (name, mode) in [("db", 0o700), ("s", 0o755)] {
            let path = dir.path().join(name);
            std::fs::create_dir(&path).unwrap();
            nix::unistd::chown(&path, Some(service), Some(group.gid)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        // Each user's own socket directory, where their leases bind.
        make_owner_dirs(&dir.path().join("s"), &USERS_WITH_SOCKETS, None).unwrap();
        let bin = dir.path().join("mytunneld");
        copy_executable(Path::new(env!("CARGO_BIN_EXE_mytunneld")), &bin).unwrap();
        let env = format!(
            "MYTUNNEL_DB_PATH={}\nMYTUNNEL_BASE_DOMAIN=t.test\nMYTUNNEL_CADDY_ADMIN_URL={}\nMYTUNNEL_ADMIN_USERS={OPS}\nMYTUNNEL_MIN_PORT=22000\nMYTUNNEL_MAX_PORT=22099\nMYTUNNEL_SOCKET_DIR={}\n",
            dir.path().join("db/leases.db").display(),
            caddy.admin_address(),
            dir.path().join("s").display(),
        );
        let env_path = dir.path().join("mytunneld.env");
        std::fs::write(&env_path, env).unwrap();
        nix::unistd::chown(&env_path, None, Some(group.gid)).unwrap();
        std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let serve = ServeProcess::start(
            &bin,
            &env_path,
            Some((service.as_raw(), group.gid.as_raw())),
            &dir.path().join("serve.log"),
            &dir.path().join("s"),
        )
        .unwrap();
        Edge {
            _serve: serve,
            dir,
            caddy,
        }
    }

    /// Sends `line` as-is on serve's control socket from a process running as `user`
    /// (this test binary, re-run); returns what serve answered.
    fn crafted(&self, user: &str, line: &str) -> Vec<Value> {
        let exe = self.path("crafter");
        if !exe.exists() {
            copy_executable(&std::env::current_exe().unwrap(), &exe).unwrap();
        }
        let output = Command::new(&exe)
            .args([
                "--exact",
                "crafted_request_worker",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .uid(uid_of(user).as_raw())
            .gid(
                nix::unistd::Group::from_name(GROUP)
                    .unwrap()
                    .unwrap()
                    .gid
                    .as_raw(),
            )
            .env(CRAFTED_SOCKET, self.path("s/control.sock"))
            .env(CRAFTED_LINE, line)
            .output()
            .unwrap();
        let answers: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.split_once("ANSWER ").map(|(_, answer)| answer))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(
            !answers.is_empty(),
            "the crafting process as {user}: {output:?}"
        );
        answers
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `mytunneld ctl ARGS` as `user` with a hostile environment (USER and LOGNAME
    /// name someone else); returns (exit code, JSON).
    fn ctl(&self, user: &str, args: &[&str]) -> (i32, Value) {
        let env_file = self.path("mytunneld.env");
        let output = mytunneld_command(&self.path("mytunneld"), &env_file, Some(user), "ctl")
            .args(args)
            .env("USER", ALICE)
            .env("LOGNAME", OPS)
            .output()
            .unwrap();
        let json = stdout_json(&output).unwrap_or_else(|e| panic!("{user} ctl {args:?}: {e}"));
        (output.status.code().unwrap_or(-1), json)
    }

    fn routes(&self) -> String {
        self.caddy.routes().unwrap()
    }
}

fn code(json: &Value) -> &str {
    json["error"]["code"].as_str().unwrap_or("<no error>")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn owners_only_see_and_touch_their_own_leases() {
    let edge = Edge::new();

    let (rc, alice_lease) = edge.ctl(
        ALICE,
        &["allocate", "--name", "alice-app", "--local-port", "3000"],
    );
    assert_eq!(rc, 0, "{alice_lease}");
    assert_eq!(alice_lease["owner"], ALICE);
    assert_eq!(alice_lease["host"], "alice-app.t.test");
    let alice_id = alice_lease["lease_id"].as_str().unwrap().to_owned();
    // serve created the database: the service user's alone, in a directory no tunnel
    // user may enter.
    let db = edge.path("db/leases.db");
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&edge.path("db")), 0o700);
    assert_eq!(
        std::fs::metadata(&db).unwrap().uid(),
        uid_of(SERVICE).as_raw()
    );
    assert!(edge.routes().contains(&alice_id));

    // bob sees nothing of alice's, by any name.
    let (rc, list) = edge.ctl(BOB, &["list"]);
    assert_eq!((rc, list), (0, Value::Array(vec![])));
    for reference in [alice_id.as_str(), "alice-app.t.test", "alice-app"] {
        for verb in ["release", "delete"] {
            let (rc, json) = edge.ctl(BOB, &[verb, "--lease", reference]);
            assert_eq!(
                (rc, code(&json)),
                (1, "lease_not_found"),
                "bob {verb} {reference}"
            );
            assert!(!json.to_string().contains(ALICE), "leaks the owner: {json}");
        }
    }
    let (rc, foreign) = edge.ctl(BOB, &["heartbeat", "--lease", &alice_id]);
    assert_eq!((rc, code(&foreign)), (1, "lease_not_found"));
    // Missing and foreign answer alike, apart from the reference echoed back.
    let (_, missing) = edge.ctl(BOB, &["heartbeat", "--lease", "lease_aaaaaaaaaaaaaaaa"]);
    assert_eq!(
        missing.to_string().replace("lease_aaaaaaaaaaaaaaaa", "X"),
        foreign.to_string().replace(&alice_id, "X")
    );
    assert!(
        edge.routes().contains(&alice_id),
        "alice's route survived bob"
    );

    // --owner, USER and LOGNAME change nothing: the owner is the uid.
    let (rc, bob_lease) = edge.ctl(BOB, &["allocate", "--name", "bob-app", "--owner", ALICE]);
    assert_eq!(rc, 0, "{bob_lease}");
    assert_eq!(bob_lease["owner"], BOB);

    // --force only for the admin user.
    let (rc, json) = edge.ctl(BOB, &["allocate", "--name", "alice-app", "--force"]);
    assert_eq!((rc, code(&json)), (1, "force_not_allowed"));
    let (rc, json) = edge.ctl(ALICE, &["allocate", "--name", "alice-app", "--force"]);
    assert_eq!((rc, code(&json)), (1, "force_not_allowed"));
    let (rc, taken) = edge.ctl(OPS, &["allocate", "--name", "alice-app", "--force"]);
    assert_eq!(rc, 0, "{taken}");
    assert_eq!(taken["owner"], OPS);
    let (rc, json) = edge.ctl(ALICE, &["heartbeat", "--lease", &alice_id]);
    assert_eq!(
        (rc, code(&json)),
        (1, "lease_not_found"),
        "alice's old lease is gone"
    );
    let (_, alice_list) = edge.ctl(ALICE, &["list"]);
    assert_eq!(alice_list, Value::Array(vec![]));
    // The route follows: alice's is gone, the new lease has one.
    let routes = edge.routes();
    assert!(
        !routes.contains(&alice_id),
        "alice's route remains: {routes}"
    );
    assert!(routes.contains(taken["lease_id"].as_str().unwrap()));

    // Admin-only views.
    let (rc, json) = edge.ctl(BOB, &["list", "--all"]);
    assert_eq!((rc, code(&json)), (1, "invalid_argument"));
    let (rc, json) = edge.ctl(BOB, &["reconcile"]);
    assert_eq!((rc, code(&json)), (1, "forbidden_command"));
    let (rc, all) = edge.ctl(OPS, &["list", "--all"]);
    assert_eq!(rc, 0);
    let owners: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["owner"].as_str())
        .collect();
    assert!(owners.contains(&BOB) && owners.contains(&OPS), "{all}");
    let (rc, json) = edge.ctl(OPS, &["reconcile"]);
    assert_eq!(rc, 0, "{json}");
    let (_, stats) = edge.ctl(BOB, &["stats"]);
    assert!(stats.get("per_owner").is_none(), "{stats}");
    let (_, stats) = edge.ctl(OPS, &["stats"]);
    assert_eq!(stats["per_owner"][BOB], 1, "{stats}");

    // bob releases his own lease by host: tombstoned exactly, route gone at once.
    let bob_id = bob_lease["lease_id"].as_str().unwrap();
    let (rc, released) = edge.ctl(BOB, &["release", "--lease", "bob-app.t.test"]);
    assert_eq!(rc, 0, "{released}");
    assert_eq!(released["host"], format!("released-{bob_id}.invalid"));
    assert_eq!(released["slug"], format!("released-{bob_id}"));
    assert_eq!(released["state"], "released");
    assert!(!edge.routes().contains(bob_id));
}

/// Run by [`Edge::crafted`] as another user: sends one raw line, prints serve's lines.
#[test]
fn crafted_request_worker() {
    let (Some(socket), Some(line)) = (
        std::env::var_os(CRAFTED_SOCKET),
        std::env::var(CRAFTED_LINE).ok(),
    ) else {
        return;
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    stream.write_all(b"\n").unwrap();
    for answer in BufReader::new(stream).lines() {
        println!("ANSWER {}", answer.unwrap());
    }
}

#[test]
fn a_tunnel_user_reaches_the_database_only_through_serve() {
    let edge = Edge::new();
    let (rc, lease) = edge.ctl(ALICE, &["allocate", "--name", "alices"]);
    assert_eq!(rc, 0, "{lease}");
    let db = edge.path("db/leases.db");
    // alice's own process: EACCES on the database file and its directory.
    let output = Command::new("runuser")
        .args(["-u", ALICE, "--", "cat"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Permission denied"),
        "{output:?}"
    );
    let output = Command::new("runuser")
        .args(["-u", ALICE, "--", "ls"])
        .arg(edge.path("db"))
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");

    // A request crafted by hand names bob in every field it can: refused, or alice's own.
    let answers = edge.crafted(
        ALICE,
        r#"{"v":1,"ctl":["list","--all"],"owner":"mtt-bob","uid":0,"user":"mtt-bob"}"#,
    );
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(
        answers[0]["error"]["code"], "invalid_argument",
        "{answers:?}"
    );
    let answers = edge.crafted(
        ALICE,
        r#"{"v":1,"ctl":["allocate","--name","crafted","--owner","mtt-bob"]}"#,
    );
    assert_eq!(answers[0]["accepted"], true, "{answers:?}");
    assert_eq!(answers[1]["ok"]["owner"], ALICE, "{answers:?}");
    let answers = edge.crafted(ALICE, r#"{"v":1,"ctl":["list","--all"]}"#);
    assert_eq!(
        answers.last().unwrap()["error"]["code"],
        "invalid_argument",
        "{answers:?}"
    );
    let answers = edge.crafted(ALICE, r#"{"v":1,"ctl":["reconcile"]}"#);
    assert_eq!(
        answers.last().unwrap()["error"]["code"],
        "forbidden_command",
        "{answers:?}"
    );
    // bob's view: nothing of alice's.
    let (rc, list) = edge.ctl(BOB, &["list"]);
    assert_eq!((rc, list), (0, Value::Array(vec![])));
    let (_, alice_list) = edge.ctl(ALICE, &["list"]);
    assert_eq!(alice_list.as_array().unwrap().len(), 2, "{alice_list}");
}

//! Owner scoping with real OS users: the built `mytunneld ctl` runs as different users
//! (`runuser -u`) against one lease database in a setgid directory and a real Caddy.
//! The owner must come from the uid alone; another user's lease must look missing.
//!
//! Needs root (to create users and switch to them), as `cargo xtask ci` runs.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mytunnel_edge::testkit::RealCaddy;
use serde_json::Value;

const GROUP: &str = "mytunnel-t";
const ALICE: &str = "mtt-alice";
const BOB: &str = "mtt-bob";
const OPS: &str = "mtt-ops";

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
    for user in [ALICE, BOB, OPS] {
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
    dir: tempfile::TempDir,
    caddy: RealCaddy,
}

impl Edge {
    fn new() -> Edge {
        ensure_users();
        let caddy = RealCaddy::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let group = nix::unistd::Group::from_name(GROUP).unwrap().unwrap();
        nix::unistd::chown(dir.path(), None, Some(group.gid)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2770)).unwrap();
        let bin = dir.path().join("mytunneld");
        std::fs::copy(env!("CARGO_BIN_EXE_mytunneld"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = format!(
            "MYTUNNEL_DB_PATH={}\nMYTUNNEL_BASE_DOMAIN=t.test\nMYTUNNEL_CADDY_ADMIN_URL={}\nMYTUNNEL_ADMIN_USERS={OPS}\nMYTUNNEL_MIN_PORT=22000\nMYTUNNEL_MAX_PORT=22099\n",
            dir.path().join("leases.db").display(),
            caddy.admin_address(),
        );
        let env_path = dir.path().join("mytunneld.env");
        std::fs::write(&env_path, env).unwrap();
        std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        Edge { dir, caddy }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `mytunneld ctl ARGS` as `user` with a hostile environment (USER and LOGNAME
    /// name someone else); returns (exit code, JSON).
    fn ctl(&self, user: &str, args: &[&str]) -> (i32, Value) {
        let output = Command::new("runuser")
            .args(["-u", user, "--"])
            .arg(self.path("mytunneld"))
            .arg("--env-file")
            .arg(self.path("mytunneld.env"))
            .arg("ctl")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("USER", ALICE)
            .env("LOGNAME", OPS)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "{user} ctl {args:?}: not JSON ({e}): stdout {stdout:?} stderr {:?}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap_or(-1), json)
    }

    fn routes(&self) -> String {
        mytunnel_edge::testkit::admin_get(
            self.caddy.admin_socket(),
            "/config/apps/http/servers/srv0/routes",
        )
        .unwrap()
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
    // The database was created by alice's ctl in the setgid directory: group-shared.
    assert_eq!(mode(&edge.path("leases.db")), 0o660);
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

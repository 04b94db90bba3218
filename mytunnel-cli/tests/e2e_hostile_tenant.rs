//! A tenant who holds a tunnel key and wants to hurt the others, on real sshd, Caddy and
//! OS users, with `serve` as its own service user and the sshd settings install-edge.sh
//! writes (see `e2e_support`).
//!
//! The lease database: alice binds unix sockets with `ssh -R` at every path of the
//! database directory (`leases.db-journal` made every tenant's ctl answer "database is
//! locked" when tunnel users shared that directory) and at serve's control socket. Each
//! bind is refused, no file appears there, and every tenant's ctl keeps working.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod e2e_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use e2e_support::{eventually, Guard, RouteMode, Stack, StackOptions};

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// `ssh -N -R <path>:127.0.0.1:1` as `user`: whether sshd bound it (the forward stayed
/// up) — ssh exits at once when the edge refuses it (`ExitOnForwardFailure`). Checked to
/// fail on the layout before serve owned the database (a 2770 directory of the tunnel
/// group): alice then bound `leases.db-journal`.
fn binds_socket_at(stack: &Stack, user: &str, path: &Path) -> bool {
    let mut ssh = stack.ssh_remote_forward(user, &path.display().to_string(), 1);
    ssh.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = Guard(ssh.spawn().unwrap());
    let mut status = None;
    let exited = eventually(Duration::from_secs(10), || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    if !exited {
        // Still up: the forward was accepted. (The guard kills it.)
        return true;
    }
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    // Refused by sshd, not failed for another reason (which would prove nothing).
    assert!(
        err.contains("remote port forwarding failed"),
        "ssh -N -R {} ended otherwise ({status:?}): {err}",
        path.display()
    );
    false
}

fn tenants_keep_working(stack: &Stack) {
    for user in ["alice", "bob"] {
        let (rc, lease) = stack.ssh_ctl(user, "mytunneld ctl allocate --local-port 8080");
        assert_eq!(rc, 0, "{user}: {lease}");
        let id = lease["lease_id"].as_str().unwrap();
        let (rc, beat) = stack.ssh_ctl(user, &format!("mytunneld ctl heartbeat --lease {id}"));
        assert_eq!(rc, 0, "{user}: {beat}");
        let (rc, health) = stack.ssh_ctl(user, "mytunneld ctl health");
        assert_eq!(rc, 0, "{user}: {health}");
        let (rc, released) = stack.ssh_ctl(user, &format!("mytunneld ctl release --lease {id}"));
        assert_eq!(rc, 0, "{user}: {released}");
    }
}

#[test]
fn a_tenant_cannot_bind_sockets_in_the_database_directory_or_over_serves_socket() {
    for route_mode in [RouteMode::Static, RouteMode::Routes] {
        let stack = Stack::with(StackOptions {
            route_mode,
            ..StackOptions::default()
        });
        // A lease first, so the database and its WAL files exist.
        let (rc, lease) =
            stack.ssh_ctl("bob", "mytunneld ctl allocate --name bobs --local-port 80");
        assert_eq!(rc, 0, "{lease}");
        let db_dir = stack.path("db");
        let before = entries(&db_dir);
        assert!(before.contains("leases.db"), "{before:?}");

        let mut targets: Vec<std::path::PathBuf> = [
            "leases.db-journal",
            "leases.db",
            "leases.db-wal",
            "leases.db-shm",
            "leases.db-mj0123",
            "x.sock",
        ]
        .iter()
        .map(|name| db_dir.join(name))
        .collect();
        targets.push(stack.socket_dir().join("control.sock"));
        targets.push(stack.socket_dir().join("evil.sock"));
        for target in &targets {
            assert!(
                !binds_socket_at(&stack, "alice", target),
                "{}: alice bound {}",
                route_mode.name(),
                target.display()
            );
        }
        assert_eq!(entries(&db_dir), before, "{}", route_mode.name());
        // A tunnel user's own process cannot open the database at all.
        let opened = std::process::Command::new("runuser")
            .args(["-u", "alice", "--", "cat"])
            .arg(db_dir.join("leases.db"))
            .output()
            .unwrap();
        assert!(!opened.status.success(), "{opened:?}");
        assert!(
            String::from_utf8_lossy(&opened.stderr).contains("Permission denied"),
            "{opened:?}"
        );
        assert!(
            !stack.socket_dir().join("evil.sock").exists(),
            "{}",
            route_mode.name()
        );
        tenants_keep_working(&stack);
        let (rc, list) = stack.ssh_ctl("bob", "mytunneld ctl list");
        assert_eq!(rc, 0, "{list}");
        assert!(
            list.as_array().unwrap().iter().any(|l| l["slug"] == "bobs"),
            "{list}"
        );
    }
}

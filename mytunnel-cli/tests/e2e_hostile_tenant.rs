//! A tenant who holds a tunnel key and wants to hurt the others, on real sshd, Caddy and
//! OS users, with `serve` as its own service user and the sshd settings install-edge.sh
//! writes (see `e2e_support`).
//!
//! Each attack below was reproduced against the edge before its defence, and fails now.
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

use e2e_support::{eventually, App, RouteMode, Stack, StackOptions, Visit, Visitors};
use mytunnel_test_support::Guard;

/// A stack of `route_mode`, as the suite's other tests make it.
fn stack_in(route_mode: RouteMode) -> Stack {
    Stack::with(StackOptions {
        route_mode,
        ..StackOptions::default()
    })
}

/// `mytunneld ctl allocate --name <name> --local-port <port>` as `user`, which must succeed.
fn allocate_named(stack: &Stack, user: &str, name: &str, port: u16) -> serde_json::Value {
    let (rc, lease) = stack.ssh_ctl(
        user,
        &format!("mytunneld ctl allocate --name {name} --local-port {port}"),
    );
    assert_eq!(rc, 0, "{user}: {lease}");
    lease
}

/// `mytunneld ctl release --lease <its id>` as `user`, which must succeed.
fn release_lease(stack: &Stack, user: &str, lease: &serde_json::Value) {
    let id = lease["lease_id"].as_str().unwrap();
    let (rc, released) = stack.ssh_ctl(user, &format!("mytunneld ctl release --lease {id}"));
    assert_eq!(rc, 0, "{user}: {released}");
}

/// `ssh -N -R <socket>:127.0.0.1:<port>` as `user`, as a tenant keeps it open by hand.
fn bind_by_hand(stack: &Stack, user: &str, socket: &str, port: u16) -> Guard {
    let mut ssh = stack.ssh_remote_forward(user, socket, port);
    ssh.stdout(Stdio::null()).stderr(Stdio::null());
    Guard(ssh.spawn().unwrap())
}

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
        let stack = stack_in(route_mode);
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

/// Attack: keep serving a name after the lease ended, and then the next owner's visitors.
///
/// alice binds her lease's socket by hand (`ssh -N -R`, the connection kept open on
/// purpose) while 8 visitors hold keep-alive connections to Caddy for her host; she
/// releases the lease. Before serve ended the lease's ssh connection, Caddy kept answering
/// from its pooled upstream connections (2 minutes idle timeout; in `static` mode the dial
/// address is the name's host link, the same for the next lease), and once bob took the
/// name some of his visitors got alice's app.
#[test]
fn an_ended_lease_takes_its_traffic_with_it_and_never_serves_the_next_owner() {
    for route_mode in [RouteMode::Static, RouteMode::Routes] {
        let mode = route_mode.name();
        let stack = stack_in(route_mode);
        let alice_app = App::start("alice's app");
        let bob_app = App::start("bob's app");
        let lease = allocate_named(&stack, "alice", "shared", alice_app.port());
        let host = lease["host"].as_str().unwrap().to_owned();
        let alice_socket = lease["edge_bind_target"].as_str().unwrap().to_owned();
        let mut alice_ssh = bind_by_hand(&stack, "alice", &alice_socket, alice_app.port());
        stack.assert_serves(&host, "alice's app", Duration::from_secs(20));

        let visitors = Visitors::start(stack.caddy.http_address(), &host, 8);
        let warm = visitors.after(std::time::Instant::now(), 200, Duration::from_secs(20));
        assert!(warm.iter().all(|v| v.body == "alice's app"), "{mode}");

        release_lease(&stack, "alice", &lease);
        let released_at = std::time::Instant::now();
        // Her ssh connection is ended by the edge, whatever she wanted.
        assert!(
            eventually(Duration::from_secs(5), || alice_ssh
                .0
                .try_wait()
                .unwrap()
                .is_some()),
            "{mode}: alice's ssh -N -R still runs after her lease was released"
        );
        let late: Vec<Visit> = visitors
            .after(
                released_at + Duration::from_secs(1),
                200,
                Duration::from_secs(20),
            )
            .into_iter()
            .filter(|v| v.body == "alice's app")
            .collect();
        assert!(
            late.is_empty(),
            "{mode}: {} answers from alice's app more than 1 s after her release",
            late.len()
        );

        // Bob takes the name: none of 1,000 answers comes from alice's app.
        let bobs = allocate_named(&stack, "bob", "shared", bob_app.port());
        let taken_at = std::time::Instant::now();
        let bob_socket = bobs["edge_bind_target"].as_str().unwrap().to_owned();
        let _bob_ssh = bind_by_hand(&stack, "bob", &bob_socket, bob_app.port());
        stack.assert_serves(&host, "bob's app", Duration::from_secs(20));
        let served_at = std::time::Instant::now();
        // 1,000 answers once bob's tunnel is up; and none from alice's app since the
        // name changed hands.
        let serving = visitors.after(served_at, 1000, Duration::from_secs(60));
        let answers = visitors.after(taken_at, serving.len(), Duration::from_secs(1));
        let from_alice = answers.iter().filter(|v| v.body == "alice's app").count();
        assert_eq!(
            from_alice,
            0,
            "{mode}: {from_alice} of {} answers for bob's name came from alice's app",
            answers.len()
        );
        let from_bob = serving.iter().filter(|v| v.body == "bob's app").count();
        assert_eq!(
            from_bob,
            serving.len(),
            "{mode}: {} of {} answers once bob served were not his app's",
            serving.len() - from_bob,
            serving.len()
        );
        // The edge said what it did.
        assert!(
            stack
                .serve_log()
                .contains("ended the ssh connection of an ended lease"),
            "{mode}: {}",
            stack.serve_log()
        );
    }
}

/// Attack: cancel the forward, then release. mallory's master keeps its channels — the
/// connections Caddy pooled to her socket — after she cancels the listener (`ssh -O
/// cancel`), so serve finds nothing listening when she releases. In `static` mode those
/// connections are pooled under the name's host link, which bob's lease of the name gets
/// next. serve ends the owner's connections that still hold the ended lease's socket —
/// every connection of her user, which is why she is mallory: other tests' stacks, run in
/// parallel, share alice.
#[test]
fn cancelling_the_forward_before_release_keeps_no_connection_to_the_name() {
    for route_mode in [RouteMode::Static, RouteMode::Routes] {
        let mode = route_mode.name();
        let stack = stack_in(route_mode);
        let mallory_app = App::start("mallory's app");
        let bob_app = App::start("bob's app");
        let lease = allocate_named(&stack, "mallory", "shared", mallory_app.port());
        let host = lease["host"].as_str().unwrap().to_owned();
        let mallory_socket = lease["edge_bind_target"].as_str().unwrap().to_owned();
        let control = stack.path("mallory-master.sock");
        let mut master = stack.ssh_master("mallory", &control);
        master.stdout(Stdio::null()).stderr(Stdio::null());
        let mut master = Guard(master.spawn().unwrap());
        assert!(
            eventually(Duration::from_secs(20), || stack.master_check(&control)),
            "{mode}: mallory's master did not come up"
        );
        let forward = stack.master_forward(&control, &mallory_socket, mallory_app.port());
        assert!(forward.status.success(), "{mode}: {forward:?}");
        stack.assert_serves(&host, "mallory's app", Duration::from_secs(20));
        let visitors = Visitors::start(stack.caddy.http_address(), &host, 8);
        let warm = visitors.after(std::time::Instant::now(), 200, Duration::from_secs(20));
        assert!(warm.iter().all(|v| v.body == "mallory's app"), "{mode}");

        let cancel = stack.master_cancel(&control, &mallory_socket, mallory_app.port());
        assert!(cancel.status.success(), "{mode}: {cancel:?}");
        // Which of her connections holds the open ones the edge cannot tell: it ends them
        // all, the one carrying this release last and only if the others' ending left
        // some open; here they did not, so the release is answered, after the traffic
        // stopped.
        let id = lease["lease_id"].as_str().unwrap();
        let release = format!("mytunneld ctl release --lease {id}");
        let released = stack
            .ssh_command("mallory", Some(&release))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let released_at = std::time::Instant::now();
        assert!(
            released.status.success(),
            "{mode}: {released:?}\nserve log: {}",
            stack.serve_log()
        );
        assert_eq!(
            stack.lease_state("mallory", id).unwrap()["state"],
            "released",
            "{mode}"
        );

        let bobs = allocate_named(&stack, "bob", "shared", bob_app.port());
        let bob_socket = bobs["edge_bind_target"].as_str().unwrap().to_owned();
        let _bob_ssh = bind_by_hand(&stack, "bob", &bob_socket, bob_app.port());
        stack.assert_serves(&host, "bob's app", Duration::from_secs(20));
        let answers = visitors.after(released_at, 500, Duration::from_secs(60));
        let from_mallory = answers.iter().filter(|v| v.body == "mallory's app").count();
        assert_eq!(
            from_mallory,
            0,
            "{mode}: {from_mallory} of {} answers after her release came from mallory's app",
            answers.len()
        );
        // Her connection held the released lease's socket open: the edge ended it.
        assert!(
            eventually(Duration::from_secs(5), || master
                .0
                .try_wait()
                .unwrap()
                .is_some()),
            "{mode}: mallory's master still runs"
        );
    }
}

/// Attack (`routes` mode before sockets): a TCP listen permission is read once, at login.
/// alice opened a master connection while her lease held port P, released it, and once bob
/// got P she ran `ssh -O forward -R 127.0.0.1:P:…` on her old master: bob's URL served her
/// app. Now no lease binds a port, so her old connection may listen on no TCP port at
/// all, and bob's socket is in his own directory, where she cannot bind.
#[test]
fn an_old_connection_cannot_take_the_next_lease_of_a_tenants_name() {
    for route_mode in [RouteMode::Routes, RouteMode::Static] {
        let mode = route_mode.name();
        let stack = stack_in(route_mode);
        let alice_app = App::start("alice's app");
        let bob_app = App::start("bob's app");
        let (rc, lease) = stack.ssh_ctl(
            "alice",
            "mytunneld ctl allocate --name prize --local-port 80",
        );
        assert_eq!(rc, 0, "{mode}: {lease}");
        let master = stack.path(&format!("alice-master-{mode}"));
        let _master = Guard(
            stack
                .ssh_master("alice", &master)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        assert!(
            eventually(Duration::from_secs(20), || stack.master_check(&master)),
            "{mode}: alice's master never came up"
        );
        release_lease(&stack, "alice", &lease);
        let bobs = allocate_named(&stack, "bob", "prize", bob_app.port());
        assert_eq!(bobs["edge_bind_port"], 0, "{mode}: {bobs}");
        let bob_socket = bobs["edge_bind_target"].as_str().unwrap().to_owned();
        assert!(bob_socket.contains("/owners/bob/"), "{mode}: {bobs}");

        // On her old master: bob's socket, and TCP ports (the range's first, and any).
        let tcp = format!("127.0.0.1:{}", stack.min_port());
        for listen in [bob_socket.as_str(), tcp.as_str(), "127.0.0.1:0"] {
            let out = stack.master_forward(&master, listen, alice_app.port());
            assert!(
                !out.status.success(),
                "{mode}: alice's old master bound {listen}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _bob_ssh = bind_by_hand(&stack, "bob", &bob_socket, bob_app.port());
        stack.assert_serves(
            bobs["host"].as_str().unwrap(),
            "bob's app",
            Duration::from_secs(20),
        );
    }
}

/// Keys carry `pty`: a client holds its session on a terminal (`ssh -tt -M`) and asks for
/// its forwards over that master. The terminal changes nothing for binds: on it alice
/// serves her own lease's socket, and is refused a socket in bob's directory, in serve's
/// `hosts/` and over serve's control socket, and every TCP port.
#[test]
fn a_master_on_a_terminal_binds_only_its_owners_sockets() {
    for route_mode in [RouteMode::Static, RouteMode::Routes] {
        let mode = route_mode.name();
        let stack = stack_in(route_mode);
        let app = App::start("alice on a terminal");
        let master = stack.path(&format!("alice-tty-{mode}"));
        let _master = Guard(
            stack
                .ssh_master_tty("alice", &master)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // `ssh -tt` ends at once when sshd refuses the terminal: up means it has one.
        assert!(
            eventually(Duration::from_secs(20), || stack.master_check(&master)),
            "{mode}: alice's master on a terminal never came up"
        );
        let lease = allocate_named(&stack, "alice", "on-a-tty", app.port());
        let host = lease["host"].as_str().unwrap();
        let socket = lease["edge_bind_target"].as_str().unwrap();
        let out = stack.master_forward(&master, socket, app.port());
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stack.assert_serves(host, "alice on a terminal", Duration::from_secs(20));

        let sockets = stack.socket_dir();
        let outside = [
            sockets.join("owners/bob/evil.sock"),
            sockets.join("hosts/on-a-tty.sock.evil"),
            sockets.join("control.sock"),
        ];
        let tcp = format!("127.0.0.1:{}", stack.min_port());
        let listens = outside
            .iter()
            .map(|p| p.display().to_string())
            .chain([tcp, "127.0.0.1:0".to_owned()]);
        for listen in listens {
            let out = stack.master_forward(&master, &listen, app.port());
            assert!(
                !out.status.success(),
                "{mode}: alice's master on a terminal bound {listen}"
            );
        }
        for path in &outside[..2] {
            assert!(!path.exists(), "{mode}: {}", path.display());
        }
        // serve's socket is still serve's: ctl answers.
        assert_eq!(stack.leases("alice").len(), 1, "{mode}");
        // Her master still serves her own tunnel.
        assert!(stack.master_check(&master), "{mode}");
        stack.assert_serves(host, "alice on a terminal", Duration::from_secs(5));
    }
}

/// Attack: sockets without end. With unix-socket forwarding a tenant could leave any
/// number of sockets in its directory (300 per connection, none ever removed). Now serve's
/// cleanup pass ends every connection listening on a socket of an owner's directory that
/// no active lease binds, and the owner's next `ctl` removes the files; other tenants'
/// tunnels are untouched.
#[test]
fn sockets_no_lease_binds_are_ended_and_removed() {
    for route_mode in [RouteMode::Static, RouteMode::Routes] {
        let mode = route_mode.name();
        let stack = stack_in(route_mode);
        let bob_app = App::start("bob's app");
        let bob = stack.http("bob", bob_app.port(), &[]);
        stack.assert_serves(&bob.host(), "bob's app", Duration::from_secs(20));

        let own_dir = stack.socket_dir().join("owners/alice");
        let junk: Vec<String> = (0..50)
            .map(|i| own_dir.join(format!("junk-{i}.sock")).display().to_string())
            .collect();
        let mut ssh = stack.ssh_remote_forward("alice", &junk[0], 1);
        for path in &junk[1..] {
            ssh.arg("-R").arg(format!("{path}:127.0.0.1:1"));
        }
        ssh.stdout(Stdio::null())
            .stderr(std::fs::File::create(stack.path("alice-junk.stderr")).unwrap());
        let mut alice = Guard(ssh.spawn().unwrap());
        // Her sockets appear. Not necessarily all 50: on a busy machine the cleanup pass
        // (every second) may end her connection before sshd has bound the last ones,
        // which is the race the pass is there to win.
        assert!(
            eventually(Duration::from_secs(20), || junk
                .iter()
                .any(|p| Path::new(p).exists())),
            "{mode}: alice's sockets never appeared"
        );
        // The next cleanup pass (every second here) ends her connection.
        assert!(
            eventually(Duration::from_secs(10), || alice
                .0
                .try_wait()
                .unwrap()
                .is_some()),
            "{mode}: alice's connection with 50 sockets no lease binds still runs; serve log: {}",
            stack.serve_log()
        );
        let ended = || {
            stack
                .serve_log()
                .contains("ended a connection listening on a socket no lease binds")
        };
        assert!(
            eventually(Duration::from_secs(5), ended),
            "{mode}: {}\nalice's ssh: {}",
            stack.serve_log(),
            std::fs::read_to_string(stack.path("alice-junk.stderr")).unwrap_or_default()
        );
        // Her next allocation removes the files.
        let (rc, lease) = stack.ssh_ctl("alice", "mytunneld ctl allocate --local-port 80");
        assert_eq!(rc, 0, "{mode}: {lease}");
        let left: Vec<&String> = junk.iter().filter(|p| Path::new(p).exists()).collect();
        assert!(left.is_empty(), "{mode}: left behind: {left:?}");
        // Bob's tunnel served throughout.
        stack.assert_serves(&bob.host(), "bob's app", Duration::from_secs(5));
    }
}

/// Issue 16, item 5: a Host in capitals. Caddy's host matcher ignores case, but in
/// `static` mode the wildcard route dialled the raw label: `BobSite.e2e.test` dialled
/// `hosts/BobSite.sock`, which does not exist, and answered 502 (observed before the
/// route asked serve's names socket for the slug). Now a tunnel allocated as `bobsite`
/// answers for its name in any case, in both route modes; an unknown name in capitals is
/// still not routed.
#[test]
fn a_host_in_capitals_reaches_its_tunnel_in_both_route_modes() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for route_mode in [RouteMode::Static, RouteMode::Routes] {
        let mode = route_mode.name();
        let stack = stack_in(route_mode);
        let app = App::start("bob's app");
        let lease = allocate_named(&stack, "bob", "bobsite", app.port());
        assert_eq!(lease["host"], "bobsite.e2e.test", "{mode}: {lease}");
        let socket = lease["edge_bind_target"].as_str().unwrap().to_owned();
        let _ssh = bind_by_hand(&stack, "bob", &socket, app.port());
        stack.assert_serves("bobsite.e2e.test", "bob's app", Duration::from_secs(20));
        for host in ["BobSite.e2e.test", "BOBSITE.E2E.TEST"] {
            assert_eq!(
                stack.get(host),
                Some((200, "bob's app".to_owned())),
                "{mode}: {host}\nroutes: {}\nserve log: {}",
                stack.routes(),
                stack.serve_log()
            );
        }
        assert!(stack.not_routed("NoSuchName.e2e.test"), "{mode}");

        // In `static` mode serve, as its service user, answers Caddy on names.sock.
        let names = stack.socket_dir().join("names.sock");
        match route_mode {
            RouteMode::Static => {
                let meta = std::fs::metadata(&names).unwrap();
                assert_eq!(meta.permissions().mode() & 0o777, 0o666, "{mode}");
                let service = nix::unistd::User::from_name(e2e_support::SERVICE_USER)
                    .unwrap()
                    .unwrap();
                assert_eq!(meta.uid(), service.uid.as_raw(), "{mode}");
            }
            RouteMode::Routes => assert!(!names.exists(), "{mode}"),
        }
    }
}

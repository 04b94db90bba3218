//! `scripts/install-edge-ssh-key.sh` as an operator runs it (as root): it refuses
//! malformed keys, installs a good one with the gate's options and the right owners and
//! modes, never duplicates it, and never prints key material. (The end-to-end suite logs
//! in with keys it installs.)

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mytunnel_test_support::generate_key;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-edge-ssh-key.sh")
}

fn run(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .unwrap()
}

/// A user made for this test and removed with its home afterwards.
#[derive(Debug)]
struct TestUser(String);

impl TestUser {
    /// A name made of `prefix` and this process's id (the user is created by the script
    /// under test); the tests create users, so they run as root.
    fn new(prefix: &str) -> TestUser {
        assert!(
            nix::unistd::getuid().is_root(),
            "run as root (cargo xtask ci does)"
        );
        TestUser(format!("{prefix}{}", std::process::id() % 100_000))
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["-r", &self.0]).output();
    }
}

#[test]
fn refuses_malformed_keys_and_installs_a_good_one_once() {
    let user = TestUser::new("mtt-key");
    let dir = tempfile::tempdir().unwrap();

    let key = dir.path().join("id");
    // The public key file as ssh-keygen writes it: one line, its newline included.
    let public = format!("{}\n", generate_key(&key, "test@host").unwrap());
    let key_body = public.split_whitespace().nth(1).unwrap().to_owned();

    for (name, text) in [
        ("empty", String::new()),
        ("garbage", "not a key at all\n".to_owned()),
        ("two lines", format!("{public}{public}")),
        ("options smuggled", format!("command=\"sh\" {public}")),
        ("private key", std::fs::read_to_string(&key).unwrap()),
    ] {
        let file = dir.path().join(name.replace(' ', "-"));
        std::fs::write(&file, text).unwrap();
        let out = run(&[&user.0, file.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("PRIVATE KEY"),
            "{name}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("PRIVATE KEY"),
            "{name}"
        );
    }
    // Nothing was installed for a refused key (the user may not even exist).
    let home = PathBuf::from(format!("/home/{}", user.0));
    assert!(!home.join(".ssh/authorized_keys").exists());

    let gate = "/opt/mytunnel/bin/mytunneld --env-file /etc/x.env gate";
    for _ in 0..2 {
        let out = run(&[
            &user.0,
            dir.path().join("id.pub").to_str().unwrap(),
            "--gate-command",
            gate,
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !printed.contains(&key_body),
            "key material printed: {printed}"
        );
    }
    let authorized = home.join(".ssh/authorized_keys");
    let text = std::fs::read_to_string(&authorized).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "installed twice: {text}");
    assert!(
        lines[0].starts_with(&format!(
            "restrict,port-forwarding,pty,command=\"{gate}\" ssh-ed25519 {key_body}"
        )),
        "{}",
        lines[0]
    );
    // A line an earlier release wrote (no `pty`: `ssh -tt` fails on it) gets the current
    // options when the script runs again for that key.
    std::fs::write(
        &authorized,
        format!("restrict,port-forwarding,command=\"{gate}\" ssh-ed25519 {key_body} test@host\n"),
    )
    .unwrap();
    let out = run(&[
        &user.0,
        dir.path().join("id.pub").to_str().unwrap(),
        "--gate-command",
        gate,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&authorized).unwrap();
    assert_eq!(
        text,
        format!(
            "restrict,port-forwarding,pty,command=\"{gate}\" ssh-ed25519 {key_body} test@host\n"
        )
    );
    let passwd = nix::unistd::User::from_name(&user.0).unwrap().unwrap();
    for (path, mode) in [(home.join(".ssh"), 0o700), (authorized.clone(), 0o600)] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            mode,
            "{}",
            path.display()
        );
        assert_eq!(meta.uid(), passwd.uid.as_raw(), "{} owner", path.display());
    }
    // Unlocked for key login without a password.
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    let entry = shadow
        .lines()
        .find(|l| l.starts_with(&format!("{}:", user.0)))
        .unwrap();
    assert_eq!(entry.split(':').nth(1), Some("*"), "{entry}");
}

#[test]
fn keys_dir_holds_plain_keys_and_socket_dirs_belong_to_their_user() {
    let user = TestUser::new("mtt-kd");
    let other = TestUser::new("mtt-ko");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut publics = Vec::new();
    for name in ["a", "b"] {
        publics.push(generate_key(&dir.path().join(name), &format!("{name}@host")).unwrap());
    }
    let keys = dir.path().join("keys");
    let sockets = dir.path().join("sockets");
    std::fs::create_dir_all(sockets.join("owners")).unwrap();
    let proxy = nix::unistd::Group::from_gid(nix::unistd::getgid())
        .unwrap()
        .unwrap();
    let args = |user: &str, key: &str| -> Vec<String> {
        vec![
            user.to_owned(),
            dir.path()
                .join(key)
                .with_extension("pub")
                .display()
                .to_string(),
            "--keys-dir".to_owned(),
            keys.display().to_string(),
            "--socket-dir".to_owned(),
            sockets.display().to_string(),
            "--proxy-group".to_owned(),
            proxy.name.clone(),
            "--env-file".to_owned(),
            "/nonexistent/mytunneld.env".to_owned(),
        ]
    };
    let run_ok = |args: &[String]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&refs);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for _ in 0..2 {
        run_ok(&args(&user.0, "a"));
    }
    run_ok(&args(&user.0, "b"));
    // Plain keys, one line each, never twice; root's file in root's directory.
    let file = keys.join(&user.0);
    let text = std::fs::read_to_string(&file).unwrap();
    let plain: Vec<String> = publics.iter().map(|p| p.trim().to_owned()).collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), plain, "{text}");
    for (path, mode) in [(&keys, 0o755), (&file, 0o644)] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            mode,
            "{}",
            path.display()
        );
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", path.display());
    }
    // A keys directory others may write is refused, not loosened.
    let loose = dir.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut bad = args(&user.0, "a");
    bad[3] = loose.display().to_string();
    let out = run(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not writable by group or others"));
    assert_eq!(
        std::fs::metadata(&loose).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
    assert!(!loose.join(&user.0).exists());
    // ~/.ssh is left alone in this mode.
    let home = PathBuf::from(format!("/home/{}", user.0));
    assert!(!home.join(".ssh/authorized_keys").exists());
    // The socket directory: the user's, the proxy's group, setgid, nobody else.
    let owned = sockets.join("owners").join(&user.0);
    let meta = std::fs::metadata(&owned).unwrap();
    let passwd = nix::unistd::User::from_name(&user.0).unwrap().unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o2750);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (passwd.uid.as_raw(), proxy.gid.as_raw())
    );

    // Removing one key keeps the other.
    let mut remove = args(&user.0, "a");
    remove.push("--remove".to_owned());
    run_ok(&remove);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().collect::<Vec<_>>(), [plain[1].as_str()]);

    // A socket directory taken by someone else is refused, and left as it is.
    run_ok(&args(&other.0, "a"));
    let theirs = sockets.join("owners").join(&other.0);
    std::fs::remove_dir(&theirs).unwrap();
    std::fs::create_dir(&theirs).unwrap();
    nix::unistd::chown(&theirs, Some(passwd.uid), None).unwrap();
    let refs: Vec<String> = args(&other.0, "b");
    let out = run(&refs.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing"), "{stderr}");
    assert_eq!(
        std::fs::metadata(&theirs).unwrap().uid(),
        passwd.uid.as_raw()
    );
}

/// In keys-directory mode the key is written bare and `mytunneld authorized-keys` adds its
/// options at each login, its own gate command among them: `--gate-command` could not
/// take effect there, so it is refused (exit 2, nothing done), whether the directory is
/// given or comes from the env file. The message points at the command that does set it,
/// which takes it.
#[test]
fn gate_command_is_refused_where_mytunneld_authorized_keys_forces_the_gate() {
    let user = TestUser::new("mtt-kg");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let public = generate_key(&dir.path().join("id"), "gate@host").unwrap();
    let pubkey = dir.path().join("id.pub");
    let keys = dir.path().join("keys");
    let env = dir.path().join("mytunneld.env");
    std::fs::write(&env, format!("MYTUNNEL_KEYS_DIR={}\n", keys.display())).unwrap();
    let gate = "/opt/mytunnel/bin/mytunneld --env-file /etc/x.env gate";
    let keys_arg = keys.display().to_string();
    let env_arg = env.display().to_string();
    let pub_arg = pubkey.display().to_string();
    let sockets = dir.path().join("sockets");
    std::fs::create_dir_all(sockets.join("owners")).unwrap();
    let sockets_arg = sockets.display().to_string();
    let proxy = nix::unistd::Group::from_gid(nix::unistd::getgid())
        .unwrap()
        .unwrap();
    for args in [
        vec![
            "--keys-dir",
            &keys_arg,
            "--env-file",
            "/nonexistent/mytunneld.env",
        ],
        vec!["--env-file", &env_arg],
        vec!["--env-file", &env_arg, "--remove"],
    ] {
        for gate_args in [vec!["--gate-command", gate], vec![]] {
            let mut all = vec![user.0.as_str(), pub_arg.as_str()];
            all.extend(gate_args.iter().copied());
            all.extend(args.iter().copied());
            all.extend(["--socket-dir", &sockets_arg, "--proxy-group", &proxy.name]);
            if gate_args.is_empty() {
                // Without it, the same install works (and a removal finds the user).
                let out = run(&all);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{all:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            let out = run(&all);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{all:?}: {stderr}");
            assert!(
                stderr.contains(&format!(
                    "--gate-command has no effect with a keys directory ({})",
                    keys.display()
                )) && stderr.contains("--gate-command CMD"),
                "{stderr}"
            );
            assert!(out.stdout.is_empty(), "{all:?}");
        }
    }
    // The refusals did nothing: the one install made the user and its key line, the
    // removal took the line away again.
    assert_eq!(std::fs::read_to_string(keys.join(&user.0)).unwrap(), "");
    assert!(!PathBuf::from(format!("/home/{}/.ssh/authorized_keys", user.0)).exists());

    // What the message points at: `mytunneld authorized-keys --gate-command CMD` forces
    // CMD on the directory's keys.
    std::fs::write(keys.join(&user.0), &public).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mytunneld"))
        .arg("--env-file")
        .arg(&env)
        .args(["authorized-keys", "--gate-command", gate, &user.0])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains(&format!("command=\"{gate}\" ")),
        "{printed}"
    );
}

/// A tmpfs unmounted (lazily, so a test that failed with files open still cleans up) when
/// dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn socket_inodes_gives_each_user_a_filesystem_only_it_can_fill() {
    let user = TestUser::new("mtt-kq");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = dir.path().join("k");
    generate_key(&key, "k@host").unwrap();
    let sockets = dir.path().join("sockets");
    std::fs::create_dir_all(sockets.join("owners")).unwrap();
    let fstab = dir.path().join("fstab");
    std::fs::write(
        &fstab,
        "# static file system information\nproc /proc proc defaults 0 0\n",
    )
    .unwrap();
    let proxy = nix::unistd::Group::from_gid(nix::unistd::getgid())
        .unwrap()
        .unwrap();
    let owned = sockets.join("owners").join(&user.0);
    let args = |inodes: &str| -> Vec<String> {
        [
            user.0.as_str(),
            key.with_extension("pub").to_str().unwrap(),
            "--keys-dir",
            dir.path().join("keys").to_str().unwrap(),
            "--socket-dir",
            sockets.to_str().unwrap(),
            "--proxy-group",
            &proxy.name,
            "--env-file",
            "/nonexistent/mytunneld.env",
            "--socket-inodes",
            inodes,
            "--fstab",
            fstab.to_str().unwrap(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let run_args = |args: &[String]| run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for bad in ["7", "65537", "x", "-1", ""] {
        let out = run_args(&args(bad));
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--socket-inodes"),
            "{bad:?}"
        );
    }
    // Twice: the second run remounts and keeps one fstab line.
    for _ in 0..2 {
        let out = run_args(&args("16"));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _mounted = Mounted(owned.clone());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(owned.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} is not mounted: {mounts}", owned.display()));
    assert!(line.starts_with("tmpfs "), "{line}");
    assert!(line.contains("nr_inodes=16"), "{line}");
    let table = std::fs::read_to_string(&fstab).unwrap();
    assert!(
        table.starts_with("# static file system information\nproc /proc"),
        "{table}"
    );
    let ours: Vec<&str> = table
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(owned.to_str().unwrap()))
        .collect();
    assert_eq!(ours.len(), 1, "{table}");
    assert!(ours[0].contains("nr_inodes=16,mode=2750"), "{table}");
    // The directory is the user's as without the option.
    let meta = std::fs::metadata(&owned).unwrap();
    let passwd = nix::unistd::User::from_name(&user.0).unwrap().unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o2750);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (passwd.uid.as_raw(), proxy.gid.as_raw())
    );

    // A flood of sockets fills the user's own filesystem and stops there; the one the
    // other directories live on still takes a socket.
    let mut listeners = Vec::new();
    let mut refused = None;
    for i in 0..64 {
        match std::os::unix::net::UnixListener::bind(owned.join(format!("s{i}.sock"))) {
            Ok(listener) => listeners.push(listener),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("64 sockets fitted in a filesystem of 16 inodes");
    assert_eq!(refused.raw_os_error(), Some(nix::libc::ENOSPC), "{refused}");
    assert!(listeners.len() < 16, "{}", listeners.len());
    let elsewhere = sockets.join("owners").join("other.sock");
    let other = std::os::unix::net::UnixListener::bind(&elsewhere);
    assert!(other.is_ok(), "{other:?}");
}

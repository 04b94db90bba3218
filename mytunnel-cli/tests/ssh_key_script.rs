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

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["-r", &self.0]).output();
    }
}

#[test]
fn refuses_malformed_keys_and_installs_a_good_one_once() {
    assert!(
        nix::unistd::getuid().is_root(),
        "run as root (cargo xtask ci does)"
    );
    let user = TestUser(format!("mtt-key{}", std::process::id() % 100_000));
    let dir = tempfile::tempdir().unwrap();

    let key = dir.path().join("id");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@host", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(dir.path().join("id.pub")).unwrap();
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
            "restrict,port-forwarding,command=\"{gate}\" ssh-ed25519 {key_body}"
        )),
        "{}",
        lines[0]
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

//! SSH keys for tests: users' keys and sshd's host key.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Makes an ed25519 key pair without a passphrase with `ssh-keygen`: the private key at
/// `path`, the public one at `path` + `.pub`, commented `comment`. Returns the public key
/// line (`ssh-ed25519 AAAA… comment`). `path` must not exist yet.
pub fn generate_key(path: &Path, comment: &str) -> Result<String, String> {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ssh-keygen: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "ssh-keygen -f {} failed with {}: {}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let public = public_key_path(path);
    std::fs::read_to_string(&public)
        .map(|line| line.trim().to_owned())
        .map_err(|e| format!("{}: {e}", public.display()))
}

/// Where `ssh-keygen -f path` writes the public key: `path` + `.pub`.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut public = path.as_os_str().to_owned();
    public.push(".pub");
    PathBuf::from(public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_pair_with_its_comment_and_no_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id.test");
        let public = generate_key(&key, "someone@host").unwrap();
        let words: Vec<&str> = public.split_whitespace().collect();
        assert_eq!(words.len(), 3, "{public}");
        assert_eq!(words[0], "ssh-ed25519");
        assert_eq!(words[2], "someone@host");
        assert_eq!(public_key_path(&key), dir.path().join("id.test.pub"));
        // No passphrase: ssh-keygen derives the public key with an empty one.
        let derived = Command::new("ssh-keygen")
            .args(["-y", "-P", "", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(derived.status.success(), "{derived:?}");
        let derived = String::from_utf8_lossy(&derived.stdout).into_owned();
        assert_eq!(
            derived.split_whitespace().take(2).collect::<Vec<_>>(),
            words[..2]
        );
        // An existing key is not overwritten.
        assert!(generate_key(&key, "again").is_err());
    }
}

//! Which cipher the tunnel's ssh prefers.
//!
//! OpenSSH prefers `chacha20-poly1305@openssh.com`. On a CPU with AES instructions
//! `aes128-gcm@openssh.com` moves more bytes per core (measured on a 2-core Xeon through
//! a forward over loopback: about 1.5× the download throughput; BENCHMARKS.md has the run's
//! figures), and a tunnel's bytes are all encrypted twice on the user's and the edge's
//! CPUs. So when the CPU has AES and the user's ssh configuration leaves `Ciphers` at
//! OpenSSH's default, the AES-GCM ciphers are put first; the others stay after them, so an
//! edge without AES-GCM still agrees on one. A `Ciphers` line in `~/.ssh/config` (or an
//! `-o Ciphers=` among the extra options) wins: it changes what `ssh -G` prints, and then
//! nothing is added.

use super::*;

/// OpenSSH's default client cipher list (unchanged from 6.9 to 9.x), as `ssh -G` prints it.
pub(super) const OPENSSH_DEFAULT: &str = "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,\
aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com";

/// The same ciphers, AES-GCM first.
pub(super) const AES_GCM_FIRST: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";

/// Whether this CPU has AES instructions.
pub(super) fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The `Ciphers=` option to add, given what `ssh -G` printed for the destination: only
/// when the list is OpenSSH's default and the CPU has AES.
pub(super) fn cipher_option(ssh_g_output: &str, has_aes: bool) -> Option<String> {
    if !has_aes {
        return None;
    }
    let configured = ssh_g_output
        .lines()
        .find_map(|line| line.strip_prefix("ciphers "))?;
    (configured.trim() == OPENSSH_DEFAULT).then(|| format!("Ciphers={AES_GCM_FIRST}"))
}

/// Asks `ssh -G` what the user's configuration sets for the destination (no connection is
/// made) and decides the cipher option. Any failure adds nothing.
pub(super) async fn preferred_cipher(config: &SshConfig, ssh_bin: &Path) -> Option<String> {
    if !cpu_has_aes() {
        return None;
    }
    let mut command = tokio::process::Command::new(ssh_bin);
    command
        .arg("-G")
        .args(extra_option_args(config))
        .arg("--")
        .arg(&config.destination)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(5), command.output())
        .await
        .ok()?
        .ok()?;
    if !output.status.success() {
        return None;
    }
    cipher_option(&String::from_utf8_lossy(&output.stdout), true)
}

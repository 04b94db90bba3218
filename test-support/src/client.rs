//! The built `mytunnel` client as the tests and the bench run it.

use std::path::Path;
use std::process::{Command, Stdio};

/// `<bin> <args> --ssh-option <option>…` as a user runs the client: the environment
/// cleared but `HOME` (`home`), a user's `PATH`, and `TMPDIR` (`tmp`: the ssh control
/// directories of a client killed by a test stay there, not in `/tmp`); stdin closed.
/// The ssh options stand in for the user's `~/.ssh/config` ([`crate::Sshd::client_options`]).
pub fn client_command(
    bin: &Path,
    args: &[&str],
    ssh_options: &[String],
    home: &Path,
    tmp: &Path,
) -> Command {
    let mut command = Command::new(bin);
    command.args(args);
    for option in ssh_options {
        command.arg("--ssh-option").arg(option);
    }
    command
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .env("TMPDIR", tmp)
        .stdin(Stdio::null());
    command
}

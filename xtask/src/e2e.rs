//! `cargo xtask e2e` and `cargo xtask demo`.

use super::*;

/// The demo: system packages, then the `demo` target (a real sshd, Caddy and edge on
/// loopback, a sample app published and fetched through its tunnel URL).
pub(super) fn demo(once: bool) -> Result<()> {
    let root = workspace_root()?;
    println!("==> [1/2] prerequisites: system packages the demo uses");
    flush();
    ensure_system_packages()?;
    let mut command = cargo(&root);
    command.args(["test", "--quiet", "-p", "mytunnel-cli", "--test", "demo"]);
    if once {
        command.args(["--", "--once"]);
    }
    println!("==> [2/2] demo: {}", command_line(&command));
    flush();
    run(&mut command)
}

/// The end-to-end suite: system packages first, then `cargo test -p mytunnel-cli --test
/// e2e` (libtest runs its tests in parallel; each builds its own sshd, Caddy and edge).
pub(super) fn e2e() -> Result<()> {
    let root = workspace_root()?;
    println!("==> [1/2] prerequisites: system packages the end-to-end suite uses");
    flush();
    ensure_system_packages()?;
    let mut command = cargo(&root);
    command.args(["test", "-p", "mytunnel-cli", "--test", "e2e"]);
    println!("==> [2/2] e2e: {}", command_line(&command));
    flush();
    let started = Instant::now();
    run(&mut command)?;
    println!("xtask e2e: passed in {}", seconds(started.elapsed()));
    Ok(())
}

//! `mytunneld gate`: the SSH forced command of tunnel keys.
//!
//! The decision is made by [`mytunnel_core::gate`], from `SSH_ORIGINAL_COMMAND` alone
//! ([`decide`]); this module carries it out: a tunnel session is held until the client
//! closes it ([`hold_session`]), an allowed ctl request runs in-process ([`run_ctl`]), a
//! refusal prints the error envelope and exits non-zero.
//!
//! A held session is one process per client session on the edge (a thousand tunnels, a
//! thousand held gates), so it costs as little as a process can: no async runtime, no
//! configuration read, one line printed ([`SESSION_HELD`]), then the gate replaces itself
//! with `cat` reading the session into `/dev/null` (about 110 kB PSS against 340 kB for
//! this binary). SIGHUP (sshd closing the terminal) and SIGTERM keep their default
//! disposition and end it.
//!
//! Configuration comes from the env file and defaults only. The process environment is
//! ignored on purpose: an sshd with `AcceptEnv MYTUNNEL_*` would otherwise let a client
//! set `MYTUNNEL_DB_PATH` and bypass the refusal of override flags.

use std::io::{Read, Write};
use std::path::Path;

use mytunnel_core::gate::{
    parse_original_command, GateConfig, GateDecision, PROGRAM_NAME, SESSION_HELD,
};
use mytunnel_core::protocol::{ApiError, CtlRequest, ErrorCode};

use crate::config::{load_env_file, ConfigInputs, EdgeConfig};
use crate::ctl::{self, CtlOutput};

/// The gate's allow-list of program paths: `/usr/local/bin/mytunneld` and this binary.
pub fn gate_config() -> GateConfig {
    let mut config = GateConfig::default();
    if let Ok(exe) = std::env::current_exe() {
        let exe = exe.display().to_string();
        if exe.ends_with(&format!("/{PROGRAM_NAME}")) && !config.program_paths.contains(&exe) {
            config.program_paths.push(exe);
        }
    }
    config
}

/// What the gate does with `original_command` (`SSH_ORIGINAL_COMMAND`; unset means a
/// session), decided before any configuration is read.
pub fn decide(original_command: Option<&str>) -> Result<GateDecision, ApiError> {
    parse_original_command(original_command.unwrap_or(""), &gate_config())
}

/// Loads the configuration a gated command runs with: the env file, then defaults.
pub fn gated_config(env_file: &Path) -> Result<EdgeConfig, ApiError> {
    let env_file =
        load_env_file(env_file).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let inputs = ConfigInputs {
        env_file,
        ..ConfigInputs::default()
    };
    EdgeConfig::resolve(&inputs)
        .map(|(config, _warnings)| config)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// Runs an allowed ctl request with the configuration of `env_file`.
pub async fn run_ctl(request: CtlRequest, env_file: &Path) -> CtlOutput {
    match gated_config(env_file) {
        Ok(config) => ctl::run(&config, request).await,
        Err(e) => CtlOutput {
            stdout: e.to_envelope_json(),
            exit_code: 2,
        },
    }
}

/// Holds a tunnel session: returns when stdin ends or fails (the client closed the
/// session, or sshd hung up its terminal). Prints one line, [`SESSION_HELD`] (the client
/// counts its connection as up once it reads it), then nothing: it runs nothing it reads,
/// and on a terminal it turns echo off first, so what the client sends never comes back.
///
/// On Unix the process becomes [`HOLDER`] (`cat`, stdout to `/dev/null`, no environment),
/// which holds the session the same way in a third of the memory; when that cannot be
/// started this process reads stdin itself.
pub fn hold_session() {
    #[cfg(unix)]
    quiet_terminal();
    {
        // Nobody reading is no reason to end the session.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{SESSION_HELD}").and_then(|()| stdout.flush());
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Returns only when the exec failed.
        let _ = std::process::Command::new(HOLDER)
            .env_clear()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .exec();
    }
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 1024];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// What a held session becomes: reads stdin to its end (or to the hang-up) and discards it.
pub const HOLDER: &str = "/bin/cat";

/// Turns echo off when stdin is a terminal (a session with a pty): the line discipline
/// would otherwise send every byte the client writes back to it. Not a terminal: nothing.
#[cfg(unix)]
fn quiet_terminal() {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    if let Ok(mut termios) = tcgetattr(&stdin) {
        termios
            .local_flags
            .remove(LocalFlags::ECHO | LocalFlags::ECHONL);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &termios);
    }
}

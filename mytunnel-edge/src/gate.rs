//! `mytunneld gate`: the SSH forced command of tunnel keys.
//!
//! The decision is made by [`mytunnel_core::gate`]; this module carries it out: a tunnel
//! session is held until the client closes it, an allowed ctl request runs in-process,
//! a refusal prints the error envelope and exits non-zero.
//!
//! Configuration comes from the env file and defaults only. The process environment is
//! ignored on purpose: an sshd with `AcceptEnv MYTUNNEL_*` would otherwise let a client
//! set `MYTUNNEL_DB_PATH` and bypass the refusal of override flags.

use std::path::Path;

use mytunnel_core::gate::{parse_original_command, GateConfig, GateDecision, PROGRAM_NAME};
use mytunnel_core::protocol::{ApiError, ErrorCode};
use tokio::io::AsyncReadExt;

use crate::config::{load_env_file, ConfigInputs, EdgeConfig};
use crate::ctl::{self, CtlOutput};

/// What the gate did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    /// A tunnel session was held until the client closed it.
    SessionClosed,
    /// A ctl request ran, or the command was refused.
    Ctl(CtlOutput),
}

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

/// Runs the gate for `original_command` (`SSH_ORIGINAL_COMMAND`; unset means a session).
pub async fn run(original_command: Option<&str>, env_file: &Path) -> GateOutcome {
    let decision = match parse_original_command(original_command.unwrap_or(""), &gate_config()) {
        Ok(decision) => decision,
        Err(refusal) => return GateOutcome::Ctl(CtlOutput::error(&refusal)),
    };
    match decision {
        GateDecision::TunnelSession => {
            hold_session().await;
            GateOutcome::SessionClosed
        }
        GateDecision::Ctl(request) => match gated_config(env_file) {
            Ok(config) => GateOutcome::Ctl(ctl::run(&config, request).await),
            Err(e) => GateOutcome::Ctl(CtlOutput {
                stdout: e.to_envelope_json(),
                exit_code: 2,
            }),
        },
    }
}

/// Holds a tunnel session: returns when the client closes stdin or the session ends.
async fn hold_session() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1024];
    let hangup = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::hangup()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(mut hup), Ok(mut term)) => {
                    tokio::select! {
                        _ = hup.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    };
    tokio::pin!(hangup);
    loop {
        tokio::select! {
            read = stdin.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            () = &mut hangup => return,
        }
    }
}

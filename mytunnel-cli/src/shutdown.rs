//! The one way both binaries wait for a request to stop: SIGINT (Ctrl-C) or SIGTERM.

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT, as Ctrl-C sends it.
    Interrupt,
    /// SIGTERM, as systemd and `kill` send it.
    Terminate,
}

impl StopSignal {
    /// Its usual name.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }
}

/// Installs handlers for SIGINT and SIGTERM now (so a signal that arrives before the
/// future is polled is not lost) and returns a future that resolves with the first one.
/// Fails when a handler cannot be installed (outside a tokio runtime, or no signal
/// support).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = StopSignal>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => StopSignal::Interrupt,
            _ = terminate.recv() => StopSignal::Terminate,
        }
    })
}

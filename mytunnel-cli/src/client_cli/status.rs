//! The status line on stderr: a spinner on a terminal, plain lines elsewhere.

use super::*;

/// A status line on stderr. On a terminal a transient state (connecting, reconnecting)
/// is one line with a spinner, redrawn in place until the next line replaces it;
/// otherwise every state is a plain line.
#[derive(Debug)]
pub(super) struct Status {
    terminal: bool,
    spinner: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

pub(super) const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

impl Status {
    pub(super) fn new() -> Status {
        Status {
            terminal: std::io::stderr().is_terminal(),
            spinner: std::sync::Mutex::new(None),
        }
    }

    pub(super) fn stop_spinner(&self) {
        if let Some(task) = self
            .spinner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// A transient state: a spinning line on a terminal, a plain line otherwise.
    pub(super) fn transient(&self, text: &str) {
        let text = &printable(text);
        self.stop_spinner();
        if !self.terminal {
            let _ = writeln!(std::io::stderr(), "{text}");
            return;
        }
        let text = text.to_owned();
        let task = tokio::spawn(async move {
            for frame in SPINNER.iter().cycle() {
                let mut err = std::io::stderr();
                let _ = write!(err, "\r\x1b[2K{frame} {text}");
                let _ = err.flush();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        *self
            .spinner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    }

    /// A line of output on stdout (a request of the log), printed above a spinning status
    /// line rather than into it; the spinner draws itself again below. `text` is printed
    /// as given: format it with what a visitor sent made printable.
    pub(super) fn output(&self, text: &str) {
        let spinning = self
            .spinner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
        if self.terminal && spinning {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }

    /// A lasting line (replaces a spinning one).
    pub(super) fn line(&self, text: &str) {
        let text = &printable(text);
        self.stop_spinner();
        let mut err = std::io::stderr();
        if self.terminal {
            let _ = writeln!(err, "\r\x1b[2K{text}");
        } else {
            let _ = writeln!(err, "{text}");
        }
    }
}

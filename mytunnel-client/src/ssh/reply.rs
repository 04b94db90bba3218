//! Replies and diagnostics: what a ctl command or ssh left behind (pure).

use super::*;

/// [`interpret_reply`] of a finished ssh process's output.
pub(super) fn reply_of_output(
    verb: Verb,
    output: &std::process::Output,
) -> Result<CtlResponse, TransportError> {
    interpret_reply(
        verb,
        output.status.code(),
        &output.stdout,
        &tail_of_text(&String::from_utf8_lossy(&output.stderr), TAIL_LINES),
    )
}

/// Turns what a ctl command left behind into its answer. `status` is the exit code (None
/// when killed by a signal), `stderr_tail` the last stderr lines for messages.
pub(super) fn interpret_reply(
    verb: Verb,
    status: Option<i32>,
    stdout: &[u8],
    stderr_tail: &str,
) -> Result<CtlResponse, TransportError> {
    let text = String::from_utf8_lossy(stdout);
    // Every string of the edge's answer is made printable here, before anything can show
    // it: a hostile or broken edge must not write escape sequences to the user's terminal.
    match decode_reply(verb, &text) {
        Ok(response) if status == Some(0) => Ok(response.printable()),
        // `health` prints its document and exits 1 when the edge is unhealthy.
        Ok(response @ CtlResponse::Health(_)) if status == Some(1) => Ok(response.printable()),
        Ok(_) => Err(TransportError::Malformed(format!(
            "`{verb}` printed a success document but {}{}",
            describe_code(status),
            with_tail("stderr", stderr_tail)
        ))),
        Err(ReplyError::Refused(api)) => Err(TransportError::Refused(api.printable())),
        Err(malformed @ ReplyError::Malformed { .. }) => match status {
            // ssh's own failure: it could not connect, authenticate or run the command.
            Some(255) | None => Err(TransportError::Unreachable(format!(
                "ssh {}{}",
                describe_code(status),
                with_tail("ssh said", stderr_tail)
            ))),
            Some(_) => Err(TransportError::Malformed(format!(
                "{malformed} ({}){}{}",
                describe_code(status),
                with_tail("stdout", &tail_of_text(&text, 2)),
                with_tail("stderr", stderr_tail)
            ))),
        },
    }
}

pub(super) fn describe_code(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_owned(),
    }
}

/// `"; <label>: <tail>"`, or nothing for an empty tail.
pub(super) fn with_tail(label: &str, tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; {label}: {tail}")
    }
}

/// Control characters (other than tab) removed, at most [`MAX_LINE_CHARS`] characters.
pub(super) fn clean_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .take(MAX_LINE_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// One raw stderr line, decoded lossily and cleaned.
pub(super) fn clean_line(bytes: &[u8]) -> String {
    clean_text(&String::from_utf8_lossy(bytes))
}

/// Whether a stderr line is worth keeping: everything but ssh's debug chatter, except the
/// debug lines that tell where a connection got to.
pub(super) fn keep_stderr_line(line: &str) -> bool {
    if line.is_empty() || line.starts_with("Warning: Permanently added") {
        return false;
    }
    if !line.starts_with("debug") {
        return true;
    }
    const USEFUL: [&str; 8] = [
        "remote forward",
        "Connecting to",
        "Connection established",
        "Authenticated to",
        "Authentication succeeded",
        "Exit status",
        "Killed by signal",
        "Remote connections from",
    ];
    line.starts_with("debug1:") && USEFUL.iter().any(|u| line.contains(u))
}

/// Whether a stderr line says the edge accepted the remote forward.
pub(super) fn is_forward_success(line: &str) -> bool {
    line.contains(FORWARD_SUCCESS)
}

/// The last `n` kept lines of a text, joined with `"; "`.
pub(super) fn tail_of_text(text: &str, n: usize) -> String {
    let kept: Vec<String> = text
        .lines()
        .map(clean_text)
        .filter(|l| keep_stderr_line(l))
        .collect();
    join_tail(kept.iter().map(String::as_str), n)
}

pub(super) fn join_tail<'a>(lines: impl DoubleEndedIterator<Item = &'a str>, n: usize) -> String {
    let mut last: Vec<&str> = lines.rev().take(n).collect();
    last.reverse();
    last.join("; ")
}

/// The last lines of a log file (its last 16 KiB), or nothing if it cannot be read.
pub(super) fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read()
        .map(|text| tail_of_text(&text, TAIL_LINES))
        .unwrap_or_default()
}

pub(super) fn spawn_error(ssh_bin: &Path, e: &std::io::Error) -> TransportError {
    TransportError::Unreachable(format!("cannot run {}: {e}", ssh_bin.display()))
}

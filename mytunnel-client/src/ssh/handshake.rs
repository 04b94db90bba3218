//! Refused handshakes: a connection the edge refused before login is retried.

use super::*;

/// Whether ssh's output says the edge refused the connection before login, so that
/// nothing ran there and another try may get through: nothing listening (`ssh: connect to
/// host … port …: Connection refused`, sshd restarting), or the connection closed or reset
/// before the SSH banner (`kex_exchange_identification: read: Connection reset by peer`,
/// `… Connection closed by remote host`, `banner line 0: Exceeded MaxStartups`: sshd
/// shedding handshakes past its `MaxStartups`), or no banner within the connect timeout.
/// A failed login, an unknown host key, a name that does not resolve or a refused
/// forward are not: trying again would fail the same way.
pub(super) fn is_refused_handshake(ssh_output: &str) -> bool {
    const BEFORE_THE_BANNER: [&str; 3] = [
        "Connection closed by remote host",
        "Connection reset by peer",
        "Exceeded MaxStartups",
    ];
    ssh_output.split(';').map(str::trim).any(|line| {
        let banner_exchange = line.contains("kex_exchange_identification:")
            || line.contains("ssh_exchange_identification:");
        (banner_exchange && BEFORE_THE_BANNER.iter().any(|b| line.contains(b)))
            || (line.contains("ssh: connect to host ") && line.ends_with(": Connection refused"))
            || line.contains("Connection timed out during banner exchange")
    })
}

/// Runs `attempt` again, with jittered backoff, while it fails with a handshake the edge
/// refused ([`is_refused_handshake`]), for at most `config.handshake_retry` in all (the
/// last wait is cut to fit). Then the last error says how many refusals over how long.
pub(super) async fn retry_refused_handshake<T, F, Fut>(
    config: &SshConfig,
    mut attempt: F,
) -> Result<T, TransportError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TransportError>>,
{
    let started = tokio::time::Instant::now();
    let mut refusals = 0u32;
    loop {
        match attempt().await {
            Err(TransportError::Unreachable(message)) if is_refused_handshake(&message) => {
                refusals = refusals.saturating_add(1);
                let spent = started.elapsed();
                let left = config.handshake_retry.saturating_sub(spent);
                if left.is_zero() {
                    return Err(TransportError::Unreachable(gave_up_on_refusals(
                        &message,
                        refusals,
                        spent,
                        config.handshake_retry,
                    )));
                }
                let delay = jittered_backoff(refusals).min(left);
                tracing::debug!(
                    destination = %config.destination,
                    refusals,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    %message,
                    "the edge refused the ssh handshake; retrying"
                );
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

/// The last refusal's message, with what was tried.
pub(super) fn gave_up_on_refusals(
    message: &str,
    refusals: u32,
    spent: Duration,
    budget: Duration,
) -> String {
    if budget.is_zero() {
        return format!(
            "{message} (the edge refused the connection before login; retrying is off)"
        );
    }
    format!(
        "{message} (the edge refused the connection before login {refusals} time{s} in \
         {spent:.1}s: sshd is restarting or past its MaxStartups; gave up after the {budget}s \
         retry budget)",
        s = if refusals == 1 { "" } else { "s" },
        spent = spent.as_secs_f64(),
        budget = budget.as_secs_f64(),
    )
}

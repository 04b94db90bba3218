//! Jittered exponential backoff, shared by the supervisor's reconnects and the ssh
//! transport's retries of a handshake the edge refused.

use std::time::Duration;

use rand::Rng;

/// The delay before reconnect attempt `attempt` (1-based): 0.5s doubling to 30s, ±25%
/// (`jitter` in [-1, 1] picks where in that band).
pub fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    let base = 0.5_f64 * 2_f64.powi(i32::try_from(attempt.saturating_sub(1).min(16)).unwrap_or(16));
    let capped = base.min(30.0);
    let factor = 1.0 + (jitter.clamp(-1.0, 1.0) * 0.25);
    Duration::from_secs_f64(capped * factor)
}

/// [`backoff_delay`] with a random jitter: clients that failed at the same moment (an
/// sshd restart drops them all at once) come back spread out, not in one wave.
pub(crate) fn jittered_backoff(attempt: u32) -> Duration {
    backoff_delay(attempt, rand::rng().random_range(-1.0..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        assert_eq!(backoff_delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(2, 0.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(4, 0.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(30, 0.0), Duration::from_secs(30));
        assert_eq!(backoff_delay(u32::MAX, 0.0), Duration::from_secs(30));
        assert_eq!(backoff_delay(1, 1.0), Duration::from_millis(625));
        assert_eq!(backoff_delay(1, -1.0), Duration::from_millis(375));
    }

    #[test]
    fn random_jitter_stays_in_the_band() {
        for attempt in [1, 3, 40] {
            let low = backoff_delay(attempt, -1.0);
            let high = backoff_delay(attempt, 1.0);
            for _ in 0..200 {
                let d = jittered_backoff(attempt);
                assert!(low <= d && d <= high, "{attempt}: {d:?}");
            }
        }
    }
}

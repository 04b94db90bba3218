//! Waiting for a condition by polling it.

use std::time::{Duration, Instant};

/// Polls `condition` every 50 ms until it holds or `timeout` passes; whether it held.
pub fn eventually(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    poll_every(timeout, Duration::from_millis(50), condition)
}

/// Polls `condition` every `every` until it holds or `timeout` passes (a short `every`
/// for waits that are themselves measured); whether it held.
pub fn poll_every(timeout: Duration, every: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

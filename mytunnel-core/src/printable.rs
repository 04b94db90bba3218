//! Text from the edge, made safe to print on the user's terminal.
//!
//! A hostile or broken edge controls every string in its answers: error messages and
//! hints, health details, names and hosts. Printed raw, an escape sequence in one of them
//! can retitle the window, clear the screen, draw fake advice in colour or hide a link
//! (OSC 8). The client passes every decoded answer through [`Printable`] before anything
//! sees it, so no control character the edge sent ever reaches a terminal.

use crate::protocol::{ApiError, CtlResponse, HealthDto, LeaseDto, StatsDto};

/// What stands in for each character that may not be printed.
pub const REPLACEMENT: char = '\u{FFFD}';

/// Whether `c` may not reach a terminal: a control character (C0, DEL, C1) or a
/// bidirectional override, which reorders what a reader sees ("Trojan Source").
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// `text` with every unprintable character replaced by [`REPLACEMENT`].
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if is_unprintable(c) { REPLACEMENT } else { c })
        .collect()
}

/// Replaces the unprintable characters of every string a value holds.
pub trait Printable {
    /// The same value with every string made [`printable`].
    fn printable(self) -> Self;
}

impl Printable for String {
    fn printable(self) -> Self {
        if self.chars().any(is_unprintable) {
            printable(&self)
        } else {
            self
        }
    }
}

impl Printable for ApiError {
    fn printable(self) -> Self {
        ApiError {
            code: self.code,
            message: self.message.printable(),
            hint: self.hint.printable(),
        }
    }
}

impl Printable for LeaseDto {
    fn printable(self) -> Self {
        // Ids, owners, targets and times are typed: they parsed, so they hold no control
        // character. The slug and host are plain strings (tombstones).
        LeaseDto {
            slug: self.slug.printable(),
            host: self.host.printable(),
            ..self
        }
    }
}

impl Printable for HealthDto {
    fn printable(mut self) -> Self {
        self.version = self.version.printable();
        self.base_domain = self.base_domain.printable();
        self.db.detail = self.db.detail.printable();
        self.caddy.detail = self.caddy.detail.printable();
        self
    }
}

impl Printable for StatsDto {
    fn printable(mut self) -> Self {
        self.per_owner = self.per_owner.map(|per_owner| {
            per_owner
                .into_iter()
                .map(|(owner, count)| (owner.printable(), count))
                .collect()
        });
        self
    }
}

impl Printable for CtlResponse {
    fn printable(self) -> Self {
        match self {
            CtlResponse::Lease(lease) => CtlResponse::Lease(lease.printable()),
            CtlResponse::Leases(leases) => {
                CtlResponse::Leases(leases.into_iter().map(Printable::printable).collect())
            }
            CtlResponse::Health(health) => CtlResponse::Health(health.printable()),
            CtlResponse::Stats(stats) => CtlResponse::Stats(stats.printable()),
            other @ (CtlResponse::Deleted(_) | CtlResponse::Reconciled(_)) => other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn escapes_and_overrides_are_replaced() {
        assert_eq!(printable("plain ünïcode ✓"), "plain ünïcode ✓");
        assert_eq!(
            printable("\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\r\nx\t\u{202E}y"),
            "\u{FFFD}]0;pwned\u{FFFD}\u{FFFD}[2J\u{FFFD}31m\u{FFFD}\u{FFFD}x\u{FFFD}\u{FFFD}y"
        );
        let error = ApiError {
            code: ErrorCode::SlugTaken,
            message: "\u{1b}]8;;http://evil/\u{1b}\\click\u{1b}]8;;\u{1b}\\".into(),
            hint: "\u{7}".into(),
        }
        .printable();
        assert!(!error.message.chars().any(is_unprintable));
        assert_eq!(error.hint, "\u{FFFD}");
    }
}

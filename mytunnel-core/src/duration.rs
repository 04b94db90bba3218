//! Durations as people write them: `30s`, `2m`, `1h30m`, `7d`.

use std::time::Duration;

use crate::protocol::{ApiError, ErrorCode};

/// Longest duration we accept anywhere (10 years): keeps timestamp arithmetic in range.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Parses a human duration (`humantime` syntax: `90s`, `2m`, `1h 30m`, `7d`).
///
/// Refuses empty input, a bare number without a unit, and anything over 10 years, with
/// `invalid_argument`.
pub fn parse_duration(text: &str) -> Result<Duration, ApiError> {
    let trimmed = text.trim();
    let refuse = |why: String| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "{:?} is not a duration ({why}); write e.g. 30s, 2m or 1h30m",
                text.chars().take(64).collect::<String>()
            ),
        )
    };
    if trimmed.is_empty() {
        return Err(refuse("empty".into()));
    }
    let duration = humantime::parse_duration(trimmed).map_err(|e| refuse(e.to_string()))?;
    if duration > MAX_DURATION {
        return Err(refuse("longer than 10 years".into()));
    }
    Ok(duration)
}

/// Formats a duration the way [`parse_duration`] reads it back exactly, e.g. `2m`,
/// `1h 30m` or `1s 500ms`.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        for bad in ["", "  ", "30", "abc", "-5s", "99999999999999999999d", "11y"] {
            let e = parse_duration(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_round_trips(s in "\\PC{0,40}") {
            if let Ok(d) = parse_duration(&s) {
                prop_assert!(d <= MAX_DURATION);
            }
        }

        #[test]
        fn format_round_trips(secs in 0u64..MAX_DURATION.as_secs(), nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos).min(MAX_DURATION);
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }

        #[test]
        fn parsed_durations_format_back(s in "[0-9]{1,3}(\\.[0-9]{1,3})?(ns|us|ms|s|m|h|d)") {
            if let Ok(d) = parse_duration(&s) {
                prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
            }
        }
    }
}

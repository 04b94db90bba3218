//! Human durations: whatever parses is at most `MAX_DURATION` and reads back from its
//! formatted form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mytunnel_core::duration::{format_duration, parse_duration, MAX_DURATION};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(d) = parse_duration(&s) {
        assert!(
            d <= MAX_DURATION,
            "{s:?} parsed to {d:?}, over MAX_DURATION"
        );
        let formatted = format_duration(d);
        assert_eq!(
            parse_duration(&formatted),
            Ok(d),
            "{s:?} parsed to {d:?}, formatted as {formatted:?}"
        );
    }
});

//! Name parsing: slugs (checked against their rules and for a stable round trip) and the
//! other validated names (which must only not panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mytunnel_core::{BaseDomain, Host, LeaseId, LeaseRef, Slug};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(slug) = s.parse::<Slug>() {
        let text = slug.as_str();
        assert!(
            (1..=63).contains(&text.len()),
            "slug {text:?} from {s:?} has length {}",
            text.len()
        );
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "slug {text:?} from {s:?} has a character outside [a-z0-9-]"
        );
        assert!(
            !text.starts_with('-') && !text.ends_with('-'),
            "slug {text:?} from {s:?} starts or ends with '-'"
        );
        assert_eq!(
            text.parse::<Slug>().as_ref(),
            Ok(&slug),
            "slug {text:?} does not re-parse to itself"
        );
    }
    let _ = s.parse::<LeaseRef>();
    let _ = s.parse::<BaseDomain>();
    let _ = s.parse::<Host>();
    let _ = s.parse::<LeaseId>();
});

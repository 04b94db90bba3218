//! serve's host names socket (`static` mode): any request head gets a 502 or a 200 naming
//! a valid lower-case slug, without a panic, and the slug answered is the one the head's
//! Host names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mytunnel_core::{BaseDomain, Slug};
use mytunnel_edge::host_names::{answer, slug_of_head};

fuzz_target!(|data: &[u8]| {
    let Ok(base) = "tunnel.example.com".parse::<BaseDomain>() else {
        return;
    };
    let reply = answer(data, &base);
    match slug_of_head(data, &base) {
        Some(slug) => {
            let text = slug.as_str();
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "slug {text:?} has a character outside [a-z0-9-]"
            );
            assert_eq!(text.parse::<Slug>().as_ref(), Ok(&slug));
            assert!(
                reply.starts_with("HTTP/1.1 200 OK\r\n")
                    && reply.contains(&format!("\r\nX-Mytunnel-Slug: {text}\r\n")),
                "{reply:?}"
            );
        }
        None => assert!(reply.starts_with("HTTP/1.1 502 "), "{reply:?}"),
    }
});

//! Caddy admin API answers: any body must be read without a panic by the code that reads
//! what Caddy holds (`parse_body`, `parse_routes`, `parse_installed`), every route read as
//! ours must be exactly what mytunnel writes for it (a round trip through `route_json`),
//! and a route mytunnel writes must read back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mytunnel_edge::caddy::{parse_body, parse_installed, parse_routes, route_json};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let body = parse_body(&text);
    // The routes list as `GET …/routes` answers it, and each element as `GET /id/<id>` does.
    let listed = parse_routes(&body);
    let single = parse_installed(&body);
    for installed in listed.into_iter().flatten().chain(single) {
        assert!(
            installed.id.starts_with("mytunnel-"),
            "{:?} read as ours",
            installed.id
        );
        if let Some(route) = installed.route {
            assert_eq!(installed.id, route.id(), "id and route disagree");
            let written = route_json(&route);
            let again = parse_installed(&written);
            assert_eq!(
                again.and_then(|r| r.route),
                Some(route),
                "route does not read back: {written}"
            );
        }
    }
    // A body that is not JSON is kept as its text (an error Caddy wrote as plain text).
    if serde_json::from_str::<Value>(&text).is_err() && !text.trim().is_empty() {
        assert_eq!(body, Value::String(text.clone().into_owned()));
    }
});

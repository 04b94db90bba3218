//! serve's control socket: any request line must parse into a typed request or be refused
//! with an error code, without a panic; a request that parses must print as a line that
//! parses back to the same request. A reply line must decode for every verb or be refused,
//! and whatever it decodes to must be printable once made so.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mytunnel_core::control::{decode_reply_line, ControlRequest};
use mytunnel_core::printable::{is_unprintable, Printable};
use mytunnel_core::protocol::{CtlResponse, Verb};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(request) = ControlRequest::parse_line(&s) {
        let line = request.to_line();
        match ControlRequest::parse_line(&line) {
            Ok(again) => assert_eq!(again, request, "{line}"),
            Err(e) => panic!("{line:?} does not parse back: {e}"),
        }
    }
    for verb in Verb::ALL {
        match decode_reply_line(verb, &s) {
            Ok(response) => {
                if let CtlResponse::Lease(lease) = response.printable() {
                    assert!(!lease.slug.chars().any(is_unprintable));
                    assert!(!lease.host.chars().any(is_unprintable));
                }
            }
            Err(error) => {
                let error = error.printable();
                assert!(!error.message.chars().any(is_unprintable));
                assert!(!error.hint.chars().any(is_unprintable));
            }
        }
    }
});

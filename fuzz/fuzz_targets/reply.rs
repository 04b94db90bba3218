//! Decoding ctl replies (stands in for "Caddy JSON" until the Caddy backend exists): any
//! stdout must decode without a panic for every verb, and a decoded response must encode
//! to JSON that decodes to the same response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mytunnel_core::protocol::{decode_reply, Verb};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    for verb in Verb::ALL {
        let Ok(response) = decode_reply(verb, &s) else {
            continue;
        };
        let json = match response.to_json() {
            Ok(json) => json,
            Err(e) => panic!("{verb}: {response:?} does not encode: {e}"),
        };
        match decode_reply(verb, &json) {
            Ok(again) => assert_eq!(again, response, "{verb}: {json}"),
            Err(e) => panic!("{verb}: encoded {json} does not decode: {e}"),
        }
    }
});

//! The SSH forced-command gate: any `SSH_ORIGINAL_COMMAND` must be decided without a
//! panic, no accepted command may carry a daemon override flag, and an accepted request
//! must survive `to_args` → `parse_args`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mytunnel_core::gate::{parse_original_command, GateConfig, GateDecision};
use mytunnel_core::protocol::{is_override_word, CtlRequest};

fuzz_target!(|data: &[u8]| {
    let command = String::from_utf8_lossy(data);
    let Ok(GateDecision::Ctl(request)) = parse_original_command(&command, &GateConfig::default())
    else {
        return;
    };
    let args = request.to_args();
    assert!(
        !args.iter().any(|w| is_override_word(w)),
        "accepted {command:?} carries an override flag: {args:?}"
    );
    let Some((ctl, verb_and_flags)) = args.split_first() else {
        panic!("to_args of {request:?} is empty");
    };
    assert_eq!(ctl, "ctl", "to_args of {request:?} does not start with ctl");
    let again = match CtlRequest::parse_args(verb_and_flags) {
        Ok(again) => again,
        Err(e) => panic!("args {args:?} of accepted {command:?} are refused: {e}"),
    };
    assert_eq!(again, request, "args {args:?} of {command:?}");
    // Written again, the request gives the very same words.
    assert_eq!(again.to_args(), args, "args of {command:?} are not stable");
});

//! The edge env file: any text is read without a panic; an error names a line of the
//! text; every entry read is a valid variable name whose line exists, and writing the
//! entries back out (double-quoted) reads back the same keys and values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mytunnel_core::envfile::parse_env_file;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    match parse_env_file(&text) {
        Err(e) => assert!(
            (1..=lines).contains(&e.line),
            "error names line {} of {lines}: {e}",
            e.line
        ),
        Ok(entries) => {
            let mut previous = 0;
            for entry in &entries {
                assert!(entry.line > previous && entry.line <= lines, "{entry:?}");
                previous = entry.line;
                assert!(
                    entry
                        .key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "{entry:?}"
                );
            }
            // Values without a double quote or a line break round-trip when re-quoted.
            let writable: Vec<_> = entries
                .iter()
                .filter(|e| !e.value.contains('"') && !e.value.contains(['\n', '\r']))
                .collect();
            let rewritten: String = writable
                .iter()
                .map(|e| format!("{}=\"{}\"\n", e.key, e.value))
                .collect();
            let back = match parse_env_file(&rewritten) {
                Ok(back) => back,
                Err(e) => panic!("rewritten {rewritten:?} does not read back: {e}"),
            };
            let read: Vec<(String, String)> = back.into_iter().map(|e| (e.key, e.value)).collect();
            let written: Vec<(String, String)> = writable
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            assert_eq!(read, written, "{rewritten:?}");
        }
    }
});

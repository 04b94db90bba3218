//! The control-plane wire protocol: every ctl request, every response DTO, the error
//! envelope, and the stable error codes with their hints. This module is the one place
//! where JSON keys and error codes are defined.
//!
//! A ctl command prints exactly one JSON document on stdout: a DTO on success, or
//! `{"error":{"code":"…","message":"…","hint":"…"}}` on failure, with exit code 1 for an
//! expected refusal and 2 for an internal failure.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::{InvalidValue, LeaseId, LeaseRef, Owner, Slug};
use crate::settings::{gate_override_flags, GATE_OVERRIDE_COUNT};
use crate::{BindTarget, Lease, LeaseState, Timestamp};

mod args;
mod codes;
mod dto;
mod request;

use args::*;
pub use codes::*;
pub use dto::*;
pub use request::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            id: "lease_abcdefghijklmnop".parse().unwrap(),
            slug: "portal".parse().unwrap(),
            host: "portal.tunnel.example.com".parse().unwrap(),
            owner: "alice".parse().unwrap(),
            edge_bind_port: 21000,
            bind_socket: None,
            ttl: crate::Ttl::configured(Duration::from_secs(120)),
            created_at: Timestamp::from_unix_seconds(1_780_000_000).unwrap(),
            updated_at: Timestamp::from_unix_seconds(1_780_000_000).unwrap(),
            expires_at: Timestamp::from_unix_seconds(1_780_000_120).unwrap(),
            state: LeaseState::Active,
        }
    }

    #[test]
    fn lease_dto_has_exact_keys() {
        let json = serde_json::to_value(LeaseDto::from(&lease())).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "lease_id",
            "slug",
            "host",
            "owner",
            "edge_bind_port",
            "created_at",
            "updated_at",
            "expires_at",
            "state",
        ] {
            assert!(keys.contains(&key), "missing {key}");
        }
        assert_eq!(json["created_at"], "2026-05-28T20:26:40Z");
        assert_eq!(json["state"], "active");
    }

    #[test]
    fn tombstones_are_exact() {
        let mut l = lease();
        l.state = LeaseState::Released;
        let dto = LeaseDto::from(&l);
        assert_eq!(dto.slug, "released-lease_abcdefghijklmnop");
        assert_eq!(dto.host, "released-lease_abcdefghijklmnop.invalid");
        l.state = LeaseState::Expired;
        assert_eq!(
            LeaseDto::from(&l).host,
            "expired-lease_abcdefghijklmnop.invalid"
        );
    }

    #[test]
    fn envelope_shape() {
        let e = ApiError::new(ErrorCode::SlugTaken, "portal is taken");
        let v: serde_json::Value = serde_json::from_str(&e.to_envelope_json()).unwrap();
        assert_eq!(v["error"]["code"], "slug_taken");
        assert_eq!(v["error"]["message"], "portal is taken");
        assert!(!v["error"]["hint"].as_str().unwrap().is_empty());
        let back = decode_reply(Verb::Allocate, &e.to_envelope_json()).unwrap_err();
        assert_eq!(back, ReplyError::Refused(e));
    }

    #[test]
    fn codes_are_stable_strings() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(!code.hint().is_empty());
        }
    }

    #[test]
    fn decode_reply_checks_shape() {
        let dto = LeaseDto::from(&lease());
        let json = serde_json::to_string(&dto).unwrap();
        assert_eq!(
            decode_reply(Verb::Heartbeat, &json).unwrap(),
            CtlResponse::Lease(dto)
        );
        assert!(matches!(
            decode_reply(Verb::List, &json),
            Err(ReplyError::Malformed { .. })
        ));
        assert_eq!(
            decode_reply(Verb::List, "[]").unwrap(),
            CtlResponse::Leases(vec![])
        );
        assert!(matches!(
            decode_reply(Verb::List, "nope"),
            Err(ReplyError::Malformed { .. })
        ));
    }

    #[test]
    fn force_requires_name() {
        let err = CtlRequest::parse_args(&["allocate", "--force"]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn replaces_takes_a_lease_id_and_a_name() {
        let request = CtlRequest::parse_args(&[
            "allocate",
            "--name",
            "portal",
            "--replaces=lease_abcdefghijklmnop",
        ])
        .unwrap();
        assert_eq!(
            request,
            CtlRequest::Allocate(AllocateRequest {
                name: Some("portal".parse().unwrap()),
                replaces: Some("lease_abcdefghijklmnop".parse().unwrap()),
                ..AllocateRequest::default()
            })
        );
        // A malformed id is `invalid_argument`, naming the flag; so is a missing name,
        // as for `--force`: only a named lease replaces one.
        for (words, says) in [
            (
                &["allocate", "--name", "portal", "--replaces", "portal"][..],
                "--replaces \"portal\" is not a lease id",
            ),
            (
                &[
                    "allocate",
                    "--name",
                    "portal",
                    "--replaces",
                    "lease_ABCDEFGHIJKLMNOP",
                ][..],
                "is not a lease id",
            ),
            (
                &["allocate", "--name", "portal", "--replaces"][..],
                "--replaces",
            ),
            (
                &["allocate", "--name", "portal", "--replaces", ""][..],
                "is not a lease id",
            ),
            (
                &["allocate", "--replaces", "lease_abcdefghijklmnop"][..],
                "--replaces requires --name",
            ),
        ] {
            let err = CtlRequest::parse_args(words).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{words:?}");
            assert_eq!(err.code.as_str(), "invalid_argument");
            assert!(err.message.contains(says), "{words:?}: {}", err.message);
        }
        // Not a flag of any other verb.
        let err = CtlRequest::parse_args(&["heartbeat", "--replaces", "lease_abcdefghijklmnop"])
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ForbiddenCommand);
    }

    #[test]
    fn args_round_trip() {
        let requests = [
            CtlRequest::Allocate(AllocateRequest {
                local_port: Some(3000),
                name: Some("portal".parse().unwrap()),
                ttl: Some(Duration::from_secs(90)),
                takeover: Takeover::Force,
                replaces: None,
            }),
            CtlRequest::Allocate(AllocateRequest {
                name: Some("portal".parse().unwrap()),
                replaces: Some("lease_abcdefghijklmnop".parse().unwrap()),
                ..AllocateRequest::default()
            }),
            CtlRequest::Allocate(AllocateRequest {
                ttl: Some(Duration::from_millis(1500)),
                ..AllocateRequest::default()
            }),
            CtlRequest::Allocate(AllocateRequest::default()),
            CtlRequest::Heartbeat {
                lease: "lease_abcdefghijklmnop".parse().unwrap(),
            },
            CtlRequest::Release {
                lease: "portal.t.example".parse().unwrap(),
            },
            CtlRequest::Delete {
                lease: "portal".parse().unwrap(),
            },
            CtlRequest::List(ListScope::All),
            CtlRequest::List(ListScope::Own),
            CtlRequest::Health,
            CtlRequest::Reconcile,
            CtlRequest::Stats,
        ];
        for request in requests {
            let args = request.to_args();
            assert_eq!(args[0], "ctl");
            assert_eq!(CtlRequest::parse_args(&args[1..]).unwrap(), request);
        }
    }
}

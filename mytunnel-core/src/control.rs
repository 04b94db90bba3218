//! The control socket's wire protocol: how `mytunneld ctl` asks `mytunneld serve`.
//!
//! Only `serve` opens the lease database. A `ctl` process (run by the SSH gate as a tunnel
//! user, or by an operator on the edge) connects to serve's unix socket and sends one
//! request; serve names the caller from the socket's peer credentials, never from the
//! request. One connection carries one exchange of JSON lines:
//!
//! ```text
//! ctl   → {"v":1,"ctl":["allocate","--local-port","3000","--name","portal"]}
//! serve → {"v":1,"accepted":true}
//! serve → {"v":1,"ok":{…the verb's DTO…}}      or   {"v":1,"error":{"code":…}}
//! ```
//!
//! The request is the typed [`CtlRequest`], carried as its ctl words and read back with
//! the same allow-list parser the SSH gate uses, so nothing can be said on the socket that
//! cannot be said on the command line (and `--owner` is not even carried). `accepted`
//! tells ctl that a live serve took the request: without it in [`ACCEPT_WITHIN`], ctl
//! answers `service_unavailable` having changed nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::{
    decode_reply, ApiError, CtlRequest, CtlResponse, ErrorCode, ReplyError, Verb,
};

/// The protocol version both ends speak.
pub const CONTROL_VERSION: u32 = 1;

/// The longest request line serve reads, newline included.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// How long ctl waits for serve to connect and accept its request before it answers
/// `service_unavailable`; also how long serve waits for a request line.
pub const ACCEPT_WITHIN: Duration = Duration::from_secs(2);

/// One request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlRequest {
    /// [`CONTROL_VERSION`].
    pub v: u32,
    /// The operation, as the words after `mytunneld ctl`.
    #[serde(serialize_with = "ctl_words")]
    pub ctl: CtlRequest,
}

/// A request line as it arrives, before its words are judged.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    v: u32,
    ctl: Vec<String>,
}

impl ControlRequest {
    /// A request of this protocol version.
    pub fn new(ctl: CtlRequest) -> Self {
        ControlRequest {
            v: CONTROL_VERSION,
            ctl,
        }
    }

    /// The request line, newline included.
    pub fn to_line(&self) -> String {
        // A struct of a number and strings always serialises.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// Reads a request line. A malformed line (not JSON, a missing or extra field, another
    /// protocol version) is `invalid_argument`; words the allow-list refuses keep its
    /// code (`forbidden_command`, `override_not_allowed`, `invalid_slug`, …).
    pub fn parse_line(line: &str) -> Result<ControlRequest, ApiError> {
        let raw: RawRequest = serde_json::from_str(line.trim_end()).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("malformed control request: {e}"),
            )
        })?;
        if raw.v != CONTROL_VERSION {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "control protocol version {} is not {CONTROL_VERSION}: ctl and serve are from different releases",
                    raw.v
                ),
            ));
        }
        Ok(ControlRequest::new(CtlRequest::parse_args(&raw.ctl)?))
    }
}

/// `CtlRequest` as the list of its ctl words (`allocate --name portal`), which
/// [`CtlRequest::parse_args`] reads back.
fn ctl_words<S: serde::Serializer>(request: &CtlRequest, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(request.to_args().iter().skip(1))
}

/// One line serve sends back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum ReplyLine {
    Accepted { v: u32, accepted: bool },
    Ok { v: u32, ok: serde_json::Value },
    Error { v: u32, error: ApiError },
}

/// The line that tells ctl a live serve took its request.
pub fn accepted_line() -> String {
    let mut line = serde_json::to_string(&ReplyLine::Accepted {
        v: CONTROL_VERSION,
        accepted: true,
    })
    .unwrap_or_default();
    line.push('\n');
    line
}

/// Whether `line` is serve's acceptance.
pub fn is_accepted_line(line: &str) -> bool {
    matches!(
        serde_json::from_str::<ReplyLine>(line.trim_end()),
        Ok(ReplyLine::Accepted { accepted: true, .. })
    )
}

/// The reply line for a result, newline included.
pub fn reply_line(result: &Result<CtlResponse, ApiError>) -> String {
    let line = match result {
        Ok(response) => response
            .to_json()
            .and_then(|json| serde_json::from_str(&json))
            .map(|ok| ReplyLine::Ok {
                v: CONTROL_VERSION,
                ok,
            })
            .unwrap_or_else(|e| ReplyLine::Error {
                v: CONTROL_VERSION,
                error: ApiError::new(
                    ErrorCode::Internal,
                    format!("could not serialise the answer: {e}"),
                ),
            }),
        Err(error) => ReplyLine::Error {
            v: CONTROL_VERSION,
            error: error.clone(),
        },
    };
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

/// Reads serve's reply to a request of `verb`. A reply that is not the verb's DTO or an
/// error is `internal`.
pub fn decode_reply_line(verb: Verb, line: &str) -> Result<CtlResponse, ApiError> {
    let malformed = |detail: String| {
        ApiError::new(
            ErrorCode::Internal,
            format!("mytunneld serve answered `{verb}` with a malformed reply: {detail}"),
        )
    };
    match serde_json::from_str::<ReplyLine>(line.trim_end()) {
        Ok(ReplyLine::Ok { ok, .. }) => decode_reply(verb, &ok.to_string()).map_err(|e| match e {
            ReplyError::Refused(error) => error,
            ReplyError::Malformed { detail, .. } => malformed(detail),
        }),
        Ok(ReplyLine::Error { error, .. }) => Err(error),
        Ok(ReplyLine::Accepted { .. }) => Err(malformed("a second acceptance".to_owned())),
        Err(e) => Err(malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::{AllocateRequest, DeletedDto, ListScope, Takeover};

    #[test]
    fn requests_round_trip_through_their_words() {
        let requests = [
            CtlRequest::Allocate(AllocateRequest {
                local_port: Some(3000),
                name: Some("portal".parse().unwrap()),
                ttl: Some(Duration::from_secs(90)),
                takeover: Takeover::Force,
                replaces: Some("lease_abcdefghijklmnop".parse().unwrap()),
            }),
            CtlRequest::List(ListScope::All),
            CtlRequest::Release {
                lease: "portal.t.example".parse().unwrap(),
            },
            CtlRequest::Health,
        ];
        for request in requests {
            let line = ControlRequest::new(request.clone()).to_line();
            assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
            assert_eq!(ControlRequest::parse_line(&line).unwrap().ctl, request);
        }
        assert_eq!(
            ControlRequest::new(CtlRequest::List(ListScope::Own)).to_line(),
            "{\"v\":1,\"ctl\":[\"list\"]}\n"
        );
    }

    #[test]
    fn the_allow_list_judges_words_on_the_socket() {
        let code = |line: &str| ControlRequest::parse_line(line).unwrap_err().code;
        assert_eq!(
            code(r#"{"v":1,"ctl":["list","--db-path","/tmp/x"]}"#),
            ErrorCode::OverrideNotAllowed
        );
        assert_eq!(
            code(r#"{"v":1,"ctl":["serve"]}"#),
            ErrorCode::ForbiddenCommand
        );
        assert_eq!(
            code(r#"{"v":1,"ctl":["allocate","--name","-bad-"]}"#),
            ErrorCode::InvalidSlug
        );
        assert_eq!(code("not json"), ErrorCode::InvalidArgument);
        assert_eq!(code(r#"{"v":1}"#), ErrorCode::InvalidArgument);
        assert_eq!(
            code(r#"{"v":1,"ctl":["list"],"owner":"bob"}"#),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(r#"{"v":2,"ctl":["list"]}"#),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(r#"{"v":1,"ctl":["list",7]}"#),
            ErrorCode::InvalidArgument
        );
        // --owner is accepted, and dropped: it is not part of the typed request.
        let request =
            ControlRequest::parse_line(r#"{"v":1,"ctl":["allocate","--owner","bob"]}"#).unwrap();
        assert_eq!(
            request.ctl,
            CtlRequest::Allocate(AllocateRequest::default())
        );
    }

    #[test]
    fn replies_decode_by_verb() {
        assert!(is_accepted_line(&accepted_line()));
        assert!(!is_accepted_line(r#"{"v":1,"ok":[]}"#));
        let deleted = CtlResponse::Deleted(DeletedDto {
            deleted: "lease_abcdefghijklmnop".parse().unwrap(),
        });
        let line = reply_line(&Ok(deleted.clone()));
        assert_eq!(decode_reply_line(Verb::Delete, &line).unwrap(), deleted);
        assert_eq!(
            decode_reply_line(Verb::List, &line).unwrap_err().code,
            ErrorCode::Internal
        );
        let refused = ApiError::new(ErrorCode::SlugTaken, "portal is taken");
        let line = reply_line(&Err(refused.clone()));
        assert_eq!(
            decode_reply_line(Verb::Allocate, &line).unwrap_err(),
            refused
        );
        assert_eq!(
            decode_reply_line(Verb::List, "garbage").unwrap_err().code,
            ErrorCode::Internal
        );
    }
}

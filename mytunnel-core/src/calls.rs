//! Typed ctl calls: each verb is a type that names its reply.
//!
//! A [`CtlRequest`] can be answered by any [`CtlResponse`]; a caller that sent `allocate`
//! wants a [`LeaseDto`] and nothing else. [`CtlCall`] ties the two together, so one
//! generic function ([`call`](crate::transport::call) over a transport, or the edge's own
//! `LeaseService::call`) decodes every reply, and a reply of the wrong kind is one error in
//! one place.

use crate::protocol::{
    AllocateRequest, CtlRequest, CtlResponse, DeletedDto, HealthDto, LeaseDto, ListScope,
    ReconcileDto, StatsDto, Verb,
};
use crate::{LeaseId, LeaseRef};

/// A ctl request whose answer has one type.
pub trait CtlCall {
    /// What a successful answer holds.
    type Reply;
    /// The verb (for messages).
    const VERB: Verb;
    /// The request as sent.
    fn into_request(self) -> CtlRequest;
    /// The answer's value; when it is not of this call's kind, what was answered instead
    /// (see [`unexpected_reply`]).
    fn take_reply(response: CtlResponse) -> Result<Self::Reply, String>;
}

/// `allocate`: a new lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocate(pub AllocateRequest);

/// `heartbeat --lease ID`: the lease, extended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat(pub LeaseId);

/// `release --lease ID|HOST|SLUG`: the lease, tombstoned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release(pub LeaseRef);

/// `delete --lease ID|HOST|SLUG`: what was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete(pub LeaseRef);

/// `list [--all]`: the leases in scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List(pub ListScope);

/// `health`: the edge's components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health;

/// `reconcile`: what one pass changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconcile;

/// `stats`: counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats;

/// One [`CtlCall`] impl: the call type, its reply type and verb, how its request is built
/// from `self`, and the response variant that carries its reply.
macro_rules! ctl_call {
    ($call:ty, $reply:ty, $verb:ident, |$this:ident| $request:expr, $variant:ident) => {
        impl CtlCall for $call {
            type Reply = $reply;
            const VERB: Verb = Verb::$verb;
            fn into_request(self) -> CtlRequest {
                let $this = self;
                $request
            }
            fn take_reply(response: CtlResponse) -> Result<$reply, String> {
                match response {
                    CtlResponse::$variant(reply) => Ok(reply),
                    other => Err(unexpected_reply(Self::VERB, &other)),
                }
            }
        }
    };
}

ctl_call!(
    Allocate,
    LeaseDto,
    Allocate,
    |c| CtlRequest::Allocate(c.0),
    Lease
);
ctl_call!(
    Heartbeat,
    LeaseDto,
    Heartbeat,
    |c| CtlRequest::Heartbeat { lease: c.0 },
    Lease
);
ctl_call!(
    Release,
    LeaseDto,
    Release,
    |c| CtlRequest::Release { lease: c.0 },
    Lease
);
ctl_call!(
    Delete,
    DeletedDto,
    Delete,
    |c| CtlRequest::Delete { lease: c.0 },
    Deleted
);
ctl_call!(List, Vec<LeaseDto>, List, |c| CtlRequest::List(c.0), Leases);
ctl_call!(Health, HealthDto, Health, |_c| CtlRequest::Health, Health);
ctl_call!(
    Reconcile,
    ReconcileDto,
    Reconcile,
    |_c| CtlRequest::Reconcile,
    Reconciled
);
ctl_call!(Stats, StatsDto, Stats, |_c| CtlRequest::Stats, Stats);

/// Says that `verb` was answered with something of another kind.
pub fn unexpected_reply(verb: Verb, response: &CtlResponse) -> String {
    format!("{verb} answered {response:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DeletedDto;

    #[test]
    fn each_call_is_its_verb_and_takes_only_its_reply() {
        let lease: LeaseRef = "portal".parse().unwrap();
        assert_eq!(Release(lease.clone()).into_request().verb(), Release::VERB);
        assert_eq!(Delete(lease).into_request().verb(), Verb::Delete);
        assert_eq!(Health.into_request(), CtlRequest::Health);
        assert_eq!(List(ListScope::Own).into_request().verb(), Verb::List);
        let deleted = CtlResponse::Deleted(DeletedDto {
            deleted: "lease_abcdefghij234567".parse().unwrap(),
        });
        assert!(Delete::take_reply(deleted.clone()).is_ok());
        let refused = List::take_reply(deleted).unwrap_err();
        assert!(refused.starts_with("list answered Deleted"), "{refused}");
    }
}

//! Model-based test of the SQLite lease store.
//!
//! Random sequences of operations by three owners run against an in-memory
//! `SqlLeaseStore` and, in lockstep, against a small pure model written here
//! (a `BTreeMap` of leases). After every step the operation's result, the full lease
//! list, every owner's list, the stats and the store's invariants must agree with the
//! model. The port range, the owner limit and the name pool are small so that
//! `no_free_port`, `owner_limit` and `slug_taken` are hit often; a coverage check at the
//! end makes sure they were.
// test code: a panic is a failed assertion
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mytunnel_core::policy::OwnerScope;
use mytunnel_core::protocol::{LeaseDto, StateCounts, Takeover};
use mytunnel_core::store::{
    AllocateSpec, Allocation, LeaseStore, NameChoice, OwnerLimit, StoreError, StoreStats,
};
use mytunnel_core::{
    BaseDomain, Host, Lease, LeaseId, LeaseRef, LeaseState, Owner, PortRange, Slug, Timestamp, Ttl,
};
use mytunnel_edge::{SqlLeaseStore, StoreOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const OWNERS: [&str; 3] = ["alice", "bob", "carol"];
/// More names than ports, so that the port range can fill up.
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const MIN_PORT: u16 = 21000;
const MAX_PORT: u16 = 21003;
const LIMIT: u64 = 3;
const TTLS: [u64; 3] = [30, 60, 120];
const DOMAIN: &str = "tunnel.example.com";
const START: i64 = 1_800_000_000;

fn owner(i: usize) -> Owner {
    OWNERS[i % OWNERS.len()].parse().unwrap()
}

fn name(i: usize) -> Slug {
    NAMES[i % NAMES.len()].parse().unwrap()
}

fn domain() -> BaseDomain {
    DOMAIN.parse().unwrap()
}

fn ports() -> PortRange {
    PortRange::new(MIN_PORT, MAX_PORT).unwrap()
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_unix_seconds(secs).unwrap()
}

/// Lease id number `n`: distinct for distinct `n`, never random.
fn lease_id(n: u64) -> LeaseId {
    let mut bytes = [0u8; 10];
    bytes[2..].copy_from_slice(&n.to_be_bytes());
    LeaseId::from_random_bytes(bytes)
}

// --- operations ------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum NameOp {
    Exact(usize),
    FirstFreeOf(Vec<usize>),
}

/// Which lease id an operation names.
#[derive(Debug, Clone, Copy)]
enum IdPick {
    /// Index into every id handed out so far, including ids whose allocation failed,
    /// deleted and purged ones, and one that was never handed out.
    Known(usize),
    /// Index into the leases the store holds now (any owner, any state).
    Held(usize),
    /// Index into the leases the acting owner holds now (any state).
    Own(usize),
}

/// Which lease an allocation says it replaces (`--replaces`).
#[derive(Debug, Clone, Copy)]
enum ReplacesPick {
    /// The active holder of the name asked for, whoever owns it (a known id if none).
    Holder,
    /// Any id.
    Id(IdPick),
}

#[derive(Debug, Clone)]
enum RefPick {
    Id(IdPick),
    /// The host of a pool name.
    Host(usize),
    /// A pool name.
    Slug(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        owner: usize,
        name: NameOp,
        force: bool,
        replaces: Option<ReplacesPick>,
        ttl: usize,
    },
    Heartbeat {
        owner: usize,
        id: IdPick,
    },
    Release {
        owner: usize,
        target: RefPick,
    },
    Delete {
        owner: usize,
        target: RefPick,
    },
    Get {
        owner: usize,
        target: RefPick,
    },
    /// Moves the clock, then (if `expire`) runs `expire_stale(now)`.
    Advance {
        seconds: u64,
        expire: bool,
    },
    /// `purge_tombstones(now - age)`.
    Purge {
        age: u64,
    },
}

fn id_pick() -> impl Strategy<Value = IdPick> {
    prop_oneof![
        any::<usize>().prop_map(IdPick::Known),
        any::<usize>().prop_map(IdPick::Held),
        any::<usize>().prop_map(IdPick::Own),
    ]
}

fn ref_pick() -> impl Strategy<Value = RefPick> {
    prop_oneof![
        3 => id_pick().prop_map(RefPick::Id),
        1 => (0..NAMES.len()).prop_map(RefPick::Host),
        2 => (0..NAMES.len()).prop_map(RefPick::Slug),
    ]
}

fn replaces_pick() -> impl Strategy<Value = Option<ReplacesPick>> {
    prop_oneof![
        3 => Just(None),
        2 => Just(Some(ReplacesPick::Holder)),
        1 => id_pick().prop_map(|id| Some(ReplacesPick::Id(id))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let owner = 0..OWNERS.len();
    let exact = (
        owner.clone(),
        0..NAMES.len(),
        any::<bool>(),
        replaces_pick(),
        0..TTLS.len(),
    )
        .prop_map(|(owner, n, force, replaces, ttl)| Op::Allocate {
            owner,
            name: NameOp::Exact(n),
            force,
            replaces,
            ttl,
        });
    let first_free = (
        owner.clone(),
        proptest::collection::vec(0..NAMES.len(), 2..=3),
        0..TTLS.len(),
    )
        .prop_map(|(owner, names, ttl)| Op::Allocate {
            owner,
            name: NameOp::FirstFreeOf(names),
            force: false,
            replaces: None,
            ttl,
        });
    prop_oneof![
        4 => exact,
        3 => first_free,
        2 => (owner.clone(), id_pick()).prop_map(|(owner, id)| Op::Heartbeat { owner, id }),
        2 => (owner.clone(), ref_pick()).prop_map(|(owner, target)| Op::Release { owner, target }),
        2 => (owner.clone(), ref_pick()).prop_map(|(owner, target)| Op::Delete { owner, target }),
        1 => (owner, ref_pick()).prop_map(|(owner, target)| Op::Get { owner, target }),
        2 => (0u64..=90, any::<bool>()).prop_map(|(seconds, expire)| Op::Advance { seconds, expire }),
        1 => (0u64..=150).prop_map(|age| Op::Purge { age }),
    ]
}

// --- the model -------------------------------------------------------------------------

/// What the store should hold, computed without SQL.
#[derive(Debug, Default)]
struct Model {
    leases: BTreeMap<LeaseId, Lease>,
}

impl Model {
    fn active(&self) -> impl Iterator<Item = &Lease> {
        self.leases
            .values()
            .filter(|l| l.state == LeaseState::Active)
    }

    fn active_holder(&self, slug: &Slug) -> Option<&Lease> {
        self.active().find(|l| &l.slug == slug)
    }

    fn allocate(&mut self, spec: &AllocateSpec) -> Result<Allocation, StoreError> {
        // 1. The name.
        let (slug, displaced) = match &spec.name {
            NameChoice::Exact(slug) => match self.active_holder(slug) {
                None => (slug.clone(), None),
                Some(holder) if spec.takeover == Takeover::Force => {
                    (slug.clone(), Some(holder.clone()))
                }
                // The owner's own lease that this one replaces; anyone else's is kept.
                Some(holder)
                    if spec.replaces.as_ref() == Some(&holder.id) && holder.owner == spec.owner =>
                {
                    (slug.clone(), Some(holder.clone()))
                }
                Some(_) => return Err(StoreError::SlugTaken(slug.clone())),
            },
            NameChoice::FirstFreeOf(candidates) => {
                match candidates.iter().find(|c| self.active_holder(c).is_none()) {
                    Some(slug) => (slug.clone(), None),
                    None => return Err(StoreError::SlugTaken(candidates[0].clone())),
                }
            }
        };
        // 2. The owner's limit; a lease the owner displaces from themself does not count.
        let mut active = self.active().filter(|l| l.owner == spec.owner).count() as u64;
        if displaced.as_ref().is_some_and(|d| d.owner == spec.owner) {
            active -= 1;
        }
        let limited = match spec.owner_limit {
            OwnerLimit::Unlimited => false,
            OwnerLimit::AtMost(n) => active >= u64::from(n),
        };
        if limited {
            return Err(StoreError::OwnerLimit {
                owner: spec.owner.clone(),
                active,
            });
        }
        // 3. The lowest port no active lease holds; a displaced lease's port only when
        //    no other is free (its owner's ssh may still hold it).
        let used: BTreeSet<u16> = self.active().map(|l| l.edge_bind_port).collect();
        let Some(port) = (spec.ports.min()..=spec.ports.max())
            .find(|p| !used.contains(p))
            .or_else(|| displaced.as_ref().map(|d| d.edge_bind_port))
        else {
            return Err(StoreError::NoFreePort(spec.ports));
        };
        // 4. Write.
        if let Some(old) = &displaced {
            self.leases.remove(&old.id);
        }
        let lease = Lease {
            bind_socket: None,
            id: spec.id.clone(),
            host: format!("{slug}.{DOMAIN}").parse().unwrap(),
            slug,
            owner: spec.owner.clone(),
            edge_bind_port: port,
            ttl: spec.ttl,
            created_at: spec.now,
            updated_at: spec.now,
            expires_at: ts(spec.now.unix_seconds() + spec.ttl.get().as_secs() as i64),
            state: LeaseState::Active,
        };
        self.leases.insert(lease.id.clone(), lease.clone());
        Ok(Allocation { lease, displaced })
    }

    /// The lease `target` names among `owner`'s: an id any lease, a host or slug only an
    /// active one.
    fn find(&self, owner: &Owner, target: &LeaseRef) -> Result<&Lease, StoreError> {
        let found = match target {
            LeaseRef::Id(id) => self.leases.get(id).filter(|l| &l.owner == owner),
            LeaseRef::Host(host) => self.active().find(|l| &l.owner == owner && &l.host == host),
            LeaseRef::Slug(slug) => self.active().find(|l| &l.owner == owner && &l.slug == slug),
        };
        found.ok_or_else(|| StoreError::NotFound(target.to_string()))
    }

    fn heartbeat(
        &mut self,
        owner: &Owner,
        id: &LeaseId,
        now: Timestamp,
    ) -> Result<Lease, StoreError> {
        let found = self.find(owner, &LeaseRef::Id(id.clone()))?.clone();
        if found.state != LeaseState::Active {
            return Err(StoreError::NotActive(found.id));
        }
        let renewed = Lease {
            updated_at: now,
            expires_at: ts(now.unix_seconds() + found.ttl.get().as_secs() as i64),
            ..found
        };
        self.leases.insert(renewed.id.clone(), renewed.clone());
        Ok(renewed)
    }

    fn release(
        &mut self,
        owner: &Owner,
        target: &LeaseRef,
        now: Timestamp,
    ) -> Result<Lease, StoreError> {
        let found = self.find(owner, target)?.clone();
        if found.state != LeaseState::Active {
            return Err(StoreError::NotActive(found.id));
        }
        let released = Lease {
            state: LeaseState::Released,
            updated_at: now,
            ..found
        };
        self.leases.insert(released.id.clone(), released.clone());
        Ok(released)
    }

    fn delete(&mut self, owner: &Owner, target: &LeaseRef) -> Result<Lease, StoreError> {
        let id = self.find(owner, target)?.id.clone();
        Ok(self.leases.remove(&id).unwrap())
    }

    fn expire_stale(&mut self, now: Timestamp) -> Vec<Lease> {
        let mut expired = Vec::new();
        for lease in self.leases.values_mut() {
            if lease.state == LeaseState::Active && lease.expires_at <= now {
                lease.state = LeaseState::Expired;
                lease.updated_at = now;
                expired.push(lease.clone());
            }
        }
        expired
    }

    fn purge(&mut self, cutoff: Timestamp) -> u64 {
        let before = self.leases.len();
        self.leases
            .retain(|_, l| l.state == LeaseState::Active || l.updated_at >= cutoff);
        (before - self.leases.len()) as u64
    }

    /// Every lease: active first, then newest first, then by id.
    fn list(&self, owner: Option<&Owner>) -> Vec<Lease> {
        let mut all: Vec<Lease> = self
            .leases
            .values()
            .filter(|l| owner.is_none_or(|o| &l.owner == o))
            .cloned()
            .collect();
        all.sort_by_key(|l| {
            (
                l.state != LeaseState::Active,
                Reverse(l.created_at),
                l.id.clone(),
            )
        });
        all
    }

    fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            by_state: StateCounts::default(),
            active_per_owner: BTreeMap::new(),
            active_ports: 0,
        };
        for lease in self.leases.values() {
            match lease.state {
                LeaseState::Active => {
                    stats.by_state.active += 1;
                    // The model only allocates ports (no sockets).
                    stats.active_ports += 1;
                    *stats
                        .active_per_owner
                        .entry(lease.owner.clone())
                        .or_default() += 1;
                }
                LeaseState::Released => stats.by_state.released += 1,
                LeaseState::Expired => stats.by_state.expired += 1,
            }
        }
        stats
    }
}

// --- coverage: which outcomes the generated sequences reached ---------------------------

#[derive(Debug, Default)]
struct Coverage {
    ok_allocate: AtomicU64,
    displaced_other_owner: AtomicU64,
    displaced_same_owner: AtomicU64,
    replaced_own: AtomicU64,
    replaces_refused: AtomicU64,
    slug_taken: AtomicU64,
    owner_limit: AtomicU64,
    no_free_port: AtomicU64,
    not_found: AtomicU64,
    not_active: AtomicU64,
    ok_heartbeat: AtomicU64,
    ok_release: AtomicU64,
    ok_delete_tombstone: AtomicU64,
    expired: AtomicU64,
    purged: AtomicU64,
    reused_after_release: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

fn count_error<T>(coverage: &Coverage, result: &Result<T, StoreError>) {
    match result {
        Err(StoreError::SlugTaken(_)) => bump(&coverage.slug_taken, 1),
        Err(StoreError::OwnerLimit { .. }) => bump(&coverage.owner_limit, 1),
        Err(StoreError::NoFreePort(_)) => bump(&coverage.no_free_port, 1),
        Err(StoreError::NotFound(_)) => bump(&coverage.not_found, 1),
        Err(StoreError::NotActive(_)) => bump(&coverage.not_active, 1),
        Err(StoreError::Db(_)) | Ok(_) => {}
    }
}

// --- running one sequence ---------------------------------------------------------------

/// The state of one run besides the model: the clock and every id handed out so far.
struct Run<'c> {
    coverage: &'c Coverage,
    store: SqlLeaseStore,
    model: Model,
    now: i64,
    next_id: u64,
    /// Ids to pick from; index 0 never names a lease.
    known_ids: Vec<LeaseId>,
}

impl Run<'_> {
    fn now(&self) -> Timestamp {
        ts(self.now)
    }

    fn pick_id(&self, pick: IdPick, acting: &Owner) -> LeaseId {
        let held: Vec<&LeaseId> = match pick {
            IdPick::Known(_) => vec![],
            IdPick::Held(_) => self.model.leases.keys().collect(),
            IdPick::Own(_) => self
                .model
                .leases
                .values()
                .filter(|l| &l.owner == acting)
                .map(|l| &l.id)
                .collect(),
        };
        match pick {
            IdPick::Held(i) | IdPick::Own(i) if !held.is_empty() => held[i % held.len()].clone(),
            IdPick::Known(i) | IdPick::Held(i) | IdPick::Own(i) => {
                self.known_ids[i % self.known_ids.len()].clone()
            }
        }
    }

    fn lease_ref(&self, pick: &RefPick, acting: &Owner) -> LeaseRef {
        match pick {
            RefPick::Id(pick) => LeaseRef::Id(self.pick_id(*pick, acting)),
            RefPick::Host(i) => LeaseRef::Host(domain().host_for(&name(*i))),
            RefPick::Slug(i) => LeaseRef::Slug(name(*i)),
        }
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Allocate {
                owner: o,
                name: n,
                force,
                replaces,
                ttl,
            } => {
                let name = match n {
                    NameOp::Exact(i) => NameChoice::Exact(name(*i)),
                    NameOp::FirstFreeOf(is) => {
                        NameChoice::FirstFreeOf(is.iter().map(|i| name(*i)).collect())
                    }
                };
                let replaces = replaces.map(|pick| match (pick, &name) {
                    (ReplacesPick::Holder, NameChoice::Exact(slug)) => {
                        match self.model.active_holder(slug) {
                            Some(holder) => holder.id.clone(),
                            None => self.pick_id(IdPick::Known(0), &owner(*o)),
                        }
                    }
                    (ReplacesPick::Holder, NameChoice::FirstFreeOf(_)) => {
                        self.pick_id(IdPick::Known(0), &owner(*o))
                    }
                    (ReplacesPick::Id(id), _) => self.pick_id(id, &owner(*o)),
                });
                self.next_id += 1;
                let id = lease_id(self.next_id);
                self.known_ids.push(id.clone());
                let spec = AllocateSpec {
                    held_ports: Vec::new(),
                    bind_socket: None,
                    id,
                    owner: owner(*o),
                    name,
                    takeover: if *force {
                        Takeover::Force
                    } else {
                        Takeover::Refuse
                    },
                    replaces,
                    ttl: Ttl::configured(Duration::from_secs(TTLS[*ttl])),
                    base_domain: domain(),
                    ports: ports(),
                    owner_limit: OwnerLimit::AtMost(LIMIT as u32),
                    now: self.now(),
                };
                let reusing_released = match &spec.name {
                    NameChoice::Exact(s) => self
                        .model
                        .leases
                        .values()
                        .any(|l| &l.slug == s && l.state == LeaseState::Released),
                    NameChoice::FirstFreeOf(_) => false,
                };
                let expected = self.model.allocate(&spec);
                let got = self.store.allocate(spec.clone()).await;
                prop_assert_eq!(&got, &expected, "allocate {:?}", spec);
                count_error(self.coverage, &got);
                if let (Some(replaces), NameChoice::Exact(slug)) = (&spec.replaces, &spec.name) {
                    match &got {
                        Ok(a)
                            if spec.takeover == Takeover::Refuse
                                && a.displaced.as_ref().is_some_and(|d| &d.id == replaces) =>
                        {
                            bump(&self.coverage.replaced_own, 1);
                        }
                        // Named the holder, but the holder is not the caller's: kept.
                        Err(StoreError::SlugTaken(taken)) if taken == slug => {
                            bump(&self.coverage.replaces_refused, 1);
                        }
                        _ => {}
                    }
                }
                if let Ok(a) = &got {
                    bump(&self.coverage.ok_allocate, 1);
                    if reusing_released {
                        bump(&self.coverage.reused_after_release, 1);
                    }
                    prop_assert!(ports().contains(a.lease.edge_bind_port));
                    match &a.displaced {
                        Some(d) if d.owner == a.lease.owner => {
                            bump(&self.coverage.displaced_same_owner, 1)
                        }
                        Some(_) => bump(&self.coverage.displaced_other_owner, 1),
                        None => {}
                    }
                    if let Some(d) = &a.displaced {
                        // The displaced row is gone for its owner too.
                        let gone = self.store.get(&d.owner, &LeaseRef::Id(d.id.clone())).await;
                        prop_assert_eq!(gone, Err(StoreError::NotFound(d.id.to_string())));
                    }
                }
            }
            Op::Heartbeat { owner: o, id } => {
                let id = self.pick_id(*id, &owner(*o));
                let now = self.now();
                let expected = self.model.heartbeat(&owner(*o), &id, now);
                let got = self.store.heartbeat(&owner(*o), &id, now).await;
                prop_assert_eq!(&got, &expected, "heartbeat {} by {}", id, owner(*o));
                count_error(self.coverage, &got);
                if got.is_ok() {
                    bump(&self.coverage.ok_heartbeat, 1);
                }
            }
            Op::Release { owner: o, target } => {
                let target = self.lease_ref(target, &owner(*o));
                let now = self.now();
                let expected = self.model.release(&owner(*o), &target, now);
                let got = self.store.release(&owner(*o), &target, now).await;
                prop_assert_eq!(&got, &expected, "release {} by {}", target, owner(*o));
                count_error(self.coverage, &got);
                if let Ok(lease) = &got {
                    bump(&self.coverage.ok_release, 1);
                    check_tombstone_dto(lease, "released")?;
                }
            }
            Op::Delete { owner: o, target } => {
                let target = self.lease_ref(target, &owner(*o));
                let expected = self.model.delete(&owner(*o), &target);
                let got = self.store.delete(&owner(*o), &target).await;
                prop_assert_eq!(&got, &expected, "delete {} by {}", target, owner(*o));
                count_error(self.coverage, &got);
                if got.as_ref().is_ok_and(|l| l.state != LeaseState::Active) {
                    bump(&self.coverage.ok_delete_tombstone, 1);
                }
            }
            Op::Get { owner: o, target } => {
                let target = self.lease_ref(target, &owner(*o));
                let expected = self.model.find(&owner(*o), &target).cloned();
                let got = self.store.get(&owner(*o), &target).await;
                prop_assert_eq!(&got, &expected, "get {} by {}", target, owner(*o));
                count_error(self.coverage, &got);
            }
            Op::Advance { seconds, expire } => {
                self.now += *seconds as i64;
                if *expire {
                    let now = self.now();
                    let mut expected = self.model.expire_stale(now);
                    let mut got = self.store.expire_stale(now).await.unwrap();
                    expected.sort_by(|a, b| a.id.cmp(&b.id));
                    got.sort_by(|a, b| a.id.cmp(&b.id));
                    prop_assert_eq!(&got, &expected, "expire_stale({})", now);
                    bump(&self.coverage.expired, got.len() as u64);
                    for lease in &got {
                        check_tombstone_dto(lease, "expired")?;
                    }
                }
            }
            Op::Purge { age } => {
                let cutoff = ts(self.now - *age as i64);
                let expected = self.model.purge(cutoff);
                let got = self.store.purge_tombstones(cutoff).await.unwrap();
                prop_assert_eq!(got, expected, "purge_tombstones({})", cutoff);
                bump(&self.coverage.purged, got);
            }
        }
        self.check_state().await
    }

    /// Compares everything the store shows with the model and checks the invariants.
    async fn check_state(&self) -> Result<(), TestCaseError> {
        let all = self.store.list(&OwnerScope::All).await.unwrap();
        prop_assert_eq!(&all, &self.model.list(None), "list --all");

        for lease in &all {
            let dto = LeaseDto::from(lease);
            match lease.state.tombstone_prefix() {
                None => {
                    prop_assert_eq!(&dto.slug, lease.slug.as_str());
                    prop_assert_eq!(&dto.host, &format!("{}.{DOMAIN}", lease.slug));
                }
                Some(prefix) => {
                    prop_assert_eq!(&dto.slug, &format!("{prefix}-{}", lease.id));
                    prop_assert_eq!(&dto.host, &format!("{prefix}-{}.invalid", lease.id));
                }
            }
        }

        let active: Vec<&Lease> = all
            .iter()
            .filter(|l| l.state == LeaseState::Active)
            .collect();
        let slugs: BTreeSet<&Slug> = active.iter().map(|l| &l.slug).collect();
        let hosts: BTreeSet<String> = active.iter().map(|l| l.host.to_string()).collect();
        let used: BTreeSet<u16> = active.iter().map(|l| l.edge_bind_port).collect();
        prop_assert_eq!(slugs.len(), active.len(), "two active leases share a slug");
        prop_assert_eq!(hosts.len(), active.len(), "two active leases share a host");
        prop_assert_eq!(used.len(), active.len(), "two active leases share a port");
        prop_assert!(
            used.iter().all(|p| ports().contains(*p)),
            "port out of range"
        );
        // Every DTO slug and host is unique too: tombstones never collide.
        let public: BTreeSet<String> = all.iter().map(|l| LeaseDto::from(l).host).collect();
        prop_assert_eq!(public.len(), all.len(), "two leases share a public host");

        for (i, name) in OWNERS.iter().enumerate() {
            let o = owner(i);
            let mine = self
                .store
                .list(&OwnerScope::Owner(o.clone()))
                .await
                .unwrap();
            prop_assert_eq!(&mine, &self.model.list(Some(&o)), "list of {}", name);
            prop_assert!(mine.iter().all(|l| l.owner == o));
            let first_tombstone = mine
                .iter()
                .position(|l| l.state != LeaseState::Active)
                .unwrap_or(mine.len());
            prop_assert!(
                mine[first_tombstone..]
                    .iter()
                    .all(|l| l.state != LeaseState::Active),
                "list of {} does not put active leases first",
                name
            );
            prop_assert!(
                first_tombstone as u64 <= LIMIT,
                "{} is over the limit",
                name
            );
        }

        // The on-demand TLS ask: only an active lease's host whose TTL has not run out
        // (an `Advance` without `expire` leaves run-out leases active), and never a
        // tombstone's public host.
        let now = self.now();
        for i in 0..NAMES.len() {
            let host = domain().host_for(&name(i));
            let expected = self
                .model
                .active()
                .find(|l| l.host == host && l.expires_at > now)
                .cloned();
            let got = self.store.active_for_host(&host, now).await.unwrap();
            prop_assert_eq!(&got, &expected, "active_for_host({})", host);
        }
        for lease in all.iter().filter(|l| l.state != LeaseState::Active) {
            // A tombstone's host (`released-lease_….invalid`) is no DNS name: the ask
            // refuses it before any lookup. Its original host is looked up above.
            if let Ok(public) = LeaseDto::from(lease).host.parse::<Host>() {
                let got = self.store.active_for_host(&public, now).await.unwrap();
                prop_assert_eq!(got, None, "active_for_host({}) of a tombstone", public);
            }
        }

        let stats = self.store.stats().await.unwrap();
        prop_assert_eq!(&stats, &self.model.stats(), "stats");
        Ok(())
    }
}

fn check_tombstone_dto(lease: &Lease, prefix: &str) -> Result<(), TestCaseError> {
    let dto = LeaseDto::from(lease);
    prop_assert_eq!(&dto.slug, &format!("{prefix}-{}", lease.id));
    prop_assert_eq!(&dto.host, &format!("{prefix}-{}.invalid", lease.id));
    prop_assert_eq!(dto.state.as_str(), prefix);
    // The name asked for is kept for audit.
    prop_assert!(NAMES.contains(&lease.slug.as_str()));
    Ok(())
}

/// The database a run's sequences use.
enum Target {
    /// A new in-memory SQLite store per sequence.
    Memory,
    /// One PostgreSQL store, emptied (`TRUNCATE`) before each sequence.
    Postgres {
        store: SqlLeaseStore,
        admin: sqlx::PgPool,
    },
}

impl Target {
    async fn fresh_store(&self) -> SqlLeaseStore {
        match self {
            Target::Memory => SqlLeaseStore::open_in_memory().await.unwrap(),
            Target::Postgres { store, admin } => {
                sqlx::query("TRUNCATE leases").execute(admin).await.unwrap();
                store.clone()
            }
        }
    }
}

async fn run_sequence(
    target: &Target,
    coverage: &Coverage,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let store = target.fresh_store().await;
    let mut run = Run {
        coverage,
        store,
        model: Model::default(),
        now: START,
        next_id: 0,
        known_ids: vec![lease_id(u64::MAX)],
    };
    run.check_state().await?;
    for (i, op) in ops.iter().enumerate() {
        run.step(op)
            .await
            .map_err(|e| TestCaseError::fail(format!("step {i} {op:?}: {e}")))?;
    }
    if matches!(target, Target::Memory) {
        run.store.close().await;
    }
    Ok(())
}

/// Runs `cases` random sequences of 1 to 59 operations and checks that they reached
/// every outcome. Two halves run as two tests so that they use both cores.
fn run_model_cases(cases: u32, postgres_url: Option<&str>) {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = match postgres_url {
        None => Target::Memory,
        Some(url) => rt.block_on(async {
            Target::Postgres {
                store: SqlLeaseStore::open_postgres(
                    &url.parse().unwrap(),
                    &StoreOptions::default(),
                )
                .await
                .unwrap(),
                admin: sqlx::PgPool::connect(url).await.unwrap(),
            }
        }),
    };
    let coverage = Coverage::default();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..60), |ops| {
        rt.block_on(run_sequence(&target, &coverage, &ops))
    });
    if let Err(e) = result {
        panic!("{e}");
    }

    let c = &coverage;
    let report = format!("{c:?}");
    for (what, counter) in [
        ("successful allocations", &c.ok_allocate),
        (
            "takeovers of another owner's lease",
            &c.displaced_other_owner,
        ),
        ("takeovers of one's own lease", &c.displaced_same_owner),
        ("own leases replaced (--replaces)", &c.replaced_own),
        ("--replaces refused for a name held", &c.replaces_refused),
        ("slug_taken", &c.slug_taken),
        ("owner_limit", &c.owner_limit),
        ("no_free_port", &c.no_free_port),
        ("lease_not_found", &c.not_found),
        ("lease_not_active", &c.not_active),
        ("heartbeats", &c.ok_heartbeat),
        ("releases", &c.ok_release),
        ("deletes of tombstones", &c.ok_delete_tombstone),
        ("expired leases", &c.expired),
        ("purged tombstones", &c.purged),
        ("names reused after release", &c.reused_after_release),
    ] {
        assert!(
            counter.load(Ordering::Relaxed) > 0,
            "no {what} were generated: {report}"
        );
    }
    eprintln!("{cases} cases: {report} in {:?}", started.elapsed());
}

#[test]
fn store_matches_model_first_128_cases() {
    run_model_cases(128, None);
}

#[test]
fn store_matches_model_second_128_cases() {
    run_model_cases(128, None);
}

/// The same cases against the store on a real PostgreSQL (Debian's, started here).
#[test]
fn postgres_store_matches_model_128_cases() {
    let pg = mytunnel_test_support::RealPostgres::start().unwrap();
    eprintln!("postgres ready in {:?}", pg.startup());
    let url = pg.create_database("store_model").unwrap();
    run_model_cases(128, Some(&url));
}

/// The model's own rules, pinned on a hand-written sequence, so that a model bug that
/// mirrors a store bug would still be caught.
#[test]
fn model_follows_the_spec_on_a_fixed_sequence() {
    let mut m = Model::default();
    let spec = |n: u64, o: usize, name: NameChoice, takeover: Takeover| AllocateSpec {
        bind_socket: None,
        held_ports: Vec::new(),
        id: lease_id(n),
        owner: owner(o),
        name,
        takeover,
        replaces: None,
        ttl: Ttl::configured(Duration::from_secs(60)),
        base_domain: domain(),
        ports: ports(),
        owner_limit: OwnerLimit::AtMost(LIMIT as u32),
        now: ts(START),
    };
    let a = m
        .allocate(&spec(1, 0, NameChoice::Exact(name(0)), Takeover::Refuse))
        .unwrap();
    assert_eq!(a.lease.edge_bind_port, MIN_PORT);
    assert_eq!(a.lease.host.as_str(), "a.tunnel.example.com");
    assert_eq!(a.lease.expires_at, ts(START + 60));
    // Taken, first-free skips, force by bob displaces alice and reuses her port.
    assert_eq!(
        m.allocate(&spec(2, 1, NameChoice::Exact(name(0)), Takeover::Refuse)),
        Err(StoreError::SlugTaken(name(0)))
    );
    let b = m
        .allocate(&spec(
            3,
            1,
            NameChoice::FirstFreeOf(vec![name(0), name(1)]),
            Takeover::Refuse,
        ))
        .unwrap();
    assert_eq!(
        (b.lease.slug.as_str(), b.lease.edge_bind_port),
        ("b", MIN_PORT + 1)
    );
    let forced = m
        .allocate(&spec(4, 1, NameChoice::Exact(name(0)), Takeover::Force))
        .unwrap();
    assert_eq!(forced.displaced.unwrap().id, lease_id(1));
    // The displaced port is taken last: its owner's ssh may still hold it.
    assert_eq!(forced.lease.edge_bind_port, MIN_PORT + 2);
    assert_eq!(
        m.allocate(&spec(
            5,
            2,
            NameChoice::FirstFreeOf(vec![name(0), name(1)]),
            Takeover::Refuse
        )),
        Err(StoreError::SlugTaken(name(0)))
    );
    // Alice's lease is gone: not found, even by id.
    assert_eq!(
        m.release(&owner(0), &LeaseRef::Id(lease_id(1)), ts(START)),
        Err(StoreError::NotFound(lease_id(1).to_string()))
    );
    // Bob's lease is not carol's.
    assert_eq!(
        m.heartbeat(&owner(2), &lease_id(3), ts(START)),
        Err(StoreError::NotFound(lease_id(3).to_string()))
    );
    let released = m
        .release(&owner(1), &LeaseRef::Slug(name(1)), ts(START + 5))
        .unwrap();
    assert_eq!(released.state, LeaseState::Released);
    assert_eq!(
        m.release(&owner(1), &LeaseRef::Slug(name(1)), ts(START + 5)),
        Err(StoreError::NotFound("b".into()))
    );
    assert_eq!(
        m.release(&owner(1), &LeaseRef::Id(lease_id(3)), ts(START + 5)),
        Err(StoreError::NotActive(lease_id(3)))
    );
    assert_eq!(m.expire_stale(ts(START + 59)), vec![]);
    assert_eq!(m.expire_stale(ts(START + 60)).len(), 1);
    assert_eq!(m.purge(ts(START + 5)), 0);
    assert_eq!(m.purge(ts(START + 6)), 1);
    assert_eq!(m.list(None).len(), 1);
}

/// The model's `replaces` rule, pinned: only the owner's own holder of the name goes.
#[test]
fn model_replaces_only_the_owners_own_holder() {
    let mut m = Model::default();
    let spec = |n: u64, o: usize, replaces: Option<u64>| AllocateSpec {
        bind_socket: None,
        held_ports: Vec::new(),
        id: lease_id(n),
        owner: owner(o),
        name: NameChoice::Exact(name(0)),
        takeover: Takeover::Refuse,
        replaces: replaces.map(lease_id),
        ttl: Ttl::configured(Duration::from_secs(60)),
        base_domain: domain(),
        ports: ports(),
        owner_limit: OwnerLimit::AtMost(1),
        now: ts(START),
    };
    m.allocate(&spec(1, 0, None)).unwrap();
    // Bob names alice's lease: still taken.
    assert_eq!(
        m.allocate(&spec(2, 1, Some(1))),
        Err(StoreError::SlugTaken(name(0)))
    );
    // Alice names a lease that is not the holder: taken.
    assert_eq!(
        m.allocate(&spec(3, 0, Some(9))),
        Err(StoreError::SlugTaken(name(0)))
    );
    // Alice replaces her own, at her limit of one: the old one does not count.
    let replaced = m.allocate(&spec(4, 0, Some(1))).unwrap();
    assert_eq!(replaced.displaced.unwrap().id, lease_id(1));
    assert_eq!(m.list(None).len(), 1);
}

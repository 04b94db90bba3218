//! Who may do what: the caller's identity and privilege, owner scoping, `--force`,
//! reserved names.

use std::collections::BTreeSet;
use std::str::FromStr;

use crate::names::{InvalidValue, Owner, Slug};
use crate::protocol::{AllocateRequest, ApiError, ErrorCode, ListScope, Takeover, Verb};

/// Parses a comma list of names (blanks around and between commas ignored).
fn parse_comma_list<T: Ord + FromStr<Err = InvalidValue>>(
    s: &str,
) -> Result<BTreeSet<T>, InvalidValue> {
    s.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::parse)
        .collect()
}

/// Whether a caller has admin rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// An ordinary tunnel user: sees and touches only their own leases.
    User,
    /// uid 0 or a name in `MYTUNNEL_ADMIN_USERS`: may `--force`, `list --all`, `reconcile`.
    Admin,
}

/// The names in `MYTUNNEL_ADMIN_USERS` (a comma list; blanks ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminUsers(BTreeSet<Owner>);

impl AdminUsers {
    /// Whether `owner` is listed.
    pub fn contains(&self, owner: &Owner) -> bool {
        self.0.contains(owner)
    }

    /// The listed names.
    pub fn iter(&self) -> impl Iterator<Item = &Owner> {
        self.0.iter()
    }
}

impl FromStr for AdminUsers {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_comma_list(s).map(AdminUsers)
    }
}

/// The process that asked: its owner name (from the uid) and its privilege.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    owner: Owner,
    privilege: Privilege,
    process: Option<u32>,
}

impl Caller {
    /// The caller for a process with real uid `uid` whose password-database name is
    /// `name`. uid 0 and listed admin users are privileged.
    pub fn from_identity(uid: u32, name: Owner, admins: &AdminUsers) -> Caller {
        let privilege = if uid == 0 || admins.contains(&name) {
            Privilege::Admin
        } else {
            Privilege::User
        };
        Caller {
            owner: name,
            privilege,
            process: None,
        }
    }

    /// The same caller, known to be process `pid` (the kernel's word for who is on the
    /// other end of the control socket).
    pub fn with_process(mut self, pid: u32) -> Caller {
        self.process = Some(pid);
        self
    }

    /// The process that asked, when the kernel named it.
    pub fn process(&self) -> Option<u32> {
        self.process
    }

    /// The owner name every lease of this caller carries.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// The caller's privilege.
    pub fn privilege(&self) -> Privilege {
        self.privilege
    }

    fn is_admin(&self) -> bool {
        self.privilege == Privilege::Admin
    }

    /// Refuses `--force` from a caller that is not privileged (`force_not_allowed`).
    pub fn authorize_allocate(&self, request: &AllocateRequest) -> Result<(), ApiError> {
        if request.takeover == Takeover::Force && !self.is_admin() {
            return Err(ApiError::new(
                ErrorCode::ForceNotAllowed,
                format!("{} may not use --force", self.owner),
            ));
        }
        Ok(())
    }

    /// The leases `list` shows this caller. `--all` is for admins only.
    pub fn list_scope(&self, requested: ListScope) -> Result<OwnerScope, ApiError> {
        match requested {
            ListScope::Own => Ok(OwnerScope::Owner(self.owner.clone())),
            ListScope::All if self.is_admin() => Ok(OwnerScope::All),
            ListScope::All => Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "list --all is for admins; {} sees only their own leases",
                    self.owner
                ),
            )),
        }
    }

    /// Refuses verbs reserved for admins (`reconcile`) with `forbidden_command`.
    pub fn authorize_verb(&self, verb: Verb) -> Result<(), ApiError> {
        if verb == Verb::Reconcile && !self.is_admin() {
            return Err(ApiError::new(
                ErrorCode::ForbiddenCommand,
                format!("`reconcile` is for admins; {} is not one", self.owner),
            ));
        }
        Ok(())
    }

    /// Whether `stats` may show per-owner counts.
    pub fn sees_per_owner_stats(&self) -> bool {
        self.is_admin()
    }
}

/// Whose leases a query covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerScope {
    /// One owner's.
    Owner(Owner),
    /// Everyone's.
    All,
}

/// Names no lease may take, besides the tombstone prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedSlugs(BTreeSet<Slug>);

impl ReservedSlugs {
    /// Names reserved unless configured otherwise.
    pub const DEFAULT_NAMES: [&'static str; 12] = [
        "www", "api", "admin", "mail", "smtp", "imap", "ftp", "ns1", "ns2", "caddy", "ssh",
        "mytunnel",
    ];

    /// A list of reserved names.
    pub fn new(names: impl IntoIterator<Item = Slug>) -> Self {
        ReservedSlugs(names.into_iter().collect())
    }

    /// Refuses a reserved name with `invalid_slug`.
    pub fn check(&self, slug: &Slug) -> Result<(), ApiError> {
        if self.0.contains(slug) {
            return Err(ApiError::new(
                ErrorCode::InvalidSlug,
                format!("{slug:?} is a reserved name"),
            ));
        }
        Ok(())
    }

    /// Whether `slug` is reserved.
    pub fn contains(&self, slug: &Slug) -> bool {
        self.0.contains(slug)
    }
}

impl Default for ReservedSlugs {
    fn default() -> Self {
        ReservedSlugs(
            Self::DEFAULT_NAMES
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
        )
    }
}

impl FromStr for ReservedSlugs {
    type Err = InvalidValue;

    /// A comma list of names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_comma_list(s).map(ReservedSlugs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, name: &str, admins: &str) -> Caller {
        Caller::from_identity(uid, name.parse().unwrap(), &admins.parse().unwrap())
    }

    fn force() -> AllocateRequest {
        AllocateRequest {
            name: Some("portal".parse().unwrap()),
            takeover: Takeover::Force,
            ..AllocateRequest::default()
        }
    }

    #[test]
    fn privilege_comes_from_uid_or_admin_list() {
        assert_eq!(caller(0, "root", "").privilege(), Privilege::Admin);
        assert_eq!(
            caller(1000, "ops", "ops, other").privilege(),
            Privilege::Admin
        );
        assert_eq!(caller(1001, "bob", "ops").privilege(), Privilege::User);
        // A name that merely contains an admin's name is not an admin.
        assert_eq!(caller(1002, "ops2", "ops").privilege(), Privilege::User);
    }

    #[test]
    fn force_only_for_admins() {
        assert_eq!(
            caller(1001, "bob", "ops")
                .authorize_allocate(&force())
                .unwrap_err()
                .code,
            ErrorCode::ForceNotAllowed
        );
        assert!(caller(1000, "ops", "ops")
            .authorize_allocate(&force())
            .is_ok());
        assert!(caller(0, "root", "").authorize_allocate(&force()).is_ok());
        assert!(caller(1001, "bob", "")
            .authorize_allocate(&AllocateRequest::default())
            .is_ok());
    }

    #[test]
    fn list_all_and_reconcile_only_for_admins() {
        let bob = caller(1001, "bob", "ops");
        assert_eq!(
            bob.list_scope(ListScope::Own).unwrap(),
            OwnerScope::Owner("bob".parse().unwrap())
        );
        assert!(bob.list_scope(ListScope::All).is_err());
        assert!(bob.authorize_verb(Verb::Reconcile).is_err());
        assert!(bob.authorize_verb(Verb::List).is_ok());
        let ops = caller(1000, "ops", "ops");
        assert_eq!(ops.list_scope(ListScope::All).unwrap(), OwnerScope::All);
        assert!(ops.authorize_verb(Verb::Reconcile).is_ok());
    }

    #[test]
    fn reserved_names() {
        let reserved = ReservedSlugs::default();
        assert_eq!(
            reserved.check(&"www".parse().unwrap()).unwrap_err().code,
            ErrorCode::InvalidSlug
        );
        assert!(reserved.check(&"portal".parse().unwrap()).is_ok());
        let custom: ReservedSlugs = "billing, status".parse().unwrap();
        assert!(custom.contains(&"status".parse().unwrap()));
        assert!("ok,not ok".parse::<ReservedSlugs>().is_err());
    }
}

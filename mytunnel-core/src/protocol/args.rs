//! A request as ctl words and back: the allow-list flag parser the gate and serve share.

use super::*;
use crate::flags;

/// Longest text a message quotes from input.
pub(super) fn truncate_for_message(s: &str) -> String {
    s.chars().take(64).collect()
}

impl CtlRequest {
    /// The verb.
    pub fn verb(&self) -> Verb {
        match self {
            CtlRequest::Allocate(_) => Verb::Allocate,
            CtlRequest::Heartbeat { .. } => Verb::Heartbeat,
            CtlRequest::Release { .. } => Verb::Release,
            CtlRequest::Delete { .. } => Verb::Delete,
            CtlRequest::List(_) => Verb::List,
            CtlRequest::Health => Verb::Health,
            CtlRequest::Reconcile => Verb::Reconcile,
            CtlRequest::Stats => Verb::Stats,
        }
    }

    /// The words after `mytunneld`: `ctl <verb> [flags]`. [`CtlRequest::parse_args`] reads
    /// them back.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["ctl".to_owned(), self.verb().as_str().to_owned()];
        let mut flag = |name: &str, value: String| {
            args.push(name.to_owned());
            args.push(value);
        };
        match self {
            CtlRequest::Allocate(req) => {
                if let Some(port) = req.local_port {
                    flag("--local-port", port.to_string());
                }
                if let Some(name) = &req.name {
                    flag("--name", name.to_string());
                }
                if let Some(ttl) = req.ttl {
                    flag("--ttl", crate::duration::format_duration(ttl));
                }
                if req.takeover == Takeover::Force {
                    args.push("--force".to_owned());
                }
                if let Some(replaces) = &req.replaces {
                    args.push("--replaces".to_owned());
                    args.push(replaces.to_string());
                }
            }
            CtlRequest::Heartbeat { lease } => flag("--lease", lease.to_string()),
            CtlRequest::Release { lease } | CtlRequest::Delete { lease } => {
                flag("--lease", lease.to_string())
            }
            CtlRequest::List(ListScope::All) => args.push("--all".to_owned()),
            CtlRequest::List(ListScope::Own)
            | CtlRequest::Health
            | CtlRequest::Reconcile
            | CtlRequest::Stats => {}
        }
        args
    }

    /// Parses `<verb> [flags]` (the words after `ctl`) with an allow-list: each verb takes
    /// only the flags it documents. A daemon override flag is `override_not_allowed`, any
    /// other unknown word `forbidden_command`, a bad value `invalid_argument` or
    /// `invalid_slug`.
    pub fn parse_args<S: AsRef<str>>(words: &[S]) -> Result<CtlRequest, ApiError> {
        let Some((verb_word, rest)) = words.split_first() else {
            return Err(ApiError::new(
                ErrorCode::ForbiddenCommand,
                "`ctl` needs a verb",
            ));
        };
        let verb: Verb = verb_word.as_ref().parse()?;
        let flags = FlagWords::parse(verb, rest)?;
        flags.into_request(verb)
    }
}

/// The flags each verb documents: (name, takes a value).
pub(super) fn allowed_flags(verb: Verb) -> &'static [(&'static str, bool)] {
    match verb {
        Verb::Allocate => &[
            ("--local-port", true),
            ("--name", true),
            ("--ttl", true),
            ("--force", false),
            ("--replaces", true),
            ("--owner", true),
        ],
        Verb::Heartbeat | Verb::Release | Verb::Delete => &[("--lease", true)],
        Verb::List => &[("--all", false)],
        Verb::Health | Verb::Reconcile | Verb::Stats => &[],
    }
}

/// Flags read off the words, each at most once.
#[derive(Debug, Default)]
pub(super) struct FlagWords {
    values: BTreeMap<&'static str, Option<String>>,
}

impl FlagWords {
    fn parse<S: AsRef<str>>(verb: Verb, words: &[S]) -> Result<FlagWords, ApiError> {
        // An override flag is refused wherever it stands, even as another flag's value,
        // so that no accepted command line ever contains one.
        if let Some(word) = words
            .iter()
            .map(AsRef::as_ref)
            .find(|w| is_override_word(w))
        {
            let name = word.split_once('=').map_or(word, |(name, _)| name);
            return Err(ApiError::new(
                ErrorCode::OverrideNotAllowed,
                format!("{name} is daemon configuration and cannot be set by a client"),
            ));
        }
        let allowed = allowed_flags(verb);
        let mut out = FlagWords::default();
        let mut iter = words.iter().map(AsRef::as_ref);
        while let Some(word) = iter.next() {
            let (name, inline_value) = flags::split_inline(word);
            let Some(&(known, takes_value)) = allowed.iter().find(|(n, _)| *n == name) else {
                return Err(ApiError::new(
                    ErrorCode::ForbiddenCommand,
                    format!("`{verb}` does not take {:?}", truncate_for_message(name)),
                ));
            };
            let value = match (takes_value, inline_value) {
                (true, inline) => Some(
                    flags::value(known, inline, &mut iter)
                        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e))?,
                ),
                (false, None) => None,
                (false, Some(_)) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidArgument,
                        format!("{known} takes no value"),
                    ))
                }
            };
            if out.values.insert(known, value).is_some() {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("{known} is given twice"),
                ));
            }
        }
        Ok(out)
    }

    fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.as_deref())
    }

    fn required(&self, verb: Verb, name: &str) -> Result<&str, ApiError> {
        self.value(name).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidArgument, format!("`{verb}` needs {name}"))
        })
    }

    fn into_request(self, verb: Verb) -> Result<CtlRequest, ApiError> {
        Ok(match verb {
            Verb::Allocate => {
                let local_port = self
                    .value("--local-port")
                    .map(|v| match v.parse::<u16>() {
                        Ok(port) if port != 0 => Ok(port),
                        _ => Err(ApiError::new(
                            ErrorCode::InvalidArgument,
                            format!(
                                "--local-port {:?} is not a port 1-65535",
                                truncate_for_message(v)
                            ),
                        )),
                    })
                    .transpose()?;
                let name = self.value("--name").map(str::parse::<Slug>).transpose()?;
                let ttl = self
                    .value("--ttl")
                    .map(crate::duration::parse_duration)
                    .transpose()?;
                let takeover = if self.has("--force") {
                    Takeover::Force
                } else {
                    Takeover::Refuse
                };
                if takeover == Takeover::Force && name.is_none() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidArgument,
                        "--force requires --name",
                    ));
                }
                let replaces = self
                    .value("--replaces")
                    .map(|v| {
                        v.parse::<LeaseId>().map_err(|_| {
                            ApiError::new(
                                ErrorCode::InvalidArgument,
                                format!(
                                    "--replaces {:?} is not a lease id (\"lease_\" and 16 \
                                     characters of a-z, 2-7)",
                                    truncate_for_message(v)
                                ),
                            )
                        })
                    })
                    .transpose()?;
                if replaces.is_some() && name.is_none() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidArgument,
                        "--replaces requires --name",
                    ));
                }
                // `--owner` is accepted for compatibility and ignored: the owner is the uid.
                CtlRequest::Allocate(AllocateRequest {
                    local_port,
                    name,
                    ttl,
                    takeover,
                    replaces,
                })
            }
            Verb::Heartbeat => CtlRequest::Heartbeat {
                lease: self.required(verb, "--lease")?.parse()?,
            },
            Verb::Release => CtlRequest::Release {
                lease: self.required(verb, "--lease")?.parse()?,
            },
            Verb::Delete => CtlRequest::Delete {
                lease: self.required(verb, "--lease")?.parse()?,
            },
            Verb::List => CtlRequest::List(if self.has("--all") {
                ListScope::All
            } else {
                ListScope::Own
            }),
            Verb::Health => CtlRequest::Health,
            Verb::Reconcile => CtlRequest::Reconcile,
            Verb::Stats => CtlRequest::Stats,
        })
    }
}

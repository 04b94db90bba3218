//! Which database the store opens: [`Database`], from the edge's settings.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the lease database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file: the embedded default, for one edge.
    Sqlite(PathBuf),
    /// A PostgreSQL database, which several edges can share.
    Postgres(PostgresUrl),
}

impl fmt::Display for Database {
    /// The file's path, or the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => url.fmt(f),
        }
    }
}

/// A PostgreSQL connection URL (`postgres://` or `postgresql://`) that sqlx accepts.
///
/// It may hold a password (in its user part or a `password=` parameter): `Display` and
/// `Debug` show it as `***`; [`PostgresUrl::expose`] gives the text to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

/// Why a text is not a [`PostgresUrl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostgresUrlError {
    /// The scheme is not `postgres://` or `postgresql://`.
    #[error("{0} is not a postgres:// URL")]
    Scheme(String),
    /// sqlx refused the URL.
    #[error("{url} is not a PostgreSQL URL sqlx accepts: {reason}")]
    Invalid {
        /// The URL, password hidden.
        url: String,
        /// sqlx's reason, password hidden.
        reason: String,
    },
}

impl FromStr for PostgresUrl {
    type Err = PostgresUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let redacted = redact_password(text);
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(PostgresUrlError::Scheme(redacted));
        }
        match sqlx::postgres::PgConnectOptions::from_str(text) {
            Ok(_) => Ok(PostgresUrl(text.to_owned())),
            Err(e) => Err(PostgresUrlError::Invalid {
                reason: hide(&e.to_string(), text, &redacted),
                url: redacted,
            }),
        }
    }
}

/// `message` with any copy of `text` in it replaced by `redacted`.
fn hide(message: &str, text: &str, redacted: &str) -> String {
    message.replace(text, redacted)
}

impl PostgresUrl {
    /// The URL as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the URL itself holds a password (in its user part or a `password=`
    /// parameter). Without one, sqlx takes it from `PGPASSWORD` or the password file
    /// (`PGPASSFILE`, else `~/.pgpass`), as libpq does.
    pub fn has_password(&self) -> bool {
        redact_password(&self.0) != self.0
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_password(&self.0))
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// `text` with the password of a URL shown as `***`: the one after `user:` before `@`,
/// and the value of every `password=` parameter. Text that is not a URL is returned as
/// it is, but for those two shapes wherever they appear.
pub fn redact_password(text: &str) -> String {
    let mut out = match text.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, hosts)) => match userinfo.split_once(':') {
                    Some((user, _password)) => format!("{scheme}://{user}:***@{hosts}{tail}"),
                    None => text.to_owned(),
                },
                None => text.to_owned(),
            }
        }
        None => text.to_owned(),
    };
    // `password=` in the query: up to the next `&` or `#`.
    let mut from = 0;
    while let Some(at) = out[from..].find("password=") {
        let start = from + at + "password=".len();
        let end = out[start..]
            .find(['&', '#'])
            .map_or(out.len(), |n| start + n);
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows() {
        for (text, shown) in [
            (
                "postgres://mytunnel:s3cret@db.example.com:5432/leases",
                "postgres://mytunnel:***@db.example.com:5432/leases",
            ),
            (
                "postgresql://u:p%40ss@10.0.0.1/db?sslmode=require",
                "postgresql://u:***@10.0.0.1/db?sslmode=require",
            ),
            (
                "postgres://u@h/db?password=s3cret&sslmode=verify-full",
                "postgres://u@h/db?password=***&sslmode=verify-full",
            ),
            ("postgres://h/db", "postgres://h/db"),
            (
                "postgres:///db?host=/run/postgresql",
                "postgres:///db?host=/run/postgresql",
            ),
            ("u:pw@host", "u:pw@host"),
        ] {
            assert_eq!(redact_password(text), shown, "{text}");
        }
        let url: PostgresUrl = "postgres://u:s3cret@h/db".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://u:***@h/db");
        assert_eq!(format!("{url:?}"), "PostgresUrl(postgres://u:***@h/db)");
        assert_eq!(url.expose(), "postgres://u:s3cret@h/db");
        assert!(url.has_password());
        let without: PostgresUrl = "postgres://u@h/db?sslmode=require".parse().unwrap();
        assert!(!without.has_password());
        assert_eq!(Database::Postgres(url).to_string(), "postgres://u:***@h/db");
    }

    #[test]
    fn only_postgres_urls_parse_and_refusals_hide_the_password() {
        let e = "mysql://u:s3cret@h/db".parse::<PostgresUrl>().unwrap_err();
        assert_eq!(e.to_string(), "mysql://u:***@h/db is not a postgres:// URL");
        let e = "postgres://u:s3cret@h:99999/db"
            .parse::<PostgresUrl>()
            .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(
            e.to_string().starts_with("postgres://u:***@h:99999/db"),
            "{e}"
        );
        for fine in [
            "postgres://h/db",
            "postgresql://u:p@h:5433/db?sslmode=require",
            "postgres:///db?host=/run/postgresql",
        ] {
            assert!(fine.parse::<PostgresUrl>().is_ok(), "{fine}");
        }
    }
}

//! A database URL, parsed once where it enters: which backend it names,
//! what the driver is handed, how it is shown, and which secrets it holds
//! (so that a driver's message quoting one can be cleaned).

use std::fmt;
use std::str::FromStr;

use super::connection::Dialect;
use crate::model::redact::{is_secret_key, keywords, shown_keywords, shown_scheme, shown_url};
use crate::model::ConfigError;

/// The forms a database URL may take, as errors list them.
pub const ACCEPTED_FORMS: &str = "postgres://user:password@host:port/database (or postgresql://; \
     percent-encode / ? # @ : % and spaces in the user and password), a PostgreSQL keyword DSN \
     (host=... port=... user=... dbname=...), mysql://user:password@host:port/database (or \
     mariadb://; a build with the mysql feature), sqlite://path, or a path ending .db, .sqlite or \
     .sqlite3";

/// A parsed database URL. Its `Display` and `Debug` show it with every
/// password masked.
///
/// Accepted forms:
/// - `postgres://` or `postgresql://` URLs, read by a URL parser (a user
///   or password holding `/ ? # @ : %` or spaces must be percent-encoded;
///   a URL that does not parse is refused without being shown);
/// - a PostgreSQL keyword DSN (`host=db port=5432 user=app dbname=app
///   password='a b'`), as libpq reads it;
/// - `mysql://` or `mariadb://` URLs (MySQL 8.0+, MariaDB 10.6+; the
///   `mysql` feature connects to them), read by the same URL parser; diesel's
///   options `ssl_mode`, `ssl_ca`, `ssl_cert`, `ssl_key` and `unix_socket`
///   go in the query string;
/// - `sqlite://path`, or a bare path ending `.db`, `.sqlite` or `.sqlite3`
///   (`:memory:` too).
///
/// Anything else is refused, naming the accepted forms, before anything
/// is created on disk.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    dialect: Dialect,
    /// What the driver is given: a URL as the parser wrote it back (so
    /// libpq reads the same user, password and host), a keyword DSN as it
    /// was, or SQLite's file path.
    connect: String,
    shown: String,
    /// Passwords it holds, as written and decoded, longest first.
    secrets: Vec<String>,
}

impl DatabaseUrl {
    /// Parses `text`, naming the field `database_url` when it is refused.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let field = "database_url";
        let text = text.trim();
        if text.is_empty() {
            return Err(ConfigError::new(
                field,
                format!("is empty; use {ACCEPTED_FORMS}"),
            ));
        }
        if let Some((scheme, rest)) = text.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "postgres" | "postgresql" => Self::network_url(text, Dialect::Postgres),
                "mysql" | "mariadb" => Self::network_url(text, Dialect::Mysql),
                "sqlite" if !rest.is_empty() => Ok(Self::sqlite(rest)),
                "sqlite" => Err(ConfigError::new(
                    field,
                    "sqlite:// names no file; use sqlite://path/to/file.db",
                )),
                other => Err(ConfigError::new(
                    field,
                    format!(
                        "{}:// is not a database tranche reads; use {ACCEPTED_FORMS}",
                        shown_scheme(other)
                    ),
                )),
            };
        }
        if text.contains('=') {
            let pairs = keywords(text).map_err(|why| {
                ConfigError::new(
                    field,
                    format!("is not a valid PostgreSQL keyword DSN ({why}); use {ACCEPTED_FORMS}"),
                )
            })?;
            let mut secrets: Vec<String> = pairs
                .iter()
                .filter(|(k, v)| is_secret_key(k) && !v.is_empty())
                .map(|(_, v)| v.clone())
                .collect();
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
            return Ok(Self {
                dialect: Dialect::Postgres,
                connect: text.to_owned(),
                shown: shown_keywords(&pairs),
                secrets,
            });
        }
        let lower = text.to_ascii_lowercase();
        if text == ":memory:"
            || [".db", ".sqlite", ".sqlite3"]
                .iter()
                .any(|ext| lower.ends_with(ext))
        {
            return Ok(Self::sqlite(text));
        }
        Err(ConfigError::new(
            field,
            format!(
                "is neither a URL nor a path ending .db, .sqlite or .sqlite3; use {ACCEPTED_FORMS}"
            ),
        ))
    }

    fn sqlite(path: &str) -> Self {
        Self {
            dialect: Dialect::Sqlite,
            connect: path.to_owned(),
            shown: format!("sqlite://{path}"),
            secrets: Vec::new(),
        }
    }

    fn network_url(text: &str, dialect: Dialect) -> Result<Self, ConfigError> {
        let what = match dialect {
            Dialect::Mysql => "MySQL",
            _ => "PostgreSQL",
        };
        let mut url = url::Url::parse(text).map_err(|e| {
            ConfigError::new(
                "database_url",
                format!("is not a valid {what} URL ({e}); use {ACCEPTED_FORMS}"),
            )
        })?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let mut secrets = Vec::new();
        if let Some(p) = url.password() {
            secrets.push(p.to_owned());
            secrets.push(decode(p));
        }
        for (k, v) in url.query_pairs() {
            if is_secret_key(&k) {
                secrets.push(v.into_owned());
            }
        }
        if let Some(q) = url.query() {
            for pair in q.split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    if is_secret_key(k) {
                        secrets.push(v.to_owned());
                    }
                }
            }
        }
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let shown = shown_url(&url);
        if dialect == Dialect::Mysql && url.scheme() != "mysql" {
            // The driver takes mysql:// alone; mariadb:// is shown as written.
            let rest = &url.as_str()[url.scheme().len()..];
            url = url::Url::parse(&format!("mysql{rest}")).map_err(|e| {
                ConfigError::new("database_url", format!("is not a valid MySQL URL ({e})"))
            })?;
        }
        if dialect == Dialect::Mysql && url.path().trim_matches('/').is_empty() {
            return Err(ConfigError::new(
                "database_url",
                format!("{shown} names no database; use mysql://user:password@host:port/database"),
            ));
        }
        Ok(Self {
            dialect,
            connect: url.as_str().to_owned(),
            shown,
            secrets,
        })
    }

    /// The backend it names.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL with its passwords masked.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// What the driver is handed (it holds the password).
    pub(crate) fn connect_str(&self) -> &str {
        &self.connect
    }

    /// `text` (a driver's message, say) with this URL's passwords, and any
    /// URL or `password=` it quotes, masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        crate::model::redact::redact_text(&out)
    }
}

impl FromStr for DatabaseUrl {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.shown).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_names_its_backend_and_hides_its_password() {
        for (text, dialect, shown) in [
            (
                "postgres://u:p@h/db",
                Dialect::Postgres,
                "postgres://u:***@h/db",
            ),
            ("postgresql://h/db", Dialect::Postgres, "postgresql://h/db"),
            (
                "host=h password='a b' dbname=x",
                Dialect::Postgres,
                "host=h password=*** dbname=x",
            ),
            (
                "sqlite://data/app.db",
                Dialect::Sqlite,
                "sqlite://data/app.db",
            ),
            ("app.sqlite3", Dialect::Sqlite, "sqlite://app.sqlite3"),
            (":memory:", Dialect::Sqlite, "sqlite://:memory:"),
            (
                "mysql://app:S3cret@db:3306/shop",
                Dialect::Mysql,
                "mysql://app:***@db:3306/shop",
            ),
            (
                "mariadb://root@127.0.0.1/test?ssl_mode=disabled",
                Dialect::Mysql,
                "mariadb://root@127.0.0.1/test?ssl_mode=disabled",
            ),
        ] {
            let url = DatabaseUrl::parse(text).expect(text);
            assert_eq!(url.dialect(), dialect, "{text}");
            assert_eq!(url.to_string(), shown, "{text}");
            assert_eq!(format!("{url:?}"), format!("DatabaseUrl({shown:?})"));
        }
    }

    #[test]
    fn other_forms_are_refused_listing_the_accepted_ones_without_echoing_them() {
        for text in [
            "postgress://u:S3cret@h/db",
            "mysqlx://u:S3cret@h/db",
            "mysql://u:S3c?ret@h/db",
            "postgres://u:S3c?ret@h/db",
            "postgres://u:S3c#ret@h/db",
            "S3cret",
            "host=h password='S3cret",
            "",
        ] {
            let e = DatabaseUrl::parse(text).unwrap_err();
            assert_eq!(e.field, "database_url");
            assert!(e.reason.contains("sqlite://path"), "{text}: {e}");
            assert!(!e.to_string().contains("S3c"), "{text}: {e}");
        }
    }

    #[test]
    fn a_driver_message_loses_the_password_however_it_is_quoted() {
        let url = DatabaseUrl::parse("postgres://u:S3c%40ret%20Pw@h/db").unwrap();
        assert_eq!(url.connect_str(), "postgres://u:S3c%40ret%20Pw@h/db");
        assert_eq!(
            url.redact("password for S3c@ret Pw refused at postgres://u:S3c%40ret%20Pw@h/db"),
            "password for *** refused at postgres://u:***@h/db"
        );
        let url = DatabaseUrl::parse("postgres://u:S3c@ret@h/db").unwrap();
        assert_eq!(url.connect_str(), "postgres://u:S3c%40ret@h/db");
        let url = DatabaseUrl::parse("mariadb://u:S3c%40ret@h/db").unwrap();
        assert_eq!(url.connect_str(), "mysql://u:S3c%40ret@h/db");
        assert_eq!(
            url.redact(
                "Access denied for user 'u' (using password: S3c@ret) at mysql://u:S3c%40ret@h/db"
            ),
            "Access denied for user 'u' (using password: ***) at mysql://u:***@h/db"
        );
        let e = DatabaseUrl::parse("mysql://u:S3cret@h").unwrap_err();
        assert!(e.reason.contains("names no database"), "{e}");
        assert!(!e.to_string().contains("S3c"), "{e}");
    }
}

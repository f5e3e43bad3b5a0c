//! Keeping secrets out of what is shown: URLs and keyword DSNs with their
//! passwords masked, driver messages cleaned of the URLs they quote, and
//! [`SecretUrl`], a URL that shows itself masked wherever it is printed.

use std::fmt;

use serde::Deserialize;

/// A URL (or PostgreSQL keyword DSN) that may hold a password: its
/// `Display` and `Debug` show it masked (see [`redact_url`]); only
/// [`SecretUrl::expose`] hands out the text itself, for a driver.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, password included: for the driver that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty (or only whitespace).
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl From<String> for SecretUrl {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<&String> for SecretUrl {
    fn from(s: &String) -> Self {
        Self(s.clone())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretUrl")
            .field(&redact_url(&self.0))
            .finish()
    }
}

/// A database or broker URL (or a PostgreSQL keyword DSN) as it may be
/// shown: the password of its user info, a `password` query parameter and a
/// `password` keyword become `***`. URLs are read by a URL parser, so a
/// password holding `@`, `/`, `?` or spaces is hidden whole; text that does
/// not parse is not shown at all, beyond its scheme. A bare path is shown
/// as it is.
pub fn redact_url(text: &str) -> String {
    if let Some((scheme, _)) = text.split_once("://") {
        return match url::Url::parse(text) {
            Ok(u) => shown_url(&u),
            Err(_) => format!("{}://(not shown: not a valid URL)", shown_scheme(scheme)),
        };
    }
    if text.contains('=') {
        return match keywords(text) {
            Ok(pairs) => shown_keywords(&pairs),
            Err(_) => "(not shown: not a valid keyword DSN)".to_owned(),
        };
    }
    text.to_owned()
}

/// A scheme as it may be shown: letters, digits, `+ - .`, a few of them.
pub(crate) fn shown_scheme(scheme: &str) -> String {
    let ok = !scheme.is_empty()
        && scheme.len() <= 16
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if ok {
        scheme.to_owned()
    } else {
        "(scheme not shown)".to_owned()
    }
}

/// `u` with its password and any `password` query parameter masked.
pub(crate) fn shown_url(u: &url::Url) -> String {
    let mut shown = u.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have user info, which had none.
        let _ = shown.set_password(Some("***"));
    }
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_key(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Query or keyword names whose values are secrets.
pub(crate) fn is_secret_key(key: &str) -> bool {
    matches!(
        key.to_ascii_lowercase().as_str(),
        "password" | "pass" | "passwd" | "sslpassword" | "token" | "secret"
    )
}

/// The `key=value` pairs of a PostgreSQL keyword DSN (`host=db
/// password='a b'`), as libpq reads them: values bare up to whitespace or
/// single-quoted, with backslash escapes in both.
pub(crate) fn keywords(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') || key.is_empty() {
            return Err(format!("expected key=value at {:?}", shown_key(&key)));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quote in {:?}", shown_key(&key))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn shown_key(key: &str) -> String {
    key.chars().take(20).collect()
}

/// Keyword pairs written back, secrets masked, values quoted when needed.
pub(crate) fn shown_keywords(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            if is_secret_key(k) {
                format!("{k}=***")
            } else if v.is_empty()
                || v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\')
            {
                format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` (a driver's message, say) with every URL and `password=` value
/// in it masked as [`redact_url`] does.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '(' | '<' | '`'))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | '`'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&mask_password_keywords(&rest[..start]));
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(&mask_password_keywords(rest));
    out
}

/// Masks `password=value` (bare or quoted) wherever it appears.
fn mask_password_keywords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("password=") {
        out.push_str(&rest[..i + "password=".len()]);
        out.push_str("***");
        rest = &rest[i + "password=".len()..];
        let end = if let Some(quoted) = rest.strip_prefix('\'') {
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let close = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    close
                })
                .map_or(rest.len(), |(j, _)| j + 2)
        } else {
            rest.find([' ', '&', '\n']).unwrap_or(rest.len())
        };
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_whole_whatever_they_hold() {
        for (url, shown) in [
            (
                "postgres://app:s3cret@db:5432/x",
                "postgres://app:***@db:5432/x",
            ),
            ("postgres://db/x", "postgres://db/x"),
            (
                "postgres://db/x?user=a&password=s3cret&x=1",
                "postgres://db/x?user=a&password=***&x=1",
            ),
            ("postgres://u:S3c%2FretPw@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u:S3c@retPw@127.0.0.1:5999/h4",
                "postgres://u:***@127.0.0.1:5999/h4",
            ),
            (
                "postgres://u:S3c?retPw@127.0.0.1:5999/h4",
                "postgres://(not shown: not a valid URL)",
            ),
            (
                "postgres://u:S3c/retPw@127.0.0.1:5999/h4",
                "postgres://(not shown: not a valid URL)",
            ),
            (
                "amqp://guest:p%40ss%20w@rabbit:5672/%2f",
                "amqp://guest:***@rabbit:5672/%2f",
            ),
            ("nats://u:p:a:ss@nats:4222", "nats://u:***@nats:4222"),
            ("host=db password=s3cret", "host=db password=***"),
            (
                "host=db password='S3cret Pw' dbname=x",
                "host=db password=*** dbname=x",
            ),
            (
                "host=db password='it\\'s' user='a b'",
                "host=db password=*** user='a b'",
            ),
            ("demo.db", "demo.db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn messages_lose_the_urls_and_passwords_they_quote() {
        assert_eq!(
            redact_text("cannot reach amqp://u:s3cret@h:5672/%2f (refused)"),
            "cannot reach amqp://u:***@h:5672/%2f (refused)"
        );
        assert_eq!(
            redact_text("bad conninfo \"host=h password='a b c' port=1\""),
            "bad conninfo \"host=h password=*** port=1\""
        );
    }

    #[test]
    fn a_secret_url_shows_itself_masked() {
        let url = SecretUrl::from("amqp://u:p%2Fw@h:5672/%2f");
        assert_eq!(url.to_string(), "amqp://u:***@h:5672/%2f");
        assert_eq!(format!("{url:?}"), "SecretUrl(\"amqp://u:***@h:5672/%2f\")");
        assert_eq!(url.expose(), "amqp://u:p%2Fw@h:5672/%2f");
    }
}

//! SQL identifiers that come from configuration.
//!
//! Table and column names cannot be bound as parameters, so they are the one
//! place user input reaches SQL text. Every such name is validated here when
//! the job is built (a plain identifier, optionally `schema.name`, the
//! schema being a database on MySQL) and always emitted quoted: double
//! quotes on PostgreSQL and SQLite, backticks on MySQL.

use std::fmt;

use crate::model::ConfigError;

/// A validated SQL identifier, optionally schema-qualified (`schema.table`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ident {
    parts: Vec<String>,
}

impl Ident {
    /// Longest part PostgreSQL keeps without truncating it.
    const MAX_PART_LEN: usize = 63;

    /// Validates `raw`, naming `field` in the error when it is not acceptable.
    pub fn parse(field: &str, raw: &str) -> Result<Self, ConfigError> {
        let parts: Vec<&str> = raw.split('.').collect();
        if parts.len() > 2 {
            return Err(ConfigError::new(
                field,
                format!("{raw:?} has more than one '.'; use name or schema.name"),
            ));
        }
        for part in &parts {
            let mut chars = part.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !first_ok || !rest_ok || part.len() > Self::MAX_PART_LEN {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "{raw:?} is not a plain identifier (letters, digits and '_', \
                         not starting with a digit, at most {} characters)",
                        Self::MAX_PART_LEN
                    ),
                ));
            }
        }
        Ok(Self {
            parts: parts.into_iter().map(str::to_owned).collect(),
        })
    }

    /// The schema (when qualified) and the name itself.
    pub fn schema_and_name(&self) -> (Option<&str>, &str) {
        match self.parts.as_slice() {
            [schema, name] => (Some(schema), name),
            _ => (None, self.parts.last().map_or("", String::as_str)),
        }
    }

    /// The name without its schema.
    pub fn name(&self) -> &str {
        self.schema_and_name().1
    }

    /// The identifier as SQL text, each part double-quoted.
    pub fn quoted(&self) -> String {
        self.parts
            .iter()
            .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The identifier as MySQL text, each part in backticks.
    pub fn backticked(&self) -> String {
        self.parts
            .iter()
            .map(|p| format!("`{}`", p.replace('`', "``")))
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.parts.join("."))
    }
}

impl TryFrom<String> for Ident {
    type Error = ConfigError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Ident::parse("identifier", &value)
    }
}

impl From<Ident> for String {
    fn from(value: Ident) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_qualified_names() {
        assert_eq!(Ident::parse("t", "subs").unwrap().quoted(), "\"subs\"");
        assert_eq!(
            Ident::parse("t", "app.subs_2").unwrap().backticked(),
            "`app`.`subs_2`"
        );
        assert_eq!(
            Ident::parse("t", "app.subs_2").unwrap().quoted(),
            "\"app\".\"subs_2\""
        );
    }

    #[test]
    fn rejects_hostile_names_and_names_the_field() {
        for raw in [
            "",
            "1abc",
            "a;drop table x",
            "a\"b",
            "a b",
            "a.b.c",
            "a.",
            "x--",
            &"a".repeat(64),
        ] {
            let err = Ident::parse("source.table", raw).unwrap_err();
            assert_eq!(err.field, "source.table", "{raw:?}");
        }
    }
}

//! The layers of a job file's settings: the TOML text, then `TRANCHE_*`
//! variables, then flags, each a figment provider that names where its
//! values came from, so that an error says `TRANCHE_PAGE_SIZE` or
//! `--lease` rather than only the field.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use crate::model::ConfigError;

/// One runtime setting: a field of [`RuntimeConfig`](crate::RuntimeConfig),
/// the `[runtime]` key of a job file, `TRANCHE_<FIELD>` and `--<field>`.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Setting {
    /// The field (and `[runtime]` key).
    pub field: &'static str,
    /// What it sets, with its default.
    pub help: &'static str,
    /// Its value is text as written (an id, a name), not read as a number
    /// or a boolean.
    pub text: bool,
}

impl Setting {
    /// The environment variable, `TRANCHE_<FIELD>`.
    pub fn env(&self) -> String {
        format!("TRANCHE_{}", self.field.to_ascii_uppercase())
    }

    /// The flag, `--<field>` with dashes.
    pub fn flag(&self) -> String {
        format!("--{}", self.field.replace('_', "-"))
    }
}

const fn setting(field: &'static str, help: &'static str) -> Setting {
    Setting {
        field,
        help,
        text: false,
    }
}

/// Every runtime setting, in the order the README's table lists them.
pub const RUNTIME_SETTINGS: &[Setting] = &[
    Setting {
        field: "instance_id",
        help: "This instance's identity in leases, unique among live instances \
               (default: host, pid and a random suffix)",
        text: true,
    },
    setting(
        "concurrency",
        "Partitions worked at once per run (default 4)",
    ),
    setting(
        "page_size",
        "Rows per page, and so per checkpoint (default 1000, at most 100000)",
    ),
    setting(
        "mailbox_capacity",
        "Publisher mailbox and per-lane queue capacity (default 16)",
    ),
    setting("lanes", "Per-key lanes in the publisher (default 4)"),
    setting(
        "lease",
        "How long a claim holds without renewal (default \"30s\")",
    ),
    setting(
        "heartbeat",
        "How often leases are renewed, shorter than the lease (default \"10s\")",
    ),
    setting(
        "max_attempts",
        "Attempts per partition before it fails (default 5)",
    ),
    setting(
        "backoff",
        "Delay before a failed partition's first retry, doubled each time (default \"200ms\")",
    ),
    setting(
        "backoff_max",
        "Longest delay between retries (default \"10s\")",
    ),
    setting(
        "skip_limit",
        "Poison rows tolerated per partition before it fails (default 100)",
    ),
    setting(
        "poll_interval",
        "How often to look again for work, other instances or the store (default \"500ms\")",
    ),
    setting(
        "work_stealing",
        "Whether idle workers split busy workers' ranges (default true)",
    ),
    setting(
        "db_threads",
        "Database executor threads, the most queries at once (default 4)",
    ),
    setting(
        "connect_timeout",
        "How long to wait for a database connection (default \"10s\")",
    ),
    setting(
        "migrate",
        "Apply tranche's migrations when starting (default true)",
    ),
    setting(
        "shutdown_grace",
        "How long a shutdown waits for pages in flight and hand-backs before abandoning them (default \"25s\")",
    ),
    Setting {
        field: "application_name",
        help: "PostgreSQL application_name of every session (default \"tranche <instance id>\")",
        text: true,
    },
];

/// How the variables' and the flags' layers name themselves.
const ENV_NAME: &str = "environment variable";
const FLAG_NAME: &str = "command-line flag";

/// The database URL's variable.
pub(crate) const DATABASE_URL_ENV: &str = "TRANCHE_DATABASE_URL";

fn setting_of(field: &str) -> Option<&'static Setting> {
    RUNTIME_SETTINGS.iter().find(|s| s.field == field)
}

/// A value as a variable or flag writes it: text for a text setting, read
/// as a number, boolean or text otherwise.
fn value_of(setting: &Setting, raw: &str) -> Value {
    let t = raw.trim();
    if setting.text {
        Value::from(raw.to_owned())
    } else if let Ok(n) = t.parse::<u64>() {
        Value::from(n)
    } else if let Ok(n) = t.parse::<i64>() {
        Value::from(n)
    } else if let Ok(b) = t.parse::<bool>() {
        Value::from(b)
    } else {
        Value::from(raw.to_owned())
    }
}

/// The job file's text.
pub(crate) struct TomlText {
    dict: Dict,
    path: Option<PathBuf>,
    text: String,
}

impl TomlText {
    pub(crate) fn parse(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let dict =
            toml::from_str::<Dict>(text).map_err(|e| super::toml_error("job file", text, &e))?;
        Ok(Self {
            dict,
            path: path.map(Path::to_path_buf),
            text: text.to_owned(),
        })
    }
}

impl Provider for TomlText {
    fn metadata(&self) -> Metadata {
        let text = self.text.clone();
        let metadata = match &self.path {
            Some(path) => Metadata::from("job file", path.as_path()),
            None => Metadata::named("job file"),
        };
        metadata.interpolater(move |_, path| {
            let key = path.join(".");
            match line_of(&text, path) {
                Some(line) => format!("{key}, line {line}"),
                None => key,
            }
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// The line of `text` where the key `path` is written: its last segment
/// assigned under the table its other segments name.
fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let (key, tables) = path.split_last()?;
    let mut table = String::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim_matches('[').trim().to_owned();
            continue;
        }
        let assigned = t
            .split_once('=')
            .is_some_and(|(k, _)| k.trim().trim_matches('"') == *key);
        if assigned && table == tables.join(".") {
            return Some(n + 1);
        }
    }
    None
}

/// `TRANCHE_DATABASE_URL` and `TRANCHE_<FIELD>` for each runtime setting.
pub(crate) struct Env(Dict);

impl Env {
    pub(crate) fn read(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut runtime = Dict::new();
        for s in RUNTIME_SETTINGS {
            if let Some(raw) = lookup(&s.env()) {
                runtime.insert(s.field.to_owned(), value_of(s, &raw));
            }
        }
        let mut dict = Dict::new();
        if let Some(url) = lookup(DATABASE_URL_ENV) {
            dict.insert("database_url".into(), Value::from(url));
        }
        if !runtime.is_empty() {
            dict.insert("runtime".into(), Value::from(runtime));
        }
        Self(dict)
    }
}

impl Provider for Env {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_NAME).interpolater(|_, path| match path {
            ["database_url"] => DATABASE_URL_ENV.to_owned(),
            ["runtime", field, ..] => format!("TRANCHE_{}", field.to_ascii_uppercase()),
            other => other.join("."),
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

/// Settings given as flags: `--db` and `--<field>` for each runtime
/// setting (the binary adds one flag per entry of [`RUNTIME_SETTINGS`]).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    database_url: Option<String>,
    runtime: Vec<(&'static str, String)>,
}

impl Flags {
    /// Sets the runtime setting `field` to `raw`, as its flag would.
    ///
    /// # Panics
    ///
    /// When `field` is not one of [`RUNTIME_SETTINGS`] (a bug of the caller).
    pub fn set(&mut self, field: &str, raw: impl Into<String>) {
        let s = setting_of(field).unwrap_or_else(|| panic!("{field} is not a runtime setting"));
        self.runtime.push((s.field, raw.into()));
    }

    /// Sets the database URL, as `--db` does.
    pub fn set_database_url(&mut self, url: impl Into<String>) {
        self.database_url = Some(url.into());
    }

    /// Whether `field` was given.
    pub fn has(&self, field: &str) -> bool {
        self.runtime.iter().any(|(f, _)| *f == field)
    }
}

impl Provider for Flags {
    fn metadata(&self) -> Metadata {
        Metadata::named(FLAG_NAME).interpolater(|_, path| match path {
            ["database_url"] => "--db".to_owned(),
            ["runtime", field, ..] => format!("--{}", field.replace('_', "-")),
            other => other.join("."),
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut runtime = Dict::new();
        for (field, raw) in &self.runtime {
            let s = setting_of(field).expect("checked when set");
            runtime.insert((*field).to_owned(), value_of(s, raw));
        }
        let mut dict = Dict::new();
        if let Some(url) = &self.database_url {
            dict.insert("database_url".into(), Value::from(url.clone()));
        }
        if !runtime.is_empty() {
            dict.insert("runtime".into(), Value::from(runtime));
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// The variable or flag that set each runtime setting (the job file's
/// own values say nothing: their field is their place).
#[derive(Clone, Debug, Default)]
pub(crate) struct Origins(Vec<(String, String)>);

impl Origins {
    pub(crate) fn of(figment: &figment::Figment) -> Self {
        let fields = RUNTIME_SETTINGS
            .iter()
            .map(|s| format!("runtime.{}", s.field))
            .chain(["database_url".to_owned()]);
        let mut found = Vec::new();
        for field in fields {
            let Some(m) = figment.find_metadata(&field) else {
                continue;
            };
            if m.name != ENV_NAME && m.name != FLAG_NAME {
                continue;
            }
            let keys: Vec<&str> = field.split('.').collect();
            let at = m.interpolate(&Profile::Default, &keys);
            found.push((field, format!("{at}, {}", m.name)));
        }
        Self(found)
    }

    /// Where `field` (`runtime.page_size`) was set, if by a variable or flag.
    pub(crate) fn of_field(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, o)| o.as_str())
    }
}

/// A better error for a table read as one of several kinds (`[sink]`):
/// serde reads such a table whole before its `kind` is known, so an error
/// inside it carries only the table's path. Read again as the kind's own
/// type, the table names the key at fault. `probe` reads a table (without
/// its `kind`) as the type `kind` names and returns that error, if any.
pub(crate) fn refine_tagged(
    figment: &figment::Figment,
    table: &str,
    error: Error,
    probe: impl Fn(&str, &figment::Figment) -> Option<Error>,
) -> Error {
    if error.path != [table] {
        return error;
    }
    let Ok(mut dict) = figment.extract_inner::<Dict>(table) else {
        return error;
    };
    let Some(kind) = dict.remove("kind").and_then(|v| v.into_string()) else {
        return error;
    };
    let alone = figment::Figment::from(figment::providers::Serialized::defaults(dict));
    match probe(&kind, &alone) {
        Some(mut inner) => {
            inner.path.insert(0, table.to_owned());
            inner.metadata = error.metadata;
            inner
        }
        None => error,
    }
}

/// A figment error as a [`ConfigError`]: the field path, what is wrong,
/// and where the value came from (never the value of a URL).
pub(crate) fn config_error(e: Error) -> ConfigError {
    let e = e.into_iter().next().expect("an error holds at least one");
    let field = if e.path.is_empty() {
        "job file".to_owned()
    } else {
        e.path.join(".")
    };
    let from = e
        .metadata
        .as_ref()
        .map(|m| {
            let keys: Vec<&str> = e.path.iter().map(String::as_str).collect();
            let at = m.interpolate(&Profile::Default, &keys);
            match &m.source {
                Some(source) => format!(" ({at}, {} {source})", m.name),
                None => format!(" ({at}, {})", m.name),
            }
        })
        .unwrap_or_default();
    ConfigError::new(field, format!("{}{from}", e.kind))
}

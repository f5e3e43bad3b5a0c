//! Jobs configured from a file, for `tranche run --config job.toml` and for
//! hosts that prefer configuration to code.
//!
//! One typed [`JobFile`] with documented defaults. It is loaded from TOML,
//! then overridden by `TRANCHE_*` environment variables, then by the CLI's
//! flags (layered with figment, which keeps each value's origin), and
//! validated once before anything is claimed. Every error names the field
//! path, and says which variable or flag a bad value came from. The
//! `[runtime]` table is [`RuntimeConfig`] itself; [`RUNTIME_SETTINGS`] lists
//! its fields, each settable as `TRANCHE_<FIELD>` and `--<field>`.
//!
//! ```toml
//! database_url = "postgres://app@db/app"
//!
//! [job]
//! name = "resend-confirmations"
//! version = 2                     # part of each message id: job:key:version
//!
//! [source]
//! table = "orders"
//! key_column = "id"
//! order_column = "placed_at"      # absent: rows are read in key order
//! order_kind = "timestamp"        # or "integer"; absent: from the column's type
//! columns = ["status", "email"]   # sent in the payload, typed (see tranche::Datum)
//! # columns_as_text = true        # send each as its text form instead
//! # allow_duplicate_keys = true   # read a key column without a unique index
//! # allow_sequential_scan = true  # accept a page order no index serves
//! filter = [{ column = "status", op = "eq", value = "paid" }]
//!
//! [strategy]
//! kind = "range"                  # or kind = "modulo", modulus = 5
//! partitions = 16
//!
//! [runtime]                       # every field optional: see RUNTIME_SETTINGS
//! concurrency = 4
//! page_size = 1000
//! lease = "30s"                   # durations: "500ms", "30s", "5m", "2h"
//! heartbeat = "10s"
//!
//! [sink]
//! kind = "jsonl"                  # or "outbox" (table), "update" (table, key_column, version_column),
//!                                 # "amqp", "nats", "kafka" (brokers, topic) or "null" (delay_ms)
//!                                 # (a broker's table is its sink's settings, field for field)
//! path = "out-{instance}.jsonl"   # {instance}: this instance's id
//!
//! [schedule]                      # for `tranche schedule`; one of:
//! every = "1h"                    # cron = "30 2 * * *"  or  at = "2026-12-01T02:00:00Z"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::job::Job;
use crate::model::ConfigError;
use crate::model::Ident;
use crate::model::{Condition, FilterValue, Message, Op, Scope, Source, SourceRow, Strategy};
use crate::runtime::{RuntimeConfig, Schedule};

mod layers;

use crate::sink::UpdateSpec;
use crate::sink::{JsonLinesSink, OutboxSink, Sink, UpdateSink};
use crate::store::Store;
pub use layers::{Flags, Setting, RUNTIME_SETTINGS};

/// A TOML parse error of `what`, with the line it points at.
pub(crate) fn toml_error(what: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e
        .span()
        .map(|s| {
            let line = text[..s.start].lines().count().max(1);
            format!(" (line {line})")
        })
        .unwrap_or_default();
    ConfigError::new(what, format!("{}{at}", e.message()))
}

/// A job and its runtime settings, as written in a job file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct JobFile {
    /// Database URL (`TRANCHE_DATABASE_URL`, `--db`), shown masked.
    pub database_url: crate::model::redact::SecretUrl,
    /// The job's identity.
    pub job: JobSection,
    /// The table to read.
    pub source: SourceSection,
    /// How to partition it.
    pub strategy: Strategy,
    /// Runtime settings, [`RuntimeConfig`] field for field; each defaults
    /// as there.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Where messages go.
    pub sink: SinkSection,
    /// When it runs, for `tranche schedule` (absent: `tranche run` only).
    pub schedule: Option<ScheduleSection>,
    /// The throttles each new run of the job starts with (absent: none);
    /// `tranche throttle` changes a run's while it runs.
    #[serde(default)]
    pub throttle: crate::model::Throttle,
    /// Where each runtime setting was set, when a variable or flag set it.
    #[serde(skip)]
    origins: layers::Origins,
}

/// `[schedule]`: exactly one of `every`, `cron` and `at`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ScheduleSection {
    /// A fixed interval such as `"15m"`, `"2h"` or `"1d"`, ticking on
    /// multiples of itself since the UNIX epoch.
    pub every: Option<String>,
    /// A cron expression in UTC: five fields, or six with seconds first.
    pub cron: Option<String>,
    /// One run at an RFC 3339 instant (`"2026-12-01T02:00:00Z"`).
    pub at: Option<String>,
}

impl ScheduleSection {
    /// The schedule, validated; errors name `schedule.every`, `.cron` or `.at`.
    pub fn schedule(&self) -> Result<Schedule, ConfigError> {
        match (&self.every, &self.cron, &self.at) {
            (Some(every), None, None) => Schedule::every(Schedule::parse_interval(every)?),
            (None, Some(cron), None) => Schedule::cron(cron),
            (None, None, Some(at)) => chrono::DateTime::parse_from_rfc3339(at)
                .map(|t| Schedule::at(t.with_timezone(&chrono::Utc).into()))
                .map_err(|e| {
                    ConfigError::new(
                        "schedule.at",
                        format!("{at:?} is not an RFC 3339 time: {e}"),
                    )
                }),
            _ => Err(ConfigError::new(
                "schedule",
                "give exactly one of `every`, `cron` and `at`",
            )),
        }
    }
}

/// `[job]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct JobSection {
    /// Job name.
    pub name: String,
    /// Version carried by each message (default 1).
    #[serde(default = "one")]
    pub version: i64,
    /// Run key (`--run-key`): instances with the same key join one run,
    /// whatever its state (see [`JobBuilder::run_key`](crate::JobBuilder::run_key)).
    pub run_key: Option<String>,
}

fn one() -> i64 {
    1
}

/// `[source]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SourceSection {
    /// Table (or `schema.table`).
    pub table: String,
    /// Unique integer key column.
    pub key_column: String,
    /// Order column (absent: the key, so rows are read in key order alone).
    pub order_column: Option<String>,
    /// `integer` or `timestamp` (PostgreSQL); absent, it is taken from the
    /// column's type.
    pub order_kind: Option<crate::model::OrderKind>,
    /// Read every row even though the key column has no unique index
    /// (default false: such a source is refused, since rows sharing a key
    /// share a message id).
    #[serde(default)]
    pub allow_duplicate_keys: bool,
    /// Accept a page order no index serves (default false: refused, with the
    /// `CREATE INDEX` statement that would serve it).
    #[serde(default)]
    pub allow_sequential_scan: bool,
    /// Extra columns sent in the payload, each as its database type (see
    /// [`crate::model::Datum`] for each type's JSON form).
    #[serde(default)]
    pub columns: Vec<String>,
    /// Send every extra column as its text form (default false).
    #[serde(default)]
    pub columns_as_text: bool,
    /// Conditions every row must meet.
    #[serde(default)]
    pub filter: Vec<FilterEntry>,
}

/// One `column op value` filter.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FilterEntry {
    /// Column.
    pub column: String,
    /// `eq`, `ne`, `lt`, `le`, `gt` or `ge`.
    pub op: Op,
    /// An integer or a string, bound as a parameter.
    pub value: FilterValue,
}

/// `[sink]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SinkSection {
    /// Append JSON lines to a file.
    Jsonl {
        /// File path.
        path: PathBuf,
    },
    /// Publish each message to RabbitMQ (cargo feature `amqp`), persistent
    /// and confirmed; the table is [`AmqpConfig`](crate::sink::AmqpConfig)
    /// field for field.
    Amqp(crate::sink::AmqpConfig),
    /// Publish each message to a NATS JetStream subject (cargo feature
    /// `nats`); the table is [`NatsConfig`](crate::sink::NatsConfig) field
    /// for field.
    Nats(crate::sink::NatsConfig),
    /// Produce each message to a Kafka topic (cargo feature `kafka`) with
    /// an idempotent producer; the table is
    /// [`KafkaConfig`](crate::sink::KafkaConfig) field for field.
    Kafka(crate::sink::KafkaConfig),
    /// Write each message to an outbox table in the same database, once
    /// per message id.
    Outbox {
        /// The table (default `tranche_outbox`, created by tranche).
        table: Option<String>,
    },
    /// Confirm and discard every message, optionally after a fixed delay
    /// per delivery: for measuring the read side alone, or standing in for
    /// a slow destination; see [`NullSink`](crate::sink::NullSink).
    Null {
        /// Milliseconds each delivery waits before it is confirmed
        /// (default 0).
        delay_ms: Option<u64>,
    },
    /// Advance a version column in place (idempotent).
    Update {
        /// Table to update.
        table: String,
        /// Its key column (the source key).
        key_column: String,
        /// The version column, set to `job.version` where lower.
        version_column: String,
    },
}

impl SinkSection {
    /// The cargo feature the chosen broker needs, when this build lacks it.
    pub fn feature_off(&self) -> Option<&'static str> {
        match self {
            SinkSection::Amqp(_) if !cfg!(feature = "amqp") => Some("amqp"),
            SinkSection::Nats(_) if !cfg!(feature = "nats") => Some("nats"),
            SinkSection::Kafka(_) if !cfg!(feature = "kafka") => Some("kafka"),
            _ => None,
        }
    }
}

/// Runtime settings without a job file (the demo, a host): `defaults`,
/// then `TRANCHE_DATABASE_URL` and `TRANCHE_<FIELD>` looked up by `env`,
/// then `flags`; validated, errors naming the field as in a job file's
/// `[runtime]` table (`runtime.page_size`) and where a bad value came from.
pub fn layered_runtime_config(
    defaults: &RuntimeConfig,
    env: impl Fn(&str) -> Option<String>,
    flags: &Flags,
) -> Result<RuntimeConfig, ConfigError> {
    #[derive(Deserialize)]
    struct Settings {
        database_url: crate::model::redact::SecretUrl,
        runtime: RuntimeConfig,
    }
    let base = figment::providers::Serialized::defaults(serde_json::json!({
        "database_url": defaults.database_url.expose(),
        "runtime": defaults,
    }));
    let figment = figment::Figment::from(base)
        .merge(layers::Env::read(env))
        .merge(flags.clone());
    let settings: Settings = figment.extract().map_err(layers::config_error)?;
    let mut c = settings.runtime;
    c.database_url = settings.database_url;
    let origins = layers::Origins::of(&figment);
    c.validate().map_err(|e| as_file_field(e, &origins))?;
    Ok(c)
}

/// What reading a `[sink]` table as its kind's settings says is wrong.
fn sink_error(kind: &str, table: &figment::Figment) -> Option<figment::Error> {
    match kind {
        "amqp" => table.extract::<crate::sink::AmqpConfig>().err(),
        "nats" => table.extract::<crate::sink::NatsConfig>().err(),
        "kafka" => table.extract::<crate::sink::KafkaConfig>().err(),
        _ => None,
    }
}

/// A [`RuntimeConfig::validate`] error named as a job file writes the
/// field.
/// field, saying which variable or flag set it when one did.
fn as_file_field(e: ConfigError, origins: &layers::Origins) -> ConfigError {
    let field = match e.field.as_str() {
        "database_url" => e.field.clone(),
        other => format!("runtime.{other}"),
    };
    match origins.of_field(&field) {
        Some(origin) => ConfigError::new(field, format!("{} ({origin})", e.reason)),
        None => ConfigError::new(field, e.reason),
    }
}

impl JobFile {
    /// Reads a job file with the `TRANCHE_*` variables of the process
    /// environment and `flags` (the binary's `--<setting>` flags, from
    /// [`RUNTIME_SETTINGS`]) layered over it, in that order; not yet
    /// validated.
    pub fn load(path: &Path, flags: &Flags) -> Result<Self, ConfigError> {
        Self::load_with(path, |k| std::env::var(k).ok(), flags)
    }

    /// [`JobFile::load`] with the variables looked up by `env`.
    pub fn load_with(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
        flags: &Flags,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))?;
        Self::layered(&text, Some(path), env, flags)
    }

    /// Parses TOML text alone (no environment, no flags). Unknown fields
    /// are errors, so a typo is not silently ignored.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::layered(text, None, |_| None, &Flags::default())
    }

    fn layered(
        text: &str,
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &Flags,
    ) -> Result<Self, ConfigError> {
        let file = layers::TomlText::parse(text, path)?;
        let figment = figment::Figment::new()
            .merge(file)
            .merge(layers::Env::read(env))
            .merge(flags.clone());
        let mut job: Self = figment.extract().map_err(|e| {
            layers::config_error(layers::refine_tagged(&figment, "sink", e, sink_error))
        })?;
        job.origins = layers::Origins::of(&figment);
        Ok(job)
    }

    /// The runtime configuration, validated; errors name the field as the
    /// file writes it (`runtime.page_size`, `database_url`).
    pub fn runtime_config(&self) -> Result<RuntimeConfig, ConfigError> {
        let mut c = self.runtime.clone();
        c.database_url = self.database_url.clone();
        c.validate().map_err(|e| as_file_field(e, &self.origins))?;
        Ok(c)
    }

    /// The source, validated (names checked, values bound).
    pub fn source(&self) -> Result<Source, ConfigError> {
        let s = &self.source;
        let order = s.order_column.as_deref().unwrap_or(&s.key_column);
        let mut source = Source::new(&s.table, &s.key_column, order)?;
        source.order_kind = s.order_kind;
        source.allow_duplicate_keys = s.allow_duplicate_keys;
        source.allow_sequential_scan = s.allow_sequential_scan;
        source.columns_as_text = s.columns_as_text;
        for (i, c) in s.columns.iter().enumerate() {
            source
                .columns
                .push(Ident::parse(&format!("source.columns[{i}]"), c)?);
        }
        for (i, f) in s.filter.iter().enumerate() {
            let column = Ident::parse(&format!("source.filter[{i}].column"), &f.column)?;
            source.filter.push(Condition {
                column,
                op: f.op,
                value: f.value.clone(),
            });
        }
        Ok(source)
    }

    /// The `[sink] kind = "amqp"` settings, if that is the sink.
    #[cfg(feature = "amqp")]
    fn amqp_config(&self) -> Result<crate::sink::AmqpConfig, ConfigError> {
        let SinkSection::Amqp(c) = &self.sink else {
            return Err(ConfigError::new("sink.kind", "is not amqp"));
        };
        c.validate()?;
        Ok(c.clone())
    }

    /// The `[sink] kind = "kafka"` settings, if that is the sink.
    #[cfg(feature = "kafka")]
    fn kafka_config(&self) -> Result<crate::sink::KafkaConfig, ConfigError> {
        let SinkSection::Kafka(c) = &self.sink else {
            return Err(ConfigError::new("sink.kind", "is not kafka"));
        };
        c.validate()?;
        Ok(c.clone())
    }

    /// The `[sink] kind = "nats"` settings, if that is the sink. A replay
    /// can come a lease (plus a page) after the first publish, which the
    /// stream's duplicate window is checked against.
    #[cfg(feature = "nats")]
    fn nats_config(&self) -> Result<crate::sink::NatsConfig, ConfigError> {
        let SinkSection::Nats(c) = &self.sink else {
            return Err(ConfigError::new("sink.kind", "is not nats"));
        };
        let mut c = c.clone();
        c.replay_within = self.runtime.lease + Duration::from_secs(30);
        c.duplicate_window = c.duplicate_window.max(c.replay_within * 2);
        c.validate()?;
        Ok(c)
    }

    /// Validates everything that can be checked without a database.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::job::validate_job_name(&self.job.name)?;
        if let Some(key) = &self.job.run_key {
            crate::job::validate_run_key(key)?;
        }
        if let Some(schedule) = &self.schedule {
            schedule.schedule()?;
        }
        self.strategy.validate()?;
        self.throttle.validate()?;
        self.runtime_config()?;
        self.source()?;
        if let Some(feature) = self.sink.feature_off() {
            return Err(ConfigError::feature_off("sink.kind", feature));
        }
        if let SinkSection::Update {
            table,
            key_column,
            version_column,
        } = &self.sink
        {
            Ident::parse("sink.table", table)?;
            Ident::parse("sink.key_column", key_column)?;
            Ident::parse("sink.version_column", version_column)?;
        }
        if let SinkSection::Jsonl { path } = &self.sink {
            if path.as_os_str().is_empty() {
                return Err(ConfigError::new("sink.path", "must not be empty"));
            }
        }
        if let SinkSection::Outbox { table: Some(table) } = &self.sink {
            Ident::parse("sink.table", table)?;
        }
        #[cfg(feature = "amqp")]
        if let SinkSection::Amqp(_) = &self.sink {
            self.amqp_config()?.validate()?;
        }
        #[cfg(feature = "nats")]
        if let SinkSection::Nats(_) = &self.sink {
            self.nats_config()?.validate()?;
        }
        #[cfg(feature = "kafka")]
        if let SinkSection::Kafka(_) = &self.sink {
            self.kafka_config()?;
        }
        Ok(())
    }

    /// The job, with its sink opened. The update sink writes through `store`.
    /// Each message carries the row's key, order and extra columns as JSON.
    pub fn job(&self, store: &Store, instance_id: &str) -> Result<Job, ConfigError> {
        let source = self.source()?;
        let sink: Arc<dyn Sink> = match &self.sink {
            SinkSection::Jsonl { path } => {
                let path = JsonLinesSink::instance_path(path, instance_id);
                Arc::new(JsonLinesSink::lazy(&path))
            }
            #[cfg(feature = "amqp")]
            SinkSection::Amqp(_) => Arc::new(crate::sink::AmqpSink::new(self.amqp_config()?)?),
            #[cfg(feature = "nats")]
            SinkSection::Nats(_) => Arc::new(crate::sink::NatsSink::new(self.nats_config()?)?),
            #[cfg(feature = "kafka")]
            SinkSection::Kafka(_) => Arc::new(crate::sink::KafkaSink::new(self.kafka_config()?)?),
            #[cfg(not(feature = "amqp"))]
            SinkSection::Amqp(_) => return Err(ConfigError::feature_off("sink.kind", "amqp")),
            #[cfg(not(feature = "nats"))]
            SinkSection::Nats(_) => return Err(ConfigError::feature_off("sink.kind", "nats")),
            #[cfg(not(feature = "kafka"))]
            SinkSection::Kafka(_) => return Err(ConfigError::feature_off("sink.kind", "kafka")),
            SinkSection::Null { delay_ms } => Arc::new(crate::sink::NullSink::with_delay(
                Duration::from_millis(delay_ms.unwrap_or(0)),
            )),
            SinkSection::Outbox { table } => {
                let sink = OutboxSink::new(store.clone(), &self.job.name);
                Arc::new(match table {
                    Some(table) => sink.with_table(table)?,
                    None => sink,
                })
            }
            SinkSection::Update {
                table,
                key_column,
                version_column,
            } => Arc::new(UpdateSink::new(
                store.clone(),
                UpdateSpec {
                    table: Ident::parse("sink.table", table)?,
                    key_column: Ident::parse("sink.key_column", key_column)?,
                    version_column: Ident::parse("sink.version_column", version_column)?,
                },
            )),
        };
        let name = self.job.name.clone();
        let version = self.job.version;
        let columns = PayloadColumns::new(&self.source.columns);
        let builder = Job::builder(&self.job.name)
            .source(source)
            .strategy(self.strategy)
            .processor(move |row: &SourceRow, _: &Scope| {
                let payload = serde_json::to_vec(&RowPayload {
                    row,
                    columns: &columns,
                })
                .map_err(|e| crate::model::Poison(format!("payload: {e}")))?;
                Ok(Some(Message::new(&name, row.key, version, payload)))
            })
            .sink(sink)
            .throttle(self.throttle.clone())
            .params(serde_json::json!({"version": version, "config": true}));
        match &self.job.run_key {
            Some(key) => builder.run_key(key.clone()),
            None => builder,
        }
        .build()
    }
}

/// The source's extra columns, in the order a configured job's payload
/// names them (by name, as a JSON object's keys are sorted).
struct PayloadColumns {
    names: Vec<String>,
    /// Indexes into the row's columns, sorted by name.
    sorted: Vec<usize>,
}

impl PayloadColumns {
    fn new(names: &[String]) -> Self {
        let mut sorted: Vec<usize> = (0..names.len()).collect();
        sorted.sort_by(|&a, &b| names[a].cmp(&names[b]));
        Self {
            names: names.to_vec(),
            sorted,
        }
    }
}

/// A configured job's message payload,
/// `{"columns": {name: value, ...}, "key": k, "order": o}`, each value in
/// its [`Datum`](crate::model::Datum) form,
/// written straight from the row without building a JSON value first.
struct RowPayload<'a> {
    row: &'a SourceRow,
    columns: &'a PayloadColumns,
}

impl serde::Serialize for RowPayload<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Columns<'a>(&'a RowPayload<'a>);
        impl serde::Serialize for Columns<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let RowPayload { row, columns } = self.0;
                let mut map = s.serialize_map(Some(columns.sorted.len()))?;
                for &i in &columns.sorted {
                    let value = row.columns.get(i).unwrap_or(&crate::model::Datum::Null);
                    map.serialize_entry(&columns.names[i], value)?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("columns", &Columns(self))?;
        map.serialize_entry("key", &self.row.key)?;
        map.serialize_entry("order", &self.row.order)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_payload_is_the_row_as_a_json_object_with_sorted_keys() {
        let columns = PayloadColumns::new(&["zone".into(), "status".into(), "note".into()]);
        use crate::model::Datum;
        let names: Arc<[String]> = vec!["zone".into(), "status".into(), "note".into()].into();
        let row = SourceRow::new(
            7,
            -3,
            names,
            vec![
                Datum::Text("eu \"west\"".into()),
                Datum::Int(3),
                Datum::Null,
            ],
        );
        let bytes = serde_json::to_vec(&RowPayload {
            row: &row,
            columns: &columns,
        })
        .expect("serializes");
        assert_eq!(
            String::from_utf8(bytes).expect("UTF-8"),
            r#"{"columns":{"note":null,"status":3,"zone":"eu \"west\""},"key":7,"order":-3}"#
        );
    }

    const GOOD: &str = r#"
database_url = "sqlite://app.db"
[job]
name = "resend"
[source]
table = "orders"
key_column = "id"
order_column = "placed_at"
columns = ["status"]
filter = [{ column = "status", op = "eq", value = "paid" }, { column = "total", op = "gt", value = 10 }]
[strategy]
kind = "modulo"
modulus = 5
[runtime]
page_size = 200
[sink]
kind = "jsonl"
path = "out.jsonl"
"#;

    #[test]
    fn a_complete_file_parses_with_defaults() {
        let f = JobFile::from_toml(GOOD).unwrap();
        f.validate().unwrap();
        assert_eq!(f.job.version, 1);
        assert_eq!(f.strategy, Strategy::Modulo { modulus: 5 });
        let c = f.runtime_config().unwrap();
        assert_eq!((c.page_size, c.concurrency), (200, 4));
        let s = f.source().unwrap();
        assert_eq!(s.filter.len(), 2);
        assert_eq!(s.filter[1].value, FilterValue::Int(10));
        assert_eq!(s.filter[0].value, FilterValue::Text("paid".into()));
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(&path, GOOD).unwrap();
        let env = |k: &str| match k {
            "TRANCHE_PAGE_SIZE" => Some("300".into()),
            "TRANCHE_CONCURRENCY" => Some("2".into()),
            "TRANCHE_LEASE" => Some("45s".into()),
            "TRANCHE_DATABASE_URL" => Some("sqlite://env.db".into()),
            _ => None,
        };
        let mut flags = Flags::default();
        flags.set("concurrency", "7");
        flags.set("instance_id", "42");
        let f = JobFile::load_with(&path, env, &flags).unwrap();
        let c = f.runtime_config().unwrap();
        assert_eq!((c.page_size, c.concurrency), (300, 7));
        assert_eq!(c.lease, Duration::from_secs(45));
        assert_eq!(c.instance_id.as_deref(), Some("42"), "text stays text");
        assert_eq!(c.database_url.expose(), "sqlite://env.db");

        // An error names the field path, and where the value came from.
        let lots = |k: &str| (k == "TRANCHE_PAGE_SIZE").then(|| "lots".into());
        let err = JobFile::load_with(&path, lots, &Flags::default()).unwrap_err();
        assert_eq!(err.field, "runtime.page_size");
        assert!(err.reason.contains("TRANCHE_PAGE_SIZE"), "{err}");
        let mut flags = Flags::default();
        flags.set("lease", "30");
        let err = JobFile::load_with(&path, |_| None, &flags).unwrap_err();
        assert_eq!(err.field, "runtime.lease");
        assert!(
            err.reason.contains("--lease") && err.reason.contains("unit"),
            "{err}"
        );
        let text = GOOD.replace("[runtime]", "[runtime]\npage_sise = 3");
        let err = JobFile::from_toml(&text).unwrap_err();
        assert_eq!(err.field, "runtime.page_sise", "{err}");
    }

    #[test]
    fn a_bad_setting_names_its_field_and_the_flag_or_variable_that_set_it() {
        let defaults = RuntimeConfig::new("sqlite://x.db");
        let mut flags = Flags::default();
        flags.set("heartbeat", "1s");
        let env = |k: &str| (k == "TRANCHE_LEASE").then(|| "1s".to_owned());
        let err = layered_runtime_config(&defaults, env, &flags).unwrap_err();
        assert_eq!(err.field, "runtime.heartbeat");
        assert!(
            err.reason.contains("--heartbeat, command-line flag"),
            "{err}"
        );
        let err = layered_runtime_config(&defaults, |_| None, &flags).unwrap();
        assert_eq!(err.heartbeat, Duration::from_secs(1));
        // A default at fault is named by its field alone.
        let mut bad = defaults.clone();
        bad.heartbeat = bad.lease;
        let err = layered_runtime_config(&bad, |_| None, &Flags::default()).unwrap_err();
        assert_eq!(err.field, "runtime.heartbeat");
        assert!(
            !err.reason.contains("flag") && !err.reason.contains("variable"),
            "{err}"
        );
    }

    #[test]
    fn every_runtime_field_is_a_setting_and_every_setting_a_field() {
        use figment::Provider as _;
        let fields = figment::Figment::from(figment::providers::Serialized::defaults(
            RuntimeConfig::default(),
        ))
        .data()
        .unwrap()
        .remove(&figment::Profile::Default)
        .unwrap();
        let mut fields: Vec<&str> = fields.keys().map(String::as_str).collect();
        // Optional settings with no default serialize to nothing.
        fields.extend(["instance_id", "application_name"]);
        fields.sort_unstable();
        fields.dedup();
        let mut settings: Vec<&str> = RUNTIME_SETTINGS.iter().map(|s| s.field).collect();
        settings.sort_unstable();
        assert_eq!(fields, settings);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = |from: &str, to: &str| {
            let text = GOOD.replace(from, to);
            JobFile::from_toml(&text).and_then(|f| f.validate().map(|_| f))
        };
        assert_eq!(
            bad("page_size = 200", "page_size = 0").unwrap_err().field,
            "runtime.page_size"
        );
        assert_eq!(
            bad(
                "[runtime]",
                "[runtime]\nlease = \"100ms\"\nheartbeat = \"100ms\""
            )
            .unwrap_err()
            .field,
            "runtime.heartbeat"
        );
        assert_eq!(
            bad("\"placed_at\"", "\"placed_at; --\"").unwrap_err().field,
            "source.order_column"
        );
        assert_eq!(
            bad("column = \"status\", op", "column = \"st atus\", op")
                .unwrap_err()
                .field,
            "source.filter[0].column"
        );
        let typo = bad("page_size", "page_sise").unwrap_err();
        assert!(
            typo.reason.contains("page_sise") && typo.reason.contains("line"),
            "{typo}"
        );
        let op = bad("op = \"eq\"", "op = \"like\"").unwrap_err();
        assert!(op.reason.contains("like"), "{op}");
        let schedule = |body: &str| bad("[sink]", &format!("[schedule]\n{body}\n[sink]"));
        assert_eq!(
            schedule("every = \"1h\"\ncron = \"* * * * *\"")
                .unwrap_err()
                .field,
            "schedule"
        );
        assert_eq!(
            schedule("every = \"soon\"").unwrap_err().field,
            "schedule.every"
        );
        assert_eq!(
            schedule("cron = \"99 * * * *\"").unwrap_err().field,
            "schedule.cron"
        );
        assert_eq!(
            schedule("at = \"tomorrow\"").unwrap_err().field,
            "schedule.at"
        );
        assert!(schedule("at = \"2026-12-01T02:00:00Z\"").is_ok());
        #[cfg(feature = "amqp")]
        {
            let amqp = |url: &str| {
                bad(
                    "kind = \"jsonl\"\npath = \"out.jsonl\"",
                    &format!(
                        "kind = \"amqp\"\nurl = \"{url}\"\nexchange = \"x\"\nrouting_key = \"k\""
                    ),
                )
            };
            assert!(amqp("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
            let e = amqp("http://guest:secret@host/").unwrap_err();
            assert_eq!(e.field, "sink.url");
            assert!(!e.reason.contains("secret"), "{e}");
        }
        // A broker's table is its sink's settings: every field, its
        // durations with their unit, a typo refused by name.
        // (Read, not validated: reading needs no feature.)
        let amqp = |more: &str| {
            JobFile::from_toml(&GOOD.replace(
                "kind = \"jsonl\"\npath = \"out.jsonl\"",
                &format!(
                    "kind = \"amqp\"\nurl = \"amqp://h/%2f\"\nexchange = \"x\"\n\
                     routing_key = \"k\"\n{more}"
                ),
            ))
        };
        let f = amqp("reconnect_for = \"5s\"\nnack_attempts = 2").unwrap();
        #[cfg(not(feature = "amqp"))]
        assert_eq!(
            f.validate().unwrap_err().field,
            "sink.kind",
            "the feature is off"
        );
        let SinkSection::Amqp(c) = &f.sink else {
            panic!("an amqp sink: {:?}", f.sink);
        };
        assert_eq!(
            (c.reconnect_for, c.nack_attempts),
            (Duration::from_secs(5), 2)
        );
        assert_eq!(c.window, 1024, "a default as AmqpConfig::new sets it");
        assert_eq!(amqp("windw = 3").unwrap_err().field, "sink.windw");
        assert_eq!(
            amqp("reconnect_for = 5").unwrap_err().field,
            "sink.reconnect_for"
        );
        #[cfg(feature = "kafka")]
        {
            let kafka = |more: &str| {
                bad(
                    "kind = \"jsonl\"\npath = \"out.jsonl\"",
                    &format!(
                        "kind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"t\"\n{more}"
                    ),
                )
            };
            assert!(
                kafka("delivery_timeout = \"5s\"\nproperties = { \"linger.ms\" = \"0\" }").is_ok()
            );
            assert_eq!(
                kafka("delivery_timeout = \"10ms\"").unwrap_err().field,
                "sink.delivery_timeout"
            );
            let e = kafka("properties = { \"message.timeout.ms\" = \"1000\" }").unwrap_err();
            assert_eq!(e.field, "sink.properties");
            assert!(e.reason.contains("sink.delivery_timeout"), "{e}");
        }
        assert!(bad(
            "kind = \"jsonl\"\npath = \"out.jsonl\"",
            "kind = \"outbox\""
        )
        .is_ok());
        assert_eq!(
            bad(
                "kind = \"jsonl\"\npath = \"out.jsonl\"",
                "kind = \"outbox\"\ntable = \"a b\""
            )
            .unwrap_err()
            .field,
            "sink.table"
        );
        assert_eq!(
            bad("name = \"resend\"", "name = \"resend\"\nrun_key = \"\"")
                .unwrap_err()
                .field,
            "job.run_key"
        );
    }
}

//! Consumers configured from a file, for `tranche consume --config`.
//!
//! ```toml
//! database_url = "postgres://app@db/app"
//!
//! [consume]
//! name = "subscriptions"          # inbox entries and dead letters are kept under it
//! batch_size = 500                # messages per transaction (default 500)
//! linger_ms = 20                  # wait for more once a batch has one (default 20)
//!
//! [from]
//! kind = "amqp"                   # url, queue; declare = false, prefetch = 2000
//! url = "amqp://guest:guest@127.0.0.1:5672/%2f"
//! queue = "subscriptions"
//! # kind = "nats": url, stream, durable; filter_subject, declare = true,
//! #               prefetch = 2000, ack_wait = "30s"
//! # kind = "kafka": brokers = "127.0.0.1:9092", topic, group; prefetch = 2000,
//! #                 instance_id = "updater-a-{n}" (static membership)
//!
//! [apply]
//! kind = "versions"               # table, key_column, version_column
//! table = "subscriptions"
//! key_column = "id"
//! version_column = "version"
//! # kind = "rows": table, key_column, columns = ["name", "qty"]
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{Apply, ConsumerConfig, RowsSpec};
use crate::model::ConfigError;
use crate::model::Ident;
use crate::sink::UpdateSpec;

/// A consumer, as written in a consumer file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConsumeFile {
    /// Database URL (`TRANCHE_DATABASE_URL`, `--db`), shown masked.
    pub database_url: crate::model::redact::SecretUrl,
    /// The consumer's name and batching.
    pub consume: ConsumeSection,
    /// Where messages come from.
    pub from: FromSection,
    /// What each message does to the database.
    pub apply: ApplySection,
}

/// `[consume]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConsumeSection {
    /// The consumer's name.
    pub name: String,
    /// Messages per transaction (default 500).
    pub batch_size: Option<usize>,
    /// Milliseconds to wait for more messages once a batch has its first
    /// (default 20).
    pub linger_ms: Option<u64>,
}

/// `[from]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum FromSection {
    /// A RabbitMQ queue (cargo feature `amqp`).
    Amqp(super::AmqpSourceConfig),
    /// A JetStream durable consumer (cargo feature `nats`).
    Nats(super::NatsSourceConfig),
    /// A Kafka topic read by a consumer group (cargo feature `kafka`).
    Kafka(super::KafkaSourceConfig),
}

impl FromSection {
    /// The cargo feature the chosen broker needs, when this build lacks it.
    pub fn feature_off(&self) -> Option<&'static str> {
        match self {
            FromSection::Amqp(_) if !cfg!(feature = "amqp") => Some("amqp"),
            FromSection::Nats(_) if !cfg!(feature = "nats") => Some("nats"),
            FromSection::Kafka(_) if !cfg!(feature = "kafka") => Some("kafka"),
            _ => None,
        }
    }
}

/// `[apply]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ApplySection {
    /// The version update; see [`Apply::Versions`].
    Versions {
        /// Table to update.
        table: String,
        /// Its key column.
        key_column: String,
        /// The version column.
        version_column: String,
    },
    /// Row operations; see [`Apply::Rows`].
    Rows {
        /// Table to change.
        table: String,
        /// Its unique key column.
        key_column: String,
        /// Columns an operation may set.
        columns: Vec<String>,
    },
}

impl ConsumeFile {
    /// Reads and parses a consumer file (not yet validated).
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// Parses TOML text; unknown fields are errors.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| crate::config::toml_error("consumer file", text, &e))
    }

    /// Applies `TRANCHE_DATABASE_URL` when `lookup` finds it.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(url) = lookup("TRANCHE_DATABASE_URL") {
            self.database_url = url.into();
        }
    }

    /// The consumer's settings, validated.
    pub fn consumer_config(&self) -> Result<ConsumerConfig, ConfigError> {
        let apply = match &self.apply {
            ApplySection::Versions {
                table,
                key_column,
                version_column,
            } => Apply::Versions(UpdateSpec {
                table: Ident::parse("apply.table", table)?,
                key_column: Ident::parse("apply.key_column", key_column)?,
                version_column: Ident::parse("apply.version_column", version_column)?,
            }),
            ApplySection::Rows {
                table,
                key_column,
                columns,
            } => Apply::Rows(RowsSpec {
                table: Ident::parse("apply.table", table)?,
                key_column: Ident::parse("apply.key_column", key_column)?,
                columns: columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Ident::parse(&format!("apply.columns[{i}]"), c))
                    .collect::<Result<_, _>>()?,
            }),
        };
        let mut config = ConsumerConfig::new(&self.consume.name, apply);
        if let Some(n) = self.consume.batch_size {
            config.batch_size = n;
        }
        if let Some(ms) = self.consume.linger_ms {
            config.linger = Duration::from_millis(ms);
        }
        config.validate()?;
        Ok(config)
    }

    /// The RabbitMQ source's settings, when `[from] kind = "amqp"`.
    pub fn amqp_source(&self) -> Option<Result<super::AmqpSourceConfig, ConfigError>> {
        let FromSection::Amqp(c) = &self.from else {
            return None;
        };
        Some(
            self.check_prefetch(c.prefetch.into())
                .and(c.validate())
                .map(|_| c.clone()),
        )
    }

    /// The JetStream source's settings, when `[from] kind = "nats"`.
    pub fn nats_source(&self) -> Option<Result<super::NatsSourceConfig, ConfigError>> {
        let FromSection::Nats(c) = &self.from else {
            return None;
        };
        Some(
            self.check_prefetch(c.prefetch)
                .and(c.validate())
                .map(|_| c.clone()),
        )
    }

    /// The Kafka source's settings, when `[from] kind = "kafka"`.
    pub fn kafka_source(&self) -> Option<Result<super::KafkaSourceConfig, ConfigError>> {
        let FromSection::Kafka(c) = &self.from else {
            return None;
        };
        Some(c.validate().map(|_| c.clone()))
    }

    /// A prefetch below the batch size would make every batch wait out its
    /// linger: refuse it.
    fn check_prefetch(&self, prefetch: usize) -> Result<(), ConfigError> {
        let batch = self.consume.batch_size.unwrap_or(500);
        if prefetch < batch {
            return Err(ConfigError::new(
                "from.prefetch",
                format!("{prefetch} is below consume.batch_size ({batch})"),
            ));
        }
        Ok(())
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::store::DatabaseUrl::parse(self.database_url.expose())?;
        self.consumer_config()?;
        if let Some(feature) = self.from.feature_off() {
            return Err(ConfigError::feature_off("from.kind", feature));
        }
        for checked in [
            self.amqp_source().map(|c| c.map(drop)),
            self.nats_source().map(|c| c.map(drop)),
            self.kafka_source().map(|c| c.map(drop)),
        ]
        .into_iter()
        .flatten()
        {
            checked?;
        }
        Ok(())
    }
}

// The example files name a RabbitMQ source.
#[cfg(all(test, feature = "amqp"))]
mod tests {
    use super::*;

    const FILE: &str = r#"
database_url = "sqlite://x.db"
[consume]
name = "subs"
batch_size = 100
[from]
kind = "amqp"
url = "amqp://127.0.0.1:5672/%2f"
queue = "q"
[apply]
kind = "rows"
table = "items"
key_column = "id"
columns = ["name"]
"#;

    #[test]
    fn a_file_parses_and_errors_name_the_field() {
        let file = ConsumeFile::from_toml(FILE).unwrap();
        file.validate().unwrap();
        assert_eq!(file.consumer_config().unwrap().batch_size, 100);
        let cases = [
            ("name = \"subs\"", "name = \"a b\"", "consume.name"),
            ("batch_size = 100", "batch_size = 0", "consume.batch_size"),
            ("batch_size = 100", "batch_size = 5000", "from.prefetch"),
            ("queue = \"q\"", "queue = \"\"", "from.queue"),
            ("url = \"amqp", "url = \"http", "from.url"),
            (
                "columns = [\"name\"]",
                "columns = [\"na me\"]",
                "apply.columns[0]",
            ),
            (
                "columns = [\"name\"]",
                "columns = [\"id\"]",
                "apply.columns",
            ),
            ("table = \"items\"", "table = \"a;b\"", "apply.table"),
        ];
        for (from, to, field) in cases {
            let text = FILE.replace(from, to);
            let err = ConsumeFile::from_toml(&text)
                .and_then(|f| f.validate())
                .unwrap_err();
            assert_eq!(err.field, field, "{to}: {err}");
        }
        let err =
            ConsumeFile::from_toml(&FILE.replace("[apply]", "[apply]\nextra = 1")).unwrap_err();
        assert!(err.reason.contains("extra"), "{err}");
    }
}

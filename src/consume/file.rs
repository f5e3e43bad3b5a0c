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
//! #               prefetch = 2000, ack_wait_ms = 30000
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
    /// A RabbitMQ queue (cargo feature `amqp`); see
    /// [`AmqpSourceConfig`](super::AmqpSourceConfig).
    Amqp {
        /// `amqp://user:pass@host:5672/vhost`, shown masked.
        url: crate::model::redact::SecretUrl,
        /// The queue.
        queue: String,
        /// Declare the queue when missing (default false).
        declare: Option<bool>,
        /// Unacknowledged messages, at most (default 2,000).
        prefetch: Option<u16>,
    },
    /// A JetStream durable consumer (cargo feature `nats`); see
    /// [`NatsSourceConfig`](super::NatsSourceConfig).
    Nats {
        /// `nats://host:4222`, shown masked.
        url: crate::model::redact::SecretUrl,
        /// The stream.
        stream: String,
        /// The durable consumer's name.
        durable: String,
        /// Only this subject (default: all of the stream's).
        filter_subject: Option<String>,
        /// Create the durable consumer when missing (default true).
        declare: Option<bool>,
        /// Unacknowledged messages, at most (default 2,000).
        prefetch: Option<usize>,
        /// Milliseconds before an unacknowledged message comes again
        /// (default 30,000).
        ack_wait_ms: Option<u64>,
    },
    /// A Kafka topic in a consumer group (cargo feature `kafka`); see
    /// [`KafkaSourceConfig`](super::KafkaSourceConfig).
    Kafka {
        /// `host:port[,host:port...]`.
        brokers: String,
        /// The topic.
        topic: String,
        /// The consumer group.
        group: String,
        /// Messages fetched ahead per partition, at most (default 2,000).
        prefetch: Option<usize>,
        /// This consumer's static identity in the group
        /// (`group.instance.id`); `{n}` is replaced by the consumer's index
        /// within the process.
        instance_id: Option<String>,
    },
}

impl FromSection {
    /// The cargo feature the chosen broker needs, when this build lacks it.
    pub fn feature_off(&self) -> Option<&'static str> {
        match self {
            FromSection::Amqp { .. } if !cfg!(feature = "amqp") => Some("amqp"),
            FromSection::Nats { .. } if !cfg!(feature = "nats") => Some("nats"),
            FromSection::Kafka { .. } if !cfg!(feature = "kafka") => Some("kafka"),
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
    #[cfg(feature = "amqp")]
    pub fn amqp_source(&self) -> Option<Result<super::AmqpSourceConfig, ConfigError>> {
        let FromSection::Amqp {
            url,
            queue,
            declare,
            prefetch,
        } = &self.from
        else {
            return None;
        };
        let mut c = super::AmqpSourceConfig::new(url.expose(), queue);
        c.declare = declare.unwrap_or(c.declare);
        c.prefetch = prefetch.unwrap_or(c.prefetch);
        Some(
            self.check_prefetch(c.prefetch.into())
                .and(c.validate())
                .map(|_| c),
        )
    }

    /// The JetStream source's settings, when `[from] kind = "nats"`.
    #[cfg(feature = "nats")]
    pub fn nats_source(&self) -> Option<Result<super::NatsSourceConfig, ConfigError>> {
        let FromSection::Nats {
            url,
            stream,
            durable,
            filter_subject,
            declare,
            prefetch,
            ack_wait_ms,
        } = &self.from
        else {
            return None;
        };
        let mut c = super::NatsSourceConfig::new(url.expose(), stream, durable);
        c.filter_subject.clone_from(filter_subject);
        c.declare = declare.unwrap_or(c.declare);
        c.prefetch = prefetch.unwrap_or(c.prefetch);
        if let Some(ms) = ack_wait_ms {
            c.ack_wait = Duration::from_millis(*ms);
        }
        Some(self.check_prefetch(c.prefetch).and(c.validate()).map(|_| c))
    }

    /// The Kafka source's settings, when `[from] kind = "kafka"`.
    #[cfg(feature = "kafka")]
    pub fn kafka_source(&self) -> Option<Result<super::KafkaSourceConfig, ConfigError>> {
        let FromSection::Kafka {
            brokers,
            topic,
            group,
            prefetch,
            instance_id,
        } = &self.from
        else {
            return None;
        };
        let mut c = super::KafkaSourceConfig::new(brokers, topic, group);
        c.prefetch = prefetch.unwrap_or(c.prefetch);
        c.instance_id.clone_from(instance_id);
        Some(c.validate().map(|_| c))
    }

    /// A prefetch below the batch size would make every batch wait out its
    /// linger: refuse it.
    #[cfg(any(feature = "amqp", feature = "nats"))]
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
        #[cfg(feature = "amqp")]
        if let Some(c) = self.amqp_source() {
            c?;
        }
        #[cfg(feature = "nats")]
        if let Some(c) = self.nats_source() {
            c?;
        }
        #[cfg(feature = "kafka")]
        if let Some(c) = self.kafka_source() {
            c?;
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

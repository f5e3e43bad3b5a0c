//! The broker sources' settings: plain data, in every build (a consumer
//! file's `[from]` table is one of them, whichever features this build
//! has), each deserialized field for field from the file, with the defaults
//! of its `new`. The sources themselves are behind their cargo features.

use std::time::Duration;

use serde::Deserialize;

use crate::model::ConfigError;
use crate::sink::settings::{check_brokers, check_topic_name};

/// Which queue a `AmqpSource` (feature `amqp`) reads, and how much it holds unacknowledged.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AmqpSourceConfig {
    /// Broker URL, `amqp://user:pass@host:5672/vhost` (`%2f` for `/`).
    pub url: crate::model::redact::SecretUrl,
    /// The queue to consume.
    pub queue: String,
    /// Declare the queue (durable) when it is missing (default false: it
    /// must exist, as the sink or your topology declared it).
    #[serde(default)]
    pub declare: bool,
    /// Messages delivered and not yet acknowledged, at most (the channel's
    /// QoS; default 2,000). Keep it at least the consumer's batch size.
    #[serde(default = "prefetch_u16")]
    pub prefetch: u16,
}

impl AmqpSourceConfig {
    /// Consumes `queue` on the broker at `url`, with the defaults above.
    pub fn new(url: &str, queue: &str) -> Self {
        Self {
            url: url.into(),
            queue: queue.to_owned(),
            declare: false,
            prefetch: 2000,
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.expose().starts_with("amqp://") || self.url.expose().starts_with("amqps://"))
        {
            return Err(ConfigError::new(
                "from.url",
                format!("{} must start with amqp:// or amqps://", self.url),
            ));
        }
        if self.queue.is_empty() || self.queue.len() > 255 {
            return Err(ConfigError::new("from.queue", "must be 1 to 255 bytes"));
        }
        if self.prefetch == 0 {
            return Err(ConfigError::new("from.prefetch", "must be at least 1"));
        }
        Ok(())
    }
}

/// Which durable consumer a `NatsSource` (feature `nats`) reads, and how much it holds
/// unacknowledged.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsSourceConfig {
    /// Server URL, `nats://host:4222`.
    pub url: crate::model::redact::SecretUrl,
    /// The stream holding the messages (it must exist).
    pub stream: String,
    /// The durable consumer's name; consumers sharing it share the work.
    pub durable: String,
    /// Only messages of this subject (default: every subject of the stream).
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// Create the durable consumer when it is missing (default true).
    #[serde(default = "yes")]
    pub declare: bool,
    /// Messages delivered and not yet acknowledged, at most, across
    /// everyone sharing the durable consumer (its `max_ack_pending`;
    /// default 2,000).
    #[serde(default = "prefetch")]
    pub prefetch: usize,
    /// How long the server waits for an acknowledgement before it delivers
    /// a message again (default 30 s); keep it above a batch's time.
    #[serde(default = "half_minute", with = "crate::model::duration::serde_text")]
    pub ack_wait: Duration,
}

impl NatsSourceConfig {
    /// Reads the durable consumer `durable` of `stream` on the server at
    /// `url`, with the defaults above.
    pub fn new(url: &str, stream: &str, durable: &str) -> Self {
        Self {
            url: url.into(),
            stream: stream.to_owned(),
            durable: durable.to_owned(),
            filter_subject: None,
            declare: true,
            prefetch: 2000,
            ack_wait: Duration::from_secs(30),
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.expose().starts_with("nats://") || self.url.expose().starts_with("tls://")) {
            return Err(ConfigError::new(
                "from.url",
                format!("{} must start with nats:// or tls://", self.url),
            ));
        }
        let plain = |v: &str| {
            !v.is_empty()
                && v.chars()
                    .all(|c| !c.is_whitespace() && !matches!(c, '.' | '*' | '>'))
        };
        if !plain(&self.stream) {
            return Err(ConfigError::new(
                "from.stream",
                "must be non-empty without spaces, '.', '*' or '>'",
            ));
        }
        if !plain(&self.durable) {
            return Err(ConfigError::new(
                "from.durable",
                "must be non-empty without spaces, '.', '*' or '>'",
            ));
        }
        if self.prefetch == 0 {
            return Err(ConfigError::new("from.prefetch", "must be at least 1"));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(ConfigError::new("from.ack_wait", "must be at least 1 s"));
        }
        Ok(())
    }
}

/// Which topic and group a `KafkaSource` (feature `kafka`) reads, and how much it fetches
/// ahead.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// The consumer group: consumers sharing it share the topic's
    /// partitions, and its committed offsets are where a restart resumes.
    pub group: String,
    /// Messages fetched ahead per partition, at most (librdkafka's
    /// `queued.min.messages`; default 2,000).
    #[serde(default = "prefetch")]
    pub prefetch: usize,
    /// How long the group waits for a silent member before giving its
    /// partitions to the others (default 10 s).
    #[serde(default = "ten_seconds", with = "crate::model::duration::serde_text")]
    pub session_timeout: Duration,
    /// A stable identity in the group (`group.instance.id`, static
    /// membership): a consumer restarted under the same one takes its
    /// predecessor's partitions at once instead of after its session times
    /// out. Give each consumer of the group its own.
    #[serde(default)]
    pub instance_id: Option<String>,
}

impl KafkaSourceConfig {
    /// Reads `topic` as a member of `group`, with the defaults above.
    pub fn new(brokers: &str, topic: &str, group: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            prefetch: 2000,
            session_timeout: Duration::from_secs(10),
            instance_id: None,
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_brokers("from.brokers", &self.brokers)?;
        check_topic_name("from.topic", &self.topic)?;
        if self.group.is_empty() {
            return Err(ConfigError::new("from.group", "must not be empty"));
        }
        if self.prefetch == 0 {
            return Err(ConfigError::new("from.prefetch", "must be at least 1"));
        }
        if self.instance_id.as_ref().is_some_and(|id| id.is_empty()) {
            return Err(ConfigError::new("from.instance_id", "must not be empty"));
        }
        Ok(())
    }
}

// Defaults of the settings a file may leave out, as `new` sets them.
fn yes() -> bool {
    true
}
fn prefetch() -> usize {
    2000
}
fn prefetch_u16() -> u16 {
    2000
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn half_minute() -> Duration {
    Duration::from_secs(30)
}

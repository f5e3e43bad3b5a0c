//! The broker sinks' settings: plain data, in every build (a job file's
//! `[sink]` table is one of them, whichever features this build has), each
//! deserialized field for field from the file, with the defaults of its
//! `new`. The sinks themselves are behind their cargo features.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::model::ConfigError;

/// Where and how the RabbitMQ sink publishes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AmqpConfig {
    /// Broker URL, `amqp://user:pass@host:5672/vhost` (`%2f` for `/`).
    pub url: crate::model::redact::SecretUrl,
    /// Exchange to publish to (a durable direct exchange when declared);
    /// empty for the default exchange, which routes by queue name.
    pub exchange: String,
    /// Routing key of every message.
    pub routing_key: String,
    /// Durable queue bound to the exchange with the routing key, if any.
    #[serde(default)]
    pub queue: Option<String>,
    /// Declare the exchange, queue and binding (default true); when false
    /// they are only checked to exist (passive declarations).
    #[serde(default = "yes")]
    pub declare: bool,
    /// Messages published and not yet confirmed, at most (default 1024):
    /// confirmations are pipelined within this window.
    #[serde(default = "window")]
    pub window: usize,
    /// How long a lost connection is retried within one delivery before it
    /// fails as retryable (default 60 s).
    #[serde(default = "minute", with = "crate::model::duration::serde_text")]
    pub reconnect_for: Duration,
    /// Rounds of republishing negatively acknowledged messages before the
    /// delivery fails as retryable (default 5).
    #[serde(default = "nack_attempts")]
    pub nack_attempts: u32,
}

impl AmqpConfig {
    /// Publishes to `exchange` with `routing_key` on the broker at `url`,
    /// with the defaults above.
    pub fn new(url: &str, exchange: &str, routing_key: &str) -> Self {
        Self {
            url: url.into(),
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            queue: None,
            declare: true,
            window: 1024,
            reconnect_for: Duration::from_secs(60),
            nack_attempts: 5,
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.expose().starts_with("amqp://") || self.url.expose().starts_with("amqps://"))
        {
            return Err(ConfigError::new(
                "sink.url",
                format!("{} must start with amqp:// or amqps://", self.url),
            ));
        }
        let short = |field: &str, v: &str| {
            if v.len() > 255 {
                Err(ConfigError::new(field, "must be at most 255 bytes"))
            } else {
                Ok(())
            }
        };
        short("sink.exchange", &self.exchange)?;
        short("sink.routing_key", &self.routing_key)?;
        if let Some(q) = &self.queue {
            if q.is_empty() {
                return Err(ConfigError::new("sink.queue", "must not be empty"));
            }
            short("sink.queue", q)?;
        }
        if self.exchange.is_empty() && self.queue.is_some() {
            return Err(ConfigError::new(
                "sink.queue",
                "cannot be bound to the default exchange; name an exchange, or set \
                 routing_key to the queue's name",
            ));
        }
        if self.window == 0 {
            return Err(ConfigError::new("sink.window", "must be at least 1"));
        }
        if self.nack_attempts == 0 {
            return Err(ConfigError::new("sink.nack_attempts", "must be at least 1"));
        }
        Ok(())
    }
}

/// Where and how the JetStream sink publishes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsConfig {
    /// Server URL, `nats://host:4222`.
    pub url: crate::model::redact::SecretUrl,
    /// Stream that stores the subject.
    pub stream: String,
    /// Subject every message is published to.
    pub subject: String,
    /// Create the stream (file storage, the subject, `duplicate_window`)
    /// when it does not exist (default true); when false it must exist.
    #[serde(default = "yes")]
    pub declare: bool,
    /// The duplicate window of a stream this sink creates (default 2 min).
    #[serde(default = "two_minutes", with = "crate::model::duration::serde_text")]
    pub duplicate_window: Duration,
    /// How long after a first publish a replay may come: the lease plus a
    /// page's time. A stream whose duplicate window is shorter gets a
    /// warning, since replays outside it are stored twice (default 60 s).
    #[serde(skip, default = "minute")]
    pub replay_within: Duration,
    /// Publishes awaiting their acknowledgement, at most (default 1024).
    #[serde(default = "window")]
    pub window: usize,
    /// How long one publish waits for its acknowledgement before it is
    /// published again (default 5 s).
    #[serde(default = "five_seconds", with = "crate::model::duration::serde_text")]
    pub ack_timeout: Duration,
    /// How long lost acknowledgements and an unreachable server are retried
    /// within one delivery before it fails as retryable (default 60 s).
    #[serde(default = "minute", with = "crate::model::duration::serde_text")]
    pub reconnect_for: Duration,
}

impl NatsConfig {
    /// Publishes to `subject`, stored by `stream`, on the server at `url`.
    pub fn new(url: &str, stream: &str, subject: &str) -> Self {
        Self {
            url: url.into(),
            stream: stream.to_owned(),
            subject: subject.to_owned(),
            declare: true,
            duplicate_window: Duration::from_secs(120),
            replay_within: Duration::from_secs(60),
            window: 1024,
            ack_timeout: Duration::from_secs(5),
            reconnect_for: Duration::from_secs(60),
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.expose().starts_with("nats://") || self.url.expose().starts_with("tls://")) {
            return Err(ConfigError::new(
                "sink.url",
                format!("{} must start with nats:// or tls://", self.url),
            ));
        }
        let name_ok = !self.stream.is_empty()
            && self
                .stream
                .chars()
                .all(|c| !c.is_whitespace() && !matches!(c, '.' | '*' | '>'));
        if !name_ok {
            return Err(ConfigError::new(
                "sink.stream",
                format!(
                    "{:?} must be non-empty without spaces, '.', '*' or '>'",
                    self.stream
                ),
            ));
        }
        if self.subject.is_empty() || self.subject.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "sink.subject",
                "must be non-empty without spaces",
            ));
        }
        if self.window == 0 {
            return Err(ConfigError::new("sink.window", "must be at least 1"));
        }
        if self.ack_timeout.is_zero() {
            return Err(ConfigError::new("sink.ack_timeout", "must be positive"));
        }
        Ok(())
    }
}

/// Where and how the Kafka sink produces. Its `Debug` masks the values of
/// properties that hold secrets (`sasl.password`, `ssl.key.password`...).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Topic every message goes to.
    pub topic: String,
    /// Create the topic when it is missing (default true), with
    /// `partitions` partitions; when false it must exist.
    #[serde(default = "yes")]
    pub declare: bool,
    /// Partitions of a topic this sink creates (default 3).
    #[serde(default = "partitions")]
    pub partitions: i32,
    /// How long the producer keeps retrying one message before its delivery
    /// fails as retryable (librdkafka's `message.timeout.ms`; default 60 s).
    #[serde(default = "minute", with = "crate::model::duration::serde_text")]
    pub delivery_timeout: Duration,
    /// Further librdkafka producer properties (`compression.type`,
    /// `linger.ms`, `batch.num.messages`, security settings...), applied
    /// over the sink's own; the idempotence and acknowledgement settings
    /// cannot be weakened, and the delivery timeout is set by
    /// `delivery_timeout` alone.
    #[serde(default, deserialize_with = "properties")]
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let secret = ["password", "secret", "token", "private"]
                    .iter()
                    .any(|word| k.to_ascii_lowercase().contains(word))
                    || k.ends_with(".key.pem");
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("declare", &self.declare)
            .field("partitions", &self.partitions)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("properties", &properties)
            .finish()
    }
}

impl KafkaConfig {
    /// Produces to `topic` through the brokers `brokers`, with the defaults
    /// above.
    pub fn new(brokers: &str, topic: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            declare: true,
            partitions: 3,
            delivery_timeout: Duration::from_secs(60),
            properties: Vec::new(),
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_brokers("sink.brokers", &self.brokers)?;
        check_topic_name("sink.topic", &self.topic)?;
        if self.partitions < 1 {
            return Err(ConfigError::new("sink.partitions", "must be at least 1"));
        }
        for (key, _) in &self.properties {
            if matches!(
                key.as_str(),
                "enable.idempotence" | "acks" | "request.required.acks" | "bootstrap.servers"
            ) {
                return Err(ConfigError::new(
                    "sink.properties",
                    format!("{key} is set by the sink and cannot be overridden"),
                ));
            }
            if matches!(key.as_str(), "message.timeout.ms" | "delivery.timeout.ms") {
                return Err(ConfigError::new(
                    "sink.properties",
                    format!("{key} is the sink's delivery timeout: set sink.delivery_timeout"),
                ));
            }
        }
        if self.delivery_timeout < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "sink.delivery_timeout",
                "must be at least \"1s\"",
            ));
        }
        Ok(())
    }
}

/// `host:port[,host:port...]`, without a scheme.
pub(crate) fn check_brokers(field: &str, brokers: &str) -> Result<(), ConfigError> {
    let brokers = brokers.strip_prefix("kafka://").unwrap_or(brokers);
    let ok = !brokers.is_empty()
        && brokers.split(',').all(|b| {
            b.rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{brokers:?} is not host:port[,host:port...]"),
        ))
    }
}

/// Kafka's topic name rule: 1 to 249 of letters, digits, '.', '_' and '-'.
pub(crate) fn check_topic_name(field: &str, topic: &str) -> Result<(), ConfigError> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{topic:?} must be 1 to 249 letters, digits, '.', '_' or '-'"),
        ))
    }
}

/// librdkafka properties written as a table, `{ "linger.ms" = "0" }`.
fn properties<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let map = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    Ok(map.into_iter().collect())
}

// Defaults of the settings a file may leave out, as `new` sets them.
fn yes() -> bool {
    true
}
fn window() -> usize {
    1024
}
fn nack_attempts() -> u32 {
    5
}
fn partitions() -> i32 {
    3
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn minute() -> Duration {
    Duration::from_secs(60)
}
fn two_minutes() -> Duration {
    Duration::from_secs(120)
}

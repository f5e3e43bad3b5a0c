//! The Kafka sink (cargo feature `kafka`).

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::{Delivery, KafkaConfig, Message, Sink, SinkError};
use crate::model::ConfigError;
use crate::model::Redacted;

impl KafkaConfig {
    /// The brokers as librdkafka's `bootstrap.servers` takes them (a
    /// `kafka://` prefix dropped).
    pub fn bootstrap_servers(&self) -> &str {
        bootstrap(&self.brokers)
    }

    /// The producer settings [`KafkaSink`] uses (idempotence, `acks=all`,
    /// the delivery timeout, a 5 ms linger, then `properties`), for a
    /// client of the host's own measured or run beside the sink.
    pub fn producer_config(&self) -> ClientConfig {
        producer_config(self)
    }
}

/// Runs `fetch` (a blocking metadata request about one topic) off the async
/// threads: `Err((reason, retryable))` when the brokers cannot be asked
/// (retryable) or the topic is missing or refused (not).
pub(crate) async fn check_topic(
    fetch: impl FnOnce() -> rdkafka::error::KafkaResult<rdkafka::metadata::Metadata> + Send + 'static,
) -> Result<(), (String, bool)> {
    let metadata = tokio::task::spawn_blocking(fetch)
        .await
        .map_err(|e| (e.to_string(), false))?
        .map_err(|e| (e.to_string(), true))?;
    match metadata.topics().first().and_then(|t| t.error()) {
        None => Ok(()),
        Some(e) => Err((format!("{:?}", RDKafkaErrorCode::from(e)), false)),
    }
}

/// The bootstrap list librdkafka takes (a `kafka://` prefix dropped).
pub(crate) fn bootstrap(brokers: &str) -> &str {
    brokers.strip_prefix("kafka://").unwrap_or(brokers)
}

/// Produces each message to a Kafka topic with an idempotent producer
/// (`enable.idempotence`, so `acks=all` and ordered, de-duplicated retries
/// within a producer session). The row key is the message key, so one key's
/// messages land on one partition, in order; the deterministic id travels
/// in the `message-id` header for consumers to de-duplicate replays.
///
/// A delivery returns only once every message of the batch has its delivery
/// report; they are produced together and awaited together. A failed report
/// (the broker unreachable past `delivery_timeout`) fails the delivery as
/// retryable, and the page is produced again with the same ids.
pub struct KafkaSink {
    config: KafkaConfig,
    producer: FutureProducer,
    connected: tokio::sync::OnceCell<()>,
}

impl KafkaSink {
    /// A sink for `config` (validated); the producer connects lazily.
    pub fn new(config: KafkaConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let producer = producer_config(&config)
            .create()
            .map_err(|e| ConfigError::new("sink.brokers", e.to_string()))?;
        Ok(Self {
            config,
            producer,
            connected: tokio::sync::OnceCell::new(),
        })
    }

    fn fail(
        &self,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        retryable: bool,
    ) -> SinkError {
        let cause = Redacted::with_context(
            format!("topic {} ({})", self.config.topic, self.config.brokers),
            e,
        );
        if retryable {
            SinkError::retryable("kafka", cause)
        } else {
            SinkError::fatal("kafka", cause)
        }
    }

    /// Connects now and creates (or checks) the topic, so that an
    /// unreachable broker or a missing topic fails before a run starts
    /// (otherwise the first delivery does this).
    pub async fn connect(&self) -> Result<(), SinkError> {
        self.connected
            .get_or_try_init(|| self.topic())
            .await
            .map(|_| ())
    }

    async fn topic(&self) -> Result<(), SinkError> {
        let c = &self.config;
        if c.declare {
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                .set("bootstrap.servers", bootstrap(&c.brokers))
                .create()
                .map_err(|e| self.fail(e, false))?;
            let topic = NewTopic::new(&c.topic, c.partitions, TopicReplication::Fixed(1));
            let results = admin
                .create_topics(
                    [&topic],
                    &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
                )
                .await
                .map_err(|e| self.fail(e, true))?;
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => return Err(self.fail(code, false)),
                }
            }
        }
        let producer = self.producer.clone();
        let topic = c.topic.clone();
        check_topic(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
        })
        .await
        .map_err(|(reason, retryable)| self.fail(reason, retryable))
    }
}

/// The producer's librdkafka settings: the sink's own, then the user's
/// `properties` over them (validation kept those from weakening the
/// sink's guarantees).
pub(crate) fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", bootstrap(&config.brokers))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            config.delivery_timeout.as_millis().to_string(),
        )
        .set("linger.ms", "5");
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

#[async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        "kafka"
    }

    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        self.connect().await?;
        let keys: Vec<String> = batch.iter().map(|m| m.key.to_string()).collect();
        // join_all polls in order, so messages are queued in batch order.
        let reports = futures::future::join_all(batch.iter().zip(&keys).map(|(m, key)| {
            let record = FutureRecord::to(&self.config.topic)
                .key(key.as_str())
                .payload(&m.payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "message-id",
                    value: Some(m.id.as_str()),
                }));
            self.producer
                .send(record, Timeout::After(self.config.delivery_timeout))
        }))
        .await;
        let mut failed = 0usize;
        let mut first: Option<KafkaError> = None;
        for report in reports {
            if let Err((e, _)) = report {
                failed += 1;
                first.get_or_insert(e);
            }
        }
        match first {
            None => Ok(Delivery {
                confirmed: batch.len() as u64,
                duplicates: 0,
            }),
            Some(e) => {
                let permanent = matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition
                            | RDKafkaErrorCode::UnknownTopic
                            | RDKafkaErrorCode::MessageSizeTooLarge
                            | RDKafkaErrorCode::TopicAuthorizationFailed
                            | RDKafkaErrorCode::InvalidTopic
                    )
                );
                Err(self.fail(
                    format!("{failed} of {} messages not delivered: {e}", batch.len()),
                    !permanent,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_secret_properties() {
        let mut c = KafkaConfig::new("k:9092", "t");
        c.properties = vec![
            ("sasl.password".into(), "Pq7Zx9Kw".into()),
            ("linger.ms".into(), "5".into()),
        ];
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("Pq7Zx9Kw") && shown.contains("linger.ms"),
            "{shown}"
        );
    }

    #[test]
    fn properties_apply_over_the_sinks_own_but_never_weaken_it() {
        let mut config = KafkaConfig::new("127.0.0.1:9092", "orders");
        config.properties = vec![
            ("linger.ms".into(), "0".into()),
            ("compression.type".into(), "lz4".into()),
        ];
        config.validate().unwrap();
        let client = producer_config(&config);
        assert_eq!(client.get("linger.ms"), Some("0"), "the user's value wins");
        assert_eq!(client.get("compression.type"), Some("lz4"));
        assert_eq!(client.get("enable.idempotence"), Some("true"));
        assert_eq!(client.get("acks"), Some("all"));
        assert_eq!(client.get("message.timeout.ms"), Some("60000"));
        assert_eq!(
            producer_config(&KafkaConfig::new("127.0.0.1:9092", "orders")).get("linger.ms"),
            Some("5")
        );
        for key in [
            "acks",
            "enable.idempotence",
            "message.timeout.ms",
            "delivery.timeout.ms",
        ] {
            config.properties = vec![(key.into(), "1".into())];
            let e = config.validate().unwrap_err();
            assert_eq!(e.field, "sink.properties", "{key}");
            assert!(e.to_string().contains(key), "{e}");
        }
    }
}

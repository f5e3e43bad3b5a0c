//! Consuming a Kafka topic in a consumer group (cargo feature `kafka`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use super::{Inbound, InboundError, Incoming, KafkaSourceConfig};
use crate::error_text::Chain;
use crate::model::ConfigError;
use crate::model::Redacted;
use crate::sink::kafka::{bootstrap, check_topic};

/// Reads a Kafka topic as a member of a consumer group, without automatic
/// commits: a batch's offsets are committed (synchronously) after its
/// database commit. One partition is read by one member, in order, so one
/// key's messages are applied in order. After a crash or a rebalance the
/// partition is read again from the last committed offset, and what was
/// applied already changes nothing.
pub struct KafkaSource {
    config: KafkaSourceConfig,
    consumer: Arc<StreamConsumer<Logged>>,
}

/// Logs rebalances and librdkafka's own messages through `tracing`.
struct Logged;

impl rdkafka::ClientContext for Logged {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(facility = fac, "librdkafka: {message}")
            }
            L::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
            _ => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Logged {
    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        let partitions = |l: &TopicPartitionList| {
            l.elements()
                .iter()
                .map(|e| e.partition().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match rebalance {
            Rebalance::Assign(l) => {
                tracing::info!(partitions = %partitions(l), "kafka: partitions assigned")
            }
            Rebalance::Revoke(l) => {
                tracing::info!(partitions = %partitions(l), "kafka: partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %Chain(&e), "kafka: rebalance failed"),
        }
    }
}

/// Acknowledges one message: its partition and offset.
#[derive(Clone, Copy, Debug)]
pub struct KafkaAck {
    partition: i32,
    offset: i64,
}

impl KafkaSource {
    /// A source for `config` (validated), subscribed to its topic.
    pub fn new(config: KafkaSourceConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut client = ClientConfig::new();
        if let Some(id) = &config.instance_id {
            client.set("group.instance.id", id);
        }
        let consumer: StreamConsumer<Logged> = client
            .set("bootstrap.servers", bootstrap(&config.brokers))
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("queued.min.messages", config.prefetch.to_string())
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .create_with_context(Logged)
            .map_err(|e| ConfigError::new("from.brokers", e.to_string()))?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(|e| ConfigError::new("from.topic", e.to_string()))?;
        Ok(Self {
            config,
            consumer: Arc::new(consumer),
        })
    }

    fn fail(
        &self,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        retryable: bool,
    ) -> InboundError {
        let context = format!(
            "topic {} (group {}, {})",
            self.config.topic, self.config.group, self.config.brokers
        );
        InboundError::new("kafka", Redacted::with_context(context, e), retryable)
    }
}

fn incoming(m: &rdkafka::message::BorrowedMessage<'_>) -> (Incoming, KafkaAck) {
    let id = m.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == "message-id")
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    });
    (
        Incoming {
            id,
            payload: m.payload().unwrap_or_default().to_vec(),
        },
        KafkaAck {
            partition: m.partition(),
            offset: m.offset(),
        },
    )
}

#[async_trait]
impl Inbound for KafkaSource {
    type Ack = KafkaAck;

    fn name(&self) -> &str {
        "kafka"
    }

    /// Checks now that the broker answers and the topic exists.
    async fn connect(&mut self) -> Result<(), InboundError> {
        let consumer = self.consumer.clone();
        let topic = self.config.topic.clone();
        check_topic(move || {
            consumer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
        })
        .await
        .map_err(|(reason, retryable)| self.fail(reason, retryable))
    }

    async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<(Incoming, KafkaAck)>, InboundError> {
        let mut batch = Vec::new();
        match self.consumer.recv().await {
            Ok(m) => batch.push(incoming(&m)),
            Err(e) => return Err(self.fail(e, true)),
        }
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(incoming(&m)),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn ack(&mut self, acks: Vec<KafkaAck>) -> Result<(), InboundError> {
        let mut next: HashMap<i32, i64> = HashMap::new();
        for a in acks {
            let o = next.entry(a.partition).or_insert(a.offset + 1);
            *o = (*o).max(a.offset + 1);
        }
        tracing::debug!(offsets = ?next, "kafka: committing");
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets
                .add_partition_offset(&self.config.topic, partition, Offset::Offset(offset))
                .map_err(|e| self.fail(e, false))?;
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
            .await
            .map_err(|e| self.fail(e, true))?
            .map_err(|e| self.fail(format!("commit: {e}"), true))
    }
}

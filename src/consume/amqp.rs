//! Consuming a RabbitMQ queue (cargo feature `amqp`).

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

use super::{AmqpSourceConfig, Inbound, InboundError, Incoming};
use crate::model::ConfigError;
use crate::model::Redacted;

struct Link {
    _connection: Connection,
    channel: Channel,
    deliveries: lapin::Consumer,
    generation: u64,
}

/// Reads a RabbitMQ queue with manual acknowledgements and a bounded
/// prefetch. A batch is acknowledged with one `multiple` ack of its last
/// delivery tag. A lost connection is reopened on the next batch; what was
/// delivered on it and not acknowledged the broker delivers again.
pub struct AmqpSource {
    config: AmqpSourceConfig,
    link: Option<Link>,
    generation: u64,
}

/// Acknowledges one delivery: the connection it came on and its tag.
#[derive(Clone, Copy, Debug)]
pub struct AmqpAck {
    generation: u64,
    tag: u64,
}

impl AmqpSource {
    /// A source for `config` (validated); it connects on the first batch.
    pub fn new(config: AmqpSourceConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            link: None,
            generation: 0,
        })
    }

    fn error(&self, e: lapin::Error) -> InboundError {
        let retryable = !crate::sink::amqp::is_permanent(&e);
        let context = format!("queue {:?} ({})", self.config.queue, self.config.url);
        InboundError::new("amqp", Redacted::with_context(context, e), retryable)
    }

    async fn link(&mut self) -> Result<&mut Link, InboundError> {
        if self
            .link
            .as_ref()
            .is_some_and(|l| !l.channel.status().connected())
        {
            self.link = None;
        }
        if self.link.is_none() {
            let link = self.open().await.map_err(|e| self.error(e))?;
            self.link = Some(link);
        }
        Ok(self.link.as_mut().expect("just opened"))
    }

    async fn open(&mut self) -> Result<Link, lapin::Error> {
        let c = &self.config;
        let connection =
            Connection::connect(c.url.expose(), ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(c.prefetch, BasicQosOptions::default())
            .await?;
        channel
            .queue_declare(
                c.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: !c.declare,
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let deliveries = channel
            .basic_consume(
                c.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.generation += 1;
        Ok(Link {
            _connection: connection,
            channel,
            deliveries,
            generation: self.generation,
        })
    }
}

#[async_trait]
impl Inbound for AmqpSource {
    type Ack = AmqpAck;

    fn name(&self) -> &str {
        "amqp"
    }

    /// Connects now, so a bad URL or a missing queue fails before anything
    /// else starts.
    async fn connect(&mut self) -> Result<(), InboundError> {
        self.link().await.map(|_| ())
    }

    async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<(Incoming, AmqpAck)>, InboundError> {
        let link = self.link().await?;
        let generation = link.generation;
        let mut batch = Vec::new();
        let take = |d: lapin::message::Delivery| {
            (
                Incoming {
                    id: d.properties.message_id().as_ref().map(|s| s.to_string()),
                    payload: d.data,
                },
                AmqpAck {
                    generation,
                    tag: d.delivery_tag,
                },
            )
        };
        let reason = match link.deliveries.next().await {
            Some(Ok(d)) => {
                batch.push(take(d));
                None
            }
            Some(Err(e)) => Some(e.to_string()),
            None => Some("the broker ended the consumer".to_owned()),
        };
        if let Some(reason) = reason {
            self.link = None;
            let context = format!("queue {:?} ({})", self.config.queue, self.config.url);
            return Err(InboundError::new(
                "amqp",
                Redacted::with_context(context, reason),
                true,
            ));
        }
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, link.deliveries.next()).await {
                Ok(Some(Ok(d))) => batch.push(take(d)),
                // The link broke or the linger ran out: hand out what came;
                // a broken link is noticed on the next batch.
                Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn ack(&mut self, acks: Vec<AmqpAck>) -> Result<(), InboundError> {
        let Some(link) = self.link.as_ref() else {
            return Err(InboundError::new(
                "amqp",
                "the connection these messages came on is gone",
                true,
            ));
        };
        // Tags belong to one channel: only those of the live one can be
        // acknowledged; the broker delivers the others again.
        let Some(last) = acks
            .iter()
            .filter(|a| a.generation == link.generation)
            .map(|a| a.tag)
            .max()
        else {
            return Ok(());
        };
        link.channel
            .basic_ack(last, BasicAckOptions { multiple: true })
            .await
            .map_err(|e| {
                let mut err = self.error(e);
                err.retryable = true;
                err
            })
    }
}

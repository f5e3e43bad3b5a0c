//! The RabbitMQ sink (cargo feature `amqp`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::{AmqpConfig, Delivery, Message, Sink, SinkError};
use crate::error_text::Chain;
use crate::model::ConfigError;
use crate::model::Redacted;

/// Publishes each message to RabbitMQ: persistent (delivery mode 2), with
/// its deterministic id as the AMQP `message-id`, `mandatory` so that an
/// unroutable message comes back, on a channel in confirm mode.
///
/// A delivery returns only once the broker confirmed every message of the
/// batch; confirmations are pipelined within [`AmqpConfig::window`].
/// Negatively acknowledged messages are published again (up to
/// [`AmqpConfig::nack_attempts`] rounds). A returned (unroutable) message is
/// a fatal error naming the exchange and routing key. A lost connection is
/// reopened (for up to [`AmqpConfig::reconnect_for`]) and every message of
/// the batch not yet confirmed is published again, so nothing is
/// checkpointed before the broker has it, and replays carry the same id for
/// consumers to de-duplicate.
pub struct AmqpSink {
    config: AmqpConfig,
    link: Mutex<Option<Link>>,
}

/// Whether a connect or declare failure is one retrying cannot fix: refused
/// credentials, a missing exchange or queue when only checking, a
/// declaration that contradicts an existing one. The broker unreachable,
/// restarting or closing connections is worth retrying.
pub(crate) fn is_permanent(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => matches!(
            p.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::NOTFOUND
                    | AMQPSoftError::PRECONDITIONFAILED
            )
        ),
        lapin::ErrorKind::AuthProviderError(_)
        | lapin::ErrorKind::InvalidProtocolVersion(_)
        | lapin::ErrorKind::NoDefaultRuntime => true,
        _ => false,
    }
}

struct Link {
    // Kept so the connection lives as long as its channel.
    _connection: Connection,
    channel: Channel,
}

/// How one round of publishing ended.
enum Round {
    /// Everything confirmed.
    Confirmed,
    /// These messages were negatively acknowledged.
    Nacked(Vec<usize>),
}

/// A publish whose frames lapin's I/O thread has not written yet.
type Writing<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = lapin::Result<lapin::PublisherConfirm>> + Send + 'a>,
>;

/// A message handed to lapin: its frames still being written, or written
/// and awaiting the broker's confirmation.
enum Sent<'a> {
    Writing(Writing<'a>),
    Written(lapin::PublisherConfirm),
}

/// One round failed on the connection or channel; these were not confirmed.
struct Broken {
    unconfirmed: Vec<usize>,
    error: lapin::Error,
}

impl AmqpSink {
    /// A sink for `config` (validated); it connects on first delivery.
    pub fn new(config: AmqpConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            link: Mutex::new(None),
        })
    }

    /// Connects now and declares (or checks) the topology, so that a bad
    /// URL or a missing exchange fails before a run starts.
    pub async fn connect(&self) -> Result<(), SinkError> {
        self.channel().await.map(|_| ()).map_err(|e| self.error(e))
    }

    /// A failure while connecting: fatal when retrying cannot help (refused
    /// credentials, a missing exchange or queue when only checking, a
    /// declaration that contradicts an existing one), retryable otherwise
    /// (the broker unreachable, restarting, closing connections).
    fn error(&self, e: lapin::Error) -> SinkError {
        let permanent = is_permanent(&e);
        let cause = Redacted::with_context(format!("RabbitMQ at {}", self.config.url), e);
        if permanent {
            SinkError::fatal("amqp", cause)
        } else {
            SinkError::retryable("amqp", cause)
        }
    }

    /// The live channel, connecting (and declaring) when there is none.
    async fn channel(&self) -> Result<Channel, lapin::Error> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref() {
            if l.channel.status().connected() {
                return Ok(l.channel.clone());
            }
        }
        *link = None;
        let connection =
            Connection::connect(self.config.url.expose(), ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.topology(&channel).await?;
        *link = Some(Link {
            _connection: connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    async fn topology(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let c = &self.config;
        let passive = !c.declare;
        if !c.exchange.is_empty() {
            channel
                .exchange_declare(
                    c.exchange.as_str().into(),
                    lapin::ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        passive,
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
        if let Some(queue) = &c.queue {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive,
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            if c.declare {
                channel
                    .queue_bind(
                        queue.as_str().into(),
                        c.exchange.as_str().into(),
                        c.routing_key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Forgets the link after a failure, so the next call reconnects.
    async fn drop_link(&self) {
        *self.link.lock().await = None;
    }

    /// Publishes `which` messages of `batch`, pipelining confirmations.
    ///
    /// lapin answers a publish once its I/O thread has written the frames,
    /// so awaiting each publish before the next costs a hand-off to that
    /// thread and back per message (a wake-up, a socket write and a futex
    /// each). Instead each publish is polled once as it is made, which
    /// registers its confirmation and queues its frames in order, and is
    /// awaited only when the window is full: the I/O thread then writes
    /// many messages per wake-up.
    async fn round(
        &self,
        channel: &Channel,
        batch: &[Message],
        which: &[usize],
    ) -> Result<Result<Round, SinkError>, Broken> {
        let c = &self.config;
        let mut confirmed = vec![false; batch.len()];
        let unconfirmed = |confirmed: &[bool]| -> Vec<usize> {
            which.iter().copied().filter(|&i| !confirmed[i]).collect()
        };
        let mut in_flight: VecDeque<(usize, Sent<'_>)> = VecDeque::new();
        let mut nacked = Vec::new();
        let mut returned: Option<String> = None;
        let mut queue = which.iter().copied();
        loop {
            // Keep the window full, then wait for the oldest confirmation.
            while in_flight.len() < c.window {
                let Some(i) = queue.next() else { break };
                let m = &batch[i];
                let properties = BasicProperties::default()
                    .with_message_id(m.id.as_str().into())
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into());
                let mut publish: Writing<'_> = Box::pin(channel.basic_publish(
                    c.exchange.as_str().into(),
                    c.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &m.payload,
                    properties,
                ));
                // The first poll takes the confirmation's delivery tag and
                // queues the frames, both before any other publish does.
                let sent = match futures::poll!(publish.as_mut()) {
                    std::task::Poll::Ready(Ok(confirm)) => Sent::Written(confirm),
                    std::task::Poll::Ready(Err(error)) => {
                        return Err(Broken {
                            unconfirmed: unconfirmed(&confirmed),
                            error,
                        })
                    }
                    std::task::Poll::Pending => Sent::Writing(publish),
                };
                in_flight.push_back((i, sent));
            }
            let Some((i, sent)) = in_flight.pop_front() else {
                break;
            };
            let confirm = match sent {
                Sent::Written(confirm) => confirm,
                Sent::Writing(publish) => match publish.await {
                    Ok(confirm) => confirm,
                    Err(error) => {
                        return Err(Broken {
                            unconfirmed: unconfirmed(&confirmed),
                            error,
                        })
                    }
                },
            };
            match confirm.await {
                Ok(Confirmation::Ack(None)) => confirmed[i] = true,
                Ok(Confirmation::Ack(Some(r))) => {
                    confirmed[i] = true;
                    returned.get_or_insert_with(|| {
                        format!(
                            "message {} was returned unroutable ({} {}): no queue is bound to \
                             exchange {:?} with routing key {:?}",
                            batch[i].id, r.reply_code, r.reply_text, c.exchange, c.routing_key
                        )
                    });
                }
                Ok(Confirmation::Nack(_)) => nacked.push(i),
                Ok(Confirmation::NotRequested) => {
                    return Ok(Err(SinkError::fatal(
                        "amqp",
                        "the channel is not in confirm mode",
                    )))
                }
                Err(error) => {
                    return Err(Broken {
                        unconfirmed: unconfirmed(&confirmed),
                        error,
                    })
                }
            }
        }
        if let Some(reason) = returned {
            return Ok(Err(SinkError::fatal("amqp", reason)));
        }
        Ok(Ok(if nacked.is_empty() {
            Round::Confirmed
        } else {
            Round::Nacked(nacked)
        }))
    }
}

#[async_trait]
impl Sink for AmqpSink {
    fn name(&self) -> &str {
        "amqp"
    }

    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        let deadline = Instant::now() + self.config.reconnect_for;
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut nack_rounds = 0u32;
        let mut pause = Duration::from_millis(100);
        loop {
            let channel = match self.channel().await {
                Ok(channel) => channel,
                Err(e) => {
                    let err = self.error(e);
                    if !err.is_retryable() || Instant::now() >= deadline {
                        return Err(err);
                    }
                    tracing::warn!(error = %Chain(&err), "RabbitMQ unreachable; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            match self.round(&channel, batch, &pending).await {
                Ok(Ok(Round::Confirmed)) => {
                    return Ok(Delivery {
                        confirmed: batch.len() as u64,
                        duplicates: 0,
                    })
                }
                Ok(Ok(Round::Nacked(nacked))) => {
                    nack_rounds += 1;
                    if nack_rounds >= self.config.nack_attempts {
                        return Err(SinkError::retryable(
                            "amqp",
                            format!(
                                "the broker negatively acknowledged {} messages {} times \
                                 (first: {})",
                                nacked.len(),
                                nack_rounds,
                                batch[nacked[0]].id
                            ),
                        ));
                    }
                    tracing::warn!(
                        messages = nacked.len(),
                        round = nack_rounds,
                        "negative acknowledgements; publishing them again"
                    );
                    pending = nacked;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Ok(Err(fatal)) => return Err(fatal),
                Err(broken) => {
                    // The link broke under us (the broker closed it, went
                    // away or restarted): retry within the deadline.
                    let err = SinkError::retryable(
                        "amqp",
                        Redacted::with_context(
                            format!("RabbitMQ at {}", self.config.url),
                            broken.error,
                        ),
                    );
                    self.drop_link().await;
                    if Instant::now() >= deadline {
                        return Err(err);
                    }
                    tracing::warn!(
                        error = %Chain(&err),
                        unconfirmed = broken.unconfirmed.len(),
                        "RabbitMQ connection lost; reconnecting to publish the unconfirmed again"
                    );
                    pending = broken.unconfirmed;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

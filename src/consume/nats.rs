//! Consuming a JetStream durable consumer (cargo feature `nats`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use async_trait::async_trait;
use futures::StreamExt;

use super::{Inbound, InboundError, Incoming, NatsSourceConfig};
use crate::model::ConfigError;
use crate::model::Redacted;

/// Reads a JetStream durable pull consumer with explicit acknowledgements.
/// Each message is acknowledged after its batch committed; one whose
/// acknowledgement is lost the server delivers again after `ack_wait`.
pub struct NatsSource {
    config: NatsSourceConfig,
    messages: Option<pull::Stream>,
}

/// Acknowledges one message.
pub struct NatsAck(jetstream::Message);

impl NatsSource {
    /// A source for `config` (validated); it connects on the first batch.
    pub fn new(config: NatsSourceConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            messages: None,
        })
    }

    fn fail(
        &self,
        what: &str,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        retryable: bool,
    ) -> InboundError {
        let context = format!("{what} ({})", self.config.url);
        InboundError::new("nats", Redacted::with_context(context, e), retryable)
    }

    async fn stream(&mut self) -> Result<&mut pull::Stream, InboundError> {
        if self.messages.is_none() {
            let c = &self.config;
            let client = crate::sink::nats::connect(&c.url)
                .await
                .map_err(|e| self.fail("connect", e, true))?;
            let js = jetstream::new(client);
            let what = format!("stream {}", c.stream);
            let stream = js.get_stream(&c.stream).await.map_err(|e| {
                let missing = matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(_)
                );
                self.fail(&what, e, !missing)
            })?;
            let what = format!("durable consumer {} of stream {}", c.durable, c.stream);
            let consumer: jetstream::consumer::Consumer<pull::Config> = if c.declare {
                stream
                    .get_or_create_consumer(
                        &c.durable,
                        pull::Config {
                            durable_name: Some(c.durable.clone()),
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            ack_wait: c.ack_wait,
                            max_ack_pending: i64::try_from(c.prefetch).unwrap_or(i64::MAX),
                            filter_subject: c.filter_subject.clone().unwrap_or_default(),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| self.fail(&what, e, false))?
            } else {
                stream
                    .get_consumer(&c.durable)
                    .await
                    .map_err(|e| self.fail(&what, e, false))?
            };
            let messages = consumer
                .stream()
                .max_messages_per_batch(c.prefetch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| self.fail(&what, e, true))?;
            self.messages = Some(messages);
        }
        Ok(self.messages.as_mut().expect("just opened"))
    }
}

fn incoming(m: jetstream::Message) -> (Incoming, NatsAck) {
    let id = m
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_owned());
    (
        Incoming {
            id,
            payload: m.payload.to_vec(),
        },
        NatsAck(m),
    )
}

#[async_trait]
impl Inbound for NatsSource {
    type Ack = NatsAck;

    fn name(&self) -> &str {
        "nats"
    }

    /// Connects now, so a bad URL or a missing stream fails before anything
    /// else starts.
    async fn connect(&mut self) -> Result<(), InboundError> {
        self.stream().await.map(|_| ())
    }

    async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<(Incoming, NatsAck)>, InboundError> {
        let messages = self.stream().await?;
        let mut batch = Vec::new();
        let reason = match messages.next().await {
            Some(Ok(m)) => {
                batch.push(incoming(m));
                None
            }
            Some(Err(e)) => Some(e.to_string()),
            None => Some("the server ended the consumer".to_owned()),
        };
        if let Some(reason) = reason {
            self.messages = None;
            return Err(self.fail(
                &format!("durable consumer {}", self.config.durable),
                reason,
                true,
            ));
        }
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(m))) => batch.push(incoming(m)),
                Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn ack(&mut self, acks: Vec<NatsAck>) -> Result<(), InboundError> {
        let mut failed = None;
        for NatsAck(m) in &acks {
            if let Err(e) = m.ack_with(AckKind::Ack).await {
                failed.get_or_insert(e.to_string());
            }
        }
        match failed {
            None => Ok(()),
            Some(e) => Err(self.fail("acknowledge", e, true)),
        }
    }
}

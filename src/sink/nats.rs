//! The NATS JetStream sink (cargo feature `nats`).

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, context::PublishAckFuture, context::PublishErrorKind, stream};
use async_nats::{HeaderMap, Subject};
use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::Mutex;

use super::{Delivery, Message, NatsConfig, Sink, SinkError};
use crate::error_text::Chain;
use crate::model::ConfigError;
use crate::model::Redacted;

/// Publishes each message to a JetStream subject with its deterministic id
/// as `Nats-Msg-Id`, so the server drops a replay that comes within the
/// stream's duplicate window (and says so: such messages are counted as
/// duplicates).
///
/// A delivery returns only once every message of the batch was
/// acknowledged by the stream; acknowledgements are awaited in a pipelined
/// window. A publish or acknowledgement that fails (a lost connection, a
/// timeout) is published again with the same id until
/// [`NatsConfig::reconnect_for`] passes; the client reconnects by itself.
pub struct NatsSink {
    config: NatsConfig,
    context: Mutex<Option<jetstream::Context>>,
}

impl NatsSink {
    /// A sink for `config` (validated); it connects on first delivery.
    pub fn new(config: NatsConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            context: Mutex::new(None),
        })
    }

    /// Connects now and creates (or checks) the stream; returns the
    /// warnings found (also logged), such as a duplicate window shorter
    /// than [`NatsConfig::replay_within`].
    pub async fn connect(&self) -> Result<Vec<String>, SinkError> {
        let mut slot = self.context.lock().await;
        let (context, warnings) = self.open().await?;
        *slot = Some(context);
        Ok(warnings)
    }

    fn fail(
        &self,
        what: &str,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        retryable: bool,
    ) -> SinkError {
        let cause = Redacted::with_context(format!("{what} ({})", self.config.url), e);
        if retryable {
            SinkError::retryable("nats", cause)
        } else {
            SinkError::fatal("nats", cause)
        }
    }

    async fn open(&self) -> Result<(jetstream::Context, Vec<String>), SinkError> {
        let c = &self.config;
        let client = connect(&c.url)
            .await
            .map_err(|e| self.fail("connect", e, true))?;
        let mut js = jetstream::new(client);
        let mut stream = if c.declare {
            js.get_or_create_stream(stream::Config {
                name: c.stream.clone(),
                subjects: vec![c.subject.clone()],
                storage: stream::StorageType::File,
                duplicate_window: c.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| self.fail(&format!("stream {}", c.stream), e, false))?
        } else {
            js.get_stream(&c.stream)
                .await
                .map_err(|e| self.fail(&format!("stream {}", c.stream), e, false))?
        };
        let info = stream
            .info()
            .await
            .map_err(|e| self.fail(&format!("stream {}", c.stream), e, true))?;
        if !info
            .config
            .subjects
            .iter()
            .any(|pattern| subject_matches(pattern, &c.subject))
        {
            return Err(self.fail(
                &format!("stream {}", c.stream),
                format!(
                    "it stores the subjects {:?}, not {:?}: publishes would find no stream",
                    info.config.subjects, c.subject
                ),
                false,
            ));
        }
        let mut warnings = Vec::new();
        if info.config.duplicate_window < c.replay_within {
            let w = format!(
                "stream {} keeps message ids for {:?}, less than the {:?} within which a \
                 replay can come: replays after it are stored twice",
                c.stream, info.config.duplicate_window, c.replay_within
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
        // From here the context only publishes: each acknowledgement is
        // awaited with this timer, the only one (the stream calls above
        // kept the client's default).
        js.set_timeout(c.ack_timeout);
        Ok((js, warnings))
    }

    async fn context(&self) -> Result<jetstream::Context, SinkError> {
        let mut slot = self.context.lock().await;
        if let Some(js) = slot.as_ref() {
            return Ok(js.clone());
        }
        let (js, _) = self.open().await?;
        *slot = Some(js.clone());
        Ok(js)
    }
}

/// Whether the NATS subject `pattern` (`*` one token, `>` the rest)
/// matches `subject`.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &str {
        "nats"
    }

    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        let deadline = Instant::now() + self.config.reconnect_for;
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut duplicates = 0u64;
        let mut pause = Duration::from_millis(100);
        // Built once: each publish then takes a reference-counted clone.
        let subject = Subject::from(self.config.subject.as_str());
        loop {
            let js = match self.context().await {
                Ok(js) => js,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tracing::warn!(error = %Chain(&e), "NATS unreachable; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut acked = vec![false; batch.len()];
            // The oldest publish waits for its acknowledgement at most
            // ack_timeout (the context's own timer); after one is lost the
            // rest of the window is only collected, so a lost connection
            // costs one timeout, not one per message in flight.
            let mut in_flight: VecDeque<(usize, PublishAckFuture)> =
                VecDeque::with_capacity(self.config.window.min(pending.len()));
            let mut failure: Option<String> = None;
            let mut next = pending.iter().copied();
            loop {
                while failure.is_none() && in_flight.len() < self.config.window {
                    let Some(i) = next.next() else { break };
                    let m = &batch[i];
                    let mut headers = HeaderMap::new();
                    headers.insert(NATS_MESSAGE_ID, m.id.as_str());
                    match js
                        .publish_with_headers(
                            subject.clone(),
                            headers,
                            bytes::Bytes::copy_from_slice(&m.payload),
                        )
                        .await
                    {
                        Ok(ack) => in_flight.push_back((i, ack)),
                        Err(e) => failure = Some(format!("publish: {e}")),
                    }
                }
                let Some((i, ack)) = in_flight.pop_front() else {
                    break;
                };
                // After a failure the rest are only collected: those whose
                // acknowledgement came count, the others go again.
                let answer = if failure.is_none() {
                    ack.into_future().await
                } else {
                    match ack.into_future().now_or_never() {
                        Some(answer) => answer,
                        None => continue,
                    }
                };
                match answer {
                    Ok(ack) => {
                        acked[i] = true;
                        if ack.duplicate {
                            duplicates += 1;
                        }
                    }
                    Err(e) if e.kind() == PublishErrorKind::TimedOut => {
                        failure.get_or_insert_with(|| {
                            format!("no acknowledgement within {:?}", self.config.ack_timeout)
                        });
                    }
                    Err(e) => {
                        failure.get_or_insert_with(|| format!("acknowledgement: {e}"));
                    }
                }
            }
            let unacked: Vec<usize> = pending.iter().copied().filter(|&i| !acked[i]).collect();
            if unacked.is_empty() {
                return Ok(Delivery {
                    confirmed: batch.len() as u64,
                    duplicates,
                });
            }
            let reason = failure.unwrap_or_else(|| "unacknowledged".into());
            if Instant::now() >= deadline {
                return Err(self.fail(
                    &format!("{} messages not acknowledged", unacked.len()),
                    reason,
                    true,
                ));
            }
            tracing::warn!(
                unacknowledged = unacked.len(),
                error = %reason,
                "JetStream did not acknowledge; publishing again with the same ids"
            );
            pending = unacked;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// Connects to the NATS server at `url`, handing its user and password
/// (or token) to the client as options and the address without them, so
/// that the client's own log lines, which print the address, hold no
/// secret.
pub(crate) async fn connect(
    url: &crate::model::redact::SecretUrl,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let Ok(mut address) = url::Url::parse(url.expose()) else {
        return async_nats::connect(url.expose()).await;
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(address.username());
    let password = address.password().map(decode);
    let options = match (user.is_empty(), password) {
        (true, None) => async_nats::ConnectOptions::new(),
        (false, None) => async_nats::ConnectOptions::with_token(user),
        (_, Some(password)) => async_nats::ConnectOptions::with_user_and_password(user, password),
    };
    // Both only fail for URLs that cannot carry user info.
    let _ = address.set_username("");
    let _ = address.set_password(None);
    options.connect(address.as_str()).await
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn stream_subjects_match_as_nats_matches_them() {
        assert!(subject_matches("orders.paid", "orders.paid"));
        assert!(subject_matches("orders.*", "orders.paid"));
        assert!(subject_matches("orders.>", "orders.paid.eu"));
        assert!(subject_matches(">", "orders"));
        assert!(!subject_matches("orders.*", "orders.paid.eu"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(!subject_matches("orders.paid", "orders"));
        assert!(!subject_matches("tranche.bench", "tranche_bench.rows"));
    }
}

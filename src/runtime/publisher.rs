//! The publisher: per-key lanes in front of the sink.
//!
//! Workers reach it with `send().await` into a bounded mailbox, so a slow
//! sink makes them wait instead of piling pages up in memory (queue-based
//! load levelling). Each batch is split by [`lane_of`] its message keys;
//! each lane delivers its sub-batches one after another, in arrival order,
//! so messages of one key keep their order end to end, while the lanes run
//! concurrently. The answer to a batch comes only when every lane confirmed
//! its part.
//!
//! A lane does not make a sink wait for one sub-batch at a time: when
//! several are queued behind a delivery, the next delivery takes them all
//! (up to [`COALESCE_MAX`] messages), in their order. A sink whose every
//! confirmation takes a fixed time (a remote broker's round trip, about 20 ms) then confirms
//! as many workers' pages per round trip as are waiting, instead of one.
//! If such a combined delivery fails fatally, each of its batches is
//! delivered again on its own, so a fatal failure is answered to the batch
//! that caused it; a retryable failure is answered to all of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::{Actor, Context, Handler, Message as ActixMessage, ResponseFuture};
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::error_text::Chain;
use crate::model::Message;
use crate::sink::{Delivery, Sink, SinkError};

/// The lane of a key: `key mod lanes`, always in `0..lanes`, even for
/// negative keys. The same key always takes the same lane.
pub fn lane_of(key: i64, lanes: usize) -> usize {
    key.rem_euclid(lanes.max(1) as i64) as usize
}

/// Messages a lane gathers from its queue into one delivery, at most.
pub const COALESCE_MAX: usize = 10_000;

/// Deliver this batch; answered when the sink confirmed all of it.
pub(crate) struct Publish(pub Vec<Message>);

impl ActixMessage for Publish {
    type Result = Result<Delivery, SinkError>;
}

struct LaneBatch {
    messages: Vec<Message>,
    confirmed: oneshot::Sender<Result<Delivery, SinkError>>,
}

/// How loaded a publisher is, for the run's gauges.
#[derive(Debug, Default)]
pub(crate) struct PublisherLoad {
    /// Messages handed to the publisher and not yet answered.
    pub(crate) in_flight: AtomicU64,
    /// Lane batches queued, waiting for a delivery to take them.
    pub(crate) queued: AtomicU64,
}

/// Takes `n` off a counter when dropped: the answer came, or the caller
/// gave up waiting for it.
struct Release<'a>(&'a AtomicU64, u64);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Owns the sink's lanes for one run.
pub(crate) struct Publisher {
    sink: Arc<dyn Sink>,
    load: Arc<PublisherLoad>,
    /// Senders of the lane tasks, bounded so a slow lane pushes back.
    lanes: Vec<mpsc::Sender<LaneBatch>>,
    lane_count: usize,
    mailbox_capacity: usize,
}

impl Publisher {
    pub(crate) fn new(sink: Arc<dyn Sink>, lanes: usize, mailbox_capacity: usize) -> Self {
        Self {
            sink,
            load: Arc::default(),
            lanes: Vec::new(),
            lane_count: lanes.max(1),
            mailbox_capacity: mailbox_capacity.max(1),
        }
    }
}

impl Publisher {
    /// Its load, shared with whoever reports it.
    pub(crate) fn load(&self) -> Arc<PublisherLoad> {
        Arc::clone(&self.load)
    }
}

impl Actor for Publisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        for lane in 0..self.lane_count {
            let (tx, mut rx) = mpsc::channel::<LaneBatch>(self.mailbox_capacity);
            let sink = Arc::clone(&self.sink);
            let load = Arc::clone(&self.load);
            actix::spawn(
                async move {
                    while let Some(first) = rx.recv().await {
                        load.queued.fetch_sub(1, Ordering::Relaxed);
                        let mut batches = vec![first];
                        let mut total = batches[0].messages.len();
                        while total < COALESCE_MAX {
                            match rx.try_recv() {
                                Ok(more) => {
                                    load.queued.fetch_sub(1, Ordering::Relaxed);
                                    total += more.messages.len();
                                    batches.push(more);
                                }
                                Err(_) => break,
                            }
                        }
                        deliver_lane(sink.as_ref(), batches).await;
                    }
                }
                .instrument(tracing::debug_span!("lane", lane)),
            );
            self.lanes.push(tx);
        }
    }
}

/// One sink delivery, a panic turned into a fatal error.
async fn deliver_once(sink: &dyn Sink, messages: &[Message]) -> Result<Delivery, SinkError> {
    std::panic::AssertUnwindSafe(sink.deliver(messages))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(SinkError::fatal(
                sink.name(),
                format!(
                    "the sink panicked: {}",
                    crate::error_text::panic_message(&*panic)
                ),
            ))
        })
}

/// Delivers a lane's queued batches: together when there are several, and
/// if that fails, each again on its own, so every batch gets its own answer.
async fn deliver_lane(sink: &dyn Sink, batches: Vec<LaneBatch>) {
    if let [_] = batches.as_slice() {
        let batch = batches.into_iter().next().expect("one batch");
        let result = deliver_once(sink, &batch.messages).await;
        let _ = batch.confirmed.send(result);
        return;
    }
    let mut all = Vec::with_capacity(batches.iter().map(|b| b.messages.len()).sum());
    let mut answers = Vec::with_capacity(batches.len());
    for batch in batches {
        answers.push((batch.messages.len(), batch.confirmed));
        all.extend(batch.messages);
    }
    match deliver_once(sink, &all).await {
        Ok(delivery) => {
            // Duplicates cannot be told apart per batch; the first carries
            // them, so the run's total stays right.
            let mut duplicates = delivery.duplicates;
            for (len, confirmed) in answers {
                let _ = confirmed.send(Ok(Delivery {
                    confirmed: len as u64,
                    duplicates: std::mem::take(&mut duplicates),
                }));
            }
        }
        // A retryable failure (a broker down, a timeout) says nothing about
        // one batch: every batch gets it and its worker retries, rather than
        // the lane waiting out the sink's retries once more per batch.
        Err(SinkError::Retryable { sink, cause }) => {
            for (_, confirmed) in answers {
                let _ = confirmed.send(Err(SinkError::Retryable {
                    sink: sink.clone(),
                    cause: cause.clone(),
                }));
            }
        }
        Err(e) => {
            tracing::debug!(
                error = %Chain(&e),
                batches = answers.len(),
                "a combined delivery failed; delivering its batches one by one"
            );
            let mut start = 0;
            for (len, confirmed) in answers {
                let result = deliver_once(sink, &all[start..start + len]).await;
                start += len;
                let _ = confirmed.send(result);
            }
        }
    }
}

impl Handler<Publish> for Publisher {
    type Result = ResponseFuture<Result<Delivery, SinkError>>;

    fn handle(&mut self, Publish(messages): Publish, _: &mut Context<Self>) -> Self::Result {
        // Keys spread about evenly over the lanes; a little room spares
        // most lanes a reallocation.
        let n = messages.len();
        let room = (n / self.lane_count + n / (4 * self.lane_count) + 1).min(n);
        let mut split: Vec<Vec<Message>> = (0..self.lane_count)
            .map(|_| Vec::with_capacity(room))
            .collect();
        for m in messages {
            split[lane_of(m.key, self.lane_count)].push(m);
        }
        let lanes = self.lanes.clone();
        let sink = self.sink.name().to_owned();
        let load = Arc::clone(&self.load);
        Box::pin(async move {
            load.in_flight.fetch_add(n as u64, Ordering::Relaxed);
            let _answered = Release(&load.in_flight, n as u64);
            let mut waiting = Vec::new();
            for (lane, messages) in lanes.iter().zip(split) {
                if messages.is_empty() {
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                let gone = || SinkError::fatal(sink.clone(), "the publisher lane stopped");
                load.queued.fetch_add(1, Ordering::Relaxed);
                if lane
                    .send(LaneBatch {
                        messages,
                        confirmed: tx,
                    })
                    .await
                    .is_err()
                {
                    load.queued.fetch_sub(1, Ordering::Relaxed);
                    return Err(gone());
                }
                waiting.push((rx, gone()));
            }
            let mut total = Delivery::default();
            for (rx, gone) in waiting {
                total += rx.await.map_err(|_| gone)??;
            }
            Ok(total)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_key_always_takes_the_same_lane_in_range(key in any::<i64>(), lanes in 1usize..64) {
            let lane = lane_of(key, lanes);
            prop_assert!(lane < lanes);
            prop_assert_eq!(lane, lane_of(key, lanes));
            prop_assert_eq!(lane as i64, key.rem_euclid(lanes as i64));
        }
    }
}

#[cfg(test)]
mod order_tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;

    /// Records deliveries; lanes take different, varying times, so only
    /// the per-lane ordering can keep one key's messages in order.
    #[derive(Default)]
    struct Jittery {
        seen: Mutex<Vec<Message>>,
    }

    #[async_trait]
    impl Sink for Jittery {
        fn name(&self) -> &str {
            "jittery"
        }
        async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
            let delay = (batch[0].key.unsigned_abs() * 7 + batch.len() as u64) % 5;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            self.seen.lock().unwrap().extend_from_slice(batch);
            Ok(Delivery {
                confirmed: batch.len() as u64,
                duplicates: 0,
            })
        }
    }

    #[actix::test]
    async fn messages_of_one_key_arrive_in_the_order_they_were_sent() {
        let sink = Arc::new(Jittery::default());
        let publisher = Publisher::new(sink.clone(), 4, 2).start();
        // Several producers, each owning some keys, each sending operations
        // (version = sequence number) and waiting for each confirmation.
        let mut producers = Vec::new();
        for p in 0..3i64 {
            let publisher = publisher.clone();
            producers.push(actix::spawn(async move {
                for seq in 0..40i64 {
                    // Three operations per key in each batch, interleaved.
                    let batch = (0..3)
                        .flat_map(|op| {
                            (0..10).map(move |k| {
                                Message::new("ops", p * 100 + k, seq * 3 + op, Vec::new())
                            })
                        })
                        .collect();
                    let d = publisher.send(Publish(batch)).await.unwrap().unwrap();
                    assert_eq!(d.confirmed, 30);
                }
            }));
        }
        for p in producers {
            p.await.unwrap();
        }
        let seen = sink.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3 * 40 * 30);
        let mut last: std::collections::HashMap<i64, i64> = Default::default();
        for m in seen {
            let prev = last.insert(m.key, m.version);
            assert!(
                prev.is_none_or(|v| v + 1 == m.version),
                "key {} out of order",
                m.key
            );
        }
    }

    /// Each delivery takes 20 ms, like a remote broker's; fails fatally when it
    /// holds key 7; counts deliveries.
    #[derive(Default)]
    struct Slow {
        deliveries: std::sync::atomic::AtomicUsize,
        confirmed: Mutex<Vec<Message>>,
    }

    #[async_trait]
    impl Sink for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
            self.deliveries
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if batch.iter().any(|m| m.key == 7) {
                return Err(SinkError::fatal("slow", "key 7 refused"));
            }
            self.confirmed.lock().unwrap().extend_from_slice(batch);
            Ok(Delivery {
                confirmed: batch.len() as u64,
                duplicates: 0,
            })
        }
    }

    /// Sends batches `from..to` of ten keys each at once; their answers.
    async fn send_at_once(
        publisher: &actix::Addr<Publisher>,
        batches: std::ops::Range<i64>,
    ) -> Vec<(i64, Result<Delivery, SinkError>)> {
        let sends: Vec<_> = batches
            .map(|b| {
                let publisher = publisher.clone();
                actix::spawn(async move {
                    let batch = (0..10)
                        .map(|i| Message::new("slow", b * 10 + i, 1, Vec::new()))
                        .collect();
                    (b, publisher.send(Publish(batch)).await.unwrap())
                })
            })
            .collect();
        let mut out = Vec::new();
        for send in sends {
            out.push(send.await.unwrap());
        }
        out
    }

    #[actix::test]
    async fn queued_batches_share_one_slow_delivery() {
        let sink = Arc::new(Slow::default());
        // One lane, so every batch queues behind the one being delivered.
        let publisher = Publisher::new(sink.clone(), 1, 64).start();
        for (b, result) in send_at_once(&publisher, 1..21).await {
            assert_eq!(result.unwrap().confirmed, 10, "batch {b}");
        }
        let confirmed = sink.confirmed.lock().unwrap().clone();
        let keys: std::collections::BTreeSet<i64> = confirmed.iter().map(|m| m.key).collect();
        assert_eq!((confirmed.len(), keys), (200, (10..210).collect()));
        // One by one would be 20 deliveries of 20 ms each.
        let deliveries = sink.deliveries.load(std::sync::atomic::Ordering::SeqCst);
        assert!(deliveries < 20, "{deliveries} deliveries for 20 batches");
    }

    #[actix::test]
    async fn a_failed_combined_delivery_fails_only_the_batch_that_caused_it() {
        let sink = Arc::new(Slow::default());
        let publisher = Publisher::new(sink.clone(), 1, 64).start();
        // Batch 0 holds key 7, which the sink refuses.
        for (b, result) in send_at_once(&publisher, 0..10).await {
            match result {
                Err(e) if b == 0 => {
                    assert!(crate::error_text::chain(&e).contains("key 7 refused"))
                }
                Ok(d) if b > 0 => assert_eq!(d.confirmed, 10),
                other => panic!("batch {b}: {other:?}"),
            }
        }
        let confirmed = sink.confirmed.lock().unwrap().clone();
        let keys: std::collections::BTreeSet<i64> = confirmed.iter().map(|m| m.key).collect();
        assert_eq!(keys, (10..100).collect());
    }
}

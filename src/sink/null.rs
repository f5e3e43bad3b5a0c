use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Delivery, Message, Sink, SinkError};

/// Confirms every batch at once and keeps nothing, counting what it was
/// given, optionally after a fixed delay per delivery.
///
/// Without a delay it measures what reading, processing and checkpointing
/// cost on their own (`[sink] kind = "null"`). With one it stands for a
/// latency-bound destination whose every confirmation takes that long, as
/// a remote broker's round trip does (about 20 ms), which is what the bench's latency rows
/// measure.
#[derive(Clone, Default)]
pub struct NullSink {
    delay: Duration,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    messages: AtomicU64,
    bytes: AtomicU64,
    deliveries: AtomicU64,
}

impl NullSink {
    /// A sink that confirms at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink whose every delivery (whatever its size) is confirmed `delay`
    /// after it was made.
    pub fn with_delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Messages confirmed so far, by this sink and its clones.
    pub fn messages(&self) -> u64 {
        self.counts.messages.load(Ordering::Relaxed)
    }

    /// Payload bytes confirmed so far.
    pub fn bytes(&self) -> u64 {
        self.counts.bytes.load(Ordering::Relaxed)
    }

    /// Calls to [`Sink::deliver`] so far.
    pub fn deliveries(&self) -> u64 {
        self.counts.deliveries.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Sink for NullSink {
    fn name(&self) -> &str {
        "null"
    }

    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let bytes: usize = batch.iter().map(|m| m.payload.len()).sum();
        self.counts
            .messages
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.counts.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.counts.deliveries.fetch_add(1, Ordering::Relaxed);
        Ok(Delivery {
            confirmed: batch.len() as u64,
            duplicates: 0,
        })
    }
}

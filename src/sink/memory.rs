use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Delivery, Message, Sink, SinkError};

/// Keeps every delivered message in memory, in delivery order. For tests and
/// benches; it can also be told to fail its next deliveries.
#[derive(Clone, Default)]
pub struct MemorySink {
    /// Shared so a test keeps a handle while the runtime owns the sink.
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Default)]
struct MemoryInner {
    messages: Vec<Message>,
    fail_next: u32,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything delivered so far.
    pub fn messages(&self) -> Vec<Message> {
        self.lock().messages.clone()
    }

    /// Number of messages delivered so far.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Whether nothing was delivered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the next `n` deliveries fail with a retryable error.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &str {
        "memory"
    }

    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        let mut inner = self.lock();
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(SinkError::retryable("memory", "injected failure"));
        }
        inner.messages.extend_from_slice(batch);
        Ok(Delivery {
            confirmed: batch.len() as u64,
            duplicates: 0,
        })
    }
}

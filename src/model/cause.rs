//! The cause kept inside a sink's or a source's error.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use super::redact::redact_text;

/// What a sink or source failure came from: the driver's or broker
/// client's error, kept behind `source()` (shared, so that one failure can
/// fail every batch it touched).
pub type Cause = Arc<dyn StdError + Send + Sync + 'static>;

/// A driver's or broker client's error whose text may quote a URL or a
/// password: shown with them masked (see [`redact_text`](crate::model::redact::redact_text)),
/// and so is each of its own causes. The original error stays reachable
/// through [`Redacted::original`], for code that matches on its type.
pub struct Redacted {
    text: String,
    next: Option<Box<Redacted>>,
    original: Option<Cause>,
}

impl Redacted {
    /// Wraps `e`, masking its text and its causes' texts.
    pub fn new(e: impl StdError + Send + Sync + 'static) -> Self {
        Self::boxed(Box::new(e))
    }

    /// [`Redacted::new`] of an error or a message already boxed (`String`
    /// and `&str` turn into one with `.into()`).
    pub fn boxed(e: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        let mut texts = vec![redact_text(&e.to_string())];
        let mut cause = e.source();
        while let Some(c) = cause {
            texts.push(redact_text(&c.to_string()));
            cause = c.source();
        }
        let mut next = None;
        while texts.len() > 1 {
            let text = texts.pop().expect("more than one");
            next = Some(Box::new(Redacted {
                text,
                next,
                original: None,
            }));
        }
        Self {
            text: texts.pop().expect("one"),
            next,
            original: Some(Cause::from(e)),
        }
    }

    /// `e` (masked as by [`Redacted::new`]) behind a line of context,
    /// itself masked: `context: e: e's causes`.
    pub fn with_context(
        context: impl fmt::Display,
        e: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        let inner = Redacted::boxed(e.into());
        Self {
            text: redact_text(&context.to_string()),
            original: inner.original.clone(),
            next: Some(Box::new(inner)),
        }
    }

    /// The error as the driver gave it (unmasked: not for display).
    pub fn original(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.original.as_deref()
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redacted")
            .field("text", &self.text)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl StdError for Redacted {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.next.as_deref().map(|r| r as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot reach amqp://guest:S3cret@broker:5672/%2f")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_redacted_cause_masks_every_level_and_keeps_the_original() {
        let e = Outer(std::io::Error::other(
            "refused by nats://ops:Hunter2@nats:4222",
        ));
        let r = Redacted::new(e);
        let mut shown = r.to_string();
        let mut next = r.source();
        while let Some(c) = next {
            shown = format!("{shown}: {c}");
            next = c.source();
        }
        assert!(
            !shown.contains("S3cret") && !shown.contains("Hunter2"),
            "{shown}"
        );
        assert!(
            shown.contains("broker:5672") && shown.contains("nats:4222"),
            "{shown}"
        );
        assert!(r.original().unwrap().downcast_ref::<Outer>().is_some());
        assert!(!format!("{r:?}").contains("S3cret"));
    }
}

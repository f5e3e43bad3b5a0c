//! Errors as text: an error followed by its causes, and a caught panic's
//! message.
//!
//! tranche's errors keep their causes behind `source()` and leave them out
//! of their own `Display`, so that a chain is printed once however it is
//! printed (`anyhow`'s `{:#}` and `{:?}` walk it). Where tranche itself
//! turns an error into text (a log line, a partition's stored error, a
//! report), it prints the whole chain with [`Chain`].

use std::error::Error as StdError;
use std::fmt;

/// Shows an error and each of its causes, `outer: inner: innermost`.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn StdError + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// [`Chain`] as a `String`.
pub(crate) fn chain(e: &(dyn StdError + '_)) -> String {
    Chain(e).to_string()
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_shows_each_cause_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
        assert_eq!(e.to_string(), "outer");
    }
}

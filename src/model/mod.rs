//! The shared vocabulary of the crate, importing nothing else of it: what
//! a job reads ([`Source`] and its conditions, scopes and strategy), the
//! rows it reads ([`SourceRow`], [`Datum`]), keyset positions, the messages
//! it hands on, validated identifiers, configuration errors and redaction.
//! Every other layer (store, sinks, runtime, consumers, configuration)
//! builds on these.

mod cause;
mod config_error;
pub mod duration;
mod ident;
mod keyset;
mod message;
pub mod redact;
mod row;
mod source;
mod throttle;

pub use cause::{Cause, Redacted};
pub use config_error::ConfigError;
pub use ident::Ident;
pub use keyset::{Cursor, KeyRange};
pub use message::Message;
pub use row::{
    Datum, Poison, SourceRow, DATE_INFINITY, DATE_NEG_INFINITY, TIMESTAMP_INFINITY,
    TIMESTAMP_NEG_INFINITY,
};
pub use source::{Condition, FilterValue, Op, OrderKind, Scope, Source, Strategy};
pub use throttle::{Throttle, MAX_PAGE_SIZE};

//! How identification finds a run's scopes: the whole source, a fixed
//! list, or the host's own query run on the database executor.

use std::fmt;
use std::sync::Arc;

use super::{Connection, StoreError};
use crate::model::Scope;

/// A query that lists a run's scopes, run on the database executor.
pub type IdentifyScopes =
    Arc<dyn Fn(&mut Connection) -> Result<Vec<Scope>, StoreError> + Send + Sync>;

/// How identification finds a run's scopes.
#[derive(Clone)]
#[non_exhaustive]
pub enum Scopes {
    /// One scope covering the whole filtered source.
    Whole,
    /// A fixed list.
    Fixed(Vec<Scope>),
    /// A query run during identification, on the database executor, under
    /// the job's identification lease. It is the host's own SQL.
    Identify(IdentifyScopes),
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scopes::Whole => f.write_str("Whole"),
            Scopes::Fixed(s) => f.debug_tuple("Fixed").field(s).finish(),
            Scopes::Identify(_) => f.write_str("Identify(..)"),
        }
    }
}

impl Scopes {
    /// The scopes as far as they are known before planning: `None` when a
    /// query finds them at planning, an empty list for the whole source.
    pub(crate) fn known(&self) -> Option<&[Scope]> {
        match self {
            Scopes::Whole => Some(&[]),
            Scopes::Fixed(list) => Some(list),
            Scopes::Identify(_) => None,
        }
    }
}

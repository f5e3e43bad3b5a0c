//! Keyset positions: where a partition's walk over `(order column, key)` stands.
//!
//! Pages are read with `WHERE (order, key) > (cursor) ORDER BY order, key
//! LIMIT n`, never with OFFSET, so a page costs the same at the end of a
//! table as at its start, and rows that share one order value (thousands of
//! subscriptions created in the same second) are still totally ordered by
//! their unique key.

use serde::{Deserialize, Serialize};

/// A position in the `(order, key)` total order of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cursor {
    /// Value of the order column (an integer, e.g. epoch seconds).
    pub order: i64,
    /// Value of the unique key column; breaks ties between equal orders.
    pub key: i64,
}

impl Cursor {
    /// A cursor at `(order, key)`.
    pub fn new(order: i64, key: i64) -> Self {
        Self { order, key }
    }
}

/// The half-open slice of the keyset a range partition covers:
/// `lower <= (order, key) < upper`, a missing bound meaning unbounded.
/// Every partition is further capped by its run's high-water mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    /// Inclusive lower bound; `None` is the start of the keyset.
    pub lower: Option<Cursor>,
    /// Exclusive upper bound; `None` is the end (up to the high-water mark).
    pub upper: Option<Cursor>,
}

impl KeyRange {
    /// Whether `c` lies in this range.
    pub fn contains(&self, c: Cursor) -> bool {
        self.lower.is_none_or(|l| c >= l) && self.upper.is_none_or(|u| c < u)
    }
}

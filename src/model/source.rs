//! What a job reads: the source table, its key and order columns, its
//! filters and scopes, and how a run of it is cut into partitions.
//!
//! Everything that reaches SQL from here is either a validated, quoted
//! [`Ident`] or a bound parameter ([`FilterValue`]); no text is spliced raw.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Ident};
/// A value bound as a query parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum FilterValue {
    /// An integer.
    Int(i64),
    /// A string.
    Text(String),
}

/// A comparison operator of a [`Condition`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    /// The operator as SQL.
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// `column op value`, with the value bound as a parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// Column of the source table.
    pub column: Ident,
    /// Comparison.
    pub op: Op,
    /// Bound value.
    pub value: FilterValue,
}

impl Condition {
    /// Builds a condition, validating the column name.
    pub fn new(column: &str, op: Op, value: FilterValue) -> Result<Self, ConfigError> {
        Ok(Self {
            column: Ident::parse("source.filter.column", column)?,
            op,
            value,
        })
    }
}

/// One slice of a run's work with its own conditions, planned and
/// partitioned separately (say, one product whose version changed, with
/// its key and new version in `params`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// Short human label, shown in progress and reports.
    pub label: String,
    /// Conditions added to the source filter for this scope.
    pub conditions: Vec<Condition>,
    /// Parameters handed to the processor with each row (e.g. the version).
    pub params: serde_json::Value,
}

impl Scope {
    /// The scope of a job that reads its whole (filtered) source.
    pub fn whole() -> Self {
        Self {
            label: "all".into(),
            conditions: Vec::new(),
            params: serde_json::Value::Null,
        }
    }

    /// The integer parameter `name`, if present.
    pub fn param_i64(&self, name: &str) -> Option<i64> {
        self.params.get(name).and_then(serde_json::Value::as_i64)
    }
}

/// What the order column holds, and so how it maps to the keyset's integers.
///
/// A [`Source`] may leave it unset: the runtime then takes it from the
/// column's type in the database catalog before anything is planned (an
/// integer type is [`OrderKind::Integer`], `timestamp` and `timestamptz` are
/// [`OrderKind::Timestamp`]), and refuses a kind that does not fit the
/// column, naming `source.order_kind`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OrderKind {
    /// An integer (epoch seconds, a sequence), used as is.
    #[default]
    Integer,
    /// A PostgreSQL `timestamp` or `timestamptz`, read as microseconds since
    /// 1970-01-01 UTC (tranche's sessions use UTC). Not available on SQLite,
    /// where dates are stored as text or integers: use an integer column.
    Timestamp,
}

/// The table a job reads.
///
/// Before a run is planned the runtime checks it against the database
/// catalog: the table and every named column exist, the key is an integer
/// column with a unique index or primary key, the order column's type fits
/// its [`OrderKind`], filter values fit their columns, and an index serves
/// the page order. Each refusal names the field and says how to fix it.
#[derive(Clone, Debug)]
pub struct Source {
    /// Table (or view) name.
    pub table: Ident,
    /// Unique integer key; the tie-breaker of the keyset and the message key.
    pub key_column: Ident,
    /// Order column: an integer, or a timestamp (see [`OrderKind`]). The
    /// key column itself when the source is walked in key order alone
    /// ([`Source::by_key`]).
    pub order_column: Ident,
    /// What the order column holds; `None` takes it from the column's type
    /// when the run is checked (the store's queries read it as an integer
    /// until then).
    pub order_kind: Option<OrderKind>,
    /// Extra columns read with each row, each with its database type (see
    /// [`Datum`](crate::model::Datum) for how each type is carried).
    pub columns: Vec<Ident>,
    /// Read every extra column as its text form instead (default false):
    /// PostgreSQL's `CAST(column AS TEXT)`, each value a
    /// [`Datum::Text`](crate::model::Datum::Text).
    pub columns_as_text: bool,
    /// Conditions every row must meet.
    pub filter: Vec<Condition>,
    /// Accept a key column without a unique index (default false). Rows
    /// sharing a key are then all read, each page closing on a whole group
    /// of rows with one `(order, key)`, and they share one message id.
    pub allow_duplicate_keys: bool,
    /// Accept a page order that no index serves (default false): every
    /// page may then scan the table.
    pub allow_sequential_scan: bool,
    /// Which extra columns PostgreSQL hands over in a type read here (the
    /// others are cast to text), as the catalog check found; `None` until
    /// the source is checked.
    pub(crate) typed: Option<Vec<bool>>,
}

impl Source {
    /// A source over `table`, keyed by `key_column` and walked in
    /// `order_column` order. Names are validated here. Passing the key
    /// column as the order column walks the table in key order alone.
    pub fn new(table: &str, key_column: &str, order_column: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            table: Ident::parse("source.table", table)?,
            key_column: Ident::parse("source.key_column", key_column)?,
            order_column: Ident::parse("source.order_column", order_column)?,
            order_kind: None,
            columns: Vec::new(),
            filter: Vec::new(),
            allow_duplicate_keys: false,
            allow_sequential_scan: false,
            columns_as_text: false,
            typed: None,
        })
    }

    /// A source over `table` walked in the order of its unique integer key
    /// alone, as a table whose only index is its primary key is read.
    pub fn by_key(table: &str, key_column: &str) -> Result<Self, ConfigError> {
        Self::new(table, key_column, key_column)
    }

    /// Whether the source is walked in key order alone.
    pub fn is_key_ordered(&self) -> bool {
        self.order_column == self.key_column
    }

    /// Declares the order column a timestamp (PostgreSQL); cursors and
    /// [`SourceRow::order`](super::SourceRow::order) are then microseconds since the epoch, UTC.
    pub fn order_by_timestamp(mut self) -> Self {
        self.order_kind = Some(OrderKind::Timestamp);
        self
    }

    /// Declares the order column an integer.
    pub fn order_by_integer(mut self) -> Self {
        self.order_kind = Some(OrderKind::Integer);
        self
    }

    /// Adds an extra column to read with each row.
    pub fn column(mut self, name: &str) -> Result<Self, ConfigError> {
        self.columns.push(Ident::parse("source.columns", name)?);
        Ok(self)
    }

    /// Reads every extra column as text (see
    /// [`Source::columns_as_text`](Source#structfield.columns_as_text)).
    pub fn columns_as_text(mut self) -> Self {
        self.columns_as_text = true;
        self
    }

    /// Adds a filter condition.
    pub fn filter(mut self, column: &str, op: Op, value: FilterValue) -> Result<Self, ConfigError> {
        self.filter.push(Condition::new(column, op, value)?);
        Ok(self)
    }

    /// Accepts a key column without a unique index (see
    /// [`Source::allow_duplicate_keys`](Source#structfield.allow_duplicate_keys)).
    pub fn allowing_duplicate_keys(mut self) -> Self {
        self.allow_duplicate_keys = true;
        self
    }

    /// Accepts a page order no index serves (see
    /// [`Source::allow_sequential_scan`](Source#structfield.allow_sequential_scan)).
    pub fn allowing_sequential_scan(mut self) -> Self {
        self.allow_sequential_scan = true;
        self
    }
}

/// How a run is divided into partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// Ranges of `(order, key)` sized by row-count quantiles; `partitions`
    /// is spread over the scopes in proportion to their rows.
    Range {
        /// Partitions for the whole run.
        partitions: u32,
    },
    /// `key % modulus = k` for `k` in `0..modulus`, per scope (the quick
    /// fix, with N from configuration).
    Modulo {
        /// N.
        modulus: u32,
    },
}

impl Strategy {
    /// Checks the partition count or modulus, naming the field.
    ///
    /// Both are at least 1 and at most [`Strategy::MAX_PARTITIONS`]; a range
    /// plan never makes more partitions than the run has rows.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (field, n) = match *self {
            Strategy::Range { partitions } => ("strategy.partitions", partitions),
            Strategy::Modulo { modulus } => ("strategy.modulus", modulus),
        };
        if n == 0 || n > Self::MAX_PARTITIONS {
            return Err(ConfigError::new(
                field,
                format!("{n} must be between 1 and {}", Self::MAX_PARTITIONS),
            ));
        }
        Ok(())
    }

    /// The most partitions (or the largest modulus) a run may have: each
    /// is a row of its own, claimed and checkpointed on its own.
    pub const MAX_PARTITIONS: u32 = 10_000;

    /// Name stored with each partition.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Range { .. } => "range",
            Strategy::Modulo { .. } => "modulo",
        }
    }
}

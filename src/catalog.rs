//! Checking a job against the database catalog, before anything is planned.
//!
//! The store describes a table ([`TableInfo`]: its columns with their types,
//! its indexes); the functions here decide, with no I/O, whether a source
//! (or a sink's table) can be read and written as configured. Each refusal
//! is a [`ConfigError`] naming the field and saying how to fix it, so a
//! mistake costs no run, no partition and no output file.
//!
//! What a source must have:
//!
//! * the table, and every column it names (key, order, extra columns,
//!   filters);
//! * an integer key with a unique index or primary key (or
//!   `allow_duplicate_keys`);
//! * an order column that is an integer, or a timestamp on PostgreSQL,
//!   matching its declared [`OrderKind`] (an unset kind is taken from the
//!   column);
//! * filter values that compare with their columns without a cast;
//! * an index that serves the page order, `(order, key)` behind any
//!   equality-filtered columns, or the key alone when the source is walked
//!   in key order (or `allow_sequential_scan`).

use crate::model::ConfigError;
use crate::model::Ident;
use crate::model::{FilterValue, Op, OrderKind, Scope, Source};

/// How a column's values are read and compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ColumnKind {
    /// An integer type (PostgreSQL `smallint`, `integer`, `bigint`;
    /// SQLite's INTEGER affinity).
    Integer,
    /// A floating-point type (`real`, `double precision`; SQLite's REAL
    /// affinity).
    Float,
    /// `boolean`.
    Bool,
    /// A text type (`text`, `varchar`, `char`; SQLite's TEXT affinity).
    Text,
    /// `json` or `jsonb`.
    Json,
    /// `timestamp` or `timestamptz`.
    Timestamp,
    /// `numeric` / `decimal` (SQLite's NUMERIC affinity).
    Numeric,
    /// `bytea`; SQLite's BLOB (or no) affinity, which stores any value.
    Bytes,
    /// Anything else (`date`, `uuid`, arrays, enums...).
    Other,
}

/// A PostgreSQL type's `format_type` text without its modifiers:
/// `timestamp(3) with time zone` is a `timestamp with time zone`.
pub(crate) fn pg_base_type(type_name: &str) -> String {
    let mut base = String::with_capacity(type_name.len());
    let mut depth = 0u32;
    for ch in type_name.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => base.push(ch),
            _ => {}
        }
    }
    base.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The PostgreSQL types whose values are read in their own binary format
/// (by their base type names); a column of any other type is read as its
/// text form.
const PG_TYPED: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "oid",
    "real",
    "double precision",
    "boolean",
    "text",
    "character varying",
    "character",
    "name",
    "\"char\"",
    "json",
    "jsonb",
    "timestamp without time zone",
    "timestamp with time zone",
    "date",
    "numeric",
    "bytea",
    "uuid",
];

impl ColumnInfo {
    /// Whether the column's values are read typed (see [`crate::model::Datum`]):
    /// SQLite's always are, by storage class; PostgreSQL's when the type
    /// is one tranche reads, others arriving as their text.
    pub fn read_typed(&self, sqlite: bool) -> bool {
        sqlite
            || (!self.type_name.ends_with("[]")
                && PG_TYPED.contains(&pg_base_type(&self.type_name).as_str()))
    }
}

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ColumnInfo {
    /// Its name.
    pub name: String,
    /// Its type as the database writes it (`timestamp with time zone`,
    /// `BIGINT`...).
    pub type_name: String,
    /// How it is read.
    pub kind: ColumnKind,
    /// Declared `NOT NULL` (or a key that cannot hold NULL).
    pub not_null: bool,
}

/// One ordered (btree) index of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexInfo {
    /// Its key columns, in order; an expression is `None`.
    pub columns: Vec<Option<String>>,
    /// Unique (a primary key included).
    pub unique: bool,
    /// Covers only some rows (`WHERE ...`).
    pub partial: bool,
}

/// A table as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableInfo {
    /// Its columns, in table order.
    pub columns: Vec<ColumnInfo>,
    /// Its ordered indexes.
    pub indexes: Vec<IndexInfo>,
    /// SQLite: the column that is an alias of the rowid (an `INTEGER
    /// PRIMARY KEY`): unique, never NULL, and the implicit last column of
    /// every index.
    pub rowid_alias: Option<String>,
    /// The table lives in SQLite, where values carry their own storage
    /// class and dates have no type of their own.
    pub sqlite: bool,
    /// The table lives in MySQL or MariaDB.
    pub mysql: bool,
}

impl TableInfo {
    /// Whether a column of this table is read typed (see
    /// [`crate::model::Datum`]): on MySQL, the integer, floating, decimal,
    /// binary, date and datetime types. Text and JSON columns are read
    /// through `CAST(column AS CHAR)`: the protocol marks a text column of
    /// a binary collation (`utf8mb4_bin`, MariaDB's JSON) as binary, so
    /// only the cast tells them from bytes. They arrive as text, as other
    /// types (TIME, whose negative values diesel does not read; bit,
    /// spatial...) do.
    pub fn reads_typed(&self, col: &ColumnInfo) -> bool {
        if !self.mysql {
            return col.read_typed(self.sqlite);
        }
        let t = col.type_name.to_ascii_lowercase();
        !matches!(
            col.kind,
            ColumnKind::Other | ColumnKind::Text | ColumnKind::Json
        ) || ["date", "year"]
            .iter()
            .any(|p| t == *p || t.starts_with(&format!("{p}(")))
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether `key` alone is unique: the rowid, a primary key or a unique
    /// index on it that covers every row.
    fn unique(&self, key: &str) -> bool {
        self.rowid_alias.as_deref() == Some(key)
            || self
                .indexes
                .iter()
                .any(|i| i.unique && !i.partial && i.columns == [Some(key.to_owned())])
    }

    /// Whether an index can walk `order` then `key`, behind leading
    /// columns that `leading_ok` accepts.
    fn serves(&self, order: &str, key: &str, leading_ok: &dyn Fn(&str) -> bool) -> bool {
        let rowid_key = self.rowid_alias.as_deref() == Some(key);
        if order == key && rowid_key {
            return true;
        }
        self.indexes.iter().filter(|i| !i.partial).any(|i| {
            let cols = &i.columns;
            (0..cols.len()).any(|at| {
                let leading = cols[..at]
                    .iter()
                    .all(|c| c.as_deref().is_some_and(leading_ok));
                let is =
                    |j: usize, name: &str| cols.get(j).is_some_and(|c| c.as_deref() == Some(name));
                leading
                    && is(at, order)
                    && (order == key
                        || is(at + 1, key)
                        // A rowid table's index ends with the rowid.
                        || (rowid_key && at + 1 == cols.len()))
            })
        })
    }
}

/// The column `name` of `table`, or an error for `field` listing the
/// columns there are.
fn column<'a>(
    info: &'a TableInfo,
    table: &Ident,
    field: &str,
    name: &Ident,
) -> Result<&'a ColumnInfo, ConfigError> {
    info.column(name.name()).ok_or_else(|| {
        ConfigError::new(
            field,
            format!(
                "{table} has no column {name} (its columns: {})",
                info.column_list()
            ),
        )
    })
}

/// Checks `source` against its table as described (`None`: there is no
/// such table or view) and returns it with its order kind resolved.
/// `scopes` are the run's scopes as far as they are known before planning
/// (`None`: found by a query at planning, so they may add conditions on
/// any column; an empty list: the whole source): an index may lead with a
/// column every scope puts an equality condition on.
pub(crate) fn check_source(
    source: &Source,
    scopes: Option<&[Scope]>,
    info: Option<&TableInfo>,
) -> Result<Source, ConfigError> {
    let table = &source.table;
    let info = info.ok_or_else(|| {
        ConfigError::new(
            "source.table",
            format!("there is no table or view {table} in the database"),
        )
    })?;
    let key = column(info, table, "source.key_column", &source.key_column)?;
    if key.kind != ColumnKind::Integer {
        return Err(ConfigError::new(
            "source.key_column",
            format!(
                "{} of {table} is {}; the key must be an integer column",
                key.name, key.type_name
            ),
        ));
    }
    let mut checked = source.clone();
    checked.order_kind = Some(order_kind(source, info)?);
    let mut typed = Vec::with_capacity(source.columns.len());
    for (i, name) in source.columns.iter().enumerate() {
        let col = column(info, table, &format!("source.columns[{i}]"), name)?;
        typed.push(info.reads_typed(col));
    }
    checked.typed = Some(typed);
    for (i, cond) in source.filter.iter().enumerate() {
        let col = column(
            info,
            table,
            &format!("source.filter[{i}].column"),
            &cond.column,
        )?;
        check_value(info, col, &cond.value)
            .map_err(|reason| ConfigError::new(format!("source.filter[{i}].value"), reason))?;
    }
    let k = key.name.as_str();
    if !source.allow_duplicate_keys && !info.unique(k) {
        return Err(ConfigError::new(
            "source.key_column",
            format!(
                "{k} of {table} has no primary key or unique index, so rows may share a key \
                 and their messages one id; create one (CREATE UNIQUE INDEX ON {table} ({k})), \
                 or set source.allow_duplicate_keys = true to read every row anyway"
            ),
        ));
    }
    let o = source.order_column.name();
    let leading_ok = |col: &str| match scopes {
        // Scopes found at planning may add conditions on any column.
        None => true,
        Some(list) => {
            eq_filtered(source, col)
                || (!list.is_empty()
                    && list.iter().all(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.op == Op::Eq && c.column.name() == col)
                    }))
        }
    };
    if !source.allow_sequential_scan && !info.serves(o, k, &leading_ok) {
        let (cols, name) = if o == k {
            (k.to_owned(), format!("{}_{k}", table.name()))
        } else {
            (format!("{o}, {k}"), format!("{}_{o}_{k}", table.name()))
        };
        return Err(ConfigError::new(
            "source.order_column",
            format!(
                "no index of {table} serves the page order ({cols}), so every page would scan \
                 the table; create one (CREATE INDEX {name} ON {table} ({cols})), or set \
                 source.allow_sequential_scan = true"
            ),
        ));
    }
    Ok(checked)
}

fn eq_filtered(source: &Source, col: &str) -> bool {
    source
        .filter
        .iter()
        .any(|c| c.op == Op::Eq && c.column.name() == col)
}

/// The order kind the column's type calls for, refusing a declared kind
/// that does not fit it.
fn order_kind(source: &Source, info: &TableInfo) -> Result<OrderKind, ConfigError> {
    let table = &source.table;
    let col = column(info, table, "source.order_column", &source.order_column)?;
    let found = match col.kind {
        ColumnKind::Integer => OrderKind::Integer,
        ColumnKind::Timestamp => OrderKind::Timestamp,
        _ if info.sqlite => {
            return Err(ConfigError::new(
                "source.order_column",
                format!(
                    "{} of {table} is declared {:?}; SQLite has no date type, so order by an \
                     INTEGER column (epoch seconds or a sequence)",
                    col.name, col.type_name
                ),
            ))
        }
        _ => {
            return Err(ConfigError::new(
                "source.order_column",
                format!(
                    "{} of {table} is {}; the order column must be an integer or a timestamp",
                    col.name, col.type_name
                ),
            ))
        }
    };
    match source.order_kind {
        Some(declared) if declared != found => {
            let (declared, fits) = match declared {
                OrderKind::Integer => ("integer", "timestamp"),
                OrderKind::Timestamp => ("timestamp", "integer"),
            };
            Err(ConfigError::new(
                "source.order_kind",
                format!(
                    "is {declared:?} but {} of {table} is {}: set order_kind = {fits:?}, \
                     or leave it out to take it from the column",
                    col.name, col.type_name
                ),
            ))
        }
        _ => Ok(found),
    }
}

/// Whether a filter's bound value compares with the column as it is, with
/// no cast that would hide a mistake or defeat an index.
fn check_value(info: &TableInfo, col: &ColumnInfo, value: &FilterValue) -> Result<(), String> {
    use ColumnKind as K;
    let fits = match value {
        FilterValue::Int(_) => match col.kind {
            K::Integer | K::Float | K::Numeric => true,
            K::Bool | K::Bytes => info.sqlite,
            _ => false,
        },
        FilterValue::Text(_) => match col.kind {
            K::Text => true,
            K::Numeric | K::Bytes | K::Other => info.sqlite,
            _ => false,
        },
    };
    if fits {
        return Ok(());
    }
    let given = match value {
        FilterValue::Int(i) => format!("the integer {i}"),
        FilterValue::Text(t) => format!("the text {t:?}"),
    };
    Err(format!(
        "{given} does not compare with {} ({}); filters compare integers with numeric \
         columns and text with text columns",
        col.name, col.type_name
    ))
}

/// Checks the table of an update step (the `update` sink, the consumers'
/// `versions` apply): it exists, its key and version columns are integers,
/// and the key is unique.
pub(crate) fn check_update_table(
    table: &Ident,
    key_column: &Ident,
    version_column: &Ident,
    info: Option<&TableInfo>,
) -> Result<(), ConfigError> {
    let info = info.ok_or_else(|| {
        ConfigError::new(
            "sink.table",
            format!("there is no table {table} in the database"),
        )
    })?;
    for (field, name) in [
        ("sink.key_column", key_column),
        ("sink.version_column", version_column),
    ] {
        let col = column(info, table, field, name)?;
        if col.kind != ColumnKind::Integer {
            return Err(ConfigError::new(
                field,
                format!(
                    "{} of {table} is {}; it must be an integer column",
                    col.name, col.type_name
                ),
            ));
        }
    }
    Ok(())
}

/// Checks an outbox table: it exists with the columns the outbox writes.
pub(crate) fn check_outbox_table(
    table: &Ident,
    info: Option<&TableInfo>,
) -> Result<(), ConfigError> {
    let info = info.ok_or_else(|| {
        ConfigError::new(
            "sink.table",
            format!(
                "there is no table {table} in the database (tranche's migrations create \
                 tranche_outbox; another table needs the same columns)"
            ),
        )
    })?;
    for name in [
        "message_id",
        "job_name",
        "row_key",
        "version",
        "payload",
        "created_ms",
    ] {
        if info.column(name).is_none() {
            return Err(ConfigError::new(
                "sink.table",
                format!(
                    "{table} has no column {name}; an outbox table needs message_id (unique), \
                     job_name, row_key, version, payload and created_ms"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Condition;

    fn col(name: &str, type_name: &str, kind: ColumnKind) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            type_name: type_name.into(),
            kind,
            not_null: true,
        }
    }

    fn index(cols: &[&str], unique: bool) -> IndexInfo {
        IndexInfo {
            columns: cols.iter().map(|c| Some((*c).to_owned())).collect(),
            unique,
            partial: false,
        }
    }

    /// `orders (id bigint primary key, placed_at timestamptz, status text,
    /// total numeric)` with an index on `(placed_at, id)`.
    fn orders() -> TableInfo {
        TableInfo {
            columns: vec![
                col("id", "bigint", ColumnKind::Integer),
                col(
                    "placed_at",
                    "timestamp with time zone",
                    ColumnKind::Timestamp,
                ),
                col("seq", "bigint", ColumnKind::Integer),
                col("status", "text", ColumnKind::Text),
                col("total", "numeric(10,2)", ColumnKind::Numeric),
            ],
            indexes: vec![index(&["id"], true), index(&["placed_at", "id"], false)],
            rowid_alias: None,
            sqlite: false,
            mysql: false,
        }
    }

    fn check(source: &Source, info: &TableInfo) -> Result<Source, ConfigError> {
        check_source(source, Some(&[]), Some(info))
    }

    #[test]
    fn a_fitting_source_passes_with_its_order_kind_taken_from_the_column() {
        let s = Source::new("orders", "id", "placed_at").unwrap();
        assert_eq!(
            check(&s, &orders()).unwrap().order_kind,
            Some(OrderKind::Timestamp)
        );
        let by_key = Source::by_key("orders", "id").unwrap();
        assert_eq!(
            check(&by_key, &orders()).unwrap().order_kind,
            Some(OrderKind::Integer)
        );
    }

    #[test]
    fn each_mistake_names_its_field() {
        let field = |s: Source, info: &TableInfo| check(&s, info).unwrap_err().field;
        let info = orders();
        assert_eq!(
            check_source(
                &Source::new("orders", "id", "placed_at").unwrap(),
                Some(&[]),
                None
            )
            .unwrap_err()
            .field,
            "source.table"
        );
        assert_eq!(
            field(Source::new("orders", "nope", "placed_at").unwrap(), &info),
            "source.key_column"
        );
        assert_eq!(
            field(Source::new("orders", "status", "placed_at").unwrap(), &info),
            "source.key_column"
        );
        assert_eq!(
            field(Source::new("orders", "id", "nope").unwrap(), &info),
            "source.order_column"
        );
        assert_eq!(
            field(Source::new("orders", "id", "status").unwrap(), &info),
            "source.order_column"
        );
        let e = check(
            &Source::new("orders", "id", "placed_at")
                .unwrap()
                .order_by_integer(),
            &info,
        )
        .unwrap_err();
        assert_eq!(e.field, "source.order_kind");
        assert!(e.reason.contains("\"timestamp\""), "{e}");
        let s = Source::new("orders", "id", "placed_at")
            .unwrap()
            .column("nope")
            .unwrap();
        assert_eq!(field(s, &info), "source.columns[0]");
        let s = Source::new("orders", "id", "placed_at")
            .unwrap()
            .filter("status", Op::Eq, FilterValue::Int(3))
            .unwrap();
        assert_eq!(field(s, &info), "source.filter[0].value");
        let s = Source::new("orders", "id", "placed_at")
            .unwrap()
            .filter("total", Op::Gt, FilterValue::Text("10".into()))
            .unwrap();
        assert_eq!(field(s, &info), "source.filter[0].value");
        let s = Source::new("orders", "id", "placed_at")
            .unwrap()
            .filter("total", Op::Gt, FilterValue::Int(10))
            .unwrap();
        assert!(check(&s, &info).is_ok());
    }

    #[test]
    fn a_key_without_a_unique_index_is_refused_unless_allowed() {
        let mut info = orders();
        info.indexes[0].unique = false;
        let s = Source::new("orders", "id", "placed_at").unwrap();
        let e = check(&s, &info).unwrap_err();
        assert_eq!(e.field, "source.key_column");
        assert!(
            e.reason.contains("CREATE UNIQUE INDEX ON orders (id)"),
            "{e}"
        );
        assert!(check(&s.allowing_duplicate_keys(), &info).is_ok());
        info.indexes[0].unique = true;
        info.indexes[0].partial = true;
        assert!(check(&Source::new("orders", "id", "placed_at").unwrap(), &info).is_err());
    }

    #[test]
    fn a_page_order_without_an_index_is_refused_with_the_statement_to_run() {
        let info = orders();
        let s = Source::new("orders", "id", "seq").unwrap();
        let e = check(&s, &info).unwrap_err();
        assert_eq!(e.field, "source.order_column");
        assert!(
            e.reason
                .contains("CREATE INDEX orders_seq_id ON orders (seq, id)"),
            "{e}"
        );
        assert!(check(&s.allowing_sequential_scan(), &info).is_ok());
        // Leading columns are fine when a filter or every scope fixes them.
        let mut lead = orders();
        lead.indexes = vec![
            index(&["id"], true),
            index(&["status", "placed_at", "id"], false),
        ];
        let s = Source::new("orders", "id", "placed_at").unwrap();
        assert!(check(&s, &lead).is_err());
        let filtered = s
            .clone()
            .filter("status", Op::Eq, FilterValue::Text("paid".into()))
            .unwrap();
        assert!(check(&filtered, &lead).is_ok());
        let scope = Scope {
            label: "paid".into(),
            conditions: vec![
                Condition::new("status", Op::Eq, FilterValue::Text("paid".into())).unwrap(),
            ],
            params: serde_json::Value::Null,
        };
        assert!(check_source(&s, Some(&[scope]), Some(&lead)).is_ok());
    }

    #[test]
    fn a_sqlite_rowid_key_is_unique_and_ends_every_index() {
        let info = TableInfo {
            columns: vec![
                col("id", "INTEGER", ColumnKind::Integer),
                col("at", "BIGINT", ColumnKind::Integer),
                col("made", "DATETIME", ColumnKind::Numeric),
            ],
            indexes: vec![index(&["at"], false)],
            rowid_alias: Some("id".into()),
            sqlite: true,
            mysql: false,
        };
        assert!(check(&Source::new("t", "id", "at").unwrap(), &info).is_ok());
        assert!(check(&Source::by_key("t", "id").unwrap(), &info).is_ok());
        let e = check(&Source::new("t", "id", "made").unwrap(), &info).unwrap_err();
        assert_eq!(e.field, "source.order_column");
        assert!(e.reason.contains("INTEGER"), "{e}");
    }

    #[test]
    fn sink_tables_are_checked_by_their_fields() {
        let info = orders();
        let t = Ident::parse("t", "orders").unwrap();
        let id = Ident::parse("k", "id").unwrap();
        let status = Ident::parse("v", "status").unwrap();
        let seq = Ident::parse("v", "seq").unwrap();
        assert!(check_update_table(&t, &id, &seq, Some(&info)).is_ok());
        assert_eq!(
            check_update_table(&t, &id, &status, Some(&info))
                .unwrap_err()
                .field,
            "sink.version_column"
        );
        assert_eq!(
            check_update_table(&t, &id, &Ident::parse("v", "nope").unwrap(), Some(&info))
                .unwrap_err()
                .field,
            "sink.version_column"
        );
        assert_eq!(
            check_update_table(&t, &id, &seq, None).unwrap_err().field,
            "sink.table"
        );
        assert_eq!(
            check_outbox_table(&t, Some(&info)).unwrap_err().field,
            "sink.table"
        );
    }
}

//! Queries over the user's source table: identification statistics,
//! quantile cut rows, keyset pages, and the in-process update step.
//!
//! Table and column names are validated [`Ident`]s emitted quoted; every
//! value is a bound parameter.

use diesel::deserialize::FromSql;
use std::sync::Arc;

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use super::connection::{Bind, Connection, Dialect, Sql};
use super::datum::{AnyValue, Cell};
use super::StoreError;
use crate::model::Cursor;
use crate::model::Datum;
use crate::model::{Condition, FilterValue, OrderKind, Scope, Source, SourceRow};
use crate::store::PartitionRecord;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Pos {
    #[diesel(sql_type = BigInt)]
    ord: i64,
    #[diesel(sql_type = BigInt)]
    k: i64,
}

#[derive(QueryableByName)]
struct Remainder {
    #[diesel(sql_type = BigInt)]
    r: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A page row: `ord`, `k`, then the source's extra columns, read by
/// position (however many the source has), each as the type it has, so
/// that no per-row JSON is built by the database and parsed here. A value
/// that cannot be read (text that is not UTF-8, say) does not fail the
/// page: the row keeps the reason, and goes to dead letters with it.
struct PageRow {
    ord: i64,
    k: i64,
    /// Each extra column, or the position of the first that could not be
    /// read and why.
    columns: Result<Vec<Datum>, (usize, String)>,
}

impl<DB> QueryableByName<DB> for PageRow
where
    DB: diesel::backend::Backend,
    i64: FromSql<BigInt, DB>,
    Cell: FromSql<AnyValue, DB>,
{
    fn build<'a>(row: &impl diesel::row::NamedRow<'a, DB>) -> diesel::deserialize::Result<Self> {
        // The page's predicate admits only rows whose order and key read.
        let ord = row.get_value::<BigInt, i64, usize>(0)?;
        let k = row.get_value::<BigInt, i64, usize>(1)?;
        let columns = (2..row.field_count())
            .map(|i| {
                let at = i - 2;
                match row.get_value::<AnyValue, Cell, usize>(i) {
                    Ok(Cell(cell)) => cell.map_err(|why| (at, why)),
                    Err(e) => Err((at, format!("cannot be read: {e}"))),
                }
            })
            .collect();
        Ok(Self { ord, k, columns })
    }
}

/// A page of a partition, in keyset order.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Page {
    /// The rows read.
    pub rows: Vec<SourceRow>,
    /// Rows of the page with a value that could not be read: their place
    /// in the keyset and why. They go to dead letters.
    pub unreadable: Vec<(Cursor, String)>,
}

impl Page {
    /// Rows on the page, readable or not.
    pub fn len(&self) -> usize {
        self.rows.len() + self.unreadable.len()
    }

    /// Whether the page holds no row at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The page's last position: where the next page starts after.
    pub fn last(&self) -> Option<Cursor> {
        let row = self.rows.last().map(|r| Cursor::new(r.order, r.key));
        let bad = self.unreadable.last().map(|u| u.0);
        row.max(bad)
    }

    /// Keeps only the rows before `cut` (a split's bound).
    pub(crate) fn truncate_at(&mut self, cut: Cursor) {
        self.rows.retain(|r| Cursor::new(r.order, r.key) < cut);
        self.unreadable.retain(|u| u.0 < cut);
    }
}

/// How a source's `(order, key)` keyset is written in SQL: the order
/// column read as an integer, and a bound integer turned back into the
/// column's type for comparisons (so the column's index is used). A source
/// walked in key order alone compares the key alone.
struct Keyset {
    /// Quoted order column.
    o: String,
    /// Quoted key column.
    k: String,
    /// The order column as a BIGINT, for SELECT lists.
    o_int: String,
    /// A bound BIGINT as a value of the order column's type.
    param: &'static str,
    /// The order column is the key.
    key_only: bool,
    /// The database it is written for.
    dialect: Dialect,
    /// Rows whose key and order value can be read as the source is typed:
    /// the one predicate identification and paging share.
    readable: String,
}

impl Keyset {
    fn of(c: &Connection, source: &Source) -> Result<Self, StoreError> {
        let dialect = c.dialect();
        let (o, k) = (
            dialect.quote(&source.order_column),
            dialect.quote(&source.key_column),
        );
        let key_only = source.is_key_ordered();
        let kind = source.order_kind.unwrap_or_default();
        let int = dialect.bigint();
        let (o_int, param) = match (kind, dialect) {
            _ if key_only => (format!("CAST({k} AS {int})"), "?"),
            (OrderKind::Integer, _) => (format!("CAST({o} AS {int})"), "?"),
            // DATETIME is read as UTC, as TIMESTAMP is in the UTC session.
            (OrderKind::Timestamp, Dialect::Mysql) => (
                format!("TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {o})"),
                "TIMESTAMPADD(MICROSECOND, ?, '1970-01-01 00:00:00')",
            ),
            (OrderKind::Timestamp, Dialect::Postgres) => (
                format!("CAST(EXTRACT(EPOCH FROM {o}) * 1000000 AS BIGINT)"),
                "(TIMESTAMPTZ 'epoch' + ? * INTERVAL '1 microsecond')",
            ),
            (OrderKind::Timestamp, Dialect::Sqlite) => {
                return Err(StoreError::Unsupported(format!(
                    "source.order_kind: timestamp order columns need PostgreSQL or MySQL; \
                     on SQLite order {} by an integer (epoch seconds or a sequence)",
                    source.table
                )))
            }
        };
        // SQLite keeps whatever a row was given, whatever the column's
        // type: an order value stored as text or a real compares above
        // every integer and casts to a wrong one, so only integers are
        // read as positions. PostgreSQL and MySQL (in strict mode)
        // enforce the type; NULL is the one value a row comparison cannot
        // place.
        let readable_one = |col: &str| match dialect {
            Dialect::Sqlite => format!("typeof({col}) = 'integer'"),
            Dialect::Postgres | Dialect::Mysql => format!("{col} IS NOT NULL"),
        };
        let readable = if key_only {
            readable_one(&k)
        } else {
            format!("{} AND {}", readable_one(&k), readable_one(&o))
        };
        Ok(Self {
            o,
            k,
            o_int,
            param,
            key_only,
            dialect,
            readable,
        })
    }

    /// ` AND (order, key) op (c)`. MariaDB does not seek an index to a
    /// row value (it scans the index from its start, filtering), so there
    /// the comparison is spelled out, `order > c OR (order = c AND key >
    /// k)`, which its range optimizer turns into one seek on both columns.
    fn push_cmp(&self, sql: &mut Sql, op: &str, c: Cursor) {
        if self.key_only {
            sql.push(&format!(" AND {} {op} ?", self.k), [Bind::Int(c.key)]);
        } else if self.dialect == Dialect::Mysql {
            let (o, k, param) = (&self.o, &self.k, self.param);
            let text = match op {
                "=" => format!(" AND {o} = {param} AND {k} = ?"),
                _ => {
                    let strict = &op[..1];
                    format!(" AND ({o} {strict} {param} OR ({o} = {param} AND {k} {op} ?))")
                }
            };
            let binds = if op == "=" {
                vec![Bind::Int(c.order), Bind::Int(c.key)]
            } else {
                vec![Bind::Int(c.order), Bind::Int(c.order), Bind::Int(c.key)]
            };
            sql.push(&text, binds);
        } else {
            sql.push(
                &format!(" AND ({}, {}) {op} ({}, ?)", self.o, self.k, self.param),
                [Bind::Int(c.order), Bind::Int(c.key)],
            );
        }
    }

    /// The keyset order, ascending or descending.
    fn order_by(&self, desc: bool) -> String {
        let dir = if desc { " DESC" } else { "" };
        if self.key_only {
            format!(" ORDER BY {}{dir}", self.k)
        } else {
            format!(" ORDER BY {}{dir}, {}{dir}", self.o, self.k)
        }
    }

    /// `FROM table WHERE filter AND scope AND readable`: the rows a run
    /// identifies and pages through.
    fn eligible(&self, source: &Source, scope: &Scope) -> Sql {
        let mut sql = from_where(self.dialect, source, scope);
        sql.push(&format!(" AND {}", self.readable), []);
        sql
    }
}

fn value_bind(v: &FilterValue) -> Bind {
    match v {
        FilterValue::Int(i) => Bind::Int(*i),
        FilterValue::Text(s) => Bind::Text(s.clone()),
    }
}

/// `FROM table WHERE filter AND scope` with its binds.
fn from_where(dialect: Dialect, source: &Source, scope: &Scope) -> Sql {
    let mut sql = Sql::new(format!("FROM {} WHERE 1 = 1", dialect.quote(&source.table)));
    for cond in source.filter.iter().chain(&scope.conditions) {
        push_condition(dialect, &mut sql, cond);
    }
    sql
}

fn push_condition(dialect: Dialect, sql: &mut Sql, cond: &Condition) {
    sql.push(
        &format!(" AND {} {} ?", dialect.quote(&cond.column), cond.op.sql()),
        [value_bind(&cond.value)],
    );
}

/// Eligible rows of a scope and its high-water mark (its last row).
pub(crate) fn scope_stats(
    c: &mut Connection,
    source: &Source,
    scope: &Scope,
) -> Result<(u64, Option<Cursor>), StoreError> {
    let ks = Keyset::of(c, source)?;
    let base = ks.eligible(source, scope);
    let mut last = Sql::new(format!(
        "SELECT {} AS ord, CAST({} AS {}) AS k ",
        ks.o_int,
        ks.k,
        ks.dialect.bigint()
    ));
    last.push(base.text_ref(), base.binds_ref().iter().cloned());
    last.push(&format!("{} LIMIT 1", ks.order_by(true)), []);
    let Some(hwm) = c
        .load::<Pos>(&last)?
        .into_iter()
        .next()
        .map(|p| Cursor::new(p.ord, p.k))
    else {
        return Ok((0, None));
    };
    let mut count = Sql::new("SELECT COUNT(*) AS n ");
    count.push(base.text_ref(), base.binds_ref().iter().cloned());
    ks.push_cmp(&mut count, "<=", hwm);
    let n = c.load::<Count>(&count)?.first().map_or(0, |r| r.n);
    Ok((n as u64, Some(hwm)))
}

/// The rows at 1-based ascending `positions` of a scope in `(order, key)`
/// order, up to its high-water mark: the partitions' cut points.
///
/// Each cut is found from the one before with `OFFSET`, so the index is
/// walked once in all, by keys alone (an index-only scan on PostgreSQL
/// when the table is vacuumed); numbering every row with a window function
/// instead costs several times as much on a large table.
pub(crate) fn rows_at(
    c: &mut Connection,
    source: &Source,
    scope: &Scope,
    hwm: Cursor,
    positions: &[u64],
) -> Result<Vec<Cursor>, StoreError> {
    let ks = Keyset::of(c, source)?;
    let base = ks.eligible(source, scope);
    let mut cuts = Vec::with_capacity(positions.len());
    let mut at = 0u64;
    for &position in positions {
        let skip = position
            .checked_sub(at + 1)
            .ok_or_else(|| StoreError::Corrupt {
                what: "quantile rows",
                reason: format!("cut positions must rise from 1: {positions:?}"),
            })?;
        let mut sql = Sql::new(format!(
            "SELECT {} AS ord, CAST({} AS {}) AS k ",
            ks.o_int,
            ks.k,
            ks.dialect.bigint()
        ));
        sql.push(base.text_ref(), base.binds_ref().iter().cloned());
        ks.push_cmp(&mut sql, "<=", hwm);
        if let Some(&prev) = cuts.last() {
            ks.push_cmp(&mut sql, ">", prev);
        }
        sql.push(
            &format!("{} LIMIT 1 OFFSET ?", ks.order_by(false)),
            [Bind::Int(skip as i64)],
        );
        let Some(row) = c.load::<Pos>(&sql)?.into_iter().next() else {
            return Err(StoreError::Corrupt {
                what: "quantile rows",
                reason: format!(
                    "expected a row at position {position} of {}, found fewer rows",
                    source.table
                ),
            });
        };
        cuts.push(Cursor::new(row.ord, row.k));
        at = position;
    }
    Ok(cuts)
}

fn modulo_expr(dialect: Dialect, source: &Source) -> String {
    let k = dialect.quote(&source.key_column);
    // Normalised so negative keys fall in 0..modulus on both dialects.
    format!("((({k} % ?) + ?) % ?)")
}

/// Rows per remainder `0..modulus` of a scope, up to its high-water mark.
pub(crate) fn modulo_counts(
    c: &mut Connection,
    source: &Source,
    scope: &Scope,
    hwm: Cursor,
    modulus: u32,
) -> Result<Vec<u64>, StoreError> {
    let ks = Keyset::of(c, source)?;
    let m = i64::from(modulus);
    let mut sql = Sql::new(format!(
        "SELECT {} AS r, COUNT(*) AS n ",
        modulo_expr(c.dialect(), source)
    ));
    sql.push("", [Bind::Int(m), Bind::Int(m), Bind::Int(m)]);
    let base = ks.eligible(source, scope);
    sql.push(base.text_ref(), base.binds_ref().iter().cloned());
    ks.push_cmp(&mut sql, "<=", hwm);
    sql.push(" GROUP BY 1", []);
    let mut out = vec![0u64; modulus as usize];
    for r in c.load::<Remainder>(&sql)? {
        if let Some(slot) = usize::try_from(r.r).ok().and_then(|i| out.get_mut(i)) {
            *slot = r.n as u64;
        }
    }
    Ok(out)
}

/// The next page of a partition: rows after `after` (or from the lower bound),
/// below the upper bound, up to the high-water mark, in keyset order.
///
/// On SQLite the start of the page is written as two index range scans,
/// `order = c AND key > k` then `order > c`, instead of the row value
/// `(order, key) > (c, k)`: SQLite would otherwise seek on `order` alone
/// and rescan a whole group of rows sharing one order value on every page.
/// PostgreSQL seeks to the row value directly (behind equality columns of
/// the index too), so there the page is the one range scan. A source in
/// key order compares the key alone on both.
///
/// When the source accepts duplicate keys, a full page is completed with
/// the rest of the rows that share its last `(order, key)`, so that the
/// next page, which starts after that position, skips none of them: such a
/// page may hold more than `limit` rows.
pub(crate) fn fetch_page(
    c: &mut Connection,
    source: &Source,
    partition: &PartitionRecord,
    after: Option<Cursor>,
    limit: usize,
) -> Result<Page, StoreError> {
    let mut rows = page(c, source, partition, after, limit, true)?;
    if source.allow_duplicate_keys && rows.len() == limit {
        if let Some(last) = rows.last().map(|r| (r.ord, r.k)) {
            let group = page_group(c, source, partition, Cursor::new(last.0, last.1))?;
            rows.retain(|r| (r.ord, r.k) != last);
            rows.extend(group);
        }
    }
    Ok(decoded(source, rows))
}

/// The rows of `scope` with these keys that a run would read (the filter
/// admits them and their key and order values can be read), decoded as a
/// page is; any order.
pub(crate) fn rows_by_key(
    c: &mut Connection,
    source: &Source,
    scope: &Scope,
    keys: &[i64],
) -> Result<Page, StoreError> {
    if keys.is_empty() {
        return Ok(Page::default());
    }
    let ks = Keyset::of(c, source)?;
    let (extra, _) = extra_columns(c, source, true);
    let mut sql = Sql::new(format!(
        "SELECT {} AS ord, CAST({} AS {}) AS k{extra} ",
        ks.o_int,
        ks.k,
        ks.dialect.bigint()
    ));
    let base = ks.eligible(source, scope);
    sql.push(base.text_ref(), base.binds_ref().iter().cloned());
    let marks = vec!["?"; keys.len()].join(", ");
    sql.push(
        &format!(" AND {} IN ({marks})", ks.k),
        keys.iter().map(|&k| Bind::Int(k)),
    );
    let rows = c.load::<PageRow>(&sql)?;
    Ok(decoded(source, rows))
}

/// Rows as a page: those whose extra columns all read, and the others with
/// the reason.
fn decoded(source: &Source, rows: Vec<PageRow>) -> Page {
    let mut page = Page::default();
    let names: Arc<[String]> = source.columns.iter().map(ToString::to_string).collect();
    for r in rows {
        match r.columns {
            Ok(columns) => page
                .rows
                .push(SourceRow::new(r.k, r.ord, names.clone(), columns)),
            Err((at, why)) => {
                let column = source
                    .columns
                    .get(at)
                    .map_or("?".into(), ToString::to_string);
                let reason = format!("column {column} {why}");
                page.unreadable.push((Cursor::new(r.ord, r.k), reason));
            }
        }
    }
    page
}

/// The `n`th row (from 1) of a partition after `after` (or from its lower
/// bound), read as a page of keys alone: where a split cuts.
pub(crate) fn nth_row(
    c: &mut Connection,
    source: &Source,
    partition: &PartitionRecord,
    after: Option<Cursor>,
    n: usize,
) -> Result<Option<Cursor>, StoreError> {
    let rows = page(c, source, partition, after, n, false)?;
    Ok((rows.len() == n)
        .then(|| rows.last().map(|r| Cursor::new(r.ord, r.k)))
        .flatten())
}

/// The extra columns, named by position (`c0, c1, ...`), or nothing when
/// only `(order, key)` are read. On PostgreSQL a column whose type is not
/// read here (or every column, for a source read as text or not checked
/// against the catalog) is cast to text; SQLite hands each value over by
/// its storage class.
fn extra_columns(c: &Connection, source: &Source, columns: bool) -> (String, String) {
    if !columns {
        return (String::new(), String::new());
    }
    let select = source
        .columns
        .iter()
        .enumerate()
        .map(|(i, col)| {
            let typed = match c.dialect() {
                Dialect::Sqlite => !source.columns_as_text,
                Dialect::Postgres | Dialect::Mysql => {
                    !source.columns_as_text
                        && source
                            .typed
                            .as_ref()
                            .is_some_and(|t| t.get(i).copied().unwrap_or(false))
                }
            };
            let col = c.dialect().quote(col);
            if typed {
                format!(", {col} AS c{i}")
            } else {
                format!(", CAST({col} AS {}) AS c{i}", c.dialect().text())
            }
        })
        .collect();
    let outer = (0..source.columns.len())
        .map(|i| format!(", c{i}"))
        .collect();
    (select, outer)
}

/// Every row of a partition at exactly `at` (rows sharing a key and an
/// order value, where duplicate keys are accepted).
fn page_group(
    c: &mut Connection,
    source: &Source,
    partition: &PartitionRecord,
    at: Cursor,
) -> Result<Vec<PageRow>, StoreError> {
    let ks = Keyset::of(c, source)?;
    let (extra, _) = extra_columns(c, source, true);
    let mut sql = Sql::new(format!(
        "SELECT {} AS ord, CAST({} AS {}) AS k{extra} ",
        ks.o_int,
        ks.k,
        ks.dialect.bigint()
    ));
    let base = ks.eligible(source, &partition.scope);
    sql.push(base.text_ref(), base.binds_ref().iter().cloned());
    ks.push_cmp(&mut sql, "=", at);
    if let Some((m, r)) = partition.modulo {
        sql.push(
            &format!(" AND {} = ?", modulo_expr(c.dialect(), source)),
            [Bind::Int(m), Bind::Int(m), Bind::Int(m), Bind::Int(r)],
        );
    }
    in_key_order(c, source, partition, |c| c.load::<PageRow>(&sql))
}

/// A keyset page; without `columns`, only `(order, key)` are read.
fn page(
    c: &mut Connection,
    source: &Source,
    partition: &PartitionRecord,
    after: Option<Cursor>,
    limit: usize,
    columns: bool,
) -> Result<Vec<PageRow>, StoreError> {
    let sql = page_sql(c, source, partition, after, limit, columns)?.prepared();
    in_key_order(c, source, partition, |c| c.load::<PageRow>(&sql))
}

/// Runs a page query of `partition` so that PostgreSQL walks the index
/// that serves the page order. A modulo slice's condition on the key is an
/// expression the planner has no statistics for: it takes it to keep one
/// row in 200 where it keeps one in `modulus`, and on a table of a few
/// hundred thousand rows it would rather scan and sort the whole table for
/// every page than walk the primary key. Inside the page's own transaction
/// sequential scans and sorts are priced out, which leaves the ordered
/// index scans (the catalog check made sure there is one, unless the source
/// accepts sequential scans). Other pages, and SQLite, run as they are.
fn in_key_order<T>(
    c: &mut Connection,
    source: &Source,
    partition: &PartitionRecord,
    read: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if c.dialect() != Dialect::Postgres
        || partition.modulo.is_none()
        || source.allow_sequential_scan
    {
        return read(c);
    }
    c.batch("BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")?;
    match read(c) {
        Ok(v) => {
            c.batch("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            c.rollback();
            Err(e)
        }
    }
}

/// One line of a query plan: the last column of `EXPLAIN` (PostgreSQL's
/// only one, SQLite's `detail`).
struct PlanLine(String);

impl<DB> QueryableByName<DB> for PlanLine
where
    DB: diesel::backend::Backend,
    String: FromSql<Text, DB>,
{
    fn build<'a>(row: &impl diesel::row::NamedRow<'a, DB>) -> diesel::deserialize::Result<Self> {
        let last = row.field_count().saturating_sub(1);
        Ok(Self(row.get_value::<Text, String, usize>(last)?))
    }
}

/// How the database would read the page after `after`: the lines of
/// PostgreSQL's `EXPLAIN`, or SQLite's `EXPLAIN QUERY PLAN` details.
pub(crate) fn explain_page(
    c: &mut Connection,
    source: &Source,
    partition: &PartitionRecord,
    after: Option<Cursor>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let page = page_sql(c, source, partition, after, limit, true)?;
    let mut explain = Sql::new(match c.dialect() {
        Dialect::Postgres => "EXPLAIN ",
        Dialect::Sqlite => "EXPLAIN QUERY PLAN ",
        // One row: the plan as a JSON document.
        Dialect::Mysql => "EXPLAIN FORMAT=JSON ",
    });
    explain.push(page.text_ref(), page.binds_ref().iter().cloned());
    let lines = in_key_order(c, source, partition, |c| c.load::<PlanLine>(&explain))?;
    Ok(lines.into_iter().map(|l| l.0).collect())
}

fn page_sql(
    c: &Connection,
    source: &Source,
    partition: &PartitionRecord,
    after: Option<Cursor>,
    limit: usize,
    columns: bool,
) -> Result<Sql, StoreError> {
    let ks = Keyset::of(c, source)?;
    let (o, k, param) = (&ks.o, &ks.k, ks.param);
    let (extra, outer) = extra_columns(c, source, columns);
    let select = format!(
        "SELECT {} AS ord, CAST({k} AS {}) AS k{extra} ",
        ks.o_int,
        ks.dialect.bigint()
    );
    let base = ks.eligible(source, &partition.scope);
    // Conditions every branch shares: the partition's end and its slice.
    let mut tail = Sql::new("");
    if let Some(upper) = partition.range.and_then(|r| r.upper) {
        ks.push_cmp(&mut tail, "<", upper);
    }
    ks.push_cmp(&mut tail, "<=", partition.hwm);
    if let Some((m, r)) = partition.modulo {
        tail.push(
            &format!(" AND {} = ?", modulo_expr(c.dialect(), source)),
            [Bind::Int(m), Bind::Int(m), Bind::Int(m), Bind::Int(r)],
        );
    }
    let order_limit = |sql: &mut Sql| {
        sql.push(
            &format!("{} LIMIT ?", ks.order_by(false)),
            [Bind::Int(limit as i64)],
        )
    };
    let start = match (after, partition.range.and_then(|r| r.lower)) {
        (Some(cur), _) => Some((cur, ">")),
        (None, Some(lower)) => Some((lower, ">=")),
        (None, None) => None,
    };
    // Read once per page with the same text: the caller keeps it prepared.
    let mut sql = Sql::new("");
    match start {
        // PostgreSQL seeks a btree to a row value, even behind equality
        // columns of the index: one range scan. A key alone is one range
        // scan on both.
        Some((from, op)) if c.dialect() != Dialect::Sqlite || ks.key_only => {
            sql.push(&select, []);
            sql.push(base.text_ref(), base.binds_ref().iter().cloned());
            ks.push_cmp(&mut sql, op, from);
            sql.push(tail.text_ref(), tail.binds_ref().iter().cloned());
            order_limit(&mut sql);
        }
        None => {
            sql.push(&select, []);
            sql.push(base.text_ref(), base.binds_ref().iter().cloned());
            sql.push(tail.text_ref(), tail.binds_ref().iter().cloned());
            order_limit(&mut sql);
        }
        Some((from, key_op)) => {
            sql.push(&format!("SELECT ord, k{outer} FROM ("), []);
            sql.push(&select, []);
            sql.push(base.text_ref(), base.binds_ref().iter().cloned());
            sql.push(
                &format!(" AND {o} = {param} AND {k} {key_op} ?"),
                [Bind::Int(from.order), Bind::Int(from.key)],
            );
            sql.push(tail.text_ref(), tail.binds_ref().iter().cloned());
            order_limit(&mut sql);
            sql.push(&format!(") tie UNION ALL SELECT ord, k{outer} FROM ("), []);
            sql.push(&select, []);
            sql.push(base.text_ref(), base.binds_ref().iter().cloned());
            sql.push(&format!(" AND {o} > {param}"), [Bind::Int(from.order)]);
            sql.push(tail.text_ref(), tail.binds_ref().iter().cloned());
            order_limit(&mut sql);
            sql.push(") rest ORDER BY ord, k LIMIT ?", [Bind::Int(limit as i64)]);
        }
    }
    Ok(sql)
}

/// A row of the source that planning cannot place: its key or its order
/// value is NULL, or (SQLite) of another storage class than an integer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UnreadableRow {
    /// The key, when it is an integer.
    pub(crate) key: Option<i64>,
    /// What is wrong with it, naming the column and the value.
    pub(crate) reason: String,
}

#[derive(QueryableByName)]
struct UnreadableRaw {
    #[diesel(sql_type = Text)]
    kt: String,
    #[diesel(sql_type = Nullable<Text>)]
    kv: Option<String>,
    #[diesel(sql_type = Text)]
    ot: String,
    #[diesel(sql_type = Nullable<Text>)]
    ov: Option<String>,
}

/// The rows of a scope that the source's filter admits but whose key or
/// order value cannot be read: how many, and the first `limit` of them.
pub(crate) fn unreadable_rows(
    c: &mut Connection,
    source: &Source,
    scope: &Scope,
    limit: u64,
) -> Result<(u64, Vec<UnreadableRow>), StoreError> {
    let ks = Keyset::of(c, source)?;
    let base = from_where(c.dialect(), source, scope);
    let not = format!(" AND NOT ({})", ks.readable);
    let mut count = Sql::new("SELECT COUNT(*) AS n ");
    count.push(base.text_ref(), base.binds_ref().iter().cloned());
    count.push(&not, []);
    let n = c.load::<Count>(&count)?.first().map_or(0, |r| r.n) as u64;
    if n == 0 {
        return Ok((0, Vec::new()));
    }
    let storage = |col: &str| match c.dialect() {
        Dialect::Sqlite => format!("typeof({col})"),
        Dialect::Postgres | Dialect::Mysql => {
            format!("CASE WHEN {col} IS NULL THEN 'null' ELSE 'integer' END")
        }
    };
    let (k, o) = (&ks.k, &ks.o);
    let text = c.dialect().text();
    let mut sample = Sql::new(format!(
        "SELECT {} AS kt, CAST({k} AS {text}) AS kv, {} AS ot, CAST({o} AS {text}) AS ov ",
        storage(k),
        if ks.key_only { storage(k) } else { storage(o) },
    ));
    sample.push(base.text_ref(), base.binds_ref().iter().cloned());
    sample.push(&not, []);
    sample.push(" LIMIT ?", [Bind::Int(limit.min(i64::MAX as u64) as i64)]);
    let rows = c.load::<UnreadableRaw>(&sample)?;
    let describe =
        |what: &str, col: &crate::model::Ident, class: &str, value: &Option<String>| match value {
            None => format!("{what} column {col} is NULL"),
            Some(v) => {
                let shown: String = v.chars().take(60).collect();
                let more = if shown.len() < v.len() { "..." } else { "" };
                format!("{what} column {col} holds the {class} {shown:?}{more}, not an integer")
            }
        };
    let out = rows
        .into_iter()
        .map(|r| {
            let key = if r.kt == "integer" {
                r.kv.as_deref().and_then(|v| v.parse().ok())
            } else {
                None
            };
            let reason = if key.is_none() {
                let mut reason = describe("key", &source.key_column, &r.kt, &r.kv);
                if !ks.key_only {
                    let at = r.ov.as_deref().unwrap_or("NULL");
                    reason.push_str(&format!(" (its {} is {at})", source.order_column));
                }
                reason
            } else {
                describe("order", &source.order_column, &r.ot, &r.ov)
            };
            UnreadableRow { key, reason }
        })
        .collect();
    Ok((n, out))
}

//! What a consumer does with a message: decode it (pure), then apply a batch
//! of decoded operations in one transaction (on the DbExecutor).

use serde_json::Value as Json;

use super::{Apply, RowsSpec};
use crate::sink::UpdateSpec;
use crate::store::{Bind, Connection, Dialect, Sql, StoreError};

/// One operation decoded from a message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Operation {
    /// The message id (`job:key:version`).
    pub id: String,
    /// Row key.
    pub key: i64,
    /// Version the operation brings the row to.
    pub version: i64,
    /// What to do.
    pub change: Change,
    /// The body, kept for the dead letters should the database refuse it.
    pub payload: Vec<u8>,
}

/// The change an operation makes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Change {
    /// Advance the version column (the version update).
    Version,
    /// Insert the row, or set these columns of the existing one.
    Upsert(Vec<(usize, Cell)>),
    /// Delete the row.
    Delete,
}

/// A column value an operation sets.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cell {
    Int(i64),
    Text(String),
    Null,
}

/// Splits a deterministic id `job:key:version` into its key and version.
pub(crate) fn parse_id(id: &str) -> Result<(i64, i64), String> {
    let mut parts = id.rsplitn(3, ':');
    let (version, key, job) = (parts.next(), parts.next(), parts.next());
    match (
        job,
        key.map(str::parse::<i64>),
        version.map(str::parse::<i64>),
    ) {
        (Some(job), Some(Ok(key)), Some(Ok(version))) if !job.is_empty() => Ok((key, version)),
        _ => Err(format!(
            "message id {id:?} is not job:key:version with integer key and version"
        )),
    }
}

/// Decodes a message for `apply`. The error is the poison reason.
pub(crate) fn decode(
    apply: &Apply,
    id: Option<&str>,
    payload: &[u8],
) -> Result<Operation, (Option<i64>, String)> {
    let id = id.ok_or((None, "the message has no id".to_owned()))?;
    let (key, version) = parse_id(id).map_err(|e| (None, e))?;
    let poison = |reason: String| (Some(key), reason);
    let change = match apply {
        Apply::Versions(_) => Change::Version,
        Apply::Rows(spec) => decode_row(spec, payload).map_err(poison)?,
    };
    Ok(Operation {
        id: id.to_owned(),
        key,
        version,
        change,
        payload: payload.to_vec(),
    })
}

/// `{"op": "insert" | "modify" | "upsert" | "delete", "data": {column: value}}`.
fn decode_row(spec: &RowsSpec, payload: &[u8]) -> Result<Change, String> {
    let body: Json =
        serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let op = body
        .get("op")
        .and_then(Json::as_str)
        .ok_or("the payload has no string field \"op\"")?;
    match op {
        "delete" => Ok(Change::Delete),
        "insert" | "modify" | "upsert" => {
            let mut cells = Vec::new();
            match body.get("data") {
                None | Some(Json::Null) => {}
                Some(Json::Object(data)) => {
                    for (name, value) in data {
                        let column = spec
                            .columns
                            .iter()
                            .position(|c| c.to_string() == *name)
                            .ok_or_else(|| {
                                format!(
                                    "data.{name}: not one of the consumer's columns ({})",
                                    spec.columns
                                        .iter()
                                        .map(|c| c.to_string())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            })?;
                        let cell = match value {
                            Json::Null => Cell::Null,
                            Json::String(s) => Cell::Text(s.clone()),
                            Json::Number(n) => Cell::Int(n.as_i64().ok_or_else(|| {
                                format!("data.{name}: {n} is not a 64-bit integer")
                            })?),
                            other => {
                                return Err(format!(
                                    "data.{name}: {other} is not an integer, a string or null"
                                ))
                            }
                        };
                        cells.push((column, cell));
                    }
                }
                Some(other) => return Err(format!("\"data\" is not an object: {other}")),
            }
            Ok(Change::Upsert(cells))
        }
        other => Err(format!(
            "\"op\" is {other:?}, not insert, modify, upsert or delete"
        )),
    }
}

/// A message that cannot be applied, with its reason.
#[derive(Clone, Debug)]
pub(crate) struct Poisoned {
    pub id: String,
    pub key: Option<i64>,
    pub reason: String,
    pub payload: Vec<u8>,
}

/// What one applied batch did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Outcome {
    /// Operations that changed the database.
    pub applied: u64,
    /// Operations that changed nothing: replays and operations older than
    /// what was already applied for their key.
    pub stale: u64,
    /// Messages written to the dead letters.
    pub dead: u64,
}

/// Applies `ops` and writes `poison` to the dead letters, all in one
/// transaction.
pub(crate) fn apply_batch(
    c: &mut Connection,
    consumer: &str,
    apply: &Apply,
    ops: &[Operation],
    poison: &[Poisoned],
) -> Result<Outcome, StoreError> {
    c.write_transaction(|c| {
        let mut outcome = match apply {
            Apply::Versions(spec) => apply_versions(c, spec, ops)?,
            Apply::Rows(spec) => apply_rows(c, consumer, spec, ops)?,
        };
        outcome.dead = write_dead_letters(c, consumer, poison)?;
        Ok(outcome)
    })
}

fn apply_versions(
    c: &mut Connection,
    spec: &UpdateSpec,
    ops: &[Operation],
) -> Result<Outcome, StoreError> {
    let updates: Vec<(i64, i64)> = ops.iter().map(|o| (o.key, o.version)).collect();
    let (applied, stale) = crate::sink::update::apply_updates(c, spec, &updates)?;
    Ok(Outcome {
        applied,
        stale,
        dead: 0,
    })
}

/// Each operation, in (key, version) order so that concurrent consumers
/// lock keys in the same order, first advances the key's version in the
/// inbox; only when that moved it forward is the row changed. An operation
/// at or below the applied version changes nothing.
fn apply_rows(
    c: &mut Connection,
    consumer: &str,
    spec: &RowsSpec,
    ops: &[Operation],
) -> Result<Outcome, StoreError> {
    let mut order: Vec<&Operation> = ops.iter().collect();
    order.sort_by_key(|o| (o.key, o.version));
    let d = c.dialect();
    let mysql = d == Dialect::Mysql;
    let (t, k) = (d.quote(&spec.table), d.quote(&spec.key_column));
    let mut outcome = Outcome::default();
    for op in order {
        if !advance_inbox(c, consumer, op.key, op.version)? {
            outcome.stale += 1;
            continue;
        }
        match &op.change {
            Change::Delete => {
                c.execute(
                    &Sql::new(format!("DELETE FROM {t} WHERE {k} = ?")).bind(Bind::Int(op.key)),
                )?;
            }
            Change::Upsert(cells) => {
                let mut columns = vec![k.clone()];
                let mut values = vec!["?".to_owned()];
                let mut binds = vec![Bind::Int(op.key)];
                for (i, cell) in cells {
                    columns.push(d.quote(&spec.columns[*i]));
                    match cell {
                        Cell::Int(v) => {
                            values.push("?".into());
                            binds.push(Bind::Int(*v));
                        }
                        Cell::Text(s) => {
                            values.push("?".into());
                            binds.push(Bind::Text(s.clone()));
                        }
                        Cell::Null => values.push("NULL".into()),
                    }
                }
                // The row as the message has it: inserted, or its columns
                // set (MySQL: on a duplicate of its key, which must be the
                // table's one unique key; with no columns, the key is set
                // to itself, changing nothing).
                let set = |new: &dyn Fn(&str) -> String| {
                    columns[1..]
                        .iter()
                        .map(|c| format!("{c} = {}", new(c)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let action = match (mysql, cells.is_empty()) {
                    (false, true) => format!(" ON CONFLICT ({k}) DO NOTHING"),
                    (false, false) => format!(
                        " ON CONFLICT ({k}) DO UPDATE SET {}",
                        set(&|c| format!("excluded.{c}"))
                    ),
                    (true, true) => format!(" ON DUPLICATE KEY UPDATE {k} = {k}"),
                    (true, false) => format!(
                        " ON DUPLICATE KEY UPDATE {}",
                        set(&|c| format!("VALUES({c})"))
                    ),
                };
                let mut sql = Sql::new(format!(
                    "INSERT INTO {t} ({}) VALUES ({}){action}",
                    columns.join(", "),
                    values.join(", ")
                ));
                sql.push("", binds);
                c.execute(&sql)?;
            }
            Change::Version => unreachable!("rows consumers decode no version-only changes"),
        }
        outcome.applied += 1;
    }
    Ok(outcome)
}

/// Moves the consumer's applied version of `key` up to `version`; `false`
/// when it was there already or beyond (the operation is stale).
fn advance_inbox(
    c: &mut Connection,
    consumer: &str,
    key: i64,
    version: i64,
) -> Result<bool, StoreError> {
    if c.dialect() == Dialect::Mysql {
        // ON DUPLICATE KEY UPDATE counts a row it found and left alone as
        // changed under CLIENT_FOUND_ROWS: a new key is inserted, a known
        // one advanced only where its version is lower.
        let inserted = c.execute(
            &Sql::new(
                "INSERT IGNORE INTO tranche_inbox (consumer, row_key, version) VALUES (?, ?, ?)",
            )
            .bind(Bind::Text(consumer.to_owned()))
            .bind(Bind::Int(key))
            .bind(Bind::Int(version)),
        )?;
        if inserted == 1 {
            return Ok(true);
        }
        let advanced = c.execute(
            &Sql::new(
                "UPDATE tranche_inbox SET version = ? \
                 WHERE consumer = ? AND row_key = ? AND version < ?",
            )
            .bind(Bind::Int(version))
            .bind(Bind::Text(consumer.to_owned()))
            .bind(Bind::Int(key))
            .bind(Bind::Int(version)),
        )?;
        return Ok(advanced == 1);
    }
    let guard = Sql::new(
        "INSERT INTO tranche_inbox (consumer, row_key, version) VALUES (?, ?, ?) \
         ON CONFLICT (consumer, row_key) DO UPDATE SET version = excluded.version \
         WHERE tranche_inbox.version < excluded.version",
    )
    .bind(Bind::Text(consumer.to_owned()))
    .bind(Bind::Int(key))
    .bind(Bind::Int(version));
    Ok(c.execute(&guard)? == 1)
}

fn write_dead_letters(
    c: &mut Connection,
    consumer: &str,
    poison: &[Poisoned],
) -> Result<u64, StoreError> {
    let now = c.dialect().now_ms();
    for p in poison {
        c.execute(
            &Sql::new(format!(
                "INSERT INTO tranche_consumer_dead_letters \
                 (consumer, message_id, row_key, reason, payload, created_ms) \
                 VALUES (?, ?, ?, ?, ?, {now})"
            ))
            .bind(Bind::Text(consumer.to_owned()))
            .bind(Bind::Text(p.id.clone()))
            .bind(Bind::OptInt(p.key))
            .bind(Bind::Text(p.reason.clone()))
            .bind(Bind::Bytes(p.payload.clone())),
        )?;
    }
    Ok(poison.len() as u64)
}

#[derive(diesel::QueryableByName)]
struct DeadRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    message_id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    row_key: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    reason: String,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    payload: Vec<u8>,
}

/// A consumer's dead letters, oldest first.
pub(crate) fn dead_letters(
    c: &mut Connection,
    consumer: &str,
) -> Result<Vec<super::ConsumerDeadLetter>, StoreError> {
    let rows: Vec<DeadRow> = c.load(
        &Sql::new(
            "SELECT message_id, row_key, reason, payload FROM tranche_consumer_dead_letters \
             WHERE consumer = ? ORDER BY id",
        )
        .bind(Bind::Text(consumer.to_owned())),
    )?;
    Ok(rows
        .into_iter()
        .map(|r| super::ConsumerDeadLetter {
            message_id: r.message_id,
            row_key: r.row_key,
            reason: r.reason,
            payload: r.payload,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Ident;

    fn rows() -> Apply {
        Apply::Rows(RowsSpec {
            table: Ident::parse("t", "items").unwrap(),
            key_column: Ident::parse("k", "id").unwrap(),
            columns: vec![
                Ident::parse("c", "name").unwrap(),
                Ident::parse("c", "qty").unwrap(),
            ],
        })
    }

    #[test]
    fn ids_split_from_the_right() {
        assert_eq!(parse_id("a:b:7:3"), Ok((7, 3)));
        assert_eq!(parse_id("job:-5:0"), Ok((-5, 0)));
        assert!(parse_id("job:x:1").is_err());
        assert!(parse_id("7:3").is_err());
        assert!(parse_id(":7:3").is_err());
    }

    #[test]
    fn rows_decode_and_poison_names_the_field() {
        let op = decode(
            &rows(),
            Some("j:4:2"),
            br#"{"op":"insert","data":{"name":"x","qty":3}}"#,
        )
        .unwrap();
        assert_eq!((op.key, op.version), (4, 2));
        assert_eq!(
            op.change,
            Change::Upsert(vec![(0, Cell::Text("x".into())), (1, Cell::Int(3))])
        );
        let delete = decode(&rows(), Some("j:4:3"), br#"{"op":"delete"}"#).unwrap();
        assert_eq!(delete.change, Change::Delete);
        let cases: [(&[u8], &str); 5] = [
            (b"not json", "not JSON"),
            (br#"{"data":{}}"#, "\"op\""),
            (br#"{"op":"merge"}"#, "\"merge\""),
            (br#"{"op":"insert","data":{"colour":1}}"#, "data.colour"),
            (br#"{"op":"insert","data":{"qty":1.5}}"#, "data.qty"),
        ];
        for (payload, needle) in cases {
            let (key, reason) = decode(&rows(), Some("j:4:2"), payload).unwrap_err();
            assert_eq!(key, Some(4));
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
        }
        let (key, reason) = decode(&rows(), None, b"{}").unwrap_err();
        assert_eq!(key, None);
        assert!(reason.contains("no id"));
    }
}

//! What the database catalog says of a table: its columns with their types,
//! and its indexes. Read before a run is planned, so that a source that
//! cannot be read as configured is refused, naming the field, before
//! anything is claimed or written.
//!
//! PostgreSQL answers from `pg_attribute` and `pg_index` (the table is
//! resolved with `to_regclass`, so the session's `search_path` applies);
//! SQLite from `pragma_table_info`, `pragma_index_list` and
//! `pragma_index_info`; MySQL from `information_schema` (the table's
//! schema, when not named, being the connection's database). The checks themselves are pure logic over the
//! [`TableInfo`] this returns, in the crate's `catalog` module.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use super::connection::{Bind, Connection, Dialect, Sql};
use super::StoreError;
use crate::catalog::{pg_base_type, ColumnInfo, ColumnKind, IndexInfo, TableInfo};
use crate::model::Ident;

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    type_name: String,
    #[diesel(sql_type = BigInt)]
    not_null: i64,
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

#[derive(QueryableByName)]
struct IndexRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    uniq: i64,
    #[diesel(sql_type = BigInt)]
    partial: i64,
    #[diesel(sql_type = Text)]
    origin: String,
}

#[derive(QueryableByName)]
struct IndexColumn {
    #[diesel(sql_type = Nullable<Text>)]
    name: Option<String>,
}

#[derive(QueryableByName)]
struct PgIndexRow {
    #[diesel(sql_type = BigInt)]
    uniq: i64,
    #[diesel(sql_type = BigInt)]
    partial: i64,
    /// Key columns joined by commas; an expression is an empty name.
    #[diesel(sql_type = Text)]
    cols: String,
}

/// Describes `table`, or `None` when there is no such table or view.
pub(crate) fn describe(c: &mut Connection, table: &Ident) -> Result<Option<TableInfo>, StoreError> {
    match c.dialect() {
        Dialect::Postgres => describe_pg(c, table),
        Dialect::Sqlite => describe_sqlite(c, table),
        Dialect::Mysql => describe_mysql(c, table),
    }
}

#[derive(QueryableByName)]
struct MysqlIndexRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    uniq: i64,
    /// Key columns joined by commas; an expression or a prefix of a
    /// column is an empty name (it cannot serve the keyset's order).
    #[diesel(sql_type = Text)]
    cols: String,
}

fn describe_mysql(c: &mut Connection, table: &Ident) -> Result<Option<TableInfo>, StoreError> {
    let (schema, name) = table.schema_and_name();
    let at = |sql: &str| {
        Sql::new(sql)
            .bind(Bind::OptText(schema.map(str::to_owned)))
            .bind(Bind::Text(name.to_owned()))
    };
    let columns = c.load::<ColumnRow>(&at(
        "SELECT CAST(COLUMN_NAME AS CHAR) AS name, CAST(COLUMN_TYPE AS CHAR) AS type_name, \
         CASE WHEN IS_NULLABLE = 'NO' THEN 1 ELSE 0 END AS not_null, 0 AS pk \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
         ORDER BY ORDINAL_POSITION",
    ))?;
    if columns.is_empty() {
        return Ok(None);
    }
    let listed = c.load::<MysqlIndexRow>(&at(
        "SELECT CAST(INDEX_NAME AS CHAR) AS name, CASE WHEN NON_UNIQUE = 0 THEN 1 ELSE 0 END AS uniq, \
         CAST(GROUP_CONCAT(CASE WHEN SUB_PART IS NULL THEN COALESCE(COLUMN_NAME, '') ELSE '' END \
           ORDER BY SEQ_IN_INDEX SEPARATOR ',') AS CHAR) AS cols \
         FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND INDEX_TYPE = 'BTREE' \
         GROUP BY INDEX_NAME, NON_UNIQUE",
    ))?;
    let cols = |r: &MysqlIndexRow| -> Vec<Option<String>> {
        r.cols
            .split(',')
            .map(|c| (!c.is_empty()).then(|| c.to_owned()))
            .collect()
    };
    // InnoDB keeps the primary key's columns at the end of every other
    // index, which so orders by them too.
    let primary: Vec<Option<String>> = listed
        .iter()
        .find(|r| r.name == "PRIMARY")
        .map(cols)
        .unwrap_or_default();
    let indexes = listed
        .iter()
        .map(|r| {
            let mut columns = cols(r);
            if r.name != "PRIMARY" {
                for pk in &primary {
                    if pk.is_some() && !columns.contains(pk) {
                        columns.push(pk.clone());
                    }
                }
            }
            IndexInfo {
                columns,
                unique: r.uniq != 0,
                partial: false,
            }
        })
        .collect();
    Ok(Some(TableInfo {
        columns: columns
            .into_iter()
            .map(|r| ColumnInfo {
                kind: mysql_kind(&r.type_name),
                name: r.name,
                type_name: r.type_name,
                not_null: r.not_null != 0,
            })
            .collect(),
        indexes,
        rowid_alias: None,
        sqlite: false,
        mysql: true,
    }))
}

/// The kind of a MySQL column type (`COLUMN_TYPE`: `bigint(20) unsigned`,
/// `varchar(255)`, `datetime(6)`...).
fn mysql_kind(column_type: &str) -> ColumnKind {
    let t = column_type.to_ascii_lowercase();
    let base = t.split(['(', ' ']).next().unwrap_or_default();
    match base {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => ColumnKind::Integer,
        "float" | "double" | "real" => ColumnKind::Float,
        "decimal" | "numeric" => ColumnKind::Numeric,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => {
            ColumnKind::Text
        }
        "json" => ColumnKind::Json,
        "datetime" | "timestamp" => ColumnKind::Timestamp,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            ColumnKind::Bytes
        }
        _ => ColumnKind::Other,
    }
}

fn describe_pg(c: &mut Connection, table: &Ident) -> Result<Option<TableInfo>, StoreError> {
    let name = Bind::Text(table.quoted());
    let columns = c.load::<ColumnRow>(
        &Sql::new(
            "SELECT a.attname::text AS name, \
             format_type(COALESCE(NULLIF(t.typbasetype, 0), a.atttypid), a.atttypmod) AS type_name, \
             CASE WHEN a.attnotnull THEN 1 ELSE 0 END::bigint AS not_null, 0::bigint AS pk \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = to_regclass(?) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .bind(name.clone()),
    )?;
    if columns.is_empty() {
        return Ok(None);
    }
    let indexes = c.load::<PgIndexRow>(
        &Sql::new(
            "SELECT CASE WHEN i.indisunique THEN 1 ELSE 0 END::bigint AS uniq, \
             CASE WHEN i.indpred IS NULL THEN 0 ELSE 1 END::bigint AS partial, \
             array_to_string(ARRAY( \
               SELECT COALESCE(a.attname::text, '') \
               FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
               LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
               WHERE k.ord <= i.indnkeyatts ORDER BY k.ord), ',') AS cols \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
             JOIN pg_am am ON am.oid = ic.relam \
             WHERE i.indrelid = to_regclass(?) AND am.amname = 'btree' AND i.indisvalid",
        )
        .bind(name),
    )?;
    Ok(Some(TableInfo {
        columns: columns
            .into_iter()
            .map(|r| ColumnInfo {
                kind: pg_kind(&r.type_name),
                name: r.name,
                type_name: r.type_name,
                not_null: r.not_null != 0,
            })
            .collect(),
        indexes: indexes
            .into_iter()
            .map(|r| IndexInfo {
                columns: r
                    .cols
                    .split(',')
                    .map(|c| (!c.is_empty()).then(|| c.to_owned()))
                    .collect(),
                unique: r.uniq != 0,
                partial: r.partial != 0,
            })
            .collect(),
        rowid_alias: None,
        sqlite: false,
        mysql: false,
    }))
}

/// The kind of a PostgreSQL type (a domain's is its base type's), from its
/// `format_type` text without modifiers: `timestamp(3) with time zone` is
/// a `timestamp with time zone`.
fn pg_kind(type_name: &str) -> ColumnKind {
    if type_name.ends_with("[]") {
        return ColumnKind::Other;
    }
    let base = pg_base_type(type_name);
    match base.as_str() {
        "smallint" | "integer" | "bigint" | "oid" => ColumnKind::Integer,
        "real" | "double precision" => ColumnKind::Float,
        "boolean" => ColumnKind::Bool,
        "text" | "character varying" | "character" | "name" | "citext" | "\"char\"" => {
            ColumnKind::Text
        }
        "json" | "jsonb" => ColumnKind::Json,
        "timestamp without time zone" | "timestamp with time zone" => ColumnKind::Timestamp,
        "numeric" => ColumnKind::Numeric,
        "bytea" => ColumnKind::Bytes,
        _ => ColumnKind::Other,
    }
}

fn describe_sqlite(c: &mut Connection, table: &Ident) -> Result<Option<TableInfo>, StoreError> {
    let (schema, name) = table.schema_and_name();
    let schema = schema.unwrap_or("main").to_owned();
    let columns = c.load::<ColumnRow>(
        &Sql::new(
            "SELECT name, type AS type_name, \"notnull\" AS not_null, pk \
             FROM pragma_table_info(?, ?) ORDER BY cid",
        )
        .bind(Bind::Text(name.to_owned()))
        .bind(Bind::Text(schema.clone())),
    )?;
    if columns.is_empty() {
        return Ok(None);
    }
    let listed = c.load::<IndexRow>(
        &Sql::new("SELECT name, \"unique\" AS uniq, partial, origin FROM pragma_index_list(?, ?)")
            .bind(Bind::Text(name.to_owned()))
            .bind(Bind::Text(schema.clone())),
    )?;
    let mut indexes = Vec::with_capacity(listed.len());
    for index in &listed {
        let cols = c.load::<IndexColumn>(
            &Sql::new("SELECT name FROM pragma_index_info(?, ?) ORDER BY seqno")
                .bind(Bind::Text(index.name.clone()))
                .bind(Bind::Text(schema.clone())),
        )?;
        indexes.push(IndexInfo {
            columns: cols.into_iter().map(|c| c.name).collect(),
            unique: index.uniq != 0,
            partial: index.partial != 0,
        });
    }
    // A single-column INTEGER PRIMARY KEY of a rowid table is the rowid
    // itself: it has no index of its own in the list (a WITHOUT ROWID
    // table's primary key has, with origin "pk").
    let pk: Vec<&ColumnRow> = columns.iter().filter(|r| r.pk > 0).collect();
    let pk_indexed = listed.iter().any(|i| i.origin == "pk");
    let rowid_alias = match pk.as_slice() {
        [only] if only.type_name.eq_ignore_ascii_case("INTEGER") && !pk_indexed => {
            Some(only.name.clone())
        }
        _ => None,
    };
    Ok(Some(TableInfo {
        columns: columns
            .iter()
            .map(|r| ColumnInfo {
                kind: sqlite_kind(&r.type_name),
                name: r.name.clone(),
                type_name: r.type_name.clone(),
                not_null: r.not_null != 0 || rowid_alias.as_deref() == Some(r.name.as_str()),
            })
            .collect(),
        indexes,
        rowid_alias,
        sqlite: true,
        mysql: false,
    }))
}

/// The kind of an SQLite column, by the affinity rules of its declared
/// type (section 3.1 of SQLite's "Datatypes In SQLite").
fn sqlite_kind(declared: &str) -> ColumnKind {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        ColumnKind::Integer
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        ColumnKind::Text
    } else if t.contains("BLOB") || t.is_empty() {
        ColumnKind::Bytes
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        ColumnKind::Float
    } else if t.contains("BOOL") {
        ColumnKind::Bool
    } else {
        ColumnKind::Numeric
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_types_take_their_affinity() {
        assert_eq!(sqlite_kind("BIGINT"), ColumnKind::Integer);
        assert_eq!(sqlite_kind("integer"), ColumnKind::Integer);
        assert_eq!(sqlite_kind("VARCHAR(20)"), ColumnKind::Text);
        assert_eq!(sqlite_kind(""), ColumnKind::Bytes);
        assert_eq!(sqlite_kind("DOUBLE"), ColumnKind::Float);
        assert_eq!(sqlite_kind("DATETIME"), ColumnKind::Numeric);
        assert_eq!(sqlite_kind("DECIMAL(10,2)"), ColumnKind::Numeric);
    }

    #[test]
    fn postgres_types_are_read_by_their_formatted_name() {
        assert_eq!(pg_kind("bigint"), ColumnKind::Integer);
        assert_eq!(pg_kind("character varying(20)"), ColumnKind::Text);
        assert_eq!(pg_kind("timestamp with time zone"), ColumnKind::Timestamp);
        assert_eq!(
            pg_kind("timestamp(3) without time zone"),
            ColumnKind::Timestamp
        );
        assert_eq!(pg_kind("numeric(12,2)"), ColumnKind::Numeric);
        assert_eq!(pg_kind("integer[]"), ColumnKind::Other);
        assert_eq!(pg_kind("uuid"), ColumnKind::Other);
        assert_eq!(pg_kind("jsonb"), ColumnKind::Json);
    }
}

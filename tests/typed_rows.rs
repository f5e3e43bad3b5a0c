//! Typed rows: every column type tranche reads arrives as its documented
//! JSON form and through its typed getter, on PostgreSQL and SQLite, and a
//! value that cannot be read poisons its row alone.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, QueryableByName};
use serde_json::{json, Value as Json};
use tranche::job::{Datum, TIMESTAMP_INFINITY};
use tranche::sink::MemorySink;
use tranche::store::{RunState, Sql};
use tranche::{Job, Message, RuntimeConfig, RuntimeHandle, Scope, Source, SourceRow, Strategy};

/// Runs `source` to the end, returning its rows as the processor saw them
/// and each row's payload (its columns by name, serialized), by key.
async fn read_all(
    runtime: &RuntimeHandle,
    name: &str,
    source: Source,
) -> (
    BTreeMap<i64, SourceRow>,
    BTreeMap<i64, Json>,
    Vec<tranche::store::DeadLetter>,
) {
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let sink = MemorySink::new();
    let keep = Arc::clone(&seen);
    let owned = name.to_owned();
    let job = Job::builder(name)
        .source(source)
        .strategy(Strategy::Range { partitions: 2 })
        .processor(move |row: &SourceRow, _: &Scope| {
            keep.lock().unwrap().insert(row.key, row.clone());
            let by_name: BTreeMap<&str, &Datum> = row.iter().collect();
            let payload =
                serde_json::to_vec(&by_name).map_err(|e| tranche::Poison(e.to_string()))?;
            Ok(Some(Message::new(&owned, row.key, 1, payload)))
        })
        .sink(Arc::new(sink.clone()))
        .build()
        .unwrap();
    let report = runtime.run(job).await.unwrap();
    assert_eq!(report.state, RunState::Done, "{report:?}");
    let letters = runtime.store().dead_letters(report.run_id).await.unwrap();
    let payloads = sink
        .messages()
        .into_iter()
        .map(|m| (m.key, serde_json::from_slice(&m.payload).unwrap()))
        .collect();
    let rows = std::mem::take(&mut *seen.lock().unwrap());
    (rows, payloads, letters)
}

const PG_COLUMNS: &[&str] = &[
    "i2", "i4", "i8", "f4", "f8", "b", "t", "vc", "ch", "n", "nn", "j", "jb", "ts", "tz", "d",
    "by", "u", "dom", "m", "arr", "iv",
];

fn pg_source(table: &str) -> Source {
    PG_COLUMNS
        .iter()
        .fold(Source::by_key(table, "id").unwrap(), |s, c| {
            s.column(c).unwrap()
        })
}

#[derive(QueryableByName)]
struct Texts {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    n: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    nn: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_types_arrive_typed_and_in_their_documented_json() {
    let Some(db) = common::pg_database("typed_rows") else {
        return;
    };
    let runtime = RuntimeHandle::start(RuntimeConfig::new(&db.url))
        .await
        .unwrap();
    let store = runtime.store().clone();
    store
        .run(|c| {
            c.batch(
                "CREATE DOMAIN positive AS integer CHECK (VALUE > 0); \
                 CREATE TYPE mood AS ENUM ('sad', 'happy'); \
                 CREATE TABLE typed (id bigint PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, \
                   f4 real, f8 double precision, b boolean, t text, vc varchar(10), ch char(3), \
                   n numeric(12,4), nn numeric, j json, jb jsonb, ts timestamp(3), tz timestamptz, \
                   d date, by bytea, u uuid, dom positive, m mood, arr integer[], iv interval); \
                 INSERT INTO typed VALUES \
                 (1, -32768, 2147483647, -9223372036854775808, 0.1, 2.5, true, 'ü 😀 \"q\"', \
                  'varchar', 'ab', -12.5, 123456789012345678901234567890.000000000000000001, \
                  '{\"a\": [1, 2, {\"b\": null}]}', '{\"z\": {\"y\": [true, 1.5]}, \"a\": \"x\"}', \
                  '2024-05-01 12:00:00.25', '2024-05-01 14:00:00.000001+02', '2024-02-29', \
                  '\\xdeadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 7, 'happy', \
                  '{1,NULL,3}', '1 day 02:03:04'), \
                 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
                 (3, 0, 0, 0, '-Infinity', 'NaN', false, '', '', '', 0, 'NaN', 'null', '[]', \
                  'infinity', '-infinity', '0044-03-15 BC', '\\x', \
                  '00000000-0000-0000-0000-000000000000', 1, 'sad', '{}', '-1 year'), \
                 (4, 1, 1, 1, 3.4e38, 1e-300, true, 'x', 'x', 'x', 0.0001, '-0.000000001', '1', \
                  '\"s\"', '1969-12-31 23:59:59.999999', '10000-01-01 00:00:00+00', 'infinity', \
                  '\\x00ff', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 1, 'sad', '{{1,2},{3,4}}', \
                  '0 seconds')",
            )
        })
        .await
        .unwrap();
    let (rows, payloads, letters) = read_all(&runtime, "typed-pg", pg_source("typed")).await;
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(payloads.len(), 4);

    // Numerics are exact: the same text PostgreSQL writes for them.
    let texts = store
        .run(|c| {
            c.load::<Texts>(&Sql::new(
                "SELECT id, CAST(n AS TEXT) AS n, CAST(nn AS TEXT) AS nn FROM typed",
            ))
        })
        .await
        .unwrap();
    for t in &texts {
        let p = &payloads[&t.id];
        assert_eq!(p["n"].as_str(), t.n.as_deref(), "row {}", t.id);
        assert_eq!(p["nn"].as_str(), t.nn.as_deref(), "row {}", t.id);
    }

    assert_eq!(
        payloads[&1],
        json!({
            "i2": -32768, "i4": 2147483647, "i8": i64::MIN, "f4": 0.1, "f8": 2.5, "b": true,
            "t": "ü 😀 \"q\"", "vc": "varchar", "ch": "ab ", "n": "-12.5000",
            "nn": "123456789012345678901234567890.000000000000000001",
            "j": {"a": [1, 2, {"b": null}]}, "jb": {"a": "x", "z": {"y": [true, 1.5]}},
            "ts": "2024-05-01T12:00:00.25Z", "tz": "2024-05-01T12:00:00.000001Z",
            "d": "2024-02-29", "by": "3q2+7w==", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "dom": 7, "m": "happy", "arr": "{1,NULL,3}", "iv": "1 day 02:03:04",
        })
    );
    let nulls: BTreeMap<String, Json> = PG_COLUMNS
        .iter()
        .map(|c| (c.to_string(), Json::Null))
        .collect();
    assert_eq!(payloads[&2], json!(nulls));
    assert_eq!(
        payloads[&3],
        json!({
            "i2": 0, "i4": 0, "i8": 0, "f4": "-Infinity", "f8": "NaN", "b": false, "t": "",
            "vc": "", "ch": "   ", "n": "0.0000", "nn": "NaN", "j": null, "jb": [],
            "ts": "infinity", "tz": "-infinity", "d": "-0043-03-15", "by": "",
            "u": "00000000-0000-0000-0000-000000000000", "dom": 1, "m": "sad", "arr": "{}",
            "iv": "-1 years",
        })
    );
    assert_eq!(payloads[&4]["f4"], json!(3.4e38));
    assert_eq!(payloads[&4]["f8"], json!(1e-300));
    // timestamp(3) keeps milliseconds: PostgreSQL rounded the value.
    assert_eq!(payloads[&4]["ts"], json!("1970-01-01T00:00:00Z"));
    assert_eq!(payloads[&4]["tz"], json!("+10000-01-01T00:00:00Z"));
    assert_eq!(payloads[&4]["d"], json!("infinity"));
    assert_eq!(payloads[&4]["by"], json!("AP8="));
    assert_eq!(payloads[&4]["arr"], json!("{{1,2},{3,4}}"));
    assert_eq!(payloads[&4]["j"], json!(1));
    assert_eq!(payloads[&4]["jb"], json!("s"));

    // The typed getters read the same values; a wrong one names the column.
    let one = &rows[&1];
    assert_eq!(one.int("i8").unwrap(), Some(i64::MIN));
    assert_eq!(one.float("f4").unwrap(), Some(0.1));
    assert_eq!(one.float("i4").unwrap(), Some(2_147_483_647.0));
    assert_eq!(one.bool("b").unwrap(), Some(true));
    assert_eq!(
        one.text("u").unwrap(),
        Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    );
    assert_eq!(one.numeric("n").unwrap().as_deref(), Some("-12.5000"));
    assert_eq!(
        one.json("jb").unwrap(),
        Some(json!({"a": "x", "z": {"y": [true, 1.5]}}))
    );
    assert_eq!(one.timestamp("tz").unwrap(), Some(1_714_564_800_000_001));
    assert_eq!(one.date("d").unwrap(), Some(19_782));
    assert_eq!(
        one.bytes("by").unwrap(),
        Some(&[0xde, 0xad, 0xbe, 0xef][..])
    );
    assert_eq!(rows[&3].timestamp("ts").unwrap(), Some(TIMESTAMP_INFINITY));
    assert_eq!(rows[&2].int("i4").unwrap(), None);
    let wrong = one.int("t").unwrap_err().to_string();
    assert!(wrong.contains("column t holds the text"), "{wrong}");

    // Read as text, every column is PostgreSQL's text form.
    let (rows, _, _) = read_all(
        &runtime,
        "typed-pg-text",
        pg_source("typed").columns_as_text(),
    )
    .await;
    assert_eq!(rows[&1].get("i4"), Some(&Datum::Text("2147483647".into())));
    assert_eq!(rows[&1].get("b"), Some(&Datum::Text("true".into())));
    assert_eq!(rows[&2].get("jb"), Some(&Datum::Null));
    assert!(rows[&1].columns.iter().all(|d| matches!(d, Datum::Text(_))));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_values_arrive_by_storage_class_and_bad_text_poisons_its_row_alone() {
    let (_dir, url) = common::sqlite_database();
    let mut config = RuntimeConfig::new(&url);
    config.skip_limit = 5;
    config.page_size = 2;
    let runtime = RuntimeHandle::start(config).await.unwrap();
    runtime
        .store()
        .run(|c| {
            c.batch(
                "CREATE TABLE typed (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, bl BLOB, \
                   num NUMERIC, anything); \
                 INSERT INTO typed VALUES \
                 (1, 42, 0.5, 'héllo', X'DEADBEEF', '12.50', 9223372036854775807), \
                 (2, NULL, NULL, NULL, NULL, NULL, NULL), \
                 (3, 'abc', 1, 7, 'text in a blob', 'not a number', X''), \
                 (4, 1, 2, CAST(X'68FF69' AS TEXT), NULL, 3, 1e308), \
                 (5, -1, -0.25, 'ok', NULL, 1, 'last')",
            )
        })
        .await
        .unwrap();
    let source = ["i", "r", "t", "bl", "num", "anything"]
        .iter()
        .fold(Source::by_key("typed", "id").unwrap(), |s, c| {
            s.column(c).unwrap()
        });
    let (rows, payloads, letters) = read_all(&runtime, "typed-sqlite", source).await;
    assert_eq!(
        payloads[&1],
        json!({"i": 42, "r": 0.5, "t": "héllo", "bl": "3q2+7w==", "num": 12.5,
               "anything": i64::MAX})
    );
    assert_eq!(
        payloads[&2],
        json!({"i": null, "r": null, "t": null, "bl": null, "num": null, "anything": null})
    );
    // By storage class, whatever the column's declared type.
    assert_eq!(
        payloads[&3],
        json!({"i": "abc", "r": 1.0, "t": "7", "bl": "text in a blob", "num": "not a number",
               "anything": ""})
    );
    assert_eq!(
        rows[&3].int("i").unwrap_err().to_string(),
        "column i holds the text \"abc\", not an integer"
    );
    assert_eq!(
        rows[&1].bytes("bl").unwrap(),
        Some(&[0xde, 0xad, 0xbe, 0xef][..])
    );
    assert_eq!(rows[&1].float("num").unwrap(), Some(12.5));
    // Text that is not UTF-8 poisons its row alone, naming the column.
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].row_key, Some(4));
    assert!(
        letters[0].reason.contains("column t is not valid UTF-8"),
        "{letters:?}"
    );
    assert_eq!(
        payloads.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 5]
    );
    runtime.shutdown().await;
}

/// A database in SQL_ASCII hands over whatever bytes it holds: text that
/// is not UTF-8 is a poison row, not a failed partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sql_ascii_text_that_is_not_utf8_poisons_its_row_alone() {
    let Some(db) = common::pg_database("typed_ascii") else {
        return;
    };
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let admin_url = common::pg_admin_url();
    let mut admin = PgConnection::establish(&admin_url).unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' \
             TEMPLATE template0"
        ))
        .unwrap();
    let mut config = RuntimeConfig::new(&db.url);
    config.skip_limit = 5;
    let runtime = RuntimeHandle::start(config).await.unwrap();
    runtime
        .store()
        .run(|c| {
            c.batch(
                "CREATE TABLE latin (id bigint PRIMARY KEY, note text); \
                 INSERT INTO latin VALUES (1, 'fine'), (2, E'caf\\xe9'), (3, 'also fine')",
            )
        })
        .await
        .unwrap();
    let source = Source::by_key("latin", "id")
        .unwrap()
        .column("note")
        .unwrap();
    let (rows, _, letters) = read_all(&runtime, "typed-ascii", source).await;
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].row_key, Some(2));
    assert!(
        letters[0].reason.contains("column note is not valid UTF-8"),
        "{letters:?}"
    );
    runtime.shutdown().await;
}

/// MySQL and MariaDB: integers (unsigned too), floats, exact decimals,
/// text of a binary collation, binary strings, dates and datetimes arrive
/// typed; JSON, TIME and other text arrive as text; a BIGINT
/// UNSIGNED beyond a signed 64-bit integer poisons its row alone.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_types_arrive_typed_and_in_their_documented_json() {
    let Some(db) = common::mysql_database("typed_rows") else {
        return;
    };
    let mut config = RuntimeConfig::new(&db.url);
    config.skip_limit = 5;
    let runtime = RuntimeHandle::start(config).await.unwrap();
    runtime
        .store()
        .run(|c| {
            c.batch(
                "CREATE TABLE typed (id BIGINT PRIMARY KEY, ti TINYINT, u8 BIGINT UNSIGNED, \
                   f FLOAT, d DOUBLE, n DECIMAL(12,4), t TEXT, vc VARCHAR(10), \
                   bin VARBINARY(8), bl BLOB, j JSON, dt DATETIME(6), ts TIMESTAMP(3) NULL, \
                   da DATE, tm TIME, e ENUM('sad', 'happy')) \
                   CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; \
                 INSERT INTO typed VALUES \
                 (1, -128, 18446744073709551, 0.5, 2.5, -12.5, 'ü 😀 \"q\"', 'varchar', \
                  X'DEADBEEF', X'00FF', '{\"a\": [1, null]}', '2024-05-01 12:00:00.250000', \
                  '1970-01-01 00:00:01.5', '2024-02-29', '-25:03:04', 'happy'), \
                 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                  NULL, NULL, NULL), \
                 (3, 0, 18446744073709551615, 0, 0, 0, '', '', X'', X'', '[]', \
                  '1000-01-01 00:00:00', NULL, '9999-12-31', '00:00:00', 'sad')",
            )
        })
        .await
        .unwrap();
    let columns = [
        "ti", "u8", "f", "d", "n", "t", "vc", "bin", "bl", "j", "dt", "ts", "da", "tm", "e",
    ];
    let source = columns
        .iter()
        .fold(Source::by_key("typed", "id").unwrap(), |s, c| {
            s.column(c).unwrap()
        });
    let (rows, payloads, letters) = read_all(&runtime, "typed-mysql", source).await;
    assert_eq!(
        payloads[&1],
        json!({"ti": -128, "u8": 18446744073709551_i64, "f": 0.5, "d": 2.5, "n": "-12.5000",
               "t": "ü 😀 \"q\"", "vc": "varchar", "bin": "3q2+7w==", "bl": "AP8=",
               "j": "{\"a\": [1, null]}", "dt": "2024-05-01T12:00:00.25Z",
               "ts": "1970-01-01T00:00:01.5Z", "da": "2024-02-29", "tm": "-25:03:04",
               "e": "happy"})
    );
    assert!(
        payloads[&2]
            .as_object()
            .unwrap()
            .values()
            .all(Json::is_null),
        "{}",
        payloads[&2]
    );
    let one = &rows[&1];
    assert_eq!(one.text("t").unwrap(), Some("ü 😀 \"q\""));
    assert_eq!(
        one.bytes("bin").unwrap(),
        Some(&[0xde, 0xad, 0xbe, 0xef][..])
    );
    assert_eq!(one.timestamp("dt").unwrap(), Some(1_714_564_800_250_000));
    assert_eq!(one.numeric("n").unwrap().as_deref(), Some("-12.5000"));
    // 2^64 - 1 has no signed 64-bit form: its row is dead-lettered, named.
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].row_key, Some(3));
    assert!(letters[0].reason.contains("column u8"), "{letters:?}");
    runtime.shutdown().await;
}

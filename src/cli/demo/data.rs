//! The demo's data and job: the two-phase subscription migration.
//!
//! A catalogue of products, some of which moved to a new version, and
//! subscriptions still on older versions. *Identification* finds the
//! products whose version changed and still have subscriptions on an old
//! one (one scope each, with the product key and new version), and splits
//! each product's subscriptions into partitions by row-count quantiles of
//! `(created_at, id)`. The *update* phase pages through every partition and
//! hands each subscription to the sink; the default sink applies the update
//! in-process, idempotently.
//!
//! Seeding is deterministic: the same `--rows` always produce the same data,
//! with creation dates skewed towards recent years and bursts of thousands
//! of subscriptions sharing one timestamp (bulk imports). Each subscription
//! remembers the version it was seeded with, so verification can prove that
//! every eligible row changed and no other row did.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use serde::Serialize;

use tranche::job::{Condition, FilterValue, Op};
use tranche::sink::Sink;
use tranche::sink::UpdateSpec;
use tranche::store::Scopes;
use tranche::store::{Bind, Connection, Dialect, Sql, StoreError};
use tranche::Job;
use tranche::{Message, Scope, Source, SourceRow, Strategy};

/// The demo job's name.
pub const JOB_NAME: &str = "demo-s0";
/// The subscriptions table.
pub const SUBSCRIPTIONS: &str = "demo_subscriptions";
/// The products table.
pub const PRODUCTS: &str = "demo_products";

/// Current version of products 1..=8; a product above 1 has changed.
const PRODUCT_VERSIONS: [i64; 8] = [3, 1, 2, 3, 1, 2, 1, 4];
/// Share of subscriptions per product, in percent.
const PRODUCT_WEIGHTS: [u64; 8] = [30, 20, 15, 10, 10, 8, 5, 2];
/// 2016-01-01T00:00:00Z.
const EPOCH_START: i64 = 1_451_606_400;
/// Ten years of seconds.
const SPAN_S: i64 = 10 * 365 * 86_400;
/// Two bulk imports, `(start, end)` as fractions of the id range: every
/// subscription of one import shares the timestamp of its first row.
const BURSTS: [(f64, f64); 2] = [(0.40, 0.43), (0.75, 0.76)];

/// Creates the demo tables if they do not exist.
pub fn create_schema(c: &mut Connection) -> Result<(), StoreError> {
    // PostgreSQL and MySQL keep creation dates as timestamps, as such
    // systems do; SQLite has no timestamp type, so epoch seconds. MySQL
    // (whose `CREATE INDEX` has no `IF NOT EXISTS`) gets the scan index
    // with the table.
    let (pk, created, meta_key, index) = match c.dialect() {
        Dialect::Postgres => ("BIGINT PRIMARY KEY", "TIMESTAMPTZ", "TEXT", ""),
        Dialect::Mysql => (
            "BIGINT PRIMARY KEY",
            "DATETIME(6)",
            "VARCHAR(64)",
            ", KEY demo_subscriptions_scan (product_id, created_at, id)",
        ),
        _ => ("INTEGER PRIMARY KEY", "BIGINT", "TEXT", ""),
    };
    let key = meta_key_column(c.dialect());
    c.batch(&format!(
        "CREATE TABLE IF NOT EXISTS {PRODUCTS} (id {pk}, name TEXT NOT NULL, version BIGINT NOT NULL);
         CREATE TABLE IF NOT EXISTS {SUBSCRIPTIONS} (
             id {pk},
             product_id BIGINT NOT NULL,
             version BIGINT NOT NULL,
             seeded_version BIGINT NOT NULL,
             created_at {created} NOT NULL{index});
         CREATE TABLE IF NOT EXISTS demo_meta ({key} {meta_key} PRIMARY KEY, value TEXT NOT NULL);"
    ))
}

/// `demo_meta`'s key column, `key`, a reserved word on MySQL.
fn meta_key_column(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Mysql => "`key`",
        _ => "key",
    }
}

/// Drops the demo tables and forgets the demo job's runs.
pub fn reset(c: &mut Connection) -> Result<(), StoreError> {
    c.batch(&format!(
        "DROP TABLE IF EXISTS {SUBSCRIPTIONS}; DROP TABLE IF EXISTS {PRODUCTS}; \
         DROP TABLE IF EXISTS demo_meta;"
    ))?;
    // Children first: dead letters, partitions and samples reference runs.
    for table in [
        "tranche_dead_letters",
        "tranche_partitions",
        "tranche_run_samples",
    ] {
        c.execute(
            &Sql::new(format!(
                "DELETE FROM {table} WHERE run_id IN (SELECT id FROM tranche_runs WHERE job_name = ?)"
            ))
            .bind(Bind::Text(JOB_NAME.into())),
        )?;
    }
    c.execute(
        &Sql::new("DELETE FROM tranche_runs WHERE job_name = ?").bind(Bind::Text(JOB_NAME.into())),
    )?;
    c.execute(
        &Sql::new("DELETE FROM tranche_jobs WHERE name = ?").bind(Bind::Text(JOB_NAME.into())),
    )?;
    c.execute(
        &Sql::new("DELETE FROM tranche_outbox WHERE job_name = ?")
            .bind(Bind::Text(JOB_NAME.into())),
    )?;
    Ok(())
}

#[derive(QueryableByName)]
struct MetaValue {
    #[diesel(sql_type = Text)]
    value: String,
}

/// The row count the data set was seeded with, if seeding completed.
pub fn seeded_rows(c: &mut Connection) -> Result<Option<u64>, StoreError> {
    let key = meta_key_column(c.dialect());
    let rows: Vec<MetaValue> = c.load(&Sql::new(format!(
        "SELECT value FROM demo_meta WHERE {key} = 'seeded_rows'"
    )))?;
    Ok(rows.first().and_then(|r| r.value.parse().ok()))
}

/// A small deterministic generator (xorshift64*), so seeding needs no
/// dependency and the same row count always yields the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// When subscription `id` of `rows` was created. Ids follow creation order,
/// as they do in a real table, but the density of creations grows towards
/// recent years (`t ~ sqrt(position)`), and bulk imports give thousands of
/// consecutive subscriptions one shared timestamp.
fn created_at(id: i64, rows: u64) -> i64 {
    let mut f = (id - 1) as f64 / rows.max(1) as f64;
    for (start, end) in BURSTS {
        if f >= start && f < end {
            f = start;
        }
    }
    EPOCH_START + (f.sqrt() * SPAN_S as f64) as i64
}

/// One seeded subscription: `(id, product, seeded version, created_at)`.
fn subscription(rng: &mut Rng, id: i64, rows: u64) -> (i64, i64, i64, i64) {
    let mut pick = rng.below(100);
    let mut product = 0;
    for (i, w) in PRODUCT_WEIGHTS.iter().enumerate() {
        if pick < *w {
            product = i;
            break;
        }
        pick -= w;
    }
    let current = PRODUCT_VERSIONS[product];
    // One in five is already on the current version; the rest on an older one.
    let version = if current == 1 || rng.below(5) == 0 {
        current
    } else {
        1 + rng.below(current as u64 - 1) as i64
    };
    (id, product as i64 + 1, version, created_at(id, rows))
}

/// Rows per insert statement (5 binds each, well under both databases'
/// parameter limits).
const SEED_BATCH: usize = 1000;

/// Seeds `rows` subscriptions (and the products), replacing any partial seed.
/// `on_progress` is called with the rows written so far.
pub fn seed(
    c: &mut Connection,
    rows: u64,
    on_progress: &mut dyn FnMut(u64),
) -> Result<(), StoreError> {
    create_schema(c)?;
    c.write_transaction(clear_and_add_products)?;
    add_subscriptions(c, rows, on_progress)
}

/// Empties the demo tables and adds the products.
fn clear_and_add_products(c: &mut Connection) -> Result<(), StoreError> {
    c.batch(&format!(
        "DELETE FROM {SUBSCRIPTIONS}; DELETE FROM {PRODUCTS}; DELETE FROM demo_meta;"
    ))?;
    for (i, v) in PRODUCT_VERSIONS.iter().enumerate() {
        c.execute(
            &Sql::new(format!(
                "INSERT INTO {PRODUCTS} (id, name, version) VALUES (?, ?, ?)"
            ))
            .bind(Bind::Int(i as i64 + 1))
            .bind(Bind::Text(format!("product-{}", i + 1)))
            .bind(Bind::Int(*v)),
        )?;
    }
    Ok(())
}

/// Adds `rows` subscriptions to the emptied tables, then the index, the
/// statistics and, last, the mark that the seed is complete.
fn add_subscriptions(
    c: &mut Connection,
    rows: u64,
    on_progress: &mut dyn FnMut(u64),
) -> Result<(), StoreError> {
    let row = match c.dialect() {
        Dialect::Postgres => "(?, ?, ?, ?, to_timestamp(?))",
        // In the session's UTC.
        Dialect::Mysql => "(?, ?, ?, ?, FROM_UNIXTIME(?))",
        _ => "(?, ?, ?, ?, ?)",
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut id = 0i64;
    let mut written = 0u64;
    while written < rows {
        let n = (rows - written).min(SEED_BATCH as u64) as usize;
        let mut sql = Sql::new(format!(
            "INSERT INTO {SUBSCRIPTIONS} (id, product_id, version, seeded_version, created_at) VALUES "
        ));
        for i in 0..n {
            id += 1;
            let (id, product, version, created_at) = subscription(&mut rng, id, rows);
            if i > 0 {
                sql.push(", ", []);
            }
            sql.push(
                row,
                [
                    Bind::Int(id),
                    Bind::Int(product),
                    Bind::Int(version),
                    Bind::Int(version),
                    Bind::Int(created_at),
                ],
            );
        }
        c.execute(&sql)?;
        written += n as u64;
        on_progress(written);
    }
    match c.dialect() {
        Dialect::Mysql => c.batch(&format!("ANALYZE TABLE {SUBSCRIPTIONS}, {PRODUCTS}"))?,
        dialect => {
            c.batch(&format!(
                "CREATE INDEX IF NOT EXISTS demo_subscriptions_scan \
                 ON {SUBSCRIPTIONS} (product_id, created_at, id)"
            ))?;
            if dialect == Dialect::Postgres {
                c.batch(&format!("ANALYZE {SUBSCRIPTIONS}; ANALYZE {PRODUCTS};"))?;
            } else {
                c.batch("ANALYZE;")?;
            }
        }
    }
    c.execute(
        &Sql::new(format!(
            "INSERT INTO demo_meta ({}, value) VALUES ('seeded_rows', ?)",
            meta_key_column(c.dialect())
        ))
        .bind(Bind::Text(rows.to_string())),
    )?;
    Ok(())
}

#[derive(QueryableByName)]
struct ChangedProduct {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

/// Identification's first half: the products whose version changed and
/// that still have subscriptions on an older version, one scope each.
pub fn changed_products(c: &mut Connection) -> Result<Vec<Scope>, StoreError> {
    let rows: Vec<ChangedProduct> = c.load(&Sql::new(format!(
        "SELECT p.id AS id, p.version AS version FROM {PRODUCTS} p WHERE EXISTS \
         (SELECT 1 FROM {SUBSCRIPTIONS} s WHERE s.product_id = p.id AND s.version < p.version) \
         ORDER BY p.id"
    )))?;
    rows.into_iter()
        .map(|p| {
            Ok(Scope {
                label: format!("product {} → v{}", p.id, p.version),
                conditions: vec![
                    Condition::new("product_id", Op::Eq, FilterValue::Int(p.id))
                        .map_err(config_bug)?,
                    Condition::new("version", Op::Lt, FilterValue::Int(p.version))
                        .map_err(config_bug)?,
                ],
                params: serde_json::json!({"product_id": p.id, "version": p.version}),
            })
        })
        .collect()
}

fn config_bug(e: tranche::ConfigError) -> StoreError {
    StoreError::Corrupt {
        what: "demo scope",
        reason: e.to_string(),
    }
}

/// What the update step changes: `demo_subscriptions.version`, by `id`.
pub fn update_spec() -> UpdateSpec {
    UpdateSpec::new(SUBSCRIPTIONS, "id", "version").expect("valid names")
}

/// The demo's job: scopes from [`changed_products`], range partitions over
/// `(created_at, id)`, one message per subscription carrying its new version.
/// `dialect` says how `created_at` is stored (see [`create_schema`]);
/// `throttle` is what a new run starts with.
pub fn job(
    sink: Arc<dyn Sink>,
    partitions: u32,
    dialect: Dialect,
    throttle: tranche::job::Throttle,
) -> Result<Job, tranche::ConfigError> {
    let source = Source::new(SUBSCRIPTIONS, "id", "created_at")?;
    let source = match dialect {
        Dialect::Postgres | Dialect::Mysql => source.order_by_timestamp(),
        _ => source,
    };
    Job::builder(JOB_NAME)
        .source(source)
        .scopes(Scopes::Identify(Arc::new(changed_products)))
        .strategy(Strategy::Range { partitions })
        .processor(|row: &SourceRow, scope: &Scope| {
            let version = scope
                .param_i64("version")
                .ok_or_else(|| tranche::Poison("scope has no version".into()))?;
            let product = scope.param_i64("product_id").unwrap_or_default();
            let payload = serde_json::json!({
                "subscription_id": row.key,
                "product_id": product,
                "version": version,
            });
            Ok(Some(Message::new(
                JOB_NAME,
                row.key,
                version,
                payload.to_string().into_bytes(),
            )))
        })
        .sink(sink)
        .params(serde_json::json!({"partitions": partitions}))
        .throttle(throttle)
        .build()
}

/// The verdict of [`verify_updates`], [`verify_outbox`] or [`verify_jsonl_files`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Subscriptions that had to change.
    pub eligible: u64,
    /// Eligible subscriptions that did not reach the sink (or were not
    /// updated).
    pub lost: u64,
    /// Changes the sink received or applied that were not eligible.
    pub unexpected: u64,
    /// Subscriptions updated (update sink) or delivered (file sink).
    pub delivered: u64,
    /// Messages delivered more than once (file sink only).
    pub duplicates: u64,
    /// Whether nothing was lost and nothing unexpected happened.
    pub verified: bool,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(c: &mut Connection, sql: String) -> Result<u64, StoreError> {
    Ok(c.load::<Count>(&Sql::new(sql))?
        .first()
        .map_or(0, |r| r.n as u64))
}

/// Checks the database after an update-step run: every subscription seeded
/// on an old version of a changed product now carries the product's version,
/// and no other subscription changed.
pub fn verify_updates(c: &mut Connection) -> Result<Verification, StoreError> {
    let join = format!("FROM {SUBSCRIPTIONS} s JOIN {PRODUCTS} p ON p.id = s.product_id");
    let eligible = count(
        c,
        format!("SELECT COUNT(*) AS n {join} WHERE s.seeded_version < p.version"),
    )?;
    let lost = count(
        c,
        format!("SELECT COUNT(*) AS n {join} WHERE s.seeded_version < p.version AND s.version <> p.version"),
    )?;
    let unexpected = count(
        c,
        format!(
            "SELECT COUNT(*) AS n {join} WHERE s.version <> s.seeded_version \
             AND NOT (s.seeded_version < p.version AND s.version = p.version)"
        ),
    )?;
    let delivered = count(
        c,
        format!("SELECT COUNT(*) AS n FROM {SUBSCRIPTIONS} s WHERE s.version <> s.seeded_version"),
    )?;
    Ok(Verification {
        eligible,
        lost,
        unexpected,
        delivered,
        duplicates: 0,
        verified: lost == 0 && unexpected == 0,
    })
}

#[derive(QueryableByName)]
struct Eligible {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

/// The eligible subscriptions and the version each must reach.
pub fn eligible(c: &mut Connection) -> Result<HashMap<i64, i64>, StoreError> {
    let rows: Vec<Eligible> = c.load(&Sql::new(format!(
        "SELECT s.id AS id, p.version AS version FROM {SUBSCRIPTIONS} s \
         JOIN {PRODUCTS} p ON p.id = s.product_id WHERE s.seeded_version < p.version"
    )))?;
    Ok(rows.into_iter().map(|r| (r.id, r.version)).collect())
}

#[derive(QueryableByName)]
struct OutboxRow {
    #[diesel(sql_type = BigInt)]
    row_key: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Text)]
    message_id: String,
}

/// Checks the demo job's rows of `tranche_outbox` (the outbox sink) against
/// the eligible set: every eligible subscription there with its new version
/// and its deterministic id, nothing else. The table holds each message id
/// once, so replays show up as the sink's duplicates, not here.
pub fn verify_outbox(c: &mut Connection) -> Result<Verification, StoreError> {
    let eligible = eligible(c)?;
    let rows: Vec<OutboxRow> = c.load(
        &Sql::new("SELECT row_key, version, message_id FROM tranche_outbox WHERE job_name = ?")
            .bind(Bind::Text(JOB_NAME.into())),
    )?;
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    let mut unexpected = 0u64;
    for r in rows {
        let id_ok = r.message_id == format!("{JOB_NAME}:{}:{}", r.row_key, r.version);
        if id_ok && eligible.get(&r.row_key) == Some(&r.version) {
            seen.insert(r.row_key);
        } else {
            unexpected += 1;
        }
    }
    let lost = eligible.keys().filter(|k| !seen.contains(k)).count() as u64;
    Ok(Verification {
        eligible: eligible.len() as u64,
        lost,
        unexpected,
        delivered: seen.len() as u64,
        duplicates: 0,
        verified: lost == 0 && unexpected == 0,
    })
}

/// Checks the JSON-lines files written by the file sink (one per instance
/// that shared the run, see [`instance_files`]) against the eligible set:
/// every eligible subscription present with its new version, nothing else,
/// and how many lines were replays. A last line without its newline, torn by a
/// process killed while writing it, is not counted; any other line that is
/// not a message is an error naming the file and line.
pub fn verify_jsonl_files(
    eligible: &HashMap<i64, i64>,
    paths: &[std::path::PathBuf],
) -> Result<Verification, std::io::Error> {
    let mut seen: HashMap<i64, u32> = HashMap::with_capacity(eligible.len());
    let mut unexpected = 0u64;
    for path in paths {
        let text = std::fs::read_to_string(path)?;
        let complete = match text.rfind('\n') {
            Some(i) => &text[..i],
            None => "",
        };
        for (n, line) in complete.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                std::io::Error::other(format!("{}: line {}: {e}", path.display(), n + 1))
            })?;
            let key = v["key"].as_i64().unwrap_or(i64::MIN);
            let version = v["version"].as_i64().unwrap_or(i64::MIN);
            if eligible.get(&key) == Some(&version) {
                *seen.entry(key).or_default() += 1;
            } else {
                unexpected += 1;
            }
        }
    }
    let lost = eligible.keys().filter(|k| !seen.contains_key(k)).count() as u64;
    let delivered = seen.len() as u64;
    let duplicates = seen.values().map(|&n| u64::from(n - 1)).sum();
    Ok(Verification {
        eligible: eligible.len() as u64,
        lost,
        unexpected,
        delivered,
        duplicates,
        verified: lost == 0 && unexpected == 0,
    })
}

/// What [`prepare_with`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// A complete seed of the requested size was already there.
    Reused,
    /// The data set was seeded now.
    Seeded,
    /// A seed of another size is there with a run still active over it:
    /// reseeding would pull the rows from under that run.
    UnfinishedRun {
        /// The size of the seed that is there.
        rows: u64,
    },
}

/// Arbitrary constant naming the demo's seeding lock on PostgreSQL, so that
/// several demo processes started together seed once: the first seeds, the
/// others wait and then find the seed complete.
const PG_SEED_LOCK: i64 = 0x0064_656d_6f5f_7330;
/// The `GET_LOCK` name MySQL instances seed under.
const MYSQL_SEED_LOCK: &str = "tranche.demo_seed";

/// Prepares the demo data: seeds `rows` subscriptions unless a complete
/// seed of that size exists (or `fresh` asks to start over), reporting
/// seeding progress to `on_progress`.
///
/// Several processes preparing one database at once seed it once: the
/// first checks and seeds while the others wait, then find the seed
/// complete. On PostgreSQL the check and the seed run under an advisory
/// lock, on MySQL under a named lock (`GET_LOCK`); on SQLite in one `BEGIN IMMEDIATE` transaction, so the others wait
/// for its write lock (up to the store's 30 s busy timeout, then fail with
/// "database is locked").
pub fn prepare_with(
    c: &mut Connection,
    rows: u64,
    fresh: bool,
    on_progress: &mut dyn FnMut(u64),
) -> Result<Prepared, StoreError> {
    if c.dialect() == Dialect::Sqlite {
        return c.write_transaction(|c| prepare_locked(c, rows, fresh, true, on_progress));
    }
    let unlock = if c.dialect() == Dialect::Mysql {
        if count(
            c,
            format!("SELECT GET_LOCK('{MYSQL_SEED_LOCK}', 3600) AS n"),
        )? != 1
        {
            return Err(StoreError::Corrupt {
                what: "demo seed lock",
                reason: "another instance held it for an hour".into(),
            });
        }
        format!("DO RELEASE_LOCK('{MYSQL_SEED_LOCK}')")
    } else {
        c.batch(&format!("SELECT pg_advisory_lock({PG_SEED_LOCK})"))?;
        format!("SELECT pg_advisory_unlock({PG_SEED_LOCK})")
    };
    let result = prepare_locked(c, rows, fresh, false, on_progress);
    let unlocked = c.batch(&unlock);
    if result.is_ok() {
        unlocked?;
    }
    result
}

/// [`prepare_with`]'s check and seed, with the lock held; `in_transaction`
/// when the lock is a transaction of the caller's, so the seed opens none
/// of its own.
fn prepare_locked(
    c: &mut Connection,
    rows: u64,
    fresh: bool,
    in_transaction: bool,
    on_progress: &mut dyn FnMut(u64),
) -> Result<Prepared, StoreError> {
    if fresh {
        reset(c)?;
    }
    create_schema(c)?;
    match seeded_rows(c)? {
        Some(n) if n == rows => return Ok(Prepared::Reused),
        Some(n) if tranche::internals::active_run_on(c, JOB_NAME)?.is_some() => {
            return Ok(Prepared::UnfinishedRun { rows: n })
        }
        _ => {}
    }
    if in_transaction {
        clear_and_add_products(c)?;
        add_subscriptions(c, rows, on_progress)?;
    } else {
        seed(c, rows, on_progress)?;
    }
    Ok(Prepared::Seeded)
}

/// The files a `{instance}` path pattern names: every file of its directory
/// whose name matches it with any instance id (the path itself when it has
/// no placeholder).
pub fn instance_files(pattern: &Path) -> Result<Vec<std::path::PathBuf>, std::io::Error> {
    let text = pattern.to_string_lossy();
    let Some((before, after)) = text.split_once("{instance}") else {
        return Ok(vec![pattern.to_path_buf()]);
    };
    let (dir, prefix) = match before.rfind('/') {
        Some(i) => (&before[..=i], &before[i + 1..]),
        None => ("./", before),
    };
    if after.contains('/') {
        return Err(std::io::Error::other(format!(
            "{text}: {{instance}} must be in the file name"
        )));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() >= prefix.len() + after.len()
            && name.starts_with(prefix)
            && name.ends_with(after)
        {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_is_deterministic_and_skewed() {
        let n = 20_000u64;
        let mut a = Rng(1);
        let mut b = Rng(1);
        let rows: Vec<_> = (1..=n as i64)
            .map(|id| subscription(&mut a, id, n))
            .collect();
        let again: Vec<_> = (1..=n as i64)
            .map(|id| subscription(&mut b, id, n))
            .collect();
        assert_eq!(rows, again);
        assert!(
            rows.windows(2).all(|w| w[0].3 <= w[1].3),
            "ids follow creation"
        );
        let mut ties: HashMap<i64, usize> = HashMap::new();
        for r in &rows {
            *ties.entry(r.3).or_default() += 1;
        }
        let bursts = ties.values().filter(|&&n| n >= 200).count();
        assert_eq!(bursts, 2, "two bulk imports share one timestamp each");
        let recent = rows
            .iter()
            .filter(|r| r.3 > EPOCH_START + SPAN_S / 2)
            .count();
        assert!(recent > rows.len() / 2, "skewed to recent years");
        assert!(rows
            .iter()
            .all(|r| r.2 <= PRODUCT_VERSIONS[r.1 as usize - 1]));
    }
}

//! Helpers shared by the integration tests: where the real services are,
//! one fresh database per test, and the skip-or-require rule.
//!
//! PostgreSQL is found through `TRANCHE_TEST_PG` (an admin URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When it is unreachable a
//! test prints why and returns, unless `TRANCHE_REQUIRE_SERVICES=1` (set by
//! `.ci/run`), in which case it fails: a green CI means the services ran.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// The admin URL of the test PostgreSQL server. OpenSSL is initialised
/// here, before libpq does it, so that it registers no cleanup at exit:
/// run while threads still end, that cleanup can crash the test process.
pub fn pg_admin_url() -> String {
    openssl_sys::init();
    std::env::var("TRANCHE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn services_required() -> bool {
    std::env::var("TRANCHE_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A PostgreSQL database made for one test, dropped when this guard is.
pub struct PgDatabase {
    /// Its URL.
    pub url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Best effort: FORCE ends connections a failed test left open.
        if let Ok(mut conn) = PgConnection::establish(&pg_admin_url()) {
            let _ = conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A name for one test's database, unique in the process and across runs,
/// at most 64 characters (MySQL's limit): `tranche_t_{hint}_{pid}_{n}`.
fn database_name(hint: &str) -> String {
    format!(
        "tranche_t_{}_{}_{}",
        hint.to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(30)
            .collect::<String>(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A fresh, empty PostgreSQL database for one test; `None` (after printing
/// the reason) when PostgreSQL is unreachable and services are not required.
pub fn pg_database(hint: &str) -> Option<PgDatabase> {
    let admin = pg_admin_url();
    let mut conn = match PgConnection::establish(&admin) {
        Ok(c) => c,
        Err(e) => {
            if services_required() {
                panic!("PostgreSQL is required (TRANCHE_REQUIRE_SERVICES=1) but unreachable: {e}");
            }
            eprintln!("SKIPPED: PostgreSQL unreachable at TRANCHE_TEST_PG ({e})");
            return None;
        }
    };
    let name = database_name(hint);
    // Separate statements: PostgreSQL runs a multi-statement batch as one
    // transaction, which DROP/CREATE DATABASE refuse.
    conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .expect("drop old test database");
    conn.batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create test database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(admin.clone());
    Some(PgDatabase {
        url: format!("{base}/{name}"),
        name,
    })
}

/// The admin URL of the test MySQL or MariaDB server
/// (`TRANCHE_TEST_MYSQL`, default `mysql://root@127.0.0.1:3306/test`).
#[cfg(feature = "mysql")]
pub fn mysql_admin_url() -> String {
    std::env::var("TRANCHE_TEST_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A MySQL database made for one test, dropped when this guard is.
#[cfg(feature = "mysql")]
pub struct MysqlDatabase {
    /// Its URL.
    pub url: String,
    name: String,
}

#[cfg(feature = "mysql")]
impl Drop for MysqlDatabase {
    fn drop(&mut self) {
        if let Ok(mut conn) = diesel::MysqlConnection::establish(&mysql_admin_url()) {
            let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS {}", self.name));
        }
    }
}

/// A fresh, empty MySQL database for one test; `None` (after printing the
/// reason) when the server is unreachable and services are not required.
#[cfg(feature = "mysql")]
pub fn mysql_database(hint: &str) -> Option<MysqlDatabase> {
    let admin = mysql_admin_url();
    let mut conn = match diesel::MysqlConnection::establish(&admin) {
        Ok(c) => c,
        Err(e) => {
            if services_required() {
                panic!("MySQL is required (TRANCHE_REQUIRE_SERVICES=1) but unreachable: {e}");
            }
            eprintln!("SKIPPED: MySQL unreachable at TRANCHE_TEST_MYSQL ({e})");
            return None;
        }
    };
    let name = database_name(hint);
    conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .expect("drop old test database");
    conn.batch_execute(&format!(
        "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ))
    .expect("create test database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(admin.clone());
    Some(MysqlDatabase {
        url: format!("{base}/{name}"),
        name,
    })
}

/// A connection of a test's own to a PostgreSQL or MySQL database, for the
/// test's SQL (an oracle, a count).
pub enum Db {
    Pg(PgConnection),
    #[cfg(feature = "mysql")]
    My(diesel::MysqlConnection),
}

impl Db {
    /// Connects to `url`: MySQL for `mysql://`, PostgreSQL otherwise.
    pub fn open(url: &str) -> Self {
        #[cfg(feature = "mysql")]
        if url.starts_with("mysql://") {
            return Db::My(diesel::MysqlConnection::establish(url).unwrap());
        }
        Db::Pg(PgConnection::establish(url).unwrap())
    }

    pub fn mysql(&self) -> bool {
        !matches!(self, Db::Pg(_))
    }

    pub fn load<T: tranche::store::LoadRow>(&mut self, sql: &str) -> diesel::QueryResult<Vec<T>> {
        use diesel::RunQueryDsl;
        match self {
            Db::Pg(c) => diesel::sql_query(sql).load(c),
            #[cfg(feature = "mysql")]
            Db::My(c) => diesel::sql_query(sql).load(c),
        }
    }

    pub fn batch(&mut self, sql: &str) -> diesel::QueryResult<()> {
        match self {
            Db::Pg(c) => c.batch_execute(sql),
            #[cfg(feature = "mysql")]
            Db::My(c) => c.batch_execute(sql),
        }
    }
}

/// A fresh server database (PostgreSQL, or MySQL for `mysql`), dropped with
/// the guard it returns beside its URL; `None` as for [`pg_database`].
pub fn server_database(mysql: bool, hint: &str) -> Option<(Box<dyn std::any::Any>, String)> {
    if mysql {
        #[cfg(feature = "mysql")]
        {
            let db = mysql_database(hint)?;
            let url = db.url.clone();
            return Some((Box::new(db), url));
        }
        #[cfg(not(feature = "mysql"))]
        panic!("a MySQL database in a build without the mysql feature");
    }
    let db = pg_database(hint)?;
    let url = db.url.clone();
    Some((Box::new(db), url))
}

/// A fresh SQLite database file in its own temporary directory (kept alive
/// by the returned guard).
pub fn sqlite_database() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    (dir, url)
}

/// Runs the `tranche` binary to completion with `args`.
pub fn run_tranche(args: &[&str]) -> std::process::Output {
    tranche_command().args(args).output().expect("run tranche")
}

/// An error and its causes as one line, `outer: inner: innermost`, as a
/// log or a stored error shows it.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// The `tranche` binary as a command, logging warnings only.
pub fn tranche_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tranche"));
    command.env("RUST_LOG", "warn");
    command
}

/// Polls `cond` every 20 ms until it holds, panicking after `timeout_s`.
pub fn wait_until(what: &str, timeout_s: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_s);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout_s} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Instantiates each `async fn case(url: String)` once per backend, in
/// modules `sqlite` and `postgres` (and `mysql`, built with the `mysql`
/// feature), under the given test attribute.
#[macro_export]
macro_rules! on_both_backends {
    (#[$attr:meta] $($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[$attr]
                async fn $case() {
                    let (_dir, url) = $crate::common::sqlite_database();
                    super::$case(url).await;
                }
            )*
        }
        mod postgres {
            $(
                #[$attr]
                async fn $case() {
                    let Some(db) = $crate::common::pg_database(stringify!($case)) else { return };
                    super::$case(db.url.clone()).await;
                }
            )*
        }
        #[cfg(feature = "mysql")]
        mod mysql {
            $(
                #[$attr]
                async fn $case() {
                    let Some(db) = $crate::common::mysql_database(stringify!($case)) else { return };
                    super::$case(db.url.clone()).await;
                }
            )*
        }
    };
}

/// The test RabbitMQ (`TRANCHE_TEST_AMQP`, default
/// `amqp://guest:guest@127.0.0.1:5672/%2f`); `None` (after printing why) when
/// it is unreachable and services are not required.
pub fn amqp_url() -> Option<String> {
    let url = std::env::var("TRANCHE_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let host = url
        .split('@')
        .next_back()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_owned();
    match std::net::TcpStream::connect(&host) {
        Ok(_) => Some(url),
        Err(e) => {
            if services_required() {
                panic!("RabbitMQ is required (TRANCHE_REQUIRE_SERVICES=1) but unreachable at {host}: {e}");
            }
            eprintln!("SKIPPED: RabbitMQ unreachable at {host} ({e})");
            None
        }
    }
}

/// The test NATS server (`TRANCHE_TEST_NATS`, default
/// `nats://127.0.0.1:4222`); `None` (after printing why) when it is
/// unreachable and services are not required.
pub fn nats_url() -> Option<String> {
    let url = std::env::var("TRANCHE_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let host = url.trim_start_matches("nats://").to_owned();
    match std::net::TcpStream::connect(&host) {
        Ok(_) => Some(url),
        Err(e) => {
            if services_required() {
                panic!(
                    "NATS is required (TRANCHE_REQUIRE_SERVICES=1) but unreachable at {host}: {e}"
                );
            }
            eprintln!("SKIPPED: NATS unreachable at {host} ({e})");
            None
        }
    }
}

/// The test Kafka-protocol broker (`TRANCHE_TEST_KAFKA`, default
/// `127.0.0.1:9092`); `None` (after printing why) when it is unreachable and
/// services are not required.
pub fn kafka_brokers() -> Option<String> {
    let brokers = std::env::var("TRANCHE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let first = brokers.split(',').next().unwrap_or_default().to_owned();
    match std::net::TcpStream::connect(&first) {
        Ok(_) => Some(brokers),
        Err(e) => {
            if services_required() {
                panic!("Kafka is required (TRANCHE_REQUIRE_SERVICES=1) but unreachable at {first}: {e}");
            }
            eprintln!("SKIPPED: Kafka unreachable at {first} ({e})");
            None
        }
    }
}

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Creates (if missing) the tests' `events (id, at)` table with its keyset
/// index and inserts ids `1..=rows`, each `ties` consecutive ids sharing
/// one `at` (so ties are split across pages).
pub async fn seed_events(store: &tranche::store::Store, rows: i64, ties: i64) {
    use tranche::store::{Bind, Sql};
    store
        .run(move |c| {
            c.batch(
                "CREATE TABLE IF NOT EXISTS events (id BIGINT PRIMARY KEY, at BIGINT NOT NULL); \
                 CREATE INDEX IF NOT EXISTS events_at ON events (at, id)",
            )?;
            for chunk in (1..=rows).collect::<Vec<_>>().chunks(500) {
                let mut sql = Sql::new("INSERT INTO events (id, at) VALUES ");
                for (i, id) in chunk.iter().enumerate() {
                    sql.push(
                        if i == 0 { "(?, ?)" } else { ", (?, ?)" },
                        [Bind::Int(*id), Bind::Int(id / ties)],
                    );
                }
                c.execute(&sql)?;
            }
            Ok(())
        })
        .await
        .expect("seed events");
}

/// A job named `name` over the `events` table of [`seed_events`], cut
/// into `partitions` ranges: each row becomes a message at version 1
/// whose payload is `{"id":<key>}`, delivered to `sink`.
pub fn events_job(
    name: &str,
    sink: std::sync::Arc<dyn tranche::Sink>,
    partitions: u32,
) -> tranche::Job {
    let job = name.to_owned();
    tranche::Job::builder(name)
        .source(tranche::Source::new("events", "id", "at").unwrap())
        .strategy(tranche::Strategy::Range { partitions })
        .processor(move |row: &tranche::SourceRow, _: &tranche::Scope| {
            let payload = format!("{{\"id\":{}}}", row.key).into_bytes();
            Ok(Some(tranche::Message::new(&job, row.key, 1, payload)))
        })
        .sink(sink)
        .build()
        .unwrap()
}

/// A runtime on a fresh SQLite database holding `rows` events.
pub async fn events_runtime(
    rows: i64,
    concurrency: usize,
    page_size: usize,
) -> (tempfile::TempDir, tranche::RuntimeHandle) {
    let (dir, url) = sqlite_database();
    let mut config = tranche::RuntimeConfig::new(&url);
    config.concurrency = concurrency;
    config.page_size = page_size;
    let runtime = tranche::RuntimeHandle::start(config).await.unwrap();
    seed_events(runtime.store(), rows, 10).await;
    (dir, runtime)
}

/// A TCP port free on 127.0.0.1 just now, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The text a metrics endpoint on 127.0.0.1:`port` serves; `None` while
/// nothing answers there.
pub fn scrape_metrics(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).ok()?;
    Some(body)
}

/// An HTTP answer read by [`http`].
#[derive(Debug)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Body, as text.
    pub body: String,
}

impl HttpAnswer {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request to `addr` (a fresh connection, closed after),
/// with `headers` beside Host and the body's length: a small blocking
/// client for the tests' servers.
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpAnswer {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    conn.write_all(request.as_bytes()).expect("send");
    // Read the head, then the body by its length (or its chunks, or to the
    // end): a server may keep the connection open after answering.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = conn.read(&mut buf).expect("read");
        assert!(n > 0, "the connection closed before an HTTP head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let mut more = |rest: &mut Vec<u8>| -> bool {
        let n = conn.read(&mut buf).expect("read");
        rest.extend_from_slice(&buf[..n]);
        n > 0
    };
    if method == "HEAD" || status == 204 || status == 304 {
        rest.clear();
    } else if let Some(length) = length {
        while rest.len() < length && more(&mut rest) {}
        rest.truncate(length);
    } else if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let eol = loop {
                if let Some(p) = rest[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + p;
                }
                assert!(more(&mut rest), "the connection closed inside a chunk");
            };
            let size_text = String::from_utf8_lossy(&rest[at..eol]).into_owned();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            while rest.len() < eol + 2 + size + 2 {
                assert!(more(&mut rest), "the connection closed inside a chunk");
            }
            body.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            at = eol + 2 + size + 2;
        }
        rest = body;
    } else {
        while more(&mut rest) {}
    }
    HttpAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&rest).into_owned(),
    }
}

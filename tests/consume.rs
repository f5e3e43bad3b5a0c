//! Consumers against the real RabbitMQ, NATS JetStream and a Kafka-protocol
//! broker (tansu), applying to PostgreSQL (and, through RabbitMQ, to MySQL
//! or MariaDB with the `mysql` feature), run as real `tranche consume`
//! processes:
//!
//! * per-key order: insert / modify / delete operations for 10,000 keys,
//!   shared by three consumers, leave the table exactly as applying each
//!   key's operations in order would;
//! * SIGKILL of a consumer mid-batch, then a new consumer: the same result,
//!   nothing lost, replays changing nothing;
//! * poison (through the library API): bad messages land in the dead
//!   letters with their reason and are acknowledged; the good ones apply.
//!
//! The oracle computes the expected table from the operations themselves.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{Connection as _, PgConnection, QueryableByName};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tranche::{Message, Sink};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A row of `items`: name and quantity.
type Item = (Option<String>, Option<i64>);

/// Operations for `keys` keys, `per_key` at most each, interleaved across
/// keys pseudo-randomly but in order per key; and the table they leave.
fn operations(
    job: &str,
    keys: i64,
    per_key: u64,
    seed: u64,
) -> (Vec<Message>, BTreeMap<i64, Item>) {
    let mut state = seed;
    let mut rand = move |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut per: Vec<Vec<Message>> = Vec::new();
    let mut expected = BTreeMap::new();
    for key in 1..=keys {
        let mut row: Option<Item> = None;
        let mut ops = Vec::new();
        for version in 1..=(1 + rand(per_key)) as i64 {
            let payload = match (&row, rand(4)) {
                (Some(_), 0) => {
                    row = None;
                    serde_json::json!({"op": "delete"})
                }
                (existing, _) => {
                    let name = format!("k{key}v{version}");
                    let qty = rand(1000) as i64;
                    let op = if existing.is_some() {
                        "modify"
                    } else {
                        "insert"
                    };
                    row = Some((Some(name.clone()), Some(qty)));
                    serde_json::json!({"op": op, "data": {"name": name, "qty": qty}})
                }
            };
            ops.push(Message::new(
                job,
                key,
                version,
                payload.to_string().into_bytes(),
            ));
        }
        if let Some(r) = row {
            expected.insert(key, r);
        }
        ops.reverse();
        per.push(ops);
    }
    let mut stream = Vec::new();
    let mut live: Vec<usize> = (0..per.len()).collect();
    while !live.is_empty() {
        let i = rand(live.len() as u64) as usize;
        stream.push(per[live[i]].pop().expect("live keys have operations"));
        if per[live[i]].is_empty() {
            live.swap_remove(i);
        }
    }
    (stream, expected)
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    name: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    qty: Option<i64>,
}

fn items(url: &str) -> BTreeMap<i64, Item> {
    common::Db::open(url)
        .load::<Row>("SELECT id, name, qty FROM items")
        .unwrap()
        .into_iter()
        .map(|r| (r.id, (r.name, r.qty)))
        .collect()
}

fn count(url: &str, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    common::Db::open(url).load::<N>(sql).unwrap()[0].n
}

/// A test's database, dropped with it.
struct TestDb {
    url: String,
    _guard: Box<dyn std::any::Any>,
}

/// A database (PostgreSQL, or MySQL for `mysql`) with tranche's tables and
/// an empty `items`.
fn database(mysql: bool, hint: &str) -> Option<TestDb> {
    let (guard, url) = common::server_database(mysql, hint)?;
    tranche::run_migrations(&url).unwrap();
    common::Db::open(&url)
        .batch("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT, qty BIGINT)")
        .unwrap();
    Some(TestDb { url, _guard: guard })
}

/// Where the operations go and come back from.
enum Broker {
    Amqp {
        url: String,
        queue: String,
    },
    Nats {
        url: String,
        stream: String,
    },
    /// Each test its own topic and consumer group: tansu is slow to let a
    /// group that other members just left take a new topic.
    Kafka {
        brokers: String,
        topic: String,
    },
}

impl Broker {
    fn amqp() -> Option<Self> {
        Some(Broker::Amqp {
            url: common::amqp_url()?,
            queue: common::unique("consume"),
        })
    }

    fn nats() -> Option<Self> {
        Some(Broker::Nats {
            url: common::nats_url()?,
            stream: common::unique("consume").replace('-', "_"),
        })
    }

    fn kafka() -> Option<Self> {
        Some(Broker::Kafka {
            brokers: common::kafka_brokers()?,
            topic: common::unique("consume"),
        })
    }

    /// How long a consumer process may wait for messages before it
    /// concludes the work is done: a Kafka group member waits for its
    /// partitions, through a rebalance, or a dead member's session timeout.
    fn idle_ms(&self) -> u64 {
        match self {
            Broker::Kafka { .. } => 20_000,
            _ => 3_000,
        }
    }

    fn sink(&self) -> Arc<dyn Sink> {
        match self {
            Broker::Amqp { url, queue } => {
                let mut c = tranche::sink::AmqpConfig::new(url, queue, queue);
                c.queue = Some(queue.clone());
                Arc::new(tranche::sink::AmqpSink::new(c).unwrap())
            }
            Broker::Nats { url, stream } => Arc::new(
                tranche::sink::NatsSink::new(tranche::sink::NatsConfig::new(
                    url,
                    stream,
                    &format!("{stream}.ops"),
                ))
                .unwrap(),
            ),
            Broker::Kafka { brokers, topic } => {
                // tansu 0.6 skips records when a consumer resumes in the
                // middle of a record batch (after a rebalance or a restart);
                // batches of one record keep every offset at a batch start.
                let mut c = tranche::sink::KafkaConfig::new(brokers, topic);
                c.properties = vec![("batch.num.messages".into(), "1".into())];
                Arc::new(tranche::sink::KafkaSink::new(c).unwrap())
            }
        }
    }

    /// Publishes `ops` in order, 1,000 per confirmed batch.
    async fn publish(&self, ops: &[Message]) {
        let sink = self.sink();
        for batch in ops.chunks(1000) {
            sink.deliver(batch).await.expect("published");
        }
    }

    /// The `[from]` section of a consumer file.
    fn source_section(&self) -> String {
        match self {
            Broker::Amqp { url, queue } => {
                format!("kind = \"amqp\"\nurl = \"{url}\"\nqueue = \"{queue}\"\nprefetch = 400")
            }
            Broker::Nats { url, stream } => format!(
                "kind = \"nats\"\nurl = \"{url}\"\nstream = \"{stream}\"\ndurable = \"items\"\n\
                 prefetch = 400\nack_wait = \"2s\""
            ),
            Broker::Kafka { brokers, topic } => format!(
                "kind = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup = \"{topic}\"\n\
                 prefetch = 400"
            ),
        }
    }
}

/// Writes the consumer file of the rows consumer `items`.
fn consumer_file(dir: &Path, db: &str, broker: &Broker, batch: usize) -> std::path::PathBuf {
    let path = dir.join("consume.toml");
    std::fs::write(
        &path,
        format!(
            "database_url = \"{db}\"\n[consume]\nname = \"items\"\nbatch_size = {batch}\n\
             [from]\n{}\n[apply]\nkind = \"rows\"\ntable = \"items\"\nkey_column = \"id\"\n\
             columns = [\"name\", \"qty\"]\n",
            broker.source_section()
        ),
    )
    .unwrap();
    path
}

/// The Kafka partitions a consumer holds by its log: those of its last
/// assignment, or `None` while it holds none (never assigned, or revoked).
fn held_partitions(log: &str) -> Option<Vec<String>> {
    let last = log.lines().rev().find(|l| {
        l.contains("kafka: partitions assigned") || l.contains("kafka: partitions revoked")
    })?;
    if !last.contains("assigned") {
        return None;
    }
    let list = last.split("partitions=").nth(1)?.trim();
    let held: Vec<String> = list
        .split(',')
        .map(|p| {
            p.trim()
                .trim_matches(|c: char| !c.is_ascii_digit())
                .to_owned()
        })
        .filter(|p| !p.is_empty())
        .collect();
    (!held.is_empty()).then_some(held)
}

/// A consumer process, killed if the test ends without waiting for it.
struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_consumer(config: &Path, summary: &Path, idle_ms: u64) -> Proc {
    Proc(Some(
        Command::new(env!("CARGO_BIN_EXE_tranche"))
            .args(["consume", "--quiet", "--config"])
            .arg(config)
            .arg("--summary-json")
            .arg(summary)
            .args(["--stop-when-idle-ms", &idle_ms.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            // Its log, next to its summary, for when a test fails.
            .stderr(std::fs::File::create(summary.with_extension("log")).unwrap())
            .spawn()
            .expect("start tranche consume"),
    ))
}

fn finish(mut proc: Proc, summary: &Path) -> serde_json::Value {
    let status = proc.0.take().expect("running").wait().unwrap();
    let log = std::fs::read_to_string(summary.with_extension("log")).unwrap_or_default();
    assert!(
        status.success(),
        "tranche consume exited with {status}:\n{log}"
    );
    serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap()
}

async fn per_key_order(broker: Broker) {
    per_key_order_on(broker, false).await;
}

async fn per_key_order_on(broker: Broker, mysql: bool) {
    let Some(db) = database(mysql, "order") else {
        return;
    };
    let (ops, expected) = operations("ops", 10_000, 6, 7);
    let dir = tempfile::tempdir().unwrap();
    let config = consumer_file(dir.path(), &db.url, &broker, 100);
    let start_three = || -> Vec<(Proc, std::path::PathBuf)> {
        (0..3)
            .map(|i| {
                let summary = dir.path().join(format!("summary-{i}.json"));
                (start_consumer(&config, &summary, broker.idle_ms()), summary)
            })
            .collect()
    };
    let consumers = match &broker {
        // A Kafka group shares a topic's partitions among the members it
        // has when it rebalances; members that join while the others drain
        // a topic published beforehand may get nothing. So the three join
        // first, and the operations are published once the group has
        // settled on one partition each.
        Broker::Kafka { brokers, topic } => {
            let sink =
                tranche::sink::KafkaSink::new(tranche::sink::KafkaConfig::new(brokers, topic))
                    .unwrap();
            sink.connect().await.expect("topic created");
            let consumers = start_three();
            let logs: Vec<_> = consumers
                .iter()
                .map(|(_, s)| s.with_extension("log"))
                .collect();
            let settled = || {
                let held: Vec<Option<Vec<String>>> = logs
                    .iter()
                    .map(|log| held_partitions(&std::fs::read_to_string(log).unwrap_or_default()))
                    .collect();
                let mut all: Vec<String> = held.iter().flatten().flatten().cloned().collect();
                all.sort();
                held.iter()
                    .all(|h| h.as_ref().is_some_and(|p| p.len() == 1))
                    && all == ["0", "1", "2"]
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !settled() {
                if std::time::Instant::now() > deadline {
                    let shown: Vec<String> = logs
                        .iter()
                        .map(|log| std::fs::read_to_string(log).unwrap_or_default())
                        .collect();
                    panic!(
                        "the group did not settle in 60 s; the consumers' logs:\n{}",
                        shown.join("\n---\n")
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            broker.publish(&ops).await;
            consumers
        }
        _ => {
            broker.publish(&ops).await;
            start_three()
        }
    };
    let summaries: Vec<serde_json::Value> =
        consumers.into_iter().map(|(c, s)| finish(c, &s)).collect();
    let received: Vec<u64> = summaries
        .iter()
        .map(|s| s["received"].as_u64().unwrap())
        .collect();
    // Each consumer's busy time: its run less the idle wait that ended it.
    let busy = summaries
        .iter()
        .map(|s| s["elapsed_s"].as_f64().unwrap() - broker.idle_ms() as f64 / 1000.0)
        .fold(0.0, f64::max);
    eprintln!(
        "{} operations; received per consumer {received:?}; about {:.0} messages/s together \
         (batch 100, prefetch 400, rows consumer on PostgreSQL)",
        ops.len(),
        received.iter().sum::<u64>() as f64 / busy.max(1e-3)
    );
    assert!(
        received.iter().all(|&r| r > 0),
        "all three consumers shared the work: {received:?}"
    );
    assert!(received.iter().sum::<u64>() >= ops.len() as u64);
    assert_eq!(
        summaries
            .iter()
            .map(|s| s["dead_lettered"].as_u64().unwrap())
            .sum::<u64>(),
        0
    );
    let table = items(&db.url);
    assert_eq!(table.len(), expected.len(), "rows present");
    assert!(
        table == expected,
        "the table is what applying the operations in order gives"
    );
    // The inbox holds each key's last version, deleted keys included.
    assert_eq!(
        count(&db.url, "SELECT COUNT(*) AS n FROM tranche_inbox"),
        10_000
    );
}

async fn sigkill_mid_batch(broker: Broker) {
    sigkill_mid_batch_on(broker, false).await;
}

async fn sigkill_mid_batch_on(broker: Broker, mysql: bool) {
    let Some(db) = database(mysql, "kill") else {
        return;
    };
    let (ops, expected) = operations("ops", 2_000, 40, 11);
    broker.publish(&ops).await;
    let dir = tempfile::tempdir().unwrap();
    let config = consumer_file(dir.path(), &db.url, &broker, 200);
    if let Broker::Kafka { .. } = &broker {
        // The restarted consumer takes the killed one's place in the group
        // at once (static membership) rather than after its session.
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replace(
            "prefetch = 400",
            "prefetch = 400\ninstance_id = \"killed-{n}\"",
        );
        std::fs::write(&config, text).unwrap();
    }
    let mut first = start_consumer(&config, &dir.path().join("first.json"), 60_000);
    let pid = Pid::from_raw(first.0.as_ref().expect("running").id() as i32);
    // About a third of the way: the inbox's versions sum to the versions
    // applied per key.
    let int = if mysql { "SIGNED" } else { "BIGINT" };
    let applied =
        format!("SELECT CAST(COALESCE(SUM(version), 0) AS {int}) AS n FROM tranche_inbox");
    common::wait_until("the first consumer to commit some batches", 60, || {
        count(&db.url, &applied) >= 12_000
    });
    kill(pid, Signal::SIGKILL).unwrap();
    let status = first.0.take().expect("running").wait().unwrap();
    assert!(!status.success(), "killed");
    let before = items(&db.url);
    assert_ne!(before, expected, "killed before the end");
    let summary = dir.path().join("second.json");
    let second = start_consumer(&config, &summary, 600_000);
    // Done when the table is the oracle's (a Kafka group hands the dead
    // member's partitions over only after its session times out).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut wrong = usize::MAX;
    while std::time::Instant::now() < deadline {
        let table = items(&db.url);
        wrong = expected
            .iter()
            .filter(|(k, v)| table.get(k) != Some(v))
            .count()
            + table.keys().filter(|k| !expected.contains_key(k)).count();
        if wrong == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = Pid::from_raw(second.0.as_ref().expect("running").id() as i32);
    kill(pid, Signal::SIGTERM).unwrap();
    let second = finish(second, &summary);
    assert!(
        wrong == 0,
        "nothing lost, nothing applied twice: {wrong} keys differ; the second consumer's log:\n{}",
        std::fs::read_to_string(summary.with_extension("log")).unwrap_or_default()
    );
    eprintln!(
        "{} operations; after the kill the second consumer received {} ({} stale)",
        ops.len(),
        second["received"],
        second["stale"]
    );
}

/// Runs a consumer of `source` until `stop`; its task and its progress.
fn spawn_consumer<I: tranche::consume::Inbound + 'static>(
    store: &tranche::store::Store,
    source: I,
    config: tranche::consume::ConsumerConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> (
    tokio::task::JoinHandle<
        Result<tranche::consume::ConsumeProgress, tranche::consume::ConsumeError>,
    >,
    tokio::sync::watch::Receiver<tranche::consume::ConsumeProgress>,
) {
    let consumer = tranche::consume::Consumer::new(store.clone(), source, config).unwrap();
    let progress = consumer.progress();
    (tokio::spawn(consumer.run(stop)), progress)
}

async fn poison_goes_to_dead_letters(broker: Broker) {
    poison_goes_to_dead_letters_on(broker, false).await;
}

async fn poison_goes_to_dead_letters_on(broker: Broker, mysql: bool) {
    use tranche::consume::{Apply, ConsumerConfig, RowsSpec};
    let Some(db) = database(mysql, "poison") else {
        return;
    };
    let good = |key: i64| {
        Message::new(
            "ops",
            key,
            1,
            format!(r#"{{"op":"insert","data":{{"name":"n{key}","qty":{key}}}}}"#).into_bytes(),
        )
    };
    let mut batch: Vec<Message> = (1..=50).map(good).collect();
    let bad = [
        ("ops:100:1", &b"not json"[..], "not JSON"),
        ("ops:101:1", br#"{"op":"merge"}"#, "\"merge\""),
        (
            "ops:102:1",
            br#"{"op":"insert","data":{"colour":"red"}}"#,
            "data.colour",
        ),
        ("no-key-here", br#"{"op":"delete"}"#, "job:key:version"),
        (
            "ops:104:1",
            br#"{"op":"insert","data":{"qty":"lots"}}"#,
            "the database refused it",
        ),
    ];
    for (i, (id, payload, _)) in bad.iter().enumerate() {
        batch.insert(
            i * 10,
            Message {
                id: (*id).to_owned(),
                key: 0,
                version: 1,
                payload: payload.to_vec(),
            },
        );
    }
    broker.publish(&batch).await;

    let runtime = tranche::RuntimeHandle::start(tranche::RuntimeConfig::new(db.url.clone()))
        .await
        .unwrap();
    let store = runtime.store().clone();
    let spec = RowsSpec::new("items", "id", &["name", "qty"]).unwrap();
    let config = ConsumerConfig::new("items", Apply::Rows(spec));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        stopped.await.ok();
    };
    let (task, mut progress) = match &broker {
        Broker::Amqp { url, queue } => {
            let mut c = tranche::consume::AmqpSourceConfig::new(url, queue);
            c.prefetch = 1000;
            let source = tranche::consume::AmqpSource::new(c).unwrap();
            spawn_consumer(&store, source, config, stopped)
        }
        Broker::Nats { url, stream } => {
            let c = tranche::consume::NatsSourceConfig::new(url, stream, "items");
            let source = tranche::consume::NatsSource::new(c).unwrap();
            spawn_consumer(&store, source, config, stopped)
        }
        Broker::Kafka { brokers, topic } => {
            let c = tranche::consume::KafkaSourceConfig::new(brokers, topic, topic);
            let source = tranche::consume::KafkaSource::new(c).unwrap();
            spawn_consumer(&store, source, config, stopped)
        }
    };
    tokio::time::timeout(
        Duration::from_secs(120),
        progress.wait_for(|p| p.received >= batch.len() as u64),
    )
    .await
    .expect("every message received within 2 min")
    .unwrap();
    stop.send(()).unwrap();
    let done = task.await.unwrap().unwrap();
    assert_eq!(done.applied, 50, "{done:?}");
    assert_eq!(done.dead_lettered, bad.len() as u64, "{done:?}");
    let letters = tranche::consume::dead_letters(&store, "items")
        .await
        .unwrap();
    assert_eq!(letters.len(), bad.len());
    for (id, payload, reason) in bad {
        let letter = letters
            .iter()
            .find(|l| l.message_id == id)
            .unwrap_or_else(|| panic!("{id} kept"));
        assert!(
            letter.reason.contains(reason),
            "{id}: {:?} names {reason:?}",
            letter.reason
        );
        assert_eq!(letter.payload, payload, "kept whole");
    }
    assert_eq!(items(&db.url).len(), 50);
    runtime.shutdown().await;
}

macro_rules! on_every_broker {
    ($($case:ident),* $(,)?) => {
        mod amqp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let _one = super::ONE_AT_A_TIME.lock().await;
                    let Some(broker) = super::Broker::amqp() else { return };
                    super::$case(broker).await;
                }
            )*
        }
        mod kafka {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let _one = super::ONE_AT_A_TIME.lock().await;
                    let Some(broker) = super::Broker::kafka() else { return };
                    super::$case(broker).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let _one = super::ONE_AT_A_TIME.lock().await;
                    let Some(broker) = super::Broker::nats() else { return };
                    super::$case(broker).await;
                }
            )*
        }
    };
}

on_every_broker!(
    per_key_order,
    sigkill_mid_batch,
    poison_goes_to_dead_letters
);

/// The same cases applied to MariaDB, through RabbitMQ.
#[cfg(feature = "mysql")]
mod amqp_mariadb {
    macro_rules! on_mariadb {
        ($($case:ident),* $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let _one = super::ONE_AT_A_TIME.lock().await;
                    let Some(broker) = super::Broker::amqp() else { return };
                    super::$case(broker, true).await;
                }
            )*
        };
    }
    on_mariadb!(
        per_key_order_on,
        sigkill_mid_batch_on,
        poison_goes_to_dead_letters_on
    );
}

/// A consumer serves its counters for Prometheus (`--metrics-addr`), and
/// they agree with its summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_serves_its_metrics() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(broker) = Broker::amqp() else { return };
    let Some(db) = database(false, "metrics") else {
        return;
    };
    let (ops, _) = operations("ops", 300, 3, 11);
    broker.publish(&ops).await;
    let dir = tempfile::tempdir().unwrap();
    let config = consumer_file(dir.path(), &db.url, &broker, 100);
    let port = common::free_port();
    let summary = dir.path().join("summary.json");
    let log = dir.path().join("stderr.log");
    let consumer = Proc(Some(
        Command::new(env!("CARGO_BIN_EXE_tranche"))
            .args(["consume", "--config"])
            .arg(&config)
            .arg("--summary-json")
            .arg(&summary)
            .args(["--stop-when-idle-ms", "600000"])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--progress-interval", "100ms", "--progress-format", "json"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ));
    let counter = |text: &str, name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains("consumer=\"items\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let mut last = String::new();
    common::wait_until("every message counted", 120, || {
        last = common::scrape_metrics(port).unwrap_or_default();
        counter(&last, "tranche_consumer_messages_received_total") >= ops.len() as u64
    });
    common::wait_until("a progress line", 60, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("\"event\":\"progress\""))
    });
    let pid = Pid::from_raw(consumer.0.as_ref().expect("running").id() as i32);
    kill(pid, Signal::SIGTERM).unwrap();
    let done = finish(consumer, &summary);
    let received = counter(&last, "tranche_consumer_messages_received_total");
    assert_eq!(Some(received), done["received"].as_u64());
    assert_eq!(
        counter(&last, "tranche_consumer_messages_applied_total")
            + counter(&last, "tranche_consumer_messages_stale_total"),
        done["applied"].as_u64().unwrap() + done["stale"].as_u64().unwrap(),
        "{last}"
    );
    assert_eq!(
        counter(&last, "tranche_consumer_messages_dead_lettered_total"),
        done["dead_lettered"].as_u64().unwrap()
    );
    // One progress line per interval, as JSON, counts only growing.
    let log = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "progress")
        .collect();
    assert!(!lines.is_empty(), "progress lines: {log}");
    let seen: Vec<u64> = lines
        .iter()
        .map(|l| l["received"].as_u64().unwrap())
        .collect();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(*seen.last().unwrap() <= done["received"].as_u64().unwrap());
    assert!(lines.iter().all(|l| l["consumer"] == "items"), "{log}");
}

/// Messages ready (not delivered to a consumer) on a RabbitMQ queue.
async fn ready(url: &str, queue: &str) -> u32 {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let q = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    conn.close(200, "done".into()).await.ok();
    q.message_count()
}

/// A consumer whose database went away stops when told to, leaving the
/// batch it could not commit unacknowledged; a consumer started once the
/// database is back applies everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stops_while_its_database_is_down() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(broker) = Broker::amqp() else { return };
    let Broker::Amqp { url, queue } = &broker else {
        unreachable!()
    };
    let Some(db) = database(false, "down") else {
        return;
    };
    let (ops, expected) = operations("ops", 2_000, 6, 3);
    // Declares the queue, so the consumer can start before the operations.
    broker.publish(&ops[..1]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = consumer_file(dir.path(), &db.url, &broker, 100);
    // No idle stop: only the signal ends it.
    let mut down = start_consumer(&config, &dir.path().join("down.json"), 600_000);
    common::wait_until("the consumer to apply the first operation", 30, || {
        count(&db.url, "SELECT COUNT(*) AS n FROM tranche_inbox") == 1
    });
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let mut admin = PgConnection::establish(&common::pg_admin_url()).unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .unwrap();
    broker.publish(&ops[1..]).await;
    // The consumer holds its prefetch (400) unacknowledged and cannot
    // commit it.
    let total = ops.len() as u32 - 1;
    let mut held = 0;
    for _ in 0..1500 {
        held = total - ready(url, queue).await;
        if held == 400 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(held, 400, "the consumer took its prefetch");
    let pid = Pid::from_raw(down.0.as_ref().unwrap().id() as i32);
    kill(pid, Signal::SIGTERM).unwrap();
    let mut child = down.0.take().unwrap();
    common::wait_until("the consumer to exit on SIGTERM", 15, || {
        child.try_wait().unwrap().is_some()
    });
    assert!(child.wait().unwrap().success());
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .unwrap();
    let summary = dir.path().join("after.json");
    finish(start_consumer(&config, &summary, 3000), &summary);
    assert!(items(&db.url) == expected, "nothing lost");
}

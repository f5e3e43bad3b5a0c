//! One conformance suite for every shipped sink (memory, null, JSON lines,
//! outbox and update on SQLite and PostgreSQL, RabbitMQ, JetStream, Kafka),
//! each against its real destination, read back independently:
//!
//! - a delivery returns only when its messages are confirmed: the moment
//!   `deliver` returns, the destination holds every one of them;
//! - a replay of the same batch (same message ids) is harmless: a sink that
//!   de-duplicates keeps each id once and reports the replays as
//!   duplicates; one that cannot keeps copies identical to the originals,
//!   each carrying its id, for a reader to de-duplicate;
//! - one key's messages arrive in the order they were given;
//! - a failure another attempt may fix is retryable, one it cannot is
//!   fatal.
//!
//! The broker cases run one at a time (the broker test files restart their
//! brokers; these must not overlap them within this process either).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tranche::sink::{JsonLinesSink, MemorySink, NullSink, OutboxSink, UpdateSink, UpdateSpec};
use tranche::store::{Bind, Sql, Store};
use tranche::{Message, RuntimeConfig, RuntimeHandle, Sink, SinkError};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const JOB: &str = "conformance";
const KEYS: i64 = 10;

/// One message as the destination holds it.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    id: String,
    payload: Vec<u8>,
}

type Reader = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<Seen>> + Send>> + Send + Sync>;

/// What the destination keeps of a delivery.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Keeps {
    /// Every message, in order, payload included.
    Messages,
    /// Only each key's latest version (the update step): ids, no payloads.
    LatestVersion,
    /// Nothing that can be read back (the null sink).
    Nothing,
}

/// A sink under test and how to read its destination.
struct Subject {
    name: &'static str,
    sink: Arc<dyn Sink>,
    /// Everything the destination holds now, in the order it holds it.
    read: Reader,
    keeps: Keeps,
    /// Keeps each message id once and reports replays as duplicates.
    dedups: bool,
    /// Keeps runtimes, stores and directories alive.
    _guards: Vec<Box<dyn std::any::Any + Send>>,
}

/// Ten keys, two versions each, every key's version 1 before its 2.
fn batch() -> Vec<Message> {
    (1..=2)
        .flat_map(|v| {
            (1..=KEYS).map(move |k| {
                Message::new(JOB, k, v, format!("{{\"key\":{k},\"v\":{v}}}").into_bytes())
            })
        })
        .collect()
}

async fn conforms(s: Subject) {
    let batch = batch();
    let first = s.sink.deliver(&batch).await.unwrap_or_else(|e| {
        panic!("{}: first delivery: {}", s.name, common::chain(&e));
    });
    assert_eq!(first.confirmed, batch.len() as u64, "{}", s.name);
    assert_eq!(first.duplicates, 0, "{}: nothing was there before", s.name);
    // Read at once: confirmed means already held, no waiting for it.
    let held = (s.read)().await;
    check_holds(&s, &batch, &held, 1);

    let again = s.sink.deliver(&batch).await.unwrap_or_else(|e| {
        panic!("{}: replay: {}", s.name, common::chain(&e));
    });
    assert_eq!(again.confirmed, batch.len() as u64, "{}", s.name);
    if s.dedups {
        assert_eq!(
            again.duplicates,
            batch.len() as u64,
            "{}: replays reported",
            s.name
        );
    }
    let held = (s.read)().await;
    check_holds(&s, &batch, &held, if s.dedups { 1 } else { 2 });
}

/// `held` is `copies` copies of every message of `batch` (or, for the
/// update step, each key at its latest version), identical to the
/// originals, one key's versions in order.
fn check_holds(s: &Subject, batch: &[Message], held: &[Seen], copies: usize) {
    match s.keeps {
        Keeps::Nothing => {}
        Keeps::LatestVersion => {
            let mut ids: Vec<&str> = held.iter().map(|m| m.id.as_str()).collect();
            ids.sort_unstable();
            let mut want: Vec<String> = (1..=KEYS).map(|k| format!("{JOB}:{k}:2")).collect();
            want.sort_unstable();
            assert_eq!(ids, want, "{}: every key at its last version", s.name);
        }
        Keeps::Messages => {
            let originals: HashMap<&str, &[u8]> = batch
                .iter()
                .map(|m| (m.id.as_str(), m.payload.as_slice()))
                .collect();
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for m in held {
                let original = originals
                    .get(m.id.as_str())
                    .unwrap_or_else(|| panic!("{}: {} was never sent", s.name, m.id));
                assert_eq!(
                    json(&m.payload),
                    json(original),
                    "{}: {} as sent",
                    s.name,
                    m.id
                );
                *count.entry(&m.id).or_default() += 1;
            }
            assert_eq!(count.len(), batch.len(), "{}: every message held", s.name);
            assert!(
                count.values().all(|&n| n == copies),
                "{}: each message {copies} time(s): {count:?}",
                s.name
            );
            // Per key, each copy's version 1 comes before its version 2.
            for k in 1..=KEYS {
                let versions: Vec<&str> = held
                    .iter()
                    .filter(|m| m.id.starts_with(&format!("{JOB}:{k}:")))
                    .map(|m| m.id.rsplit(':').next().unwrap())
                    .collect();
                let want: Vec<&str> = (0..copies).flat_map(|_| ["1", "2"]).collect();
                assert_eq!(versions, want, "{}: key {k} in order", s.name);
            }
        }
    }
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("a JSON payload")
}

async fn fails(name: &str, sink: Arc<dyn Sink>, retryable: bool) {
    let err = sink
        .deliver(&batch())
        .await
        .expect_err("this sink cannot deliver");
    assert_eq!(
        err.is_retryable(),
        retryable,
        "{name}: {}",
        common::chain(&err)
    );
    match (&err, retryable) {
        (SinkError::Retryable { .. }, true) | (SinkError::Fatal { .. }, false) => {}
        (other, _) => panic!("{name}: {other:?}"),
    }
}

async fn sqlite_runtime() -> (tempfile::TempDir, RuntimeHandle) {
    let (dir, url) = common::sqlite_database();
    let runtime = RuntimeHandle::start(RuntimeConfig::new(&url))
        .await
        .unwrap();
    (dir, runtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_sink_conforms() {
    let sink = MemorySink::new();
    let read_from = sink.clone();
    conforms(Subject {
        name: "memory",
        sink: Arc::new(sink),
        read: Box::new(move || {
            let held = read_from
                .messages()
                .into_iter()
                .map(|m| Seen {
                    id: m.id,
                    payload: m.payload,
                })
                .collect();
            Box::pin(async move { held })
        }),
        keeps: Keeps::Messages,
        dedups: false,
        _guards: Vec::new(),
    })
    .await;
    let failing = MemorySink::new();
    failing.fail_next(1);
    fails("memory", Arc::new(failing), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_null_sink_conforms() {
    let sink = NullSink::new();
    conforms(Subject {
        name: "null",
        sink: Arc::new(sink.clone()),
        read: Box::new(|| Box::pin(async { Vec::new() })),
        keeps: Keeps::Nothing,
        dedups: false,
        _guards: Vec::new(),
    })
    .await;
    assert_eq!(sink.messages(), 2 * batch().len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_lines_sink_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let read_path = path.clone();
    conforms(Subject {
        name: "jsonl",
        sink: Arc::new(JsonLinesSink::lazy(&path)),
        read: Box::new(move || {
            let text = std::fs::read_to_string(&read_path).unwrap_or_default();
            let held = text
                .lines()
                .map(|line| {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    Seen {
                        id: v["id"].as_str().unwrap().to_owned(),
                        payload: serde_json::to_vec(&v["payload"]).unwrap(),
                    }
                })
                .collect();
            Box::pin(async move { held })
        }),
        keeps: Keeps::Messages,
        dedups: false,
        _guards: vec![Box::new(dir)],
    })
    .await;
    // A directory that cannot exist: no retry will create it.
    fails(
        "jsonl",
        Arc::new(JsonLinesSink::lazy("/dev/null/cannot/be.jsonl")),
        false,
    )
    .await;
}

#[derive(diesel::QueryableByName)]
struct OutboxRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    message_id: String,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    payload: Vec<u8>,
}

async fn outbox_conforms(runtime: RuntimeHandle, guard: Box<dyn std::any::Any + Send>) {
    let store = runtime.store().clone();
    let read_store = store.clone();
    conforms(Subject {
        name: "outbox",
        sink: Arc::new(OutboxSink::new(store.clone(), JOB)),
        read: Box::new(move || {
            let store = read_store.clone();
            Box::pin(async move {
                store
                    .run(|c| {
                        c.load::<OutboxRow>(&Sql::new(
                            "SELECT message_id, payload FROM tranche_outbox ORDER BY id",
                        ))
                    })
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| Seen {
                        id: r.message_id,
                        payload: r.payload,
                    })
                    .collect()
            })
        }),
        keeps: Keeps::Messages,
        dedups: true,
        _guards: Vec::new(),
    })
    .await;
    let missing = OutboxSink::new(store, JOB)
        .with_table("no_such_outbox")
        .unwrap();
    fails("outbox", Arc::new(missing), false).await;
    runtime.shutdown().await;
    // The database (a file, or a PostgreSQL database dropped with its
    // guard) outlives every use of it.
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_sink_conforms_on_sqlite() {
    let (dir, runtime) = sqlite_runtime().await;
    outbox_conforms(runtime, Box::new(dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_sink_conforms_on_postgres() {
    let Some(db) = common::pg_database("sink_outbox") else {
        return;
    };
    let runtime = RuntimeHandle::start(RuntimeConfig::new(&db.url))
        .await
        .unwrap();
    outbox_conforms(runtime, Box::new(db)).await;
}

#[derive(diesel::QueryableByName)]
struct KeyVersion {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    version: i64,
}

async fn update_conforms(runtime: RuntimeHandle, guard: Box<dyn std::any::Any + Send>) {
    let store: Store = runtime.store().clone();
    store
        .run(|c| {
            c.batch("CREATE TABLE items (id BIGINT PRIMARY KEY, version BIGINT NOT NULL)")?;
            let mut sql = Sql::new("INSERT INTO items (id, version) VALUES ");
            for k in 1..=KEYS {
                let sep = if k == 1 { "(?, 0)" } else { ", (?, 0)" };
                sql.push(sep, [Bind::Int(k)]);
            }
            c.execute(&sql).map(|_| ())
        })
        .await
        .unwrap();
    let read_store = store.clone();
    let spec = UpdateSpec::new("items", "id", "version").unwrap();
    conforms(Subject {
        name: "update",
        sink: Arc::new(UpdateSink::new(store.clone(), spec)),
        read: Box::new(move || {
            let store = read_store.clone();
            Box::pin(async move {
                store
                    .run(|c| {
                        c.load::<KeyVersion>(&Sql::new("SELECT id, version FROM items ORDER BY id"))
                    })
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| Seen {
                        id: format!("{JOB}:{}:{}", r.id, r.version),
                        payload: Vec::new(),
                    })
                    .collect()
            })
        }),
        keeps: Keeps::LatestVersion,
        dedups: true,
        _guards: Vec::new(),
    })
    .await;
    let missing = UpdateSpec::new("no_such_items", "id", "version").unwrap();
    fails("update", Arc::new(UpdateSink::new(store, missing)), false).await;
    runtime.shutdown().await;
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_sink_conforms_on_sqlite() {
    let (dir, runtime) = sqlite_runtime().await;
    update_conforms(runtime, Box::new(dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_sink_conforms_on_postgres() {
    let Some(db) = common::pg_database("sink_update") else {
        return;
    };
    let runtime = RuntimeHandle::start(RuntimeConfig::new(&db.url))
        .await
        .unwrap();
    update_conforms(runtime, Box::new(db)).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_sink_conforms_on_mariadb() {
    let Some(db) = common::mysql_database("sink_outbox") else {
        return;
    };
    let runtime = RuntimeHandle::start(RuntimeConfig::new(&db.url))
        .await
        .unwrap();
    outbox_conforms(runtime, Box::new(db)).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_sink_conforms_on_mariadb() {
    let Some(db) = common::mysql_database("sink_update") else {
        return;
    };
    let runtime = RuntimeHandle::start(RuntimeConfig::new(&db.url))
        .await
        .unwrap();
    update_conforms(runtime, Box::new(db)).await;
}

#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rabbitmq_sink_conforms() {
    use lapin::options::{BasicGetOptions, QueueDeleteOptions};
    use tranche::sink::{AmqpConfig, AmqpSink};
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = common::amqp_url() else {
        return;
    };
    let (exchange, queue) = (common::unique("tranche-cx"), common::unique("tranche-cq"));
    let mut config = AmqpConfig::new(&url, &exchange, "conformance");
    config.queue = Some(queue.clone());
    let sink = AmqpSink::new(config).unwrap();
    sink.connect().await.unwrap();
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = Arc::new(conn.create_channel().await.unwrap());
    // basic_get takes what it reads, so what was read is kept here.
    let taken: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (read_channel, read_queue, read_taken) = (channel.clone(), queue.clone(), taken.clone());
    conforms(Subject {
        name: "amqp",
        sink: Arc::new(sink),
        read: Box::new(move || {
            let (channel, queue, taken) =
                (read_channel.clone(), read_queue.clone(), read_taken.clone());
            Box::pin(async move {
                while let Some(m) = channel
                    .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
                {
                    let id = m
                        .delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .expect("every message carries its id")
                        .to_string();
                    assert_eq!(
                        m.delivery.properties.delivery_mode(),
                        &Some(2),
                        "persistent"
                    );
                    taken.lock().unwrap().push(Seen {
                        id,
                        payload: m.delivery.data.clone(),
                    });
                }
                taken.lock().unwrap().clone()
            })
        }),
        keeps: Keeps::Messages,
        dedups: false,
        _guards: Vec::new(),
    })
    .await;
    // No queue bound to the routing key: the broker returns every message.
    let unroutable = AmqpSink::new(AmqpConfig::new(&url, &exchange, "nowhere")).unwrap();
    fails("amqp", Arc::new(unroutable), false).await;
    let mut down = AmqpConfig::new("amqp://guest:guest@127.0.0.1:1/%2f", &exchange, "x");
    down.reconnect_for = Duration::from_millis(200);
    fails("amqp", Arc::new(AmqpSink::new(down).unwrap()), true).await;
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_sink_conforms() {
    use async_nats::jetstream::{self, consumer};
    use futures::StreamExt;
    use tranche::sink::{NatsConfig, NatsSink};
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = common::nats_url() else {
        return;
    };
    let stream = common::unique("TRANCHE_C").replace('-', "_");
    let subject = format!("tranche.conformance.{stream}");
    let sink = NatsSink::new(NatsConfig::new(&url, &stream, &subject)).unwrap();
    sink.connect().await.unwrap();
    let (read_url, read_stream) = (url.clone(), stream.clone());
    conforms(Subject {
        name: "nats",
        sink: Arc::new(sink),
        read: Box::new(move || {
            let (url, stream) = (read_url.clone(), read_stream.clone());
            Box::pin(async move {
                let js = jetstream::new(async_nats::connect(&url).await.unwrap());
                let consumer = js
                    .get_stream(&stream)
                    .await
                    .unwrap()
                    .create_consumer(consumer::pull::Config {
                        ack_policy: consumer::AckPolicy::None,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                let mut held = Vec::new();
                let mut messages = consumer
                    .fetch()
                    .max_messages(1000)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                    .unwrap();
                while let Some(m) = messages.next().await {
                    let m = m.unwrap();
                    let id = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .expect("every message carries its id")
                        .to_string();
                    held.push(Seen {
                        id,
                        payload: m.payload.to_vec(),
                    });
                }
                held
            })
        }),
        keeps: Keeps::Messages,
        dedups: true,
        _guards: Vec::new(),
    })
    .await;
    let mut down = NatsConfig::new("nats://127.0.0.1:1", &stream, &subject);
    down.reconnect_for = Duration::from_millis(200);
    fails("nats", Arc::new(NatsSink::new(down).unwrap()), true).await;
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let _ = js.delete_stream(&stream).await;
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_sink_conforms() {
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    use rdkafka::message::{Headers, Message as _};
    use tranche::sink::{KafkaConfig, KafkaSink};
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let topic = common::unique("tranche-conformance");
    let sink = KafkaSink::new(KafkaConfig::new(&brokers, &topic)).unwrap();
    sink.connect().await.unwrap();
    let (read_brokers, read_topic) = (brokers.clone(), topic.clone());
    let expected = Arc::new(Mutex::new(batch().len()));
    let read_expected = expected.clone();
    conforms(Subject {
        name: "kafka",
        sink: Arc::new(sink),
        read: Box::new(move || {
            let (brokers, topic) = (read_brokers.clone(), read_topic.clone());
            // Kafka keeps every copy: the second read expects twice as many.
            let want = {
                let mut n = read_expected.lock().unwrap();
                let want = *n;
                *n *= 2;
                want
            };
            Box::pin(async move {
                let consumer: StreamConsumer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("group.id", common::unique("conformance"))
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .create()
                    .unwrap();
                consumer.subscribe(&[&topic]).unwrap();
                let mut held = Vec::new();
                while held.len() < want {
                    let Ok(m) =
                        tokio::time::timeout(Duration::from_secs(15), consumer.recv()).await
                    else {
                        break;
                    };
                    let m = m.unwrap();
                    let id = m
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == "message-id"))
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8(v.to_vec()).unwrap())
                        .expect("every record carries its id");
                    held.push(Seen {
                        id,
                        payload: m.payload().unwrap_or_default().to_vec(),
                    });
                }
                held
            })
        }),
        keeps: Keeps::Messages,
        dedups: false,
        _guards: Vec::new(),
    })
    .await;
    let mut down = KafkaConfig::new("127.0.0.1:1", &topic);
    down.declare = false;
    down.delivery_timeout = Duration::from_secs(1);
    fails("kafka", Arc::new(KafkaSink::new(down).unwrap()), true).await;
}

//! The Kafka sink against a real Kafka-protocol broker (tansu on the test
//! machine), with an independent consumer that reads the topic back: a
//! 200,000-row run complete, each message once; one key's messages on one
//! partition in version order; a missing topic a fatal error naming it.
//!
//! The broker-down test pauses a broker of its own (SIGSTOP, then SIGCONT):
//! tansu loses records when killed, so a kill-and-restart test would
//! measure tansu rather than tranche (see that test's comment).

#![cfg(feature = "kafka")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use tranche::sink::{KafkaConfig, KafkaSink};
use tranche::{Job, Message, Sink};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PAGE: usize = 1000;
const CONCURRENCY: usize = 4;

fn job(sink: Arc<dyn Sink>) -> Job {
    common::events_job("kafka-test", sink, 8)
}

/// One record read back: its id, key, partition and offset.
struct Record {
    id: String,
    key: String,
    partition: i32,
}

/// Reads the whole topic from the start with a group of its own, until
/// `expected` records came or none came for 10 s.
async fn read_back(brokers: &str, topic: &str, expected: usize) -> Vec<Record> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", common::unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut records = Vec::new();
    while records.len() < expected {
        let Ok(m) = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await else {
            break;
        };
        let m = m.unwrap();
        let id = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "message-id"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .expect("every record carries its id");
        records.push(Record {
            id,
            key: String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
            partition: m.partition(),
        });
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_200_000_rows_arrives_complete() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let topic = common::unique("tranche-test");
    let (_dir, runtime) = common::events_runtime(200_000, CONCURRENCY, PAGE).await;
    let sink = Arc::new(KafkaSink::new(KafkaConfig::new(&brokers, &topic)).unwrap());
    sink.connect().await.unwrap();
    let started = Instant::now();
    let report = runtime.run(job(sink)).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.rows_done, 200_000);
    let records = read_back(&brokers, &topic, 200_000).await;
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for r in &records {
        *seen.entry(r.id.as_str()).or_default() += 1;
    }
    assert_eq!(seen.len(), 200_000, "every message arrived");
    assert!(seen.values().all(|&n| n == 1), "each once");
    assert!(seen.contains_key("kafka-test:77:1"));
    eprintln!(
        "kafka: 200000 rows in {:.2} s = {:.0} rows/s (idempotent producer, acks=all, \
         linger 5 ms, concurrency {CONCURRENCY}, page {PAGE})",
        elapsed.as_secs_f64(),
        200_000.0 / elapsed.as_secs_f64()
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_messages_share_a_partition_in_order() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let topic = common::unique("tranche-order");
    let sink = KafkaSink::new(KafkaConfig::new(&brokers, &topic)).unwrap();
    // 500 keys, five versions each, interleaved: version v of every key,
    // then version v + 1.
    let batch: Vec<Message> = (1..=5)
        .flat_map(|v| (1..=500).map(move |k| Message::new("order", k, v, vec![b'x'])))
        .collect();
    for chunk in batch.chunks(700) {
        let d = sink.deliver(chunk).await.unwrap();
        assert_eq!(d.confirmed, chunk.len() as u64);
    }
    let records = read_back(&brokers, &topic, batch.len()).await;
    assert_eq!(records.len(), batch.len());
    let mut by_key: HashMap<&str, (i32, i64)> = HashMap::new();
    let mut partitions = std::collections::HashSet::new();
    for r in &records {
        let version: i64 = r.id.rsplit(':').next().unwrap().parse().unwrap();
        partitions.insert(r.partition);
        match by_key.get(r.key.as_str()) {
            None => assert_eq!(version, 1, "key {} starts at version 1", r.key),
            Some(&(partition, last)) => {
                assert_eq!(
                    partition, r.partition,
                    "key {} stays on one partition",
                    r.key
                );
                assert_eq!(version, last + 1, "key {} in version order", r.key);
            }
        }
        by_key.insert(r.key.as_str(), (r.partition, version));
    }
    assert_eq!(by_key.len(), 500);
    assert_eq!(
        partitions.len(),
        3,
        "keys spread over the topic's partitions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_a_fatal_error_naming_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let topic = common::unique("tranche-missing");
    let mut config = KafkaConfig::new(&brokers, &topic);
    config.declare = false;
    let sink = KafkaSink::new(config).unwrap();
    let err = sink.connect().await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(common::chain(&err).contains(&topic), "{err}");
    let err = sink
        .deliver(&[Message::new("x", 1, 1, vec![])])
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");

    let mut bad = KafkaConfig::new(&brokers, "a topic");
    assert_eq!(
        KafkaSink::new(bad.clone()).err().unwrap().field,
        "sink.topic"
    );
    bad.topic = "ok".into();
    bad.properties = vec![("acks".into(), "1".into())];
    assert_eq!(
        KafkaSink::new(bad).err().unwrap().field,
        "sink.properties",
        "durability cannot be weakened"
    );
}

/// A tansu broker of this test's own, so that pausing it disturbs no other
/// test; killed when dropped.
struct OwnBroker {
    child: std::process::Child,
}

impl OwnBroker {
    fn start(port: u16) -> Self {
        let listener = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new("tansu")
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tansu (cargo install tansu --features dynostore)");
        let addr = format!("127.0.0.1:{port}");
        common::wait_until("the broker to listen", 30, || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Self { child }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker stops answering mid-run (SIGSTOP) and comes back (SIGCONT):
/// the run waits, checkpointing nothing it has no acknowledgement for, then
/// resumes, and nothing is lost.
///
/// tansu's storage here is memory or an S3-compatible store; killing the
/// broker loses the first and, as measured with moto's S3 server, also
/// acknowledged records in the second (the offsets restart below what was
/// acknowledged), so a kill-and-restart test would measure tansu, not
/// tranche.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_stopped_and_continued_mid_run_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    if common::kafka_brokers().is_none() {
        return;
    }
    let port = common::free_port();
    let broker = OwnBroker::start(port);
    let brokers = format!("127.0.0.1:{port}");
    let topic = common::unique("tranche-pause");
    let rows = 200_000;
    let (_dir, runtime) = common::events_runtime(rows, CONCURRENCY, PAGE).await;
    let sink = Arc::new(KafkaSink::new(KafkaConfig::new(&brokers, &topic)).unwrap());
    sink.connect().await.unwrap();
    let run = runtime.start_run(job(sink)).unwrap();
    let mut progress = run.subscribe();
    progress
        .wait_for(|p| p.rows_done >= 40_000)
        .await
        .expect("progress before the pause");
    broker.signal(nix::sys::signal::Signal::SIGSTOP);
    let at = progress.borrow().rows_done;
    // The fault lasts three seconds; pages whose acknowledgements had
    // already arrived may still be checkpointed, nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = progress.borrow().rows_done;
    broker.signal(nix::sys::signal::Signal::SIGCONT);
    assert!(at < rows, "paused mid-run");
    let bound = (CONCURRENCY * PAGE) as i64;
    assert!(
        during - at <= bound,
        "{} rows checkpointed while the broker was stopped (bound {bound})",
        during - at
    );
    let report = run.wait().await.unwrap();
    assert_eq!(report.rows_done, rows);
    let records = read_back(&brokers, &topic, rows as usize).await;
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for r in &records {
        *seen.entry(r.id.as_str()).or_default() += 1;
    }
    assert_eq!(seen.len(), rows as usize, "nothing lost across the pause");
    assert!(seen.values().all(|&n| n == 1), "each once");
    eprintln!(
        "kafka broker stopped at {at} rows for 3 s ({} more checkpointed meanwhile), then \
         continued: complete, each once",
        during - at
    );
    runtime.shutdown().await;
    drop(broker);
}

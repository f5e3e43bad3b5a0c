//! The NATS JetStream sink against the real server on the machine, with an
//! independent pull consumer that reads back what the stream stored: a
//! 200,000-row run complete and stored once, replays reported as
//! duplicates by the server, the duplicate-window warning, and the server
//! killed and started again mid-run.
//!
//! The tests run one at a time: one of them restarts the server.

#![cfg(feature = "nats")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use tranche::sink::{NatsConfig, NatsSink};
use tranche::{Job, Message, Sink};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PAGE: usize = 1000;
const CONCURRENCY: usize = 4;

fn job(sink: Arc<dyn Sink>) -> Job {
    common::events_job("nats-test", sink, 8)
}

/// A stream and subject of this test alone.
fn names() -> (String, String) {
    let stream = common::unique("TRANCHE").replace('-', "_");
    let subject = format!("tranche.test.{stream}");
    (stream, subject)
}

async fn context(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.expect("test connection"))
}

/// Reads the whole stream back with a pull consumer: message id → copies.
async fn read_back(url: &str, stream_name: &str) -> HashMap<String, u32> {
    let js = context(url).await;
    let stream = js.get_stream(stream_name).await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seen: HashMap<String, u32> = HashMap::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(5000)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .expect("every message carries its id");
            *seen.entry(id).or_default() += 1;
            got += 1;
        }
        if got == 0 {
            return seen;
        }
    }
}

async fn drop_stream(url: &str, name: &str) {
    let _ = context(url).await.delete_stream(name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_200_000_rows_is_stored_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = common::nats_url() else {
        return;
    };
    let (stream_name, subject) = names();
    let (_dir, runtime) = common::events_runtime(200_000, CONCURRENCY, PAGE).await;
    let sink = Arc::new(NatsSink::new(NatsConfig::new(&url, &stream_name, &subject)).unwrap());
    assert!(
        sink.connect().await.unwrap().is_empty(),
        "a 2 min window is enough"
    );
    let started = Instant::now();
    let report = runtime.run(job(sink)).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.rows_done, 200_000);
    let seen = read_back(&url, &stream_name).await;
    assert_eq!(seen.len(), 200_000, "every message stored");
    assert!(seen.values().all(|&n| n == 1), "each once");
    assert!(seen.contains_key("nats-test:77:1"));
    eprintln!(
        "nats: 200000 rows in {:.2} s = {:.0} rows/s (file storage, acks, window 1024, \
         concurrency {CONCURRENCY}, page {PAGE})",
        elapsed.as_secs_f64(),
        200_000.0 / elapsed.as_secs_f64()
    );
    runtime.shutdown().await;
    drop_stream(&url, &stream_name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_reported_as_duplicates_by_the_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = common::nats_url() else {
        return;
    };
    let (stream_name, subject) = names();
    let sink = NatsSink::new(NatsConfig::new(&url, &stream_name, &subject)).unwrap();
    let batch: Vec<Message> = (1..=300)
        .map(|k| Message::new("j", k, 2, b"{}".to_vec()))
        .collect();
    let first = sink.deliver(&batch).await.unwrap();
    assert_eq!((first.confirmed, first.duplicates), (300, 0));
    let again = sink.deliver(&batch[100..]).await.unwrap();
    assert_eq!((again.confirmed, again.duplicates), (200, 200));
    let seen = read_back(&url, &stream_name).await;
    assert_eq!(seen.len(), 300);
    assert!(seen.values().all(|&n| n == 1), "the server kept one copy");
    drop_stream(&url, &stream_name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_checked_at_connect_its_duplicate_window_and_subjects() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = common::nats_url() else {
        return;
    };
    let (stream_name, subject) = names();
    context(&url)
        .await
        .create_stream(stream::Config {
            name: stream_name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut config = NatsConfig::new(&url, &stream_name, &subject);
    config.declare = false;
    config.replay_within = Duration::from_secs(40);
    let warnings = NatsSink::new(config).unwrap().connect().await.unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("stored twice") && warnings[0].contains(&stream_name));
    let mut missing = NatsConfig::new(&url, "NO_SUCH_STREAM_HERE", &subject);
    missing.declare = false;
    let err = NatsSink::new(missing).unwrap().connect().await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(common::chain(&err).contains("NO_SUCH_STREAM_HERE"), "{err}");
    // A stream that exists but stores other subjects is refused at once,
    // whether declared or checked, rather than at the first publish.
    for declare in [true, false] {
        let mut elsewhere = NatsConfig::new(&url, &stream_name, &format!("{subject}.other"));
        elsewhere.declare = declare;
        let err = NatsSink::new(elsewhere)
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(common::chain(&err).contains("not"), "{err}");
        assert!(
            common::chain(&err).contains(&format!("{subject}.other")),
            "{err}"
        );
    }
    drop_stream(&url, &stream_name).await;
}

/// Starts the server again (as the machine starts it) even if a test fails.
struct Restart;

impl Restart {
    fn start() {
        let _ = std::process::Command::new("start-stop-daemon")
            .args([
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                "/usr/sbin/nats-server",
                "--",
                "-a",
                "127.0.0.1",
                "-p",
                "4222",
                "-js",
                "-sd",
                "/var/lib/nats-server",
                "-l",
                "/var/log/nats-server.log",
            ])
            .status();
    }
}

impl Drop for Restart {
    fn drop(&mut self) {
        Restart::start();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_and_started_mid_run_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = common::nats_url() else {
        return;
    };
    if !std::path::Path::new("/usr/sbin/nats-server").exists() {
        panic!("the restart test drives /usr/sbin/nats-server on this machine");
    }
    let (stream_name, subject) = names();
    let (_dir, runtime) = common::events_runtime(200_000, CONCURRENCY, PAGE).await;
    let sink = Arc::new(NatsSink::new(NatsConfig::new(&url, &stream_name, &subject)).unwrap());
    sink.connect().await.unwrap();
    let run = runtime.start_run(job(sink)).unwrap();
    let progress = run.subscribe();
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress.borrow().rows_done < 40_000 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = progress.borrow().rows_done;
    let restart = Restart;
    let killed = std::process::Command::new("start-stop-daemon")
        .args(["--stop", "--retry", "10", "--exec", "/usr/sbin/nats-server"])
        .status()
        .unwrap();
    assert!(killed.success(), "stopped nats-server");
    drop(restart); // starts it again
    let report = run.wait().await.unwrap();
    assert_eq!(report.rows_done, 200_000);
    assert!(before < 200_000, "the server went away mid-run");
    let seen = read_back(&url, &stream_name).await;
    assert_eq!(seen.len(), 200_000, "nothing lost across the restart");
    assert!(
        seen.values().all(|&n| n == 1),
        "replays within the duplicate window were dropped by the server"
    );
    eprintln!(
        "nats server restart at {before} rows: {} publishes reported as duplicates",
        report.rows_replayed
    );
    runtime.shutdown().await;
    drop_stream(&url, &stream_name).await;
}

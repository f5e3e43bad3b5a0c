//! The RabbitMQ sink against the real broker on the machine, each test with
//! an independent consumer that counts what arrived: a 200,000-row run
//! complete, a returned (unroutable) message, negative acknowledgements,
//! and the broker stopped and started again mid-run.
//!
//! The tests run one at a time: one of them restarts the broker.

#![cfg(feature = "amqp")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use tranche::sink::{AmqpConfig, AmqpSink};
use tranche::{Job, Message, Sink, SinkError};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PAGE: usize = 1000;
const CONCURRENCY: usize = 4;

async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

async fn test_channel(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("test connection");
    let channel = conn.create_channel().await.expect("test channel");
    (conn, channel)
}

/// Reads the queue until `expected` distinct message ids arrived (or no
/// message came for 20 s); returns how many times each id arrived.
async fn consume(url: &str, queue: &str, expected: usize) -> HashMap<String, u32> {
    let (conn, channel) = test_channel(url).await;
    channel
        .basic_qos(2000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "counter".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen: HashMap<String, u32> = HashMap::new();
    while seen.len() < expected {
        match tokio::time::timeout(Duration::from_secs(20), consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str().to_owned())
                    .expect("every message carries its id");
                assert_eq!(delivery.properties.delivery_mode(), &Some(2), "persistent");
                *seen.entry(id).or_default() += 1;
            }
            Ok(other) => panic!("consumer ended: {other:?}"),
            Err(_) => break,
        }
    }
    // Whatever else is already there (replays) is counted too.
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str()
            .to_owned();
        *seen.entry(id).or_default() += 1;
    }
    // Close before returning: a consumer still open on its way out would
    // take (and, without acks, lose) messages meant for the next one.
    channel
        .basic_cancel("counter".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    conn.close(200, "counted".into()).await.unwrap();
    seen
}

async fn delete(url: &str, exchange: &str, queue: &str) {
    let (_conn, channel) = test_channel(url).await;
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .exchange_delete(exchange.into(), Default::default())
        .await;
}

fn job(sink: Arc<dyn Sink>) -> Job {
    common::events_job("amqp-test", sink, 8)
}

fn sink_for(url: &str, exchange: &str, queue: &str) -> AmqpSink {
    let mut config = AmqpConfig::new(url, exchange, queue);
    config.queue = Some(queue.to_owned());
    AmqpSink::new(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_200_000_rows_arrives_complete() {
    let _one = lock().await;
    let Some(url) = common::amqp_url() else {
        return;
    };
    let (exchange, queue) = (common::unique("tranche-x"), common::unique("tranche-q"));
    let (_dir, runtime) = common::events_runtime(200_000, CONCURRENCY, PAGE).await;
    let sink = Arc::new(sink_for(&url, &exchange, &queue));
    sink.connect().await.unwrap();
    let started = Instant::now();
    let report = runtime.run(job(sink)).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.rows_done, 200_000);
    let seen = consume(&url, &queue, 200_000).await;
    assert_eq!(seen.len(), 200_000, "every message arrived");
    assert!(seen.values().all(|&n| n == 1), "no fault, no replay");
    assert!(seen.contains_key("amqp-test:123:1"));
    eprintln!(
        "amqp: 200000 rows in {:.2} s = {:.0} rows/s (persistent, confirms, window 1024, \
         concurrency {CONCURRENCY}, page {PAGE})",
        elapsed.as_secs_f64(),
        200_000.0 / elapsed.as_secs_f64()
    );
    runtime.shutdown().await;
    delete(&url, &exchange, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_message_is_an_error_naming_the_route() {
    let _one = lock().await;
    let Some(url) = common::amqp_url() else {
        return;
    };
    let exchange = common::unique("tranche-x");
    // An exchange with no queue bound: every message comes back.
    let sink = AmqpSink::new(AmqpConfig::new(&url, &exchange, "nowhere")).unwrap();
    let err = sink
        .deliver(&[Message::new("j", 1, 1, b"{}".to_vec())])
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::Fatal { .. }), "{err}");
    let text = common::chain(&err);
    assert!(
        text.contains("unroutable") && text.contains("nowhere") && text.contains("j:1:1"),
        "{text}"
    );
    delete(&url, &exchange, "none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_acknowledgements_are_published_again_then_reported() {
    let _one = lock().await;
    let Some(url) = common::amqp_url() else {
        return;
    };
    let (exchange, queue) = (common::unique("tranche-x"), common::unique("tranche-q"));
    // A queue that refuses (nacks) publishes beyond five messages.
    let (_conn, channel) = test_channel(&url).await;
    channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(5));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            queue.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut config = AmqpConfig::new(&url, &exchange, &queue);
    config.queue = Some(queue.clone());
    config.declare = false; // checked, not declared: its arguments are ours
    config.nack_attempts = 3;
    let sink = AmqpSink::new(config).unwrap();
    let batch: Vec<Message> = (1..=8)
        .map(|k| Message::new("j", k, 1, b"{}".to_vec()))
        .collect();
    let started = Instant::now();
    let err = sink.deliver(&batch).await.unwrap_err();
    assert!(err.is_retryable(), "a full queue may drain: {err}");
    let text = common::chain(&err);
    assert!(
        text.contains("negatively acknowledged 3 messages 3 times"),
        "three rounds for the three refused messages: {text}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the rounds were spaced by a backoff"
    );
    let seen = consume(&url, &queue, 5).await;
    assert_eq!(seen.len(), 5, "the first five were accepted once each");
    // With room again, the refused three go through.
    let retried = sink.deliver(&batch[5..]).await.unwrap();
    assert_eq!(retried.confirmed, 3);
    let seen = consume(&url, &queue, 3).await;
    assert_eq!(seen.len(), 3);
    assert!(seen.contains_key("j:8:1"));
    delete(&url, &exchange, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_stopped_and_started_mid_run_loses_nothing() {
    let _one = lock().await;
    let Some(url) = common::amqp_url() else {
        return;
    };
    let (exchange, queue) = (common::unique("tranche-x"), common::unique("tranche-q"));
    let (_dir, runtime) = common::events_runtime(200_000, CONCURRENCY, PAGE).await;
    let sink = Arc::new(sink_for(&url, &exchange, &queue));
    sink.connect().await.unwrap();
    let run = runtime.start_run(job(sink)).unwrap();
    let progress = run.subscribe();
    // Wait for real progress, then stop and start the broker's application.
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress.borrow().rows_done < 40_000 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ctl = |arg: &str| {
        let out = std::process::Command::new("rabbitmqctl")
            .arg(arg)
            .output()
            .expect("rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {arg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    /// Starts the broker's application again even if the test fails.
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            let _ = std::process::Command::new("rabbitmqctl")
                .arg("start_app")
                .output();
        }
    }
    let before = progress.borrow().rows_done;
    let restart = Restart;
    ctl("stop_app");
    ctl("start_app");
    drop(restart);
    let report = run.wait().await.unwrap();
    assert_eq!(report.rows_done, 200_000);
    assert!(before < 200_000, "the broker went away mid-run");
    let seen = consume(&url, &queue, 200_000).await;
    assert_eq!(seen.len(), 200_000, "nothing lost across the restart");
    let replays: u32 = seen.values().map(|n| n - 1).sum();
    // Unconfirmed messages are published again: at most one page per
    // active partition.
    assert!(
        (replays as usize) <= CONCURRENCY * PAGE,
        "{replays} replays"
    );
    eprintln!("amqp broker restart at {before} rows: {replays} messages published twice");
    runtime.shutdown().await;
    delete(&url, &exchange, &queue).await;
}

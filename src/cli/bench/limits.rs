//! The limits tranche is measured against: reading the table alone and
//! publishing to a broker alone, with bare clients.

use std::io::BufRead;
use std::time::{Duration, Instant};

use diesel::pg::CopyFormat;
use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, PgConnection, QueryableByName};

use tranche::internals::Db;
use tranche::store::{Bind, Sql};

use super::data::tranche_bench_rows;
use super::BenchError;

/// One row as the raw walk reads it: the same columns tranche reads.
#[derive(QueryableByName)]
pub(crate) struct RawRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) at: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Text)]
    pub(crate) body: String,
}

/// One keyset page of `table` after `(at, id)`, optionally only the rows
/// with `id % modulo.0 = modulo.1` and `id <= upto`. The statement is kept
/// prepared, as tranche keeps its page reads, so both pay the same for
/// parsing and planning.
pub(crate) fn page(
    conn: &mut PgConnection,
    table: &str,
    after: (i64, i64),
    limit: usize,
    upto: Option<u64>,
    modulo: Option<(u64, u64)>,
) -> Result<Vec<RawRow>, BenchError> {
    let mut sql = Sql::new(format!(
        "SELECT at, id, body FROM {table} WHERE (at, id) > (?, ?)"
    ))
    .bind(Bind::Int(after.0))
    .bind(Bind::Int(after.1))
    .prepared();
    if let Some(upto) = upto {
        sql.push(" AND id <= ?", [Bind::Int(upto as i64)]);
    }
    if let Some((n, k)) = modulo {
        sql.push(
            " AND id % ? = ?",
            [Bind::Int(n as i64), Bind::Int(k as i64)],
        );
    }
    sql.push(" ORDER BY at, id LIMIT ?", [Bind::Int(limit as i64)]);
    conn.load(&sql)
        .map_err(|e| BenchError::step("reading a keyset page", e))
}

/// Asks the server to write out its dirty buffers now (`CHECKPOINT`), so
/// that no checkpoint of earlier writes falls inside the next measurement.
/// A role that may not do so is not an error: the bench goes on without.
pub(crate) fn checkpoint(url: &str) -> Result<(), BenchError> {
    use diesel::connection::SimpleConnection;
    let mut conn = PgConnection::establish(url).map_err(|e| BenchError::connect(url, e))?;
    if let Err(e) = conn.batch_execute("CHECKPOINT") {
        tracing::debug!(error = %e, "CHECKPOINT refused; measuring without");
    }
    Ok(())
}

/// Walks the whole table once, one keyset page after another on one
/// connection, as fast as the database serves it: rows read and the time.
pub(crate) fn keyset_walk(
    url: &str,
    table: &str,
    page_size: usize,
) -> Result<(u64, Duration), BenchError> {
    let mut conn = PgConnection::establish(url).map_err(|e| BenchError::connect(url, e))?;
    walk_pages(|after| page(&mut conn, table, after, page_size, None, None))
}

/// Reads pages from the start of the keyset until one comes back empty,
/// each after the last row of the one before: rows read and the time.
pub(crate) fn walk_pages(
    mut next: impl FnMut((i64, i64)) -> Result<Vec<RawRow>, BenchError>,
) -> Result<(u64, Duration), BenchError> {
    let started = Instant::now();
    let mut after = (i64::MIN, i64::MIN);
    let mut rows = 0u64;
    let mut bytes = 0usize;
    loop {
        let got = next(after)?;
        let Some(last) = got.last() else { break };
        after = (last.at, last.id);
        rows += got.len() as u64;
        bytes += got.iter().map(|r| r.body.len()).sum::<usize>();
    }
    std::hint::black_box(bytes);
    Ok((rows, started.elapsed()))
}

/// `COPY (id, at, version, body) TO STDOUT` of [`super::data::TABLE`] in
/// text format, counting the lines: rows read and the time.
pub(crate) fn copy_out(url: &str) -> Result<(u64, Duration), BenchError> {
    let mut conn = PgConnection::establish(url).map_err(|e| BenchError::connect(url, e))?;
    let started = Instant::now();
    let mut reader = diesel::copy_to(tranche_bench_rows::table)
        .with_format(CopyFormat::Text)
        .load_raw(&mut conn)
        .map_err(|e| BenchError::step("COPY TO STDOUT", e))?;
    let mut rows = 0u64;
    loop {
        let buf = reader
            .fill_buf()
            .map_err(|e| BenchError::step("reading COPY data", e))?;
        if buf.is_empty() {
            break;
        }
        rows += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buf.len();
        reader.consume(n);
    }
    Ok((rows, started.elapsed()))
}

/// A bare lapin loop: `count` persistent, mandatory messages of `payload`
/// bytes to `exchange`/`routing_key` on one confirming channel, at most
/// `window` unconfirmed. Every confirmation must be a positive one.
#[cfg(feature = "amqp")]
pub(crate) async fn raw_amqp(
    url: &str,
    exchange: &str,
    routing_key: &str,
    count: u64,
    payload: usize,
    window: usize,
) -> Result<(u64, Duration), BenchError> {
    use std::collections::VecDeque;

    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

    let fail = |what: &str, e: lapin::Error| BenchError::step(what, e);
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| fail("connecting to RabbitMQ", e))?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| fail("opening a channel", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| fail("confirm.select", e))?;
    let body = vec![b'x'; payload];
    let started = Instant::now();
    let mut in_flight: VecDeque<lapin::PublisherConfirm> = VecDeque::with_capacity(window);
    for i in 0..count {
        if in_flight.len() >= window {
            let confirm = in_flight.pop_front().expect("window is not empty");
            match confirm.await.map_err(|e| fail("awaiting a confirm", e))? {
                Confirmation::Ack(None) => {}
                other => return Err(BenchError::Config(format!("raw publish: {other:?}"))),
            }
        }
        let properties = BasicProperties::default()
            .with_message_id(format!("bench-raw:{i}").into())
            .with_delivery_mode(2);
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                properties,
            )
            .await
            .map_err(|e| fail("publishing", e))?;
        in_flight.push_back(confirm);
    }
    for confirm in in_flight {
        match confirm.await.map_err(|e| fail("awaiting a confirm", e))? {
            Confirmation::Ack(None) => {}
            other => return Err(BenchError::Config(format!("raw publish: {other:?}"))),
        }
    }
    let elapsed = started.elapsed();
    let _ = conn.close(200, "bench done".into()).await;
    Ok((count, elapsed))
}

/// A bare async-nats loop: `count` messages of `payload` bytes to
/// `subject` (stored by a file-storage stream), each with its own
/// `Nats-Msg-Id`, at most `window` acknowledgements awaited.
#[cfg(feature = "nats")]
pub(crate) async fn raw_nats(
    url: &str,
    subject: &str,
    count: u64,
    payload: usize,
    window: usize,
    run: i64,
) -> Result<(u64, Duration), BenchError> {
    use std::collections::VecDeque;

    let client = async_nats::connect(url)
        .await
        .map_err(|e| BenchError::step("connecting to NATS", e))?;
    let js = async_nats::jetstream::new(client);
    let body = bytes::Bytes::from(vec![b'x'; payload]);
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(window);
    for i in 0..count {
        if in_flight.len() >= window {
            let ack: async_nats::jetstream::context::PublishAckFuture =
                in_flight.pop_front().expect("window is not empty");
            ack.await
                .map_err(|e| BenchError::step("awaiting an acknowledgement", e))?;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("bench-raw:{i}:{run}").as_str());
        let ack = js
            .publish_with_headers(subject.to_owned(), headers, body.clone())
            .await
            .map_err(|e| BenchError::step("publishing", e))?;
        in_flight.push_back(ack);
    }
    for ack in in_flight {
        ack.await
            .map_err(|e| BenchError::step("awaiting an acknowledgement", e))?;
    }
    Ok((count, started.elapsed()))
}

/// A bare rdkafka loop: `count` messages of `payload` bytes to `topic`,
/// each keyed by its number and carrying a `message-id` header as the
/// Kafka sink's do, from a producer with the sink's settings (idempotent,
/// acks=all, linger 5 ms), at most `window` deliveries awaited. Every
/// delivery must succeed.
#[cfg(feature = "kafka")]
pub(crate) async fn raw_kafka(
    brokers: &str,
    topic: &str,
    count: u64,
    payload: usize,
    window: usize,
) -> Result<(u64, Duration), BenchError> {
    use std::collections::VecDeque;

    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

    let producer: FutureProducer = tranche::sink::KafkaConfig::new(brokers, topic)
        .producer_config()
        .create()
        .map_err(|e| BenchError::step("creating a Kafka producer", e))?;
    // Connected before the clock starts, as tranche's sink is.
    tokio::task::block_in_place(|| {
        rdkafka::producer::Producer::client(&producer)
            .fetch_metadata(Some(topic), Duration::from_secs(10))
    })
    .map_err(|e| BenchError::step(&format!("Kafka topic {topic}"), e))?;
    let settle = |delivered: <DeliveryFuture as std::future::Future>::Output| match delivered {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(BenchError::step("a Kafka delivery", e)),
        Err(_) => Err(BenchError::Config("a Kafka delivery was cancelled".into())),
    };
    let body = vec![b'x'; payload];
    let started = Instant::now();
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::with_capacity(window);
    for i in 0..count {
        if in_flight.len() >= window {
            settle(in_flight.pop_front().expect("window is not empty").await)?;
        }
        let key = itoa::Buffer::new().format(i).to_owned();
        let id = format!("bench-raw:{i}");
        let record =
            FutureRecord::to(topic)
                .key(&key)
                .payload(&body)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "message-id",
                    value: Some(id.as_str()),
                }));
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| BenchError::step("producing", e))?;
        in_flight.push_back(delivery);
    }
    for delivery in in_flight {
        settle(delivery.await)?;
    }
    Ok((count, started.elapsed()))
}

//! `tranche consume`, and the consumer groups the demo runs in-process.

// A build without some broker features leaves parts of this unused.
#![cfg_attr(
    not(all(feature = "amqp", feature = "nats", feature = "kafka")),
    allow(unused)
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tranche::consume::{
    ConsumeError, ConsumeFile, ConsumeProgress, Consumer, ConsumerConfig, FromSection, Inbound,
};
use tranche::redact::redact_url;
use tranche::store::Store;
use tranche::{RuntimeConfig, RuntimeHandle};

#[derive(clap::Parser)]
pub struct ConsumeArgs {
    /// The consumer file (see the README for every field).
    #[arg(long)]
    config: PathBuf,
    /// Database URL, overriding the file and TRANCHE_DATABASE_URL.
    #[arg(long)]
    db: Option<String>,
    /// Consumers in this process, each with its own broker connection.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Exit once no message has come for this many milliseconds.
    #[arg(long)]
    stop_when_idle_ms: Option<u64>,
    /// Write a JSON summary here on exit.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Print no progress lines.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    progress: super::progress::ProgressArgs,
    /// Serve the consumers' metrics for Prometheus on this address
    /// (HOST:PORT), on any path.
    #[arg(long, env = "TRANCHE_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Consumers running as tokio tasks, stopped together.
pub struct Group {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<ConsumeProgress, ConsumeError>>>,
    progress: Vec<watch::Receiver<ConsumeProgress>>,
}

impl Group {
    /// One consumer per source.
    pub fn start<I: Inbound + 'static>(
        store: &Store,
        sources: Vec<I>,
        config: &ConsumerConfig,
    ) -> anyhow::Result<Self> {
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut progress = Vec::new();
        for source in sources {
            let consumer = Consumer::new(store.clone(), source, config.clone())?;
            progress.push(consumer.progress());
            let mut stopped = stop.subscribe();
            tasks.push(tokio::spawn(consumer.run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })));
        }
        Ok(Self {
            stop,
            tasks,
            progress,
        })
    }

    /// The consumers' counters, summed.
    pub fn total(&self) -> ConsumeProgress {
        let mut total = ConsumeProgress::default();
        for p in &self.progress {
            total += *p.borrow();
        }
        total
    }

    /// Whether a consumer has ended (only a failure ends one unasked).
    pub fn any_ended(&self) -> bool {
        self.tasks.iter().any(JoinHandle::is_finished)
    }

    /// Stops every consumer after its current batch and returns the sums;
    /// the first failure, if any, is the error.
    pub async fn stop(self) -> anyhow::Result<ConsumeProgress> {
        self.stop.send_replace(true);
        let mut total = ConsumeProgress::default();
        let mut failure = None;
        for task in self.tasks {
            match task.await.context("a consumer panicked")? {
                Ok(p) => total += p,
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(total),
        }
    }
}

/// Makes `n` sources with `make` (given each one's index), connects each,
/// and starts a consumer on every one.
async fn open<I: Inbound + 'static>(
    store: &Store,
    config: &ConsumerConfig,
    n: usize,
    make: impl Fn(usize) -> Result<I, tranche::ConfigError>,
) -> anyhow::Result<Group> {
    let mut sources = Vec::with_capacity(n);
    for i in 0..n {
        let mut source = make(i)?;
        source.connect().await?;
        sources.push(source);
    }
    Group::start(store, sources, config)
}

/// Opens `n` sources of the file's kind, connected, and starts them.
pub async fn start_group(
    file: &ConsumeFile,
    store: &Store,
    n: usize,
) -> anyhow::Result<(Group, String)> {
    let config = file.consumer_config()?;
    match &file.from {
        #[cfg(feature = "amqp")]
        FromSection::Amqp(_) => {
            let c = file.amqp_source().expect("amqp")?;
            let (url, queue) = (&c.url, &c.queue);
            let group = open(store, &config, n, |_| {
                tranche::consume::AmqpSource::new(c.clone())
            })
            .await?;
            let what = format!("queue {queue} on {url}");
            Ok((group, what))
        }
        #[cfg(feature = "nats")]
        FromSection::Nats(_) => {
            let c = file.nats_source().expect("nats")?;
            let (url, stream, durable) = (&c.url, &c.stream, &c.durable);
            let group = open(store, &config, n, |_| {
                tranche::consume::NatsSource::new(c.clone())
            })
            .await?;
            let what = format!("durable consumer {durable} of stream {stream} on {url}");
            Ok((group, what))
        }
        #[cfg(feature = "kafka")]
        FromSection::Kafka(_) => {
            let c = file.kafka_source().expect("kafka")?;
            let what = format!("topic {} in group {} on {}", c.topic, c.group, c.brokers);
            let consumers = open(store, &config, n, |i| {
                let mut c = c.clone();
                c.instance_id = c.instance_id.map(|id| id.replace("{n}", &i.to_string()));
                tranche::consume::KafkaSource::new(c)
            })
            .await?;
            Ok((consumers, what))
        }
        other => {
            let _ = (store, n, config);
            let feature = other.feature_off().unwrap_or("a broker");
            Err(tranche::ConfigError::feature_off("from.kind", feature).into())
        }
    }
}

#[derive(Serialize)]
struct ConsumeSummary {
    consumer: String,
    consumers: usize,
    #[serde(flatten)]
    progress: ConsumeProgress,
    elapsed_s: f64,
    messages_per_s: f64,
    stopped_by: &'static str,
}

/// One progress line of the consumers: counts so far, the latest rate.
fn consume_line(
    consumer: &str,
    p: &ConsumeProgress,
    rate: f64,
    format: super::progress::ProgressFormat,
) -> String {
    match format {
        super::progress::ProgressFormat::Json => serde_json::json!({
            "event": "progress",
            "consumer": consumer,
            "received": p.received,
            "applied": p.applied,
            "stale": p.stale,
            "dead_lettered": p.dead_lettered,
            "batches": p.batches,
            "messages_per_s": rate.round(),
        })
        .to_string(),
        super::progress::ProgressFormat::Text => format!(
            "  progress: {consumer}: {} received, {} applied, {} stale, {} dead letters, \
             {rate:.0} msg/s",
            p.received, p.applied, p.stale, p.dead_lettered
        ),
    }
}

pub async fn consume_main(args: ConsumeArgs) -> anyhow::Result<i32> {
    if args.consumers == 0 {
        anyhow::bail!("invalid configuration: --consumers: must be at least 1");
    }
    let mut file = ConsumeFile::from_path(&args.config)?;
    file.apply_env(|k| std::env::var(k).ok());
    crate::cli::job::serve_metrics(args.metrics_addr)?;
    if let Some(db) = &args.db {
        file.database_url = db.into();
    }
    file.validate()?;
    let mut config = RuntimeConfig::new(file.database_url.clone());
    config.db_threads = args.consumers.clamp(1, 8);
    let shown_db = file.database_url.to_string();
    let runtime = RuntimeHandle::start(config)
        .await
        .with_context(|| format!("starting tranche on {shown_db}"))?;
    let (group, what) = start_group(&file, runtime.store(), args.consumers).await?;
    println!(
        "tranche consume: {} from {what} into {shown_db}, {} consumer(s)",
        file.consume.name, args.consumers
    );
    let started = Instant::now();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let idle_limit = args.stop_when_idle_ms.map(Duration::from_millis);
    let (mut last_seen, mut last_change) = (0u64, Instant::now());
    let lines = args.progress.lines_without_bars(args.quiet);
    let (mut last_print, mut printed) = (Instant::now(), 0u64);
    let stopped_by = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break "interrupt",
            _ = term.recv() => break "terminate",
            _ = tick.tick() => {
                if group.any_ended() {
                    break "failure";
                }
                let p = group.total();
                if p.received != last_seen {
                    (last_seen, last_change) = (p.received, Instant::now());
                }
                if idle_limit.is_some_and(|idle| last_change.elapsed() >= idle) {
                    break "idle";
                }
                if let Some((_, format)) = lines.filter(|(every, _)| last_print.elapsed() >= *every) {
                    // The rate over the interval just ended.
                    let rate = (p.received - printed) as f64 / last_print.elapsed().as_secs_f64().max(1e-3);
                    (last_print, printed) = (Instant::now(), p.received);
                    eprintln!("{}", consume_line(&file.consume.name, &p, rate, format));
                }
            }
        }
    };
    let result = group.stop().await;
    runtime.shutdown().await;
    let total = result?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "  stopped ({stopped_by}): {} received, {} applied, {} stale, {} dead letters, \
         {} batches in {elapsed:.1} s",
        total.received, total.applied, total.stale, total.dead_lettered, total.batches
    );
    if total.dead_lettered > 0 {
        println!(
            "  dead letters are in tranche_consumer_dead_letters under consumer {:?}",
            file.consume.name
        );
    }
    if let Some(path) = &args.summary_json {
        let summary = ConsumeSummary {
            consumer: file.consume.name.clone(),
            consumers: args.consumers,
            progress: total,
            elapsed_s: elapsed,
            messages_per_s: total.received as f64 / elapsed.max(1e-9),
            stopped_by,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(0)
}

/// The demo's broker: the sink that publishes the demo's messages to it and the
/// in-process consumers that apply them (the update phase on the consuming
/// side), all named `tranche-demo`.
///
/// With `fresh`, what an earlier demo left on the broker goes first (the
/// queue is purged; the stream, and with it the ids it remembers, is
/// deleted), since its messages carry the same deterministic ids.
pub async fn demo_broker(
    url: &str,
    store: &Store,
    consumers: usize,
    fresh: bool,
) -> anyhow::Result<(std::sync::Arc<dyn tranche::Sink>, Group)> {
    use tranche::consume::Apply;
    const NAME: &str = crate::cli::demo::data::JOB_NAME;
    let config = ConsumerConfig::new(NAME, Apply::Versions(crate::cli::demo::data::update_spec()));
    let shown = redact_url(url);
    if url.starts_with("amqp://") || url.starts_with("amqps://") {
        #[cfg(feature = "amqp")]
        {
            use tranche::consume::{AmqpSource, AmqpSourceConfig};
            let mut sink_config = tranche::sink::AmqpConfig::new(url, NAME, NAME);
            sink_config.queue = Some(NAME.to_owned());
            let sink = tranche::sink::AmqpSink::new(sink_config)?;
            sink.connect()
                .await
                .with_context(|| format!("connecting to {shown}"))?;
            if fresh {
                let connection =
                    lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
                let channel = connection.create_channel().await?;
                channel
                    .queue_purge(NAME.into(), lapin::options::QueuePurgeOptions::default())
                    .await?;
                connection.close(200, "purged".into()).await.ok();
            }
            let group = open(store, &config, consumers, |_| {
                AmqpSource::new(AmqpSourceConfig::new(url, NAME))
            })
            .await?;
            return Ok((std::sync::Arc::new(sink), group));
        }
    }
    if url.starts_with("nats://") || url.starts_with("tls://") {
        #[cfg(feature = "nats")]
        {
            use tranche::consume::{NatsSource, NatsSourceConfig};
            let subject = format!("{NAME}.subscriptions");
            let stream = NAME.replace('.', "_");
            if fresh {
                let client = async_nats::connect(url)
                    .await
                    .with_context(|| format!("connecting to {shown}"))?;
                // Missing is fine: there is nothing to clear.
                let _ = async_nats::jetstream::new(client)
                    .delete_stream(&stream)
                    .await;
            }
            let sink = tranche::sink::NatsSink::new(tranche::sink::NatsConfig::new(
                url, &stream, &subject,
            ))?;
            sink.connect()
                .await
                .with_context(|| format!("connecting to {shown}"))?;
            let group = open(store, &config, consumers, |_| {
                NatsSource::new(NatsSourceConfig::new(url, &stream, NAME))
            })
            .await?;
            return Ok((std::sync::Arc::new(sink), group));
        }
    }
    if let Some(brokers) = url.strip_prefix("kafka://") {
        #[cfg(feature = "kafka")]
        {
            use tranche::consume::{KafkaSource, KafkaSourceConfig};
            if fresh {
                delete_topic(brokers, NAME).await?;
            }
            let sink =
                tranche::sink::KafkaSink::new(tranche::sink::KafkaConfig::new(brokers, NAME))?;
            sink.connect()
                .await
                .with_context(|| format!("connecting to {shown}"))?;
            let group = open(store, &config, consumers, |_| {
                KafkaSource::new(KafkaSourceConfig::new(brokers, NAME, NAME))
            })
            .await?;
            return Ok((std::sync::Arc::new(sink), group));
        }
    }
    let _ = (store, consumers, fresh, config);
    anyhow::bail!("invalid configuration: --sink: {shown} is not a broker this build supports")
}

/// After the run: lets the consumers drain the broker until the database
/// verifies or no message has come for `idle`, then stops them.
pub async fn drain(
    group: Group,
    store: &Store,
    idle: Duration,
) -> anyhow::Result<(ConsumeProgress, crate::cli::demo::data::Verification)> {
    let (mut last_seen, mut last_change) = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let p = group.total();
        if p.received != last_seen {
            // Still busy: the whole-table verification would only slow
            // them down.
            (last_seen, last_change) = (p.received, Instant::now());
            continue;
        }
        let quiet_too_long = last_change.elapsed() >= idle || group.any_ended();
        if quiet_too_long
            || store
                .run(crate::cli::demo::data::verify_updates)
                .await?
                .verified
        {
            let total = group.stop().await?;
            // Whatever the last batches applied counts too.
            let v = store.run(crate::cli::demo::data::verify_updates).await?;
            return Ok((total, v));
        }
    }
}

/// Deletes a Kafka topic and the consumer group of the same name, whose
/// offsets would point past the new topic's end (missing is fine).
#[cfg(feature = "kafka")]
async fn delete_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    admin
        .delete_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .with_context(|| format!("deleting topic {topic} on {brokers}"))?;
    admin
        .delete_groups(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .with_context(|| format!("deleting consumer group {topic} on {brokers}"))?;
    Ok(())
}

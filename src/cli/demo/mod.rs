//! `tranche demo`: the S0 subscription migration end to end, seeded,
//! run with live progress, summarised and verified.

pub(crate) mod data;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use data::Verification;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tranche::redact::redact_url;
use tranche::sink::{JsonLinesSink, OutboxSink, UpdateSink};
use tranche::store::Store;
use tranche::{RuntimeConfig, RuntimeHandle, Sink};

use super::progress::{follow, print_report};
use super::{consume, flag_of, InstanceArgs};

#[derive(Parser)]
pub(crate) struct DemoArgs {
    /// Database URL: sqlite://path (or a path ending .db, .sqlite or
    /// .sqlite3), postgres://... or a keyword DSN.
    #[arg(
        long,
        env = "TRANCHE_DATABASE_URL",
        default_value = "sqlite://tranche-demo.db"
    )]
    pub(crate) db: String,
    /// Subscriptions to seed.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) rows: u64,
    /// Partitions for the run (spread over the changed products).
    #[arg(long, default_value_t = 8)]
    pub(crate) partitions: u32,
    /// Partitions worked at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) concurrency: usize,
    /// Rows per page (and per checkpoint).
    #[arg(long, default_value_t = 1000)]
    pub(crate) page_size: usize,
    /// Drop the demo data and its runs first, then seed again.
    #[arg(long)]
    pub(crate) fresh: bool,
    /// Where messages go: `update` (apply in-process), `outbox` (rows of
    /// `tranche_outbox`), `jsonl:PATH`, or a broker, `amqp://...` (RabbitMQ)
    /// or `nats://...` (JetStream), whose messages --consumers in-process
    /// consumers apply to the database.
    #[arg(long, default_value = "update")]
    pub(crate) sink: String,
    /// Consumers applying a broker's messages (with a broker --sink).
    #[arg(long, default_value_t = 2)]
    pub(crate) consumers: usize,
    /// Write a JSON summary of the run here.
    #[arg(long)]
    pub(crate) summary_json: Option<PathBuf>,
    /// Lease duration in milliseconds: after a crash, the partitions the dead
    /// process held are taken over this long after its last renewal.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) lease_ms: u64,
    /// Lease renewal interval in milliseconds (below the lease).
    #[arg(long, default_value_t = 2_500)]
    pub(crate) heartbeat_ms: u64,
    /// Database executor threads (default: concurrency, between 2 and 8).
    #[arg(long)]
    pub(crate) db_threads: Option<usize>,
    #[command(flatten)]
    pub(crate) instance: InstanceArgs,
    /// Draw no progress bars.
    #[arg(long)]
    pub(crate) quiet: bool,
}

/// The `--summary-json` object.
#[derive(Serialize)]
pub(crate) struct Summary {
    pub(crate) db: String,
    pub(crate) sink: String,
    pub(crate) instance_id: String,
    pub(crate) run_id: i64,
    pub(crate) rows_identified: i64,
    pub(crate) rows_checkpointed: u64,
    pub(crate) rows_published: u64,
    pub(crate) rows_updated: u64,
    pub(crate) rows_replayed: u64,
    pub(crate) rows_possibly_replayed: u64,
    pub(crate) rows_done: i64,
    pub(crate) rows_done_at_start: i64,
    pub(crate) partitions: usize,
    pub(crate) takeovers: u64,
    pub(crate) steals: u64,
    pub(crate) leases_lost: u64,
    pub(crate) elapsed_s: f64,
    pub(crate) rows_per_s: f64,
    pub(crate) run_rows_per_s: Option<f64>,
    pub(crate) resumed: bool,
    pub(crate) interrupted: bool,
    pub(crate) verified: bool,
    pub(crate) verification: Option<Verification>,
    /// Peak resident memory of this process, bytes (Linux).
    pub(crate) peak_rss_bytes: Option<u64>,
    /// The consumers' counters, with a broker sink.
    pub(crate) consumed: Option<tranche::consume::ConsumeProgress>,
}

pub(crate) enum DemoSink {
    Update,
    Outbox,
    Jsonl(PathBuf),
    /// `amqp://...` or `nats://...`: published, then applied by consumers.
    Broker(String),
}

pub(crate) fn parse_sink(s: &str) -> anyhow::Result<DemoSink> {
    match s.split_once(':') {
        None if s == "update" => Ok(DemoSink::Update),
        None if s == "outbox" => Ok(DemoSink::Outbox),
        Some(("jsonl", path)) if !path.is_empty() => Ok(DemoSink::Jsonl(PathBuf::from(path))),
        Some(("amqp" | "amqps" | "nats" | "tls" | "kafka", rest)) if rest.starts_with("//") => {
            Ok(DemoSink::Broker(s.to_owned()))
        }
        _ => bail!(
            "invalid configuration: --sink: {:?} is not `update`, `outbox`, `jsonl:PATH`, \
             `amqp://...`, `nats://...` or `kafka://host:port`",
            redact_url(s)
        ),
    }
}

pub(crate) async fn demo_main(args: DemoArgs) -> anyhow::Result<i32> {
    if args.rows == 0 {
        bail!("invalid configuration: --rows: must be at least 1");
    }
    if args.partitions == 0 {
        bail!("invalid configuration: --partitions: must be at least 1");
    }
    let sink_kind = parse_sink(&args.sink)?;
    let shown_db = redact_url(&args.db);
    let mut config = RuntimeConfig::new(args.db.clone());
    config.concurrency = args.concurrency;
    config.page_size = args.page_size;
    config.lease.lease = Duration::from_millis(args.lease_ms);
    config.lease.heartbeat = Duration::from_millis(args.heartbeat_ms);
    config.store.threads = args.db_threads.unwrap_or(args.concurrency.clamp(2, 8));
    config.instance_id = args.instance.instance_id.clone();
    if let Some(ms) = args.instance.poll_ms {
        config.poll_interval = Duration::from_millis(ms);
    }
    config.work_stealing = !args.instance.no_work_stealing;
    config.validate().map_err(|e| {
        anyhow::anyhow!("invalid configuration: {}: {}", flag_of(&e.field), e.reason)
    })?;
    let runtime = RuntimeHandle::start(config)
        .await
        .with_context(|| format!("starting tranche on {shown_db}"))?;
    let store = runtime.store().clone();
    let multi = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    println!("tranche demo: S0 subscription migration on {shown_db}");

    prepare_data(&store, &args, &multi).await?;

    let mut consumers = None;
    let sink: Arc<dyn Sink> = match &sink_kind {
        DemoSink::Broker(url) => {
            let (sink, group) =
                consume::demo_broker(url, &store, args.consumers.max(1), args.fresh).await?;
            consumers = Some(group);
            sink
        }
        DemoSink::Update => Arc::new(UpdateSink::new(store.clone(), data::update_spec())),
        DemoSink::Outbox => Arc::new(OutboxSink::new(store.clone(), data::JOB_NAME)),
        DemoSink::Jsonl(pattern) => {
            let path = JsonLinesSink::instance_path(pattern, runtime.instance_id());
            Arc::new(
                JsonLinesSink::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?,
            )
        }
    };
    let mut job = data::job(sink, args.partitions, store.dialect())?;
    if let Some(key) = &args.instance.run_key {
        job = job.with_run_key(key.clone())?;
    }
    let started = Instant::now();
    let run = runtime.start_run(job)?;
    let report = follow(&runtime, run, &multi).await?;
    let elapsed = started.elapsed();
    multi.clear().ok();

    let mut consumed = None;
    let verification = if report.interrupted {
        if let Some(group) = consumers {
            group.stop().await?;
        }
        None
    } else {
        Some(match &sink_kind {
            DemoSink::Broker(_) => {
                let group = consumers.take().expect("consumers started with the broker");
                println!("  run done; waiting for the consumers to apply what is on the broker");
                let (total, v) = consume::drain(group, &store, Duration::from_secs(10)).await?;
                consumed = Some(total);
                v
            }
            DemoSink::Update => store.run(data::verify_updates).await?,
            DemoSink::Outbox => store.run(data::verify_outbox).await?,
            DemoSink::Jsonl(pattern) => {
                // Every instance's file: the verification covers the run.
                let eligible = store.run(data::eligible).await?;
                let files = data::instance_files(pattern)?;
                data::verify_jsonl_files(&eligible, &files)?
            }
        })
    };
    let instance_id = runtime.instance_id().to_owned();
    runtime.shutdown().await;

    let rows_per_s = report.rows_checkpointed as f64 / elapsed.as_secs_f64().max(1e-9);
    let rows_updated = match (&sink_kind, &verification) {
        (DemoSink::Update | DemoSink::Broker(_), Some(v)) => v.delivered,
        _ => 0,
    };
    let rows_replayed = match (&sink_kind, &verification) {
        (DemoSink::Jsonl(_), Some(v)) => v.duplicates,
        _ => report.rows_replayed,
    };
    print_report(&report, elapsed, rows_per_s, verification.as_ref());
    if let Some(c) = &consumed {
        println!(
            "  consumers: {} received, {} applied, {} stale (replays), {} dead letters, \
             {} acknowledgements lost",
            c.received, c.applied, c.stale, c.dead_lettered, c.acks_failed
        );
    }
    let verified = verification.as_ref().is_some_and(|v| v.verified);
    if let Some(path) = &args.summary_json {
        let summary = Summary {
            db: shown_db,
            sink: redact_url(&args.sink),
            instance_id,
            run_id: report.run_id,
            rows_identified: report.rows_identified,
            rows_checkpointed: report.rows_checkpointed,
            rows_published: report.rows_published,
            rows_updated,
            rows_replayed,
            rows_possibly_replayed: report.rows_possibly_replayed,
            rows_done: report.rows_done,
            rows_done_at_start: report.rows_done_at_start,
            partitions: report.partitions.len(),
            takeovers: report.takeovers,
            steals: report.steals,
            leases_lost: report.leases_lost,
            elapsed_s: elapsed.as_secs_f64(),
            rows_per_s,
            run_rows_per_s: report.run_rows_per_s,
            resumed: report.resumed,
            interrupted: report.interrupted,
            verified,
            verification,
            peak_rss_bytes: tranche::runtime::peak_rss_bytes(),
            consumed,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.interrupted {
        130
    } else if verified {
        0
    } else {
        1
    })
}

pub(crate) async fn prepare_data(
    store: &Store,
    args: &DemoArgs,
    multi: &MultiProgress,
) -> anyhow::Result<()> {
    let (fresh, rows) = (args.fresh, args.rows);
    let bar = multi.add(ProgressBar::new(rows));
    bar.set_style(
        ProgressStyle::with_template("  seeding   [{bar:40}] {human_pos}/{human_len}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let seeding_bar = bar.clone();
    let prepared = store
        .run(move |c| data::prepare_with(c, rows, fresh, &mut |n| seeding_bar.set_position(n)))
        .await?;
    bar.finish_and_clear();
    multi.remove(&bar);
    match prepared {
        data::Prepared::Reused => println!("  reusing the seeded data set of {rows} subscriptions"),
        data::Prepared::Seeded => println!("  seeded {rows} subscriptions over 8 products"),
        data::Prepared::UnfinishedRun { rows: n } => bail!(
            "the database holds an unfinished run over {n} subscriptions; \
             rerun with --rows {n} to continue it, or --fresh to start over"
        ),
    }
    Ok(())
}

//! `tranche demo`: the subscription migration end to end, seeded,
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
use super::settings::RuntimeFlags;
use super::{consume, InstanceArgs};

#[derive(Parser)]
pub(crate) struct DemoArgs {
    /// Database URL: sqlite://path (or a path ending .db, .sqlite or
    /// .sqlite3), postgres://..., a keyword DSN, or mysql://... (a build
    /// with the mysql feature).
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
    /// Deliver at most this many rows a second, all instances together: a
    /// new run's throttle, which `tranche throttle` changes while it runs
    /// (a resumed run keeps its own).
    #[arg(long)]
    pub(crate) max_rows_per_s: Option<u64>,
    /// Write a JSON summary of the run here.
    #[arg(long)]
    pub(crate) summary_json: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) instance: InstanceArgs,
    /// The runtime settings, as for `tranche run`; the demo's own defaults
    /// differ in two: a 10 s lease renewed every 2.5 s, so that a killed
    /// demo's partitions are taken over soon, and as many database threads
    /// as partitions worked at once (2 to 8).
    #[command(flatten)]
    pub(crate) runtime: RuntimeFlags,
    /// Draw no progress bars.
    #[arg(long)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) progress: crate::cli::progress::ProgressArgs,
}

/// The `--summary-json` object: the run's report, this process and the
/// demo's verification.
#[derive(Serialize)]
pub(crate) struct Summary<'a> {
    #[serde(flatten)]
    pub(crate) report: &'a tranche::RunReport,
    pub(crate) db: String,
    pub(crate) sink: String,
    pub(crate) instance_id: String,
    pub(crate) rows_updated: u64,
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

/// The demo's runtime settings: its defaults, then `TRANCHE_*`, then flags.
fn demo_config(
    args: &DemoArgs,
    env: impl Fn(&str) -> Option<String> + Copy,
) -> anyhow::Result<RuntimeConfig> {
    let mut defaults = RuntimeConfig::new(args.db.clone());
    defaults.lease = Duration::from_secs(10);
    defaults.heartbeat = Duration::from_millis(2500);
    let given = |field: &str| {
        args.runtime.0.has(field)
            || env(&format!("TRANCHE_{}", field.to_ascii_uppercase())).is_some()
    };
    // --db (or TRANCHE_DATABASE_URL, as clap read it) is a flag like the others.
    let mut flags = args.runtime.0.clone();
    flags.set_database_url(args.db.clone());
    let mut config = tranche::config::layered_runtime_config(&defaults, env, &flags)?;
    if !given("db_threads") {
        config.db_threads = config.concurrency.clamp(2, 8);
    }
    Ok(config)
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
    let config = demo_config(&args, |k| std::env::var(k).ok())?;
    let runtime = RuntimeHandle::start(config)
        .await
        .with_context(|| format!("starting tranche on {shown_db}"))?;
    let store = runtime.store().clone();
    let multi = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    println!("tranche demo: subscription migration on {shown_db}");

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
    let mut throttle = tranche::job::Throttle::default();
    throttle.max_rows_per_s = args.max_rows_per_s;
    let mut job = data::job(sink, args.partitions, store.dialect(), throttle)?;
    if let Some(key) = &args.instance.run_key {
        job = job.with_run_key(key.clone())?;
    }
    let started = Instant::now();
    let run = runtime.start_run(job)?;
    let mut report = follow(&runtime, run, &multi, args.progress.lines(args.quiet)).await?;
    // This process's time, start-up included, as the summary reports it.
    report.elapsed = started.elapsed();
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

    let rows_updated = match (&sink_kind, &verification) {
        (DemoSink::Update | DemoSink::Broker(_), Some(v)) => v.delivered,
        _ => 0,
    };
    // A file sink cannot tell replays; the verification counted them.
    if let (DemoSink::Jsonl(_), Some(v)) = (&sink_kind, &verification) {
        report.rows_replayed = v.duplicates;
    }
    print_report(&report, verification.as_ref());
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
            report: &report,
            db: shown_db,
            sink: redact_url(&args.sink),
            instance_id,
            rows_updated,
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

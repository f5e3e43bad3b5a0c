//! The `tranche` binary: the S0 demo on an embedded SQLite file (or
//! PostgreSQL), configured jobs (`run`, `schedule`, `history`) and
//! `migrate`. Thin by design: parse arguments, set up
//! logging, call the library.

#[cfg(feature = "bench")]
#[path = "cli/bench.rs"]
mod bench_cmd;
#[path = "cli/consume.rs"]
mod consume_cmd;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tranche::demo::{self, Verification};
use tranche::{
    redact_url, JsonLinesSink, OutboxSink, PartitionProgress, RunReport, RuntimeConfig,
    RuntimeHandle, Sink, Store, StoreOptions, UpdateSink,
};

#[derive(Parser)]
#[command(
    name = "tranche",
    version,
    about = "Partitioned, checkpointed, repeatable data jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the S0 subscription migration end to end with live progress.
    Demo(DemoArgs),
    /// Run (or join the active run of) a job described by a TOML file, once,
    /// now.
    Run(RunArgs),
    /// Run a job file on its `[schedule]` (interval, cron or one instant)
    /// until Ctrl-C, or until a one-time schedule has run.
    Schedule(RunArgs),
    /// List a job's runs, newest first.
    History(HistoryArgs),
    /// Consume a broker (RabbitMQ queue or JetStream durable consumer) and
    /// apply each message to the database, as a consumer file describes.
    Consume(consume_cmd::ConsumeArgs),
    /// Measure tranche against the S1 baselines and the machine's limits
    /// on one PostgreSQL table; writes bench.json, bench.md and bench.png.
    #[cfg(feature = "bench")]
    Bench(bench_cmd::BenchArgs),
    /// Apply tranche's migrations to a database.
    Migrate {
        /// Database URL: postgres://..., a keyword DSN, or sqlite://path (or a
        /// path ending .db, .sqlite or .sqlite3).
        #[arg(long, env = "TRANCHE_DATABASE_URL")]
        db: String,
    },
}

#[derive(Parser)]
struct DemoArgs {
    /// Database URL: sqlite://path (or a path ending .db, .sqlite or
    /// .sqlite3), postgres://... or a keyword DSN.
    #[arg(
        long,
        env = "TRANCHE_DATABASE_URL",
        default_value = "sqlite://tranche-demo.db"
    )]
    db: String,
    /// Subscriptions to seed.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Partitions for the run (spread over the changed products).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Partitions worked at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Rows per page (and per checkpoint).
    #[arg(long, default_value_t = 1000)]
    page_size: usize,
    /// Drop the demo data and its runs first, then seed again.
    #[arg(long)]
    fresh: bool,
    /// Where messages go: `update` (apply in-process), `outbox` (rows of
    /// `tranche_outbox`), `jsonl:PATH`, or a broker, `amqp://...` (RabbitMQ)
    /// or `nats://...` (JetStream), whose messages --consumers in-process
    /// consumers apply to the database.
    #[arg(long, default_value = "update")]
    sink: String,
    /// Consumers applying a broker's messages (with a broker --sink).
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Write a JSON summary of the run here.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Lease duration in milliseconds: after a crash, the partitions the dead
    /// process held are taken over this long after its last renewal.
    #[arg(long, default_value_t = 10_000)]
    lease_ms: u64,
    /// Lease renewal interval in milliseconds (below the lease).
    #[arg(long, default_value_t = 2_500)]
    heartbeat_ms: u64,
    /// Database executor threads (default: concurrency, between 2 and 8).
    #[arg(long)]
    db_threads: Option<usize>,
    #[command(flatten)]
    instance: InstanceArgs,
    /// Draw no progress bars.
    #[arg(long)]
    quiet: bool,
}

/// How this process takes part in a run shared with other instances.
#[derive(clap::Args)]
struct InstanceArgs {
    /// This instance's identity in leases (default: host, pid and a random
    /// suffix); `{instance}` in a jsonl path is replaced by it.
    #[arg(long, env = "TRANCHE_INSTANCE_ID")]
    instance_id: Option<String>,
    /// How often to look again for claimable work or expired leases, in ms.
    #[arg(long)]
    poll_ms: Option<u64>,
    /// Join the run of this key, whatever its state, instead of the job's
    /// active run: a process arriving after that run ended does nothing.
    #[arg(long)]
    run_key: Option<String>,
    /// Do not split busy workers' ranges when idle.
    #[arg(long)]
    no_work_stealing: bool,
}

#[derive(Parser)]
struct HistoryArgs {
    /// A job file, for its database and job name.
    #[arg(long, required_unless_present_all = ["db", "job"])]
    config: Option<PathBuf>,
    /// Database URL (overrides the file's).
    #[arg(long, env = "TRANCHE_DATABASE_URL")]
    db: Option<String>,
    /// Job name (overrides the file's).
    #[arg(long)]
    job: Option<String>,
    /// Runs to list.
    #[arg(long, default_value_t = 20)]
    limit: i64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Parser)]
struct RunArgs {
    /// The job file (see the README for every field).
    #[arg(long)]
    config: PathBuf,
    /// Database URL, overriding the file and TRANCHE_DATABASE_URL.
    #[arg(long)]
    db: Option<String>,
    /// Partitions worked at once.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Rows per page.
    #[arg(long)]
    page_size: Option<usize>,
    /// Lease duration in milliseconds.
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Lease renewal interval in milliseconds.
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Write a JSON summary of the run here.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    #[command(flatten)]
    instance: InstanceArgs,
    /// Draw no progress bars.
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    // OpenSSL (libpq's and lapin's) registers a cleanup to run at exit
    // unless its first initialisation asks for none. That cleanup frees
    // state that threads still ending at exit use: `tranche consume` was
    // seen to die of SIGSEGV in OpenSSL's `init_thread_deregister` after
    // its work was done. Initialised here first, without it.
    openssl_sys::init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(cli_main())
}

async fn cli_main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Migrate { db } => {
            let applied =
                tokio::task::spawn_blocking(move || tranche::run_migrations(&db)).await??;
            if applied.is_empty() {
                println!("tranche: migrations up to date");
            } else {
                println!("tranche: applied {}", applied.join(", "));
            }
            Ok(())
        }
        Command::Demo(args) => {
            let code = demo_main(args).await?;
            std::process::exit(code);
        }
        Command::Run(args) => {
            let code = run_main(args).await?;
            std::process::exit(code);
        }
        Command::Schedule(args) => {
            let code = schedule_main(args).await?;
            std::process::exit(code);
        }
        Command::History(args) => history_main(args).await,
        Command::Consume(args) => {
            let code = consume_cmd::consume_main(args).await?;
            std::process::exit(code);
        }
        #[cfg(feature = "bench")]
        Command::Bench(args) => {
            let code = bench_cmd::bench_main(args).await?;
            std::process::exit(code);
        }
    }
}

/// The `--summary-json` object.
#[derive(Serialize)]
struct Summary {
    db: String,
    sink: String,
    instance_id: String,
    run_id: i64,
    rows_identified: i64,
    rows_checkpointed: u64,
    rows_published: u64,
    rows_updated: u64,
    rows_replayed: u64,
    rows_possibly_replayed: u64,
    rows_done: i64,
    rows_done_at_start: i64,
    partitions: usize,
    takeovers: u64,
    steals: u64,
    leases_lost: u64,
    elapsed_s: f64,
    rows_per_s: f64,
    run_rows_per_s: Option<f64>,
    resumed: bool,
    interrupted: bool,
    verified: bool,
    verification: Option<Verification>,
    /// Peak resident memory of this process, bytes (Linux).
    peak_rss_bytes: Option<u64>,
    /// The consumers' counters, with a broker sink.
    consumed: Option<tranche::consume::ConsumeProgress>,
}

enum DemoSink {
    Update,
    Outbox,
    Jsonl(PathBuf),
    /// `amqp://...` or `nats://...`: published, then applied by consumers.
    Broker(String),
}

fn parse_sink(s: &str) -> anyhow::Result<DemoSink> {
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

async fn demo_main(args: DemoArgs) -> anyhow::Result<i32> {
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
    config.store = StoreOptions {
        threads: args.db_threads.unwrap_or(args.concurrency.clamp(2, 8)),
        ..StoreOptions::default()
    };
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
                consume_cmd::demo_broker(url, &store, args.consumers.max(1), args.fresh).await?;
            consumers = Some(group);
            sink
        }
        DemoSink::Update => Arc::new(UpdateSink::new(store.clone(), demo::update_spec())),
        DemoSink::Outbox => Arc::new(OutboxSink::new(store.clone(), demo::JOB_NAME)),
        DemoSink::Jsonl(pattern) => {
            let path = demo::instance_path(pattern, runtime.instance_id());
            Arc::new(
                JsonLinesSink::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?,
            )
        }
    };
    let mut job = demo::job(sink, args.partitions, store.dialect())?;
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
                let (total, v) = consume_cmd::drain(group, &store, Duration::from_secs(10)).await?;
                consumed = Some(total);
                v
            }
            DemoSink::Update => store.run(demo::verify_updates).await?,
            DemoSink::Outbox => store.run(demo::verify_outbox).await?,
            DemoSink::Jsonl(pattern) => {
                // Every instance's file: the verification covers the run.
                let eligible = store.run(demo::eligible).await?;
                let files = demo::instance_files(pattern)?;
                demo::verify_jsonl_files(&eligible, &files)?
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
            peak_rss_bytes: tranche::peak_rss_bytes(),
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

/// The demo flag that sets a configuration field.
fn flag_of(field: &str) -> String {
    match field {
        "lease" => "--lease-ms".into(),
        "heartbeat" => "--heartbeat-ms".into(),
        "store.threads" => "--db-threads".into(),
        "database_url" => "--db".into(),
        "poll_interval" => "--poll-ms".into(),
        other => format!("--{}", other.replace('_', "-")),
    }
}

/// The `run --summary-json` object.
#[derive(Serialize)]
struct RunSummary {
    job: String,
    instance_id: String,
    run_id: i64,
    run_key: Option<String>,
    state: tranche::store::RunState,
    rows_identified: i64,
    rows_done: i64,
    rows_done_at_start: i64,
    rows_checkpointed: u64,
    rows_published: u64,
    rows_replayed: u64,
    rows_possibly_replayed: u64,
    dead_letters: u64,
    partitions: usize,
    failed_partitions: usize,
    takeovers: u64,
    steals: u64,
    leases_lost: u64,
    elapsed_s: f64,
    rows_per_s: f64,
    run_rows_per_s: Option<f64>,
    error: Option<String>,
    resumed: bool,
    interrupted: bool,
    /// Peak resident memory of this process, bytes (Linux).
    peak_rss_bytes: Option<u64>,
}

/// The job file with the environment and flags applied, validated.
fn load_job_file(args: &RunArgs) -> anyhow::Result<tranche::config::JobFile> {
    let mut file = tranche::config::JobFile::from_path(&args.config)?;
    file.apply_env(|k| std::env::var(k).ok())?;
    file.apply_overrides(&tranche::config::Overrides {
        database_url: args.db.clone().map(Into::into),
        concurrency: args.concurrency,
        page_size: args.page_size,
        lease_ms: args.lease_ms,
        heartbeat_ms: args.heartbeat_ms,
        instance_id: args.instance.instance_id.clone(),
        poll_ms: args.instance.poll_ms,
        run_key: args.instance.run_key.clone(),
        work_stealing: args.instance.no_work_stealing.then_some(false),
    });
    file.validate()?;
    Ok(file)
}

/// Starts a runtime for a job file and builds its job.
async fn start_job(
    file: &tranche::config::JobFile,
    what: &str,
) -> anyhow::Result<(RuntimeHandle, tranche::Job)> {
    let config = file.runtime_config()?;
    let shown_db = config.database_url.to_string();
    let runtime = RuntimeHandle::start(config)
        .await
        .with_context(|| format!("starting tranche on {shown_db}"))?;
    let job = file.job(runtime.store(), runtime.instance_id())?;
    println!(
        "tranche {what}: job {} on {shown_db} as {}",
        file.job.name,
        runtime.instance_id()
    );
    Ok((runtime, job))
}

async fn run_main(args: RunArgs) -> anyhow::Result<i32> {
    let file = load_job_file(&args)?;
    let (runtime, job) = start_job(&file, "run").await?;
    let multi = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let started = Instant::now();
    let run = runtime.start_run(job)?;
    let report = follow(&runtime, run, &multi).await?;
    let elapsed = started.elapsed();
    multi.clear().ok();
    let instance_id = runtime.instance_id().to_owned();
    runtime.shutdown().await;
    let rows_per_s = report.rows_checkpointed as f64 / elapsed.as_secs_f64().max(1e-9);
    print_report(&report, elapsed, rows_per_s, None);
    let failed = report.failed_partitions().count();
    if !report.interrupted {
        println!("  run {} ended {:?}", report.run_id, report.state);
    }
    if let Some(path) = &args.summary_json {
        let summary = RunSummary {
            job: report.job.clone(),
            instance_id,
            run_id: report.run_id,
            run_key: file.job.run_key.clone(),
            state: report.state,
            rows_identified: report.rows_identified,
            rows_done: report.rows_done,
            rows_done_at_start: report.rows_done_at_start,
            rows_checkpointed: report.rows_checkpointed,
            rows_published: report.rows_published,
            rows_replayed: report.rows_replayed,
            rows_possibly_replayed: report.rows_possibly_replayed,
            dead_letters: report.dead_letters,
            partitions: report.partitions.len(),
            failed_partitions: failed,
            takeovers: report.takeovers,
            steals: report.steals,
            leases_lost: report.leases_lost,
            elapsed_s: elapsed.as_secs_f64(),
            rows_per_s,
            run_rows_per_s: report.run_rows_per_s,
            error: report.error.clone(),
            resumed: report.resumed,
            interrupted: report.interrupted,
            peak_rss_bytes: tranche::peak_rss_bytes(),
        };
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.interrupted {
        130
    } else if report.state == tranche::store::RunState::Done {
        0
    } else {
        1
    })
}

async fn schedule_main(args: RunArgs) -> anyhow::Result<i32> {
    let file = load_job_file(&args)?;
    let Some(section) = &file.schedule else {
        bail!(
            "invalid configuration: schedule: {} has no [schedule] section \
             (every, cron or at); use `tranche run` for a run now",
            args.config.display()
        );
    };
    let schedule = section.schedule()?;
    let (runtime, job) = start_job(&file, "schedule").await?;
    let handle = runtime.schedule(job, schedule)?;
    let mut status = handle.subscribe();
    let mut seen = tranche::ScheduleStatus::default();
    let mut failed = false;
    let mut interrupted = false;
    let mut stop = StopSignal::new()?;
    loop {
        let now = status.borrow_and_update().clone();
        if now.next_tick != seen.next_tick {
            if let Some(t) = now.next_tick {
                println!("  next tick: {}", tranche::tick_key(t));
            }
        }
        if now.skipped > seen.skipped {
            println!("  tick skipped: the previous run is still active");
        }
        if let Some(r) = now
            .last_report
            .as_ref()
            .filter(|r| seen.last_report.as_ref().map(|s| s.run_id) != Some(r.run_id))
        {
            failed |= r.state != tranche::store::RunState::Done && !r.interrupted;
            println!(
                "  run {} ended {:?}: {} of {} rows done, {} published here in {:.2} s",
                r.run_id,
                r.state,
                r.rows_done,
                r.rows_identified,
                r.rows_published,
                r.elapsed.as_secs_f64()
            );
        }
        if let Some(e) = now
            .last_error
            .as_ref()
            .filter(|e| seen.last_error.as_ref() != Some(e))
        {
            failed = true;
            println!("  error: {e}");
        }
        seen = now;
        if seen.finished {
            break;
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { break },
            _ = stop.recv(), if !interrupted => {
                interrupted = true;
                println!("  interrupted: finishing pages and checkpointing…");
                handle.cancel();
                let rt = runtime.clone();
                tokio::spawn(async move { rt.shutdown().await });
            }
        }
    }
    runtime.shutdown().await;
    Ok(if interrupted {
        130
    } else if failed {
        1
    } else {
        0
    })
}

async fn history_main(args: HistoryArgs) -> anyhow::Result<()> {
    let file = args
        .config
        .as_deref()
        .map(tranche::config::JobFile::from_path)
        .transpose()?;
    let db: tranche::SecretUrl = args
        .db
        .map(Into::into)
        .or_else(|| file.as_ref().map(|f| f.database_url.clone()))
        .context("--db or --config is required")?;
    let job = args
        .job
        .or_else(|| file.as_ref().map(|f| f.job.name.clone()))
        .context("--job or --config is required")?;
    if args.limit < 1 {
        bail!("invalid configuration: --limit: must be at least 1");
    }
    let mut config = RuntimeConfig::new(db.clone());
    config.store.threads = 1;
    let runtime = RuntimeHandle::start(config)
        .await
        .with_context(|| format!("opening {db}"))?;
    let runs = runtime.store().runs(&job, args.limit).await;
    runtime.shutdown().await;
    let runs = runs?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(());
    }
    println!(
        "{:>6}  {:<8}  {:>10}  {:>10}  {:>5}  {:>9}  key",
        "run", "state", "identified", "done", "parts", "seconds"
    );
    for r in &runs {
        let seconds = r
            .finished_ms
            .map(|f| format!("{:.1}", (f - r.started_ms) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>6}  {:<8}  {:>10}  {:>10}  {:>5}  {:>9}  {}",
            r.id,
            format!("{:?}", r.state).to_lowercase(),
            r.rows_identified,
            r.rows_done,
            r.partitions,
            seconds,
            r.run_key.as_deref().unwrap_or("-")
        );
    }
    if runs.is_empty() {
        println!("  no runs of {job} yet");
    }
    Ok(())
}

async fn prepare_data(store: &Store, args: &DemoArgs, multi: &MultiProgress) -> anyhow::Result<()> {
    let (fresh, rows) = (args.fresh, args.rows);
    let bar = multi.add(ProgressBar::new(rows));
    bar.set_style(
        ProgressStyle::with_template("  seeding   [{bar:40}] {human_pos}/{human_len}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let seeding_bar = bar.clone();
    let prepared = store
        .run(move |c| demo::prepare_with(c, rows, fresh, &mut |n| seeding_bar.set_position(n)))
        .await?;
    bar.finish_and_clear();
    multi.remove(&bar);
    match prepared {
        demo::Prepared::Reused => println!("  reusing the seeded data set of {rows} subscriptions"),
        demo::Prepared::Seeded => println!("  seeded {rows} subscriptions over 8 products"),
        demo::Prepared::UnfinishedRun { rows: n } => bail!(
            "the database holds an unfinished run over {n} subscriptions; \
             rerun with --rows {n} to continue it, or --fresh to start over"
        ),
    }
    Ok(())
}

/// A request to stop: Ctrl-C (SIGINT) or SIGTERM, which every
/// long-running command treats alike: pages in flight finish and are
/// checkpointed, partitions are handed back at once (their leases
/// released, not left to expire), the summary is written and the command
/// exits 130.
struct StopSignal {
    term: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn new() -> anyhow::Result<Self> {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        Ok(Self { term })
    }

    /// Resolves at the next Ctrl-C or SIGTERM.
    async fn recv(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Draws live progress until the run reports; Ctrl-C or SIGTERM shuts
/// down gracefully.
async fn follow(
    runtime: &RuntimeHandle,
    run: tranche::RunHandle,
    multi: &MultiProgress,
) -> anyhow::Result<RunReport> {
    let progress = run.subscribe();
    let total = multi.add(ProgressBar::new(0));
    total.set_style(
        ProgressStyle::with_template(
            "  total     [{bar:40}] {human_pos}/{human_len} rows  eta {eta}  {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    total.set_message("identifying…");
    let part_style =
        ProgressStyle::with_template("  {prefix:>9} [{bar:40}] {human_pos}/{human_len} {msg}")
            .expect("valid template")
            .progress_chars("=> ");
    let mut bars: std::collections::HashMap<i64, ProgressBar> = Default::default();
    let mut wait = Box::pin(run.wait());
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut interrupted = false;
    let mut counted_from: Option<(i64, Instant)> = None;
    let mut stop = StopSignal::new()?;
    loop {
        tokio::select! {
            report = &mut wait => {
                for b in bars.values() { b.finish_and_clear(); }
                total.finish_and_clear();
                return Ok(report?);
            }
            _ = stop.recv(), if !interrupted => {
                interrupted = true;
                total.set_message("interrupted: finishing pages and checkpointing…");
                let rt = runtime.clone();
                tokio::spawn(async move { rt.shutdown().await });
            }
            _ = tick.tick() => {
                let p = progress.borrow().clone();
                if !p.planned {
                    continue;
                }
                if counted_from.is_none() {
                    counted_from = Some((p.rows_done_at_start, Instant::now()));
                    total.set_length(p.rows_identified.max(0) as u64);
                    total.set_position(p.rows_done_at_start.max(0) as u64);
                    total.reset_eta();
                    if p.resumed {
                        total.println(format!(
                            "  resuming from checkpoints: {} of {} rows already done",
                            p.rows_done_at_start, p.rows_identified
                        ));
                    }
                }
                total.set_position(p.rows_done.max(0) as u64);
                if let (Some((start, since)), false) = (counted_from, interrupted) {
                    let rate = (p.rows_done - start) as f64 / since.elapsed().as_secs_f64().max(1e-3);
                    let active = p.partitions.iter().filter(|pp| pp.active).count();
                    let held_elsewhere = p
                        .partitions
                        .iter()
                        .filter(|pp| !pp.active && pp.state == tranche::store::PartitionState::Claimed)
                        .count();
                    total.set_message(if active == 0 && held_elsewhere > 0 {
                        format!(
                            "waiting for {held_elsewhere} partitions held by a stopped process \
                             (their leases expire within --lease-ms)"
                        )
                    } else {
                        format!("{rate:.0} rows/s  {active} of {} partitions active", p.partitions.len())
                    });
                }
                draw_partitions(multi, &part_style, &mut bars, &p.partitions);
            }
        }
    }
}

fn draw_partitions(
    multi: &MultiProgress,
    style: &ProgressStyle,
    bars: &mut std::collections::HashMap<i64, ProgressBar>,
    partitions: &[PartitionProgress],
) {
    for p in partitions {
        match (p.active, bars.get(&p.id)) {
            (true, Some(bar)) => bar.set_position(p.rows_done.max(0) as u64),
            (true, None) => {
                let bar = multi.add(ProgressBar::new(p.rows_planned.max(0) as u64));
                bar.set_style(style.clone());
                bar.set_prefix(format!("part {}", p.number));
                bar.set_message(p.scope.clone());
                bar.set_position(p.rows_done.max(0) as u64);
                bars.insert(p.id, bar);
            }
            (false, Some(_)) => {
                if let Some(bar) = bars.remove(&p.id) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
            }
            (false, None) => {}
        }
    }
}

fn print_report(
    report: &RunReport,
    elapsed: Duration,
    rows_per_s: f64,
    verification: Option<&Verification>,
) {
    println!(
        "  identified {} rows in {} partitions (run {})",
        report.rows_identified,
        report.partitions.len(),
        report.run_id
    );
    if report.resumed {
        println!(
            "  resumed from checkpoints: {} rows were already done",
            report.rows_done_at_start
        );
    }
    println!(
        "  this instance processed {} rows in {:.2} s ({:.0} rows/s); published {}, replayed {}",
        report.rows_checkpointed,
        elapsed.as_secs_f64(),
        rows_per_s,
        report.rows_published,
        report.rows_replayed
    );
    if report.rows_possibly_replayed > 0 {
        println!(
            "  at most {} rows may have been delivered twice: this instance resumed partitions \
             from checkpoints an earlier holder may have published past",
            report.rows_possibly_replayed
        );
    }
    if let Some(rate) = report.run_rows_per_s {
        println!("  the whole run, every instance: {rate:.0} rows/s");
    }
    if let Some(error) = &report.error {
        println!("  run error: {error}");
    }
    if report.takeovers + report.steals + report.leases_lost > 0 {
        println!(
            "  took over {} expired partitions, split {} busy ranges, lost {} leases",
            report.takeovers, report.steals, report.leases_lost
        );
    }
    for p in report.failed_partitions() {
        println!(
            "  partition {} FAILED after {} attempts: {}",
            p.number,
            p.attempts,
            p.last_error.as_deref().unwrap_or("unknown error")
        );
    }
    if report.interrupted {
        println!(
            "  interrupted: {} of {} rows done; run the same command again to continue",
            report.rows_done, report.rows_identified
        );
        return;
    }
    if let Some(v) = verification {
        println!(
            "  verification: {} — {} eligible, {} delivered, {} lost, {} unexpected, {} duplicates",
            if v.verified { "OK" } else { "FAILED" },
            v.eligible,
            v.delivered,
            v.lost,
            v.unexpected,
            v.duplicates
        );
    }
}

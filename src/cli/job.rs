//! `tranche run`, `schedule` and `history`: configured jobs from a job file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use indicatif::{MultiProgress, ProgressDrawTarget};
use serde::Serialize;
use tranche::{RuntimeConfig, RuntimeHandle};

use super::progress::{follow, print_report, StopSignal};
use super::settings::RuntimeFlags;
use super::InstanceArgs;

#[derive(Parser)]
pub(crate) struct HistoryArgs {
    /// A job file, for its database and job name.
    #[arg(long, required_unless_present_all = ["db", "job"])]
    pub(crate) config: Option<PathBuf>,
    /// Database URL (overrides the file's).
    #[arg(long, env = "TRANCHE_DATABASE_URL")]
    pub(crate) db: Option<String>,
    /// Job name (overrides the file's).
    #[arg(long)]
    pub(crate) job: Option<String>,
    /// Runs to list.
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: i64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Parser)]
pub(crate) struct RunArgs {
    /// The job file (see the README for every field).
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// Database URL, overriding the file and TRANCHE_DATABASE_URL.
    #[arg(long)]
    pub(crate) db: Option<String>,
    #[command(flatten)]
    pub(crate) runtime: RuntimeFlags,
    /// Write a JSON summary of the run here.
    #[arg(long)]
    pub(crate) summary_json: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) instance: InstanceArgs,
    /// Draw no progress bars.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Serve the run's metrics for Prometheus on this address (HOST:PORT),
    /// on any path.
    #[arg(long, env = "TRANCHE_METRICS_ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
}

/// Installs the Prometheus exporter on `addr`, when given: the library's
/// series (see `tranche::runtime::metrics::SERIES`) are served there.
pub(crate) fn serve_metrics(addr: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    if let Some(addr) = addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("serving metrics on {addr}"))?;
    }
    Ok(())
}

/// `tranche run`: a job file's settings and how progress is said.
#[derive(clap::Args)]
pub(crate) struct RunCommand {
    #[command(flatten)]
    pub(crate) run: RunArgs,
    #[command(flatten)]
    pub(crate) progress: super::progress::ProgressArgs,
}

/// The `run --summary-json` object: the run's report and this process.
#[derive(Serialize)]
pub(crate) struct RunSummary<'a> {
    #[serde(flatten)]
    pub(crate) report: &'a tranche::RunReport,
    pub(crate) instance_id: String,
    pub(crate) run_key: Option<String>,
    /// Peak resident memory of this process, bytes (Linux).
    pub(crate) peak_rss_bytes: Option<u64>,
}

/// The job file with the environment and flags applied, validated.
pub(crate) fn load_job_file(args: &RunArgs) -> anyhow::Result<tranche::config::JobFile> {
    let mut flags = args.runtime.0.clone();
    if let Some(db) = &args.db {
        flags.set_database_url(db.clone());
    }
    let mut file = tranche::config::JobFile::load(&args.config, &flags)?;
    if let Some(key) = &args.instance.run_key {
        file.job.run_key = Some(key.clone());
    }
    file.validate()?;
    Ok(file)
}

/// Starts a runtime for a job file and builds its job.
pub(crate) async fn start_job(
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

pub(crate) async fn run_main(command: RunCommand) -> anyhow::Result<i32> {
    let RunCommand {
        run: args,
        progress,
    } = command;
    let file = load_job_file(&args)?;
    serve_metrics(args.metrics_addr)?;
    let (runtime, job) = start_job(&file, "run").await?;
    let multi = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let started = Instant::now();
    let run = runtime.start_run(job)?;
    let mut report = follow(&runtime, run, &multi, progress.lines(args.quiet)).await?;
    // This process's time, start-up included, as the summary reports it.
    report.elapsed = started.elapsed();
    multi.clear().ok();
    let instance_id = runtime.instance_id().to_owned();
    runtime.shutdown().await;
    print_report(&report, None);
    if !report.interrupted {
        println!("  run {} ended {}", report.run_id, report.state.as_str());
    }
    if let Some(path) = &args.summary_json {
        let summary = RunSummary {
            report: &report,
            instance_id,
            run_key: file.job.run_key.clone(),
            peak_rss_bytes: tranche::runtime::peak_rss_bytes(),
        };
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(run_exit_code(&report))
}

/// `tranche run`'s exit status: 0 done, 1 failed, 3 cancelled by an
/// operator, 130 interrupted (Ctrl-C or SIGTERM); 2 (bad input) comes from
/// errors before the run starts.
pub(crate) fn run_exit_code(report: &tranche::RunReport) -> i32 {
    use tranche::store::RunState;
    match report.state {
        _ if report.interrupted => 130,
        RunState::Done => 0,
        RunState::Cancelled => 3,
        _ => 1,
    }
}

/// `tranche schedule`: a job file on its schedule, and how the progress of
/// each tick's run is said.
#[derive(clap::Args)]
pub(crate) struct ScheduleCommand {
    #[command(flatten)]
    pub(crate) run: RunArgs,
    #[command(flatten)]
    pub(crate) progress: super::progress::ProgressArgs,
}

pub(crate) async fn schedule_main(command: ScheduleCommand) -> anyhow::Result<i32> {
    let ScheduleCommand {
        run: args,
        progress,
    } = command;
    let lines = progress.lines_without_bars(args.quiet);
    let mut progress_tick =
        tokio::time::interval(lines.map_or(Duration::from_secs(3600), |(every, _)| every));
    progress_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    progress_tick.tick().await;
    let file = load_job_file(&args)?;
    serve_metrics(args.metrics_addr)?;
    let Some(section) = &file.schedule else {
        bail!(
            "invalid configuration: schedule: {} has no [schedule] section \
             (every, cron or at); use `tranche run` for a run now",
            args.config.display()
        );
    };
    let schedule = section.schedule()?;
    let (runtime, job) = start_job(&file, "schedule").await?;
    let job_name = job.name().to_owned();
    let handle = runtime.schedule(job, schedule)?;
    let mut status = handle.subscribe();
    let mut seen = tranche::runtime::ScheduleStatus::default();
    let mut failed = false;
    let mut interrupted = false;
    let mut stop = StopSignal::new()?;
    loop {
        let now = status.borrow_and_update().clone();
        if now.next_tick != seen.next_tick {
            if let Some(t) = now.next_tick {
                println!("  next tick: {}", tranche::runtime::tick_key(t));
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
                "  run {} ended {}: {} of {} rows done, {} published here in {:.2} s",
                r.run_id,
                r.state.as_str(),
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
            _ = progress_tick.tick(), if lines.is_some() => {
                if let (Some(run), Some((_, format))) = (runtime.active_run(&job_name), lines) {
                    eprintln!("{}", super::progress::progress_line(&run.progress(), format));
                }
            }
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

pub(crate) async fn history_main(args: HistoryArgs) -> anyhow::Result<()> {
    let file = args
        .config
        .as_deref()
        .map(|path| tranche::config::JobFile::load(path, &Default::default()))
        .transpose()?;
    let db: tranche::redact::SecretUrl = args
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
    config.db_threads = 1;
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

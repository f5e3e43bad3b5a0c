//! `tranche status`, `pause`, `resume`, `cancel`, `retry`, `throttle` and
//! `dead-letters`: steering a live run through its database.
//!
//! Exit status: 0 done (also when there was nothing to do), 1 the database
//! failed, 2 an unknown job, run or partition or bad input, 4 the run's
//! state forbids the operation.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use tranche::control::{ControlError, Operator, RunStatus};
use tranche::job::Throttle;
use tranche::{RuntimeConfig, RuntimeHandle};

use super::progress::{fmt_secs, StopSignal};

/// Which job and run an operation means.
#[derive(Args, Clone)]
pub(crate) struct Target {
    /// A job file, for its database and job name.
    #[arg(long, required_unless_present_all = ["db", "job"])]
    pub(crate) config: Option<PathBuf>,
    /// Database URL (overrides the file's).
    #[arg(long, env = "TRANCHE_DATABASE_URL")]
    pub(crate) db: Option<String>,
    /// Job name (overrides the file's).
    #[arg(long)]
    pub(crate) job: Option<String>,
    /// The run (default: the job's active run).
    #[arg(long)]
    pub(crate) run: Option<i64>,
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Print again every interval until the run ends (or Ctrl-C).
    #[arg(long)]
    pub(crate) watch: bool,
    /// Interval of `--watch`, with its unit.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) interval: Duration,
}

#[derive(Args)]
pub(crate) struct RetryArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Only this partition (by number).
    #[arg(long)]
    pub(crate) partition: Option<i32>,
}

#[derive(Args)]
pub(crate) struct ThrottleArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Rows per second for the whole run, all instances together.
    #[arg(long)]
    pub(crate) max_rows_per_s: Option<u64>,
    /// Partitions claimed at once, across all instances.
    #[arg(long)]
    pub(crate) max_active_partitions: Option<u32>,
    /// Adapt page sizes so that a page takes about this many milliseconds.
    #[arg(long)]
    pub(crate) target_page_ms: Option<u64>,
    /// The smallest adapted page.
    #[arg(long)]
    pub(crate) min_page_size: Option<usize>,
    /// The largest adapted page.
    #[arg(long)]
    pub(crate) max_page_size: Option<usize>,
    /// SQL returning one number; above --health-max no page starts.
    #[arg(long)]
    pub(crate) health_query: Option<String>,
    /// The largest healthy value of --health-query.
    #[arg(long)]
    pub(crate) health_max: Option<f64>,
    /// How often the health is checked, with its unit.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) health_interval: Option<Duration>,
    /// PostgreSQL: no page starts while a standby lags more than this.
    #[arg(long)]
    pub(crate) max_replication_lag_ms: Option<u64>,
    /// Turn a throttle off (a field name as above, with `_`; repeatable).
    #[arg(long)]
    pub(crate) unset: Vec<String>,
    /// Print the throttle in force as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum DeadLetterCommand {
    /// List a run's dead letters: row keys and reasons.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read the rows of a run's dead letters again by key, run them through
    /// the job's processor and sink, and record each outcome (needs the job
    /// file, for its processor and sink).
    Requeue {
        /// The job file.
        #[arg(long)]
        config: PathBuf,
        /// Database URL (overrides the file's).
        #[arg(long, env = "TRANCHE_DATABASE_URL")]
        db: Option<String>,
        /// The run (default: the job's active run, or its latest).
        #[arg(long)]
        run: Option<i64>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a run's dead letters (asks for --yes).
    Purge {
        #[command(flatten)]
        target: Target,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    tranche::runtime::Schedule::parse_interval(s).map_err(|e| e.reason)
}

/// Who acts, for the audit trail: `user@host`.
fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{user}@{host}")
}

/// Opens the target's database: the runtime (shut it down after), an
/// operator on it and the job's name.
async fn open(target: &Target) -> anyhow::Result<(RuntimeHandle, Operator, String)> {
    let file = target
        .config
        .as_deref()
        .map(|path| tranche::config::JobFile::load(path, &Default::default()))
        .transpose()?;
    let db: tranche::redact::SecretUrl = target
        .db
        .clone()
        .map(Into::into)
        .or_else(|| file.as_ref().map(|f| f.database_url.clone()))
        .context("--db or --config is required")?;
    let job = target
        .job
        .clone()
        .or_else(|| file.as_ref().map(|f| f.job.name.clone()))
        .context("--job or --config is required")?;
    let mut config = RuntimeConfig::new(db.clone());
    config.db_threads = 1;
    let runtime = RuntimeHandle::start(config)
        .await
        .with_context(|| format!("opening {db}"))?;
    let operator = Operator::new(runtime.store().clone(), actor());
    Ok((runtime, operator, job))
}

/// Prints a control error with its causes and gives its exit status.
fn refused(e: &ControlError) -> i32 {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    eprintln!("tranche: {text}");
    e.exit_code()
}

fn done<T>(out: Result<T, ControlError>, ok: impl FnOnce(T)) -> i32 {
    match out {
        Ok(v) => {
            ok(v);
            0
        }
        Err(e) => refused(&e),
    }
}

pub(crate) async fn status_main(args: StatusArgs) -> anyhow::Result<i32> {
    let run = args.target.run;
    let (json, watch, interval) = (args.json, args.watch, args.interval);
    let mut stop = StopSignal::new()?;
    let (runtime, op, job) = open(&args.target).await?;
    // Watching on a terminal redraws in place; elsewhere each look follows
    // the last (as one JSON line each with --json).
    let redraw = watch && !json && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let out = async {
        loop {
            let status = op.status(&job, run).await?;
            if json && watch {
                println!("{}", serde_json::to_string(&status).unwrap_or_default());
            } else if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
            } else {
                if redraw {
                    print!("\x1b[H\x1b[2J");
                }
                print_status(&status);
            }
            if !watch || status.run.state.is_finished() {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.recv() => return Ok(()),
            }
            if !json && !redraw {
                println!();
            }
        }
    }
    .await;
    runtime.shutdown().await;
    Ok(done(out, |_| {}))
}

fn print_status(s: &RunStatus) {
    let r = &s.run;
    println!(
        "run {} of job {}: {}{}",
        r.id,
        r.job_name,
        r.state.as_str(),
        r.run_key
            .as_deref()
            .map(|k| format!(" (key {k})"))
            .unwrap_or_default()
    );
    let rate = s
        .rows_per_s
        .map(|v| {
            let over = if r.state.is_finished() {
                "over the run"
            } else {
                "over the last minute"
            };
            format!(", {v:.0} rows/s {over}")
        })
        .unwrap_or_default();
    let eta = s
        .eta_s
        .map(|e| format!(", ETA {}", fmt_secs(e)))
        .unwrap_or_default();
    println!(
        "  rows: {} of {} done ({:.1}%){rate}{eta}",
        s.rows_done, r.rows_identified, s.percent
    );
    println!("  throttle: {}", r.throttle);
    println!(
        "  health: {}",
        r.health
            .as_deref()
            .unwrap_or(if r.throttle.has_health_check() {
                "ok"
            } else {
                "not checked"
            })
    );
    println!("  dead letters: {}", s.dead_letters);
    if let Some(e) = &r.last_error {
        println!("  error: {e}");
    }
    println!(
        "  {:>4}  {:<8}  {:>21}  {:>6}  {:<28}  {:>5}  {:>9}  {:>8}  last error",
        "part", "state", "done / planned", "%", "owner", "epoch", "lease age", "attempts"
    );
    for p in &s.partitions {
        println!(
            "  {:>4}  {:<8}  {:>21}  {:>5.1}%  {:<28}  {:>5}  {:>9}  {:>8}  {}",
            p.number,
            format!("{:?}", p.state).to_lowercase(),
            format!("{} / {}", p.rows_done, p.rows_planned),
            p.percent,
            p.owner.as_deref().unwrap_or("-"),
            p.epoch,
            p.lease_age_ms
                .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            p.attempts,
            p.last_error.as_deref().unwrap_or("")
        );
    }
    if !s.audit.is_empty() {
        println!("  operations (newest first):");
        for a in &s.audit {
            let ago = (s.now_ms - a.at_ms) as f64 / 1000.0;
            println!(
                "    {} ago  {}  run {}  {}{}  by {}",
                fmt_secs(ago),
                a.action,
                a.run_id
                    .map(|id| id.to_string())
                    .unwrap_or_else(|| "-".into()),
                a.detail,
                a.partition
                    .map(|n| format!(" (partition {n})"))
                    .unwrap_or_default(),
                a.actor
            );
        }
    }
}

/// `tranche pause`, `resume` or `cancel`.
pub(crate) async fn change_main(target: Target, op: &'static str) -> anyhow::Result<i32> {
    let run = target.run;
    let (runtime, o, job) = open(&target).await?;
    let out = match op {
        "pause" => o.pause(&job, run).await,
        "resume" => o.resume(&job, run).await,
        _ => o.cancel(&job, run).await,
    };
    runtime.shutdown().await;
    Ok(done(out, |t| {
        if t.changed() {
            println!(
                "tranche {op}: run {} {} -> {}",
                t.run_id,
                t.from.as_str(),
                t.to.as_str()
            );
            if op == "pause" {
                println!("  workers hand their partitions back after the page in flight");
            }
        } else {
            println!("tranche {op}: run {} already {}", t.run_id, t.to.as_str());
        }
    }))
}

pub(crate) async fn retry_main(args: RetryArgs) -> anyhow::Result<i32> {
    let (run, partition) = (args.target.run, args.partition);
    let (runtime, o, job) = open(&args.target).await?;
    let out = o.retry(&job, run, partition).await;
    runtime.shutdown().await;
    Ok(done(out, |n| {
        println!(
            "tranche retry: {n} failed partition{} back to pending{}",
            if n == 1 { "" } else { "s" },
            if n > 0 {
                "; start `tranche run` (or let running instances) take them"
            } else {
                ""
            }
        )
    }))
}

/// Applies the flags to a throttle; an unknown `--unset` field is bad
/// input, named.
fn edit_throttle(args: &ThrottleArgs, t: &mut Throttle) -> Result<(), tranche::ConfigError> {
    for field in &args.unset {
        match field.replace('-', "_").as_str() {
            "max_rows_per_s" => t.max_rows_per_s = None,
            "max_active_partitions" => t.max_active_partitions = None,
            "target_page_ms" => t.target_page_ms = None,
            "min_page_size" => t.min_page_size = None,
            "max_page_size" => t.max_page_size = None,
            "health_query" | "health_max" => {
                t.health_query = None;
                t.health_max = None;
            }
            "health_interval" => t.health_interval = None,
            "max_replication_lag_ms" => t.max_replication_lag_ms = None,
            "all" => *t = Throttle::default(),
            other => {
                return Err(tranche::ConfigError::new(
                    "--unset",
                    format!(
                        "{other:?} is not a throttle; one of max_rows_per_s, \
                         max_active_partitions, target_page_ms, min_page_size, max_page_size, \
                         health_query, health_interval, max_replication_lag_ms, all"
                    ),
                ))
            }
        }
    }
    macro_rules! set {
        ($($f:ident),*) => {$(
            if let Some(v) = args.$f.clone() {
                t.$f = Some(v);
            }
        )*};
    }
    set!(
        max_rows_per_s,
        max_active_partitions,
        target_page_ms,
        min_page_size,
        max_page_size,
        health_query,
        health_max,
        health_interval,
        max_replication_lag_ms
    );
    Ok(())
}

pub(crate) async fn throttle_main(args: ThrottleArgs) -> anyhow::Result<i32> {
    // Check the flags before anything is opened.
    if let Err(e) = edit_throttle(&args, &mut Throttle::default()) {
        eprintln!("tranche: invalid configuration: {e}");
        return Ok(2);
    }
    let run = args.target.run;
    let json = args.json;
    let (runtime, o, job) = open(&args.target).await?;
    let out = o
        .update_throttle(&job, run, move |t| {
            edit_throttle(&args, t).expect("checked above");
        })
        .await;
    runtime.shutdown().await;
    Ok(done(out, |t| {
        if json {
            println!("{}", serde_json::to_string(&t).unwrap_or_default());
        } else {
            println!("tranche throttle: now {t}; every instance obeys within a poll interval");
        }
    }))
}

pub(crate) async fn dead_letters_main(cmd: DeadLetterCommand) -> anyhow::Result<i32> {
    match cmd {
        DeadLetterCommand::List { target, json } => {
            let run = target.run;
            let (runtime, o, job) = open(&target).await?;
            let out = o.dead_letters(&job, run).await;
            runtime.shutdown().await;
            Ok(done(out, |(run_id, letters)| {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&letters).unwrap_or_default()
                    );
                    return;
                }
                println!("run {run_id}: {} dead letters", letters.len());
                for d in &letters {
                    println!(
                        "  key {}  {}",
                        d.row_key
                            .map(|k| k.to_string())
                            .unwrap_or_else(|| "-".into()),
                        d.reason
                    );
                }
            }))
        }
        DeadLetterCommand::Requeue {
            config,
            db,
            run,
            json,
        } => {
            let mut flags = tranche::config::Flags::default();
            if let Some(db) = db {
                flags.set_database_url(db);
            }
            let file = tranche::config::JobFile::load(&config, &flags)?;
            file.validate()?;
            let mut runtime_config = file.runtime_config()?;
            // It claims nothing: its identity is who asked, for the audit.
            runtime_config.instance_id = Some(actor());
            let runtime = RuntimeHandle::start(runtime_config).await?;
            let out = async {
                let job = file.job(runtime.store(), runtime.instance_id())?;
                anyhow::Ok(runtime.requeue_dead_letters(job, run).await)
            }
            .await;
            runtime.shutdown().await;
            Ok(done(out?, |r| {
                if json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    println!("tranche dead-letters requeue: run {}: {r}", r.run_id);
                }
            }))
        }
        DeadLetterCommand::Purge { target, yes } => {
            if !yes {
                eprintln!(
                    "tranche: dead-letters purge deletes the run's dead letters for good; \
                     add --yes to confirm"
                );
                return Ok(2);
            }
            let run = target.run;
            let (runtime, o, job) = open(&target).await?;
            let out = o.purge_dead_letters(&job, run).await;
            runtime.shutdown().await;
            Ok(done(out, |n| {
                println!("tranche dead-letters purge: {n} deleted")
            }))
        }
    }
}

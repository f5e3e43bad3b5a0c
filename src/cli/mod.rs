//! The `tranche` binary's commands, one module each, and what they share.

use clap::{Parser, Subcommand};

use demo::DemoArgs;
use job::HistoryArgs;

#[cfg(feature = "bench")]
pub(crate) mod bench;
pub(crate) mod consume;
pub(crate) mod control;
pub(crate) mod demo;
pub(crate) mod job;
pub(crate) mod plan;
pub(crate) mod progress;
#[cfg(feature = "web")]
pub(crate) mod serve;
pub(crate) mod settings;

/// The command line.
#[derive(Parser)]
#[command(
    name = "tranche",
    version,
    about = "Partitioned, checkpointed, repeatable data jobs"
)]
pub(crate) struct Cli {
    /// The log on stderr (filtered by RUST_LOG, default "warn"): text, or
    /// one JSON object per line carrying the spans' fields (`job.name`,
    /// `run.id`, `partition.id`, `partition.epoch`, `page.rows`...).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TRANCHE_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The form of the log lines.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the subscription migration end to end with live progress.
    Demo(DemoArgs),
    /// Run (or join the active run of) a job described by a TOML file, once,
    /// now.
    Run(job::RunCommand),
    /// Run a job file on its `[schedule]` (interval, cron or one instant)
    /// until Ctrl-C, or until a one-time schedule has run.
    Schedule(job::ScheduleCommand),
    /// List a job's runs, newest first.
    History(HistoryArgs),
    /// A dry run of a job file's planning: the partitions a run would get,
    /// their bounds and rows, the skew, the high-water mark and an estimate
    /// from a sampled read; writes nothing.
    Plan(plan::PlanArgs),
    /// Show where a run stands: rows, rate, ETA, partitions, throttle,
    /// health, dead letters and the latest operations.
    Status(control::StatusArgs),
    /// Pause a run: pages in flight are confirmed and checkpointed, then
    /// every instance hands its partitions back and waits.
    Pause(control::Target),
    /// Resume a paused run from its checkpoints.
    Resume(control::Target),
    /// Cancel a run for good; the job's next run is a new one.
    Cancel(control::Target),
    /// Send a run's failed partitions back to pending, attempts reset.
    Retry(control::RetryArgs),
    /// Change a run's throttles while it runs.
    Throttle(control::ThrottleArgs),
    /// List or purge a run's dead letters.
    #[command(subcommand)]
    DeadLetters(control::DeadLetterCommand),
    /// Consume a broker (RabbitMQ queue or JetStream durable consumer) and
    /// apply each message to the database, as a consumer file describes.
    Consume(consume::ConsumeArgs),
    /// Measure tranche against one-at-a-time baselines and the machine's limits
    /// on one PostgreSQL table; writes bench.json, bench.md and bench.png.
    #[cfg(feature = "bench")]
    Bench(bench::command::BenchArgs),
    /// Serve the web console (runs, partitions, dead letters, schedules;
    /// pause, resume, cancel, retry, throttle, requeue) and its JSON API.
    #[cfg(feature = "web")]
    Serve(serve::ServeArgs),
    /// Apply tranche's migrations to a database.
    Migrate {
        /// Database URL: postgres://..., a keyword DSN, mysql://... (a build
        /// with the mysql feature), or sqlite://path (or a path ending .db,
        /// .sqlite or .sqlite3).
        #[arg(long, env = "TRANCHE_DATABASE_URL")]
        db: String,
    },
}

/// Runs one command to its end; the commands that end a run exit with
/// its status.
pub(crate) async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
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
            let code = demo::demo_main(args).await?;
            std::process::exit(code);
        }
        Command::Run(args) => {
            let code = job::run_main(args).await?;
            std::process::exit(code);
        }
        Command::Schedule(args) => {
            let code = job::schedule_main(args).await?;
            std::process::exit(code);
        }
        Command::History(args) => job::history_main(args).await,
        Command::Plan(args) => std::process::exit(plan::plan_main(args).await?),
        Command::Status(args) => std::process::exit(control::status_main(args).await?),
        Command::Pause(t) => std::process::exit(control::change_main(t, "pause").await?),
        Command::Resume(t) => std::process::exit(control::change_main(t, "resume").await?),
        Command::Cancel(t) => std::process::exit(control::change_main(t, "cancel").await?),
        Command::Retry(args) => std::process::exit(control::retry_main(args).await?),
        Command::Throttle(args) => std::process::exit(control::throttle_main(args).await?),
        Command::DeadLetters(cmd) => std::process::exit(control::dead_letters_main(cmd).await?),
        Command::Consume(args) => {
            let code = consume::consume_main(args).await?;
            std::process::exit(code);
        }
        #[cfg(feature = "web")]
        Command::Serve(args) => std::process::exit(serve::serve_main(args).await?),
        #[cfg(feature = "bench")]
        Command::Bench(args) => {
            let code = bench::command::bench_main(args).await?;
            std::process::exit(code);
        }
    }
}

/// Which run this process joins.
#[derive(clap::Args)]
pub(crate) struct InstanceArgs {
    /// Join the run of this key, whatever its state, instead of the job's
    /// active run: a process arriving after that run ended does nothing.
    #[arg(long)]
    pub(crate) run_key: Option<String>,
}

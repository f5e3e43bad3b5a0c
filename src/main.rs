//! The `tranche` binary: the S0 demo on an embedded SQLite file (or
//! PostgreSQL), configured jobs (`run`, `schedule`, `history`) and
//! `migrate`. Thin by design: parse arguments, set up logging, hand each
//! command to its module under `cli/`.

mod cli;

use clap::{Parser, Subcommand};

use cli::demo::DemoArgs;
use cli::job::{HistoryArgs, RunArgs};

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
    Consume(cli::consume::ConsumeArgs),
    /// Measure tranche against the S1 baselines and the machine's limits
    /// on one PostgreSQL table; writes bench.json, bench.md and bench.png.
    #[cfg(feature = "bench")]
    Bench(cli::bench::command::BenchArgs),
    /// Apply tranche's migrations to a database.
    Migrate {
        /// Database URL: postgres://..., a keyword DSN, or sqlite://path (or a
        /// path ending .db, .sqlite or .sqlite3).
        #[arg(long, env = "TRANCHE_DATABASE_URL")]
        db: String,
    },
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
            let code = cli::demo::demo_main(args).await?;
            std::process::exit(code);
        }
        Command::Run(args) => {
            let code = cli::job::run_main(args).await?;
            std::process::exit(code);
        }
        Command::Schedule(args) => {
            let code = cli::job::schedule_main(args).await?;
            std::process::exit(code);
        }
        Command::History(args) => cli::job::history_main(args).await,
        Command::Consume(args) => {
            let code = cli::consume::consume_main(args).await?;
            std::process::exit(code);
        }
        #[cfg(feature = "bench")]
        Command::Bench(args) => {
            let code = cli::bench::command::bench_main(args).await?;
            std::process::exit(code);
        }
    }
}

//! `tranche serve`: the web console on a database, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use tranche::web::Console;
use tranche::{RuntimeConfig, RuntimeHandle};

use super::progress::StopSignal;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Database URL (default: the first job file's).
    #[arg(long, env = "TRANCHE_DATABASE_URL", required_unless_present = "config")]
    pub(crate) db: Option<String>,
    /// The address to listen on. Other than a loopback address, a token is
    /// required.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// The token every request must carry (open the console once with
    /// `?token=...`, or send `Authorization: Bearer ...`).
    #[arg(long, env = "TRANCHE_WEB_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// A job file whose run's dead letters the console may requeue (it
    /// needs the job's processor and sink); repeatable.
    #[arg(long)]
    pub(crate) config: Vec<PathBuf>,
    /// Serve Prometheus metrics on this address (`/metrics`).
    #[arg(long)]
    pub(crate) metrics_addr: Option<SocketAddr>,
}

/// Serves the console until Ctrl-C or SIGTERM; exit status 2 for bad input.
pub(crate) async fn serve_main(args: ServeArgs) -> anyhow::Result<i32> {
    // Refused before anything is opened.
    if let Err(e) = tranche::web::check_listen(args.listen, args.token.as_deref()) {
        eprintln!("tranche serve: {e}");
        return Ok(2);
    }
    let mut flags = tranche::config::Flags::default();
    if let Some(db) = &args.db {
        flags.set_database_url(db.clone());
    }
    let files = args
        .config
        .iter()
        .map(|path| {
            let file = tranche::config::JobFile::load(path, &flags)?;
            file.validate()?;
            anyhow::Ok(file)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let db: tranche::redact::SecretUrl = match (&args.db, files.first()) {
        (Some(db), _) => db.clone().into(),
        (None, Some(file)) => file.database_url.clone(),
        (None, None) => anyhow::bail!("--db or --config is required"),
    };
    for (file, path) in files.iter().zip(&args.config) {
        if file.database_url.expose() != db.expose() {
            eprintln!(
                "tranche serve: {} names another database ({}) than the console's ({db})",
                path.display(),
                file.database_url
            );
            return Ok(2);
        }
    }
    super::job::serve_metrics(args.metrics_addr)?;
    let mut config = RuntimeConfig::new(db.clone());
    config.db_threads = 2;
    config.instance_id = Some(format!("console-{}", std::process::id()));
    let runtime = RuntimeHandle::start(config)
        .await
        .with_context(|| format!("opening {db}"))?;
    let mut console = Console::new(runtime.clone());
    if let Some(token) = &args.token {
        console = console.with_token(token.clone());
    }
    for file in &files {
        console = console.with_job(file.job(runtime.store(), runtime.instance_id())?);
    }
    let server = match console.serve(args.listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tranche serve: {e}");
            runtime.shutdown().await;
            return Ok(2);
        }
    };
    println!("tranche serve: console on http://{}/", server.local_addr());
    StopSignal::new()?.recv().await;
    server.stop().await;
    runtime.shutdown().await;
    Ok(0)
}

//! The `tranche` binary: the demo on an embedded SQLite file (or
//! PostgreSQL), configured jobs (`run`, `schedule`, `history`) and
//! `migrate`. Thin by design: parse arguments, set up logging, hand each
//! command to its module under `cli/`.

mod cli;

use clap::Parser;

/// Exit status 2 for bad input (a setting or job file refused before
/// anything was claimed or written), 130 for an interruption whose
/// shutdown grace period ran out, 1 for any other error.
fn main() -> anyhow::Result<()> {
    // OpenSSL (libpq's and lapin's) registers a cleanup to run at exit
    // unless its first initialisation asks for none. That cleanup frees
    // state that threads still ending at exit use: `tranche consume` was
    // seen to die of SIGSEGV in OpenSSL's `init_thread_deregister` after
    // its work was done. Initialised here first, without it.
    openssl_sys::init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(cli_main());
    if let Err(e) = &result {
        let bad_input = e.chain().any(|c| {
            c.downcast_ref::<tranche::ConfigError>().is_some()
                || matches!(
                    c.downcast_ref::<tranche::Error>(),
                    Some(tranche::Error::Config(_))
                )
        });
        if bad_input {
            eprintln!("Error: {e:?}");
            std::process::exit(2);
        }
        // Interrupted, with what was in flight abandoned at the deadline.
        if matches!(
            e.downcast_ref::<tranche::Error>(),
            Some(tranche::Error::Shutdown)
        ) {
            eprintln!("Error: {e:?}");
            std::process::exit(130);
        }
    }
    result
}

async fn cli_main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Json => log
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        // Colours only for a terminal: a log file or a collector gets text.
        cli::LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    cli::dispatch(cli.command).await
}

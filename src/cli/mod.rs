//! The `tranche` binary's commands, one module each, and what they share.

#[cfg(feature = "bench")]
pub(crate) mod bench;
pub(crate) mod consume;
pub(crate) mod demo;
pub(crate) mod job;
pub(crate) mod progress;
pub(crate) mod settings;

/// Which run this process joins.
#[derive(clap::Args)]
pub(crate) struct InstanceArgs {
    /// Join the run of this key, whatever its state, instead of the job's
    /// active run: a process arriving after that run ended does nothing.
    #[arg(long)]
    pub(crate) run_key: Option<String>,
}

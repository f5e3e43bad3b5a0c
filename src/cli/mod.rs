//! The `tranche` binary's commands, one module each, and what they share.

#[cfg(feature = "bench")]
pub(crate) mod bench;
pub(crate) mod consume;
pub(crate) mod demo;
pub(crate) mod job;
pub(crate) mod progress;

/// How this process takes part in a run shared with other instances.
#[derive(clap::Args)]
pub(crate) struct InstanceArgs {
    /// This instance's identity in leases (default: host, pid and a random
    /// suffix); `{instance}` in a jsonl path is replaced by it.
    #[arg(long, env = "TRANCHE_INSTANCE_ID")]
    pub(crate) instance_id: Option<String>,
    /// How often to look again for claimable work or expired leases, in ms.
    #[arg(long)]
    pub(crate) poll_ms: Option<u64>,
    /// Join the run of this key, whatever its state, instead of the job's
    /// active run: a process arriving after that run ended does nothing.
    #[arg(long)]
    pub(crate) run_key: Option<String>,
    /// Do not split busy workers' ranges when idle.
    #[arg(long)]
    pub(crate) no_work_stealing: bool,
}

/// The demo flag that sets a configuration field.
pub(crate) fn flag_of(field: &str) -> String {
    match field {
        "lease" => "--lease-ms".into(),
        "heartbeat" => "--heartbeat-ms".into(),
        "store.threads" => "--db-threads".into(),
        "database_url" => "--db".into(),
        "poll_interval" => "--poll-ms".into(),
        other => format!("--{}", other.replace('_', "-")),
    }
}

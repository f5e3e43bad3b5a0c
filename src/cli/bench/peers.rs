//! The peers: tools a user would pick instead of tranche, run over the
//! same table to the same broker. Today one, graphile-worker (a PostgreSQL
//! job queue for Node.js), through the harness under `benches/peers`
//! (`graphile.mjs`, its versions pinned by that directory's lock file and
//! installed by `npm ci --prefix benches/peers`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::cpu::CpuTime;
use super::BenchError;

/// How graphile-worker is given the table: the two ways a team writes it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// One job per row, carrying its key: the job reads its row and
    /// publishes it.
    Row,
    /// One job per range of this many keys: the job reads its rows and
    /// publishes them all.
    Range(u64),
}

/// What one peer run reported.
#[derive(Clone, Debug)]
pub(crate) struct PeerRun {
    /// Jobs enqueued.
    pub(crate) jobs: u64,
    /// Rows whose job completed.
    pub(crate) rows_done: u64,
    /// Seconds enqueueing every job.
    pub(crate) enqueue_s: f64,
    /// Seconds from the worker's start to the last job's completion (or
    /// to the end of the budget).
    pub(crate) work_s: f64,
    /// Whether the budget ran out first.
    pub(crate) budget_hit: bool,
    /// The peer process's CPU time, all of it.
    pub(crate) cpu: CpuTime,
    /// Its peak resident set, bytes.
    pub(crate) peak_rss_bytes: u64,
}

/// The harness script in `dir`, or why the peers cannot run here: no
/// Node.js, or its packages not installed.
pub(crate) fn harness(dir: &Path) -> Result<PathBuf, String> {
    let version = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("Node.js is not installed (`node --version`: {e})"))?;
    let text = String::from_utf8_lossy(&version.stdout);
    let major: u32 = text
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 18 {
        return Err(format!(
            "Node.js {} is too old for graphile-worker (18 or later)",
            text.trim()
        ));
    }
    let script = dir.join("graphile.mjs");
    if !script.is_file() {
        return Err(format!("no harness at {}", script.display()));
    }
    if !dir
        .join("node_modules/graphile-worker/package.json")
        .is_file()
    {
        return Err(format!(
            "graphile-worker is not installed: run `npm ci --prefix {}`",
            dir.display()
        ));
    }
    Ok(script)
}

/// Where a peer run publishes and what it reads.
pub(crate) struct Target<'a> {
    /// The bench database.
    pub(crate) pg_url: &'a str,
    /// RabbitMQ.
    pub(crate) amqp_url: &'a str,
    /// The exchange and routing key tranche's sink uses (the queue is
    /// bound to it).
    pub(crate) exchange: &'a str,
    /// The table.
    pub(crate) table: &'a str,
    /// Its rows, keys 1..=rows.
    pub(crate) rows: u64,
    /// The version stamped into message ids.
    pub(crate) version: i64,
}

/// Runs the harness once: `mode`, `concurrency` jobs at once with a local
/// queue of `local_queue`, stopped after `budget_s` of work.
pub(crate) fn run(
    script: &Path,
    to: &Target<'_>,
    mode: Mode,
    concurrency: usize,
    local_queue: usize,
    budget_s: u64,
) -> Result<PeerRun, BenchError> {
    let (mode_name, range) = match mode {
        Mode::Row => ("row", 1),
        Mode::Range(n) => ("range", n),
    };
    let settings = serde_json::json!({
        "pg": to.pg_url,
        "amqp": to.amqp_url,
        "exchange": to.exchange,
        "routing_key": to.exchange,
        "table": to.table,
        "rows": to.rows,
        "version": to.version,
        "mode": mode_name,
        "range_rows": range,
        "concurrency": concurrency,
        "local_queue": local_queue,
        "budget_s": budget_s,
    });
    let output = tokio::task::block_in_place(|| {
        std::process::Command::new("node")
            .arg(script)
            .arg(settings.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
    })
    .map_err(|e| BenchError::step("starting node", e))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(BenchError::Config(format!(
            "graphile-worker harness exited with {}: {}",
            output.status,
            tranche::redact::redact_text(stderr.trim())
        )));
    }
    if !stderr.trim().is_empty() {
        tracing::warn!(stderr = %tranche::redact::redact_text(stderr.trim()), "graphile-worker harness");
    }
    parse(&String::from_utf8_lossy(&output.stdout))
}

/// The harness's last line of JSON.
fn parse(stdout: &str) -> Result<PeerRun, BenchError> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| {
            BenchError::Config("the graphile-worker harness printed no result".into())
        })?;
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| BenchError::step("reading the graphile-worker result", e))?;
    let num = |k: &str| {
        v[k].as_f64().ok_or_else(|| {
            BenchError::Config(format!("the graphile-worker result has no number {k}"))
        })
    };
    Ok(PeerRun {
        jobs: num("jobs")? as u64,
        rows_done: num("rows_done")? as u64,
        enqueue_s: num("enqueue_s")?,
        work_s: num("work_s")?,
        budget_hit: v["budget_hit"].as_bool().unwrap_or(false),
        cpu: CpuTime {
            user_s: num("user_cpu_s")?,
            system_s: num("system_cpu_s")?,
        },
        peak_rss_bytes: num("peak_rss_bytes")? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_line_is_read_and_a_missing_field_named() {
        let out = "noise\n{\"jobs\":1000,\"rows_done\":1000000,\"enqueue_s\":0.5,\"work_s\":55.0,\
                   \"budget_hit\":false,\"user_cpu_s\":10.0,\"system_cpu_s\":2.0,\"peak_rss_bytes\":130000000}\n";
        let r = parse(out).unwrap();
        assert_eq!((r.jobs, r.rows_done), (1000, 1_000_000));
        assert_eq!(r.cpu.total_s(), 12.0);
        assert!(!r.budget_hit);
        let err = parse("{\"jobs\":1}").unwrap_err().to_string();
        assert!(err.contains("rows_done"), "{err}");
        assert!(parse("nothing").is_err());
    }
}

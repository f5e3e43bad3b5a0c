//! `tranche plan`: a dry run of a job file's planning, writing nothing.

use std::path::PathBuf;

use clap::Args;
use tranche::store::Cursor;
use tranche::store::DryPlan;
use tranche::RuntimeHandle;

use super::settings::RuntimeFlags;

#[derive(Args)]
pub(crate) struct PlanArgs {
    /// The job file (see the README for every field).
    #[arg(long)]
    config: PathBuf,
    /// Database URL, overriding the file and TRANCHE_DATABASE_URL.
    #[arg(long)]
    db: Option<String>,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

fn cursor(c: Option<Cursor>, open: &str) -> String {
    c.map_or_else(|| open.to_owned(), |c| format!("({}, {})", c.order, c.key))
}

/// Checks the job as a run would, then prints the plan a run would get;
/// opens no run, applies no migration, writes nothing.
pub(crate) async fn plan_main(args: PlanArgs) -> anyhow::Result<i32> {
    let mut flags = args.runtime.0.clone();
    if let Some(db) = &args.db {
        flags.set_database_url(db.clone());
    }
    let file = tranche::config::JobFile::load(&args.config, &flags)?;
    file.validate()?;
    let mut config = file.runtime_config()?;
    // A dry run leaves the database as it found it.
    config.migrate = false;
    let workers = config.concurrency;
    let shown_db = config.database_url.to_string();
    let runtime = RuntimeHandle::start(config).await?;
    let plan = async {
        let job = file.job(runtime.store(), runtime.instance_id())?;
        anyhow::Ok(runtime.plan(job).await?)
    }
    .await;
    runtime.shutdown().await;
    let plan = plan?;
    let estimate = plan.estimated_read(workers);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&as_json(&plan, workers, estimate))?
        );
        return Ok(0);
    }
    println!(
        "tranche plan: job {} on {shown_db} (a dry run: nothing written)",
        file.job.name
    );
    println!(
        "  {} rows in {} {} partitions; skew {:.2} (largest over mean)",
        plan.rows_identified,
        plan.partitions.len(),
        plan.strategy,
        plan.skew
    );
    if plan.rows_unreadable > 0 {
        println!(
            "  {} rows with a NULL or unreadable key or order value would be dead-lettered \
             while planning (refused above skip_limit)",
            plan.rows_unreadable
        );
    }
    for mark in plan.high_water_marks.as_array().into_iter().flatten() {
        println!(
            "  high-water mark of {}: (order {}, key {}), {} rows",
            mark["scope"].as_str().unwrap_or("?"),
            mark["hwm"]["order"],
            mark["hwm"]["key"],
            mark["rows"]
        );
    }
    println!("  part  scope         rows  from (inclusive)              to (exclusive)");
    for p in &plan.partitions {
        let (from, to) = match (p.range, p.modulo) {
            (Some(r), _) => (cursor(r.lower, "start"), cursor(r.upper, "high-water mark")),
            (None, Some((m, k))) => (format!("key % {m} = {k}"), String::new()),
            _ => (String::new(), String::new()),
        };
        println!(
            "  {:>4}  {:<10} {:>8}  {from:<28}  {to}",
            p.number, p.scope.label, p.rows_planned
        );
    }
    match (&plan.sample, estimate) {
        (Some(s), Some(e)) => println!(
            "  sampled read: {} rows in {:.1} ms; reading every row, {} partitions at once: \
             about {} (the sink's time and checkpoints not included)",
            s.rows,
            s.elapsed.as_secs_f64() * 1000.0,
            workers.min(plan.partitions.len().max(1)),
            match e.as_secs_f64() {
                s if s < 10.0 => format!("{s:.1} s"),
                s => super::progress::fmt_secs(s),
            }
        ),
        _ => println!("  nothing to read"),
    }
    Ok(0)
}

fn as_json(
    plan: &DryPlan,
    workers: usize,
    estimate: Option<std::time::Duration>,
) -> serde_json::Value {
    serde_json::json!({
        "strategy": plan.strategy,
        "rows_identified": plan.rows_identified,
        "rows_unreadable": plan.rows_unreadable,
        "skew": plan.skew,
        "high_water_marks": plan.high_water_marks,
        "partitions": plan.partitions.iter().map(|p| serde_json::json!({
            "number": p.number,
            "scope": p.scope.label,
            "rows_planned": p.rows_planned,
            "range": p.range,
            "modulo": p.modulo,
        })).collect::<Vec<_>>(),
        "sample": plan.sample.as_ref().map(|s| serde_json::json!({
            "rows": s.rows,
            "elapsed_ms": s.elapsed.as_secs_f64() * 1000.0,
        })),
        "workers": workers,
        "estimated_read_s": estimate.map(|e| e.as_secs_f64()),
    })
}

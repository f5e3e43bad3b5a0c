//! Live progress for a run, the stop signal every long command shares,
//! and the report printed at the end.

use std::time::{Duration, Instant};

use crate::cli::demo::data::Verification;
use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tranche::runtime::PartitionProgress;
use tranche::{RunReport, RuntimeHandle};

/// A request to stop: Ctrl-C (SIGINT) or SIGTERM, which every
/// long-running command treats alike: pages in flight finish and are
/// checkpointed, partitions are handed back at once (their leases
/// released, not left to expire), the summary is written and the command
/// exits 130.
pub(crate) struct StopSignal {
    pub(crate) term: tokio::signal::unix::Signal,
}

impl StopSignal {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        Ok(Self { term })
    }

    /// Resolves at the next Ctrl-C or SIGTERM.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// How progress is said where there is no terminal to draw bars on.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct ProgressArgs {
    /// Without a terminal (a container, systemd, CI): print one progress
    /// line per interval, with its unit; "0s" for none.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    pub(crate) progress_interval: Duration,
    /// Those lines as text or as JSON objects, one per line.
    #[arg(long, value_enum, default_value_t = ProgressFormat::Text)]
    pub(crate) progress_format: ProgressFormat,
}

/// The form of a progress line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressFormat {
    Text,
    Json,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    tranche::runtime::Schedule::parse_interval(text).map_err(|e| e.reason)
}

impl ProgressArgs {
    /// The lines to print: none on a terminal (bars are drawn there), with
    /// `--quiet`, or with an interval of zero.
    pub(crate) fn lines(&self, quiet: bool) -> Option<(Duration, ProgressFormat)> {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        (!terminal && !quiet && !self.progress_interval.is_zero())
            .then_some((self.progress_interval, self.progress_format))
    }
}

impl ProgressArgs {
    /// The lines of a command that draws no bars (`schedule`, `consume`):
    /// on a terminal too, none with `--quiet` or an interval of zero.
    pub(crate) fn lines_without_bars(&self, quiet: bool) -> Option<(Duration, ProgressFormat)> {
        (!quiet && !self.progress_interval.is_zero())
            .then_some((self.progress_interval, self.progress_format))
    }
}

/// One progress line: rows done of identified, rate, ETA, partitions.
pub(crate) fn progress_line(p: &tranche::runtime::RunProgress, format: ProgressFormat) -> String {
    let count = |state| p.partitions.iter().filter(|pp| pp.state == state).count();
    let active = p.partitions.iter().filter(|pp| pp.active).count();
    let (done, failed) = (
        count(tranche::store::PartitionState::Done),
        count(tranche::store::PartitionState::Failed),
    );
    let percent = if p.rows_identified > 0 {
        p.rows_done as f64 * 100.0 / p.rows_identified as f64
    } else {
        0.0
    };
    match format {
        ProgressFormat::Json => serde_json::json!({
            "event": "progress",
            "job": p.job,
            "run_id": p.run_id,
            "state": p.state.as_str(),
            "rows_done": p.rows_done,
            "rows_identified": p.rows_identified,
            "percent": (percent * 10.0).round() / 10.0,
            "rows_per_s": p.rows_per_s.map(f64::round),
            "eta_s": p.eta.map(|e| e.as_secs_f64().round()),
            "partitions_active": active,
            "partitions_done": done,
            "partitions_failed": failed,
            "partitions": p.partitions.len(),
            "health": p.health,
        })
        .to_string(),
        ProgressFormat::Text => format!(
            "  progress: run {} {}: {} of {} rows ({percent:.1}%){}{}; partitions {active} active, \
             {done} done, {failed} failed of {}{}",
            p.run_id,
            p.state.as_str(),
            p.rows_done,
            p.rows_identified,
            p.rows_per_s
                .map(|r| format!(", {r:.0} rows/s"))
                .unwrap_or_default(),
            p.eta
                .map(|e| format!(", ETA {}", fmt_secs(e.as_secs_f64())))
                .unwrap_or_default(),
            p.partitions.len(),
            p.health
                .as_ref()
                .map(|why| format!("; unhealthy: {why}"))
                .unwrap_or_default(),
        ),
    }
}

/// Draws live progress until the run reports; Ctrl-C or SIGTERM shuts
/// down gracefully. Without a terminal, `lines` says how often to print a
/// progress line instead, and in which form.
pub(crate) async fn follow(
    runtime: &RuntimeHandle,
    run: tranche::RunHandle,
    multi: &MultiProgress,
    lines: Option<(Duration, ProgressFormat)>,
) -> anyhow::Result<RunReport> {
    let progress = run.subscribe();
    let total = multi.add(ProgressBar::new(0));
    total.set_style(
        ProgressStyle::with_template(
            "  total     [{bar:40}] {human_pos}/{human_len} rows  eta {eta}  {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    total.set_message("identifying…");
    let part_style =
        ProgressStyle::with_template("  {prefix:>9} [{bar:40}] {human_pos}/{human_len} {msg}")
            .expect("valid template")
            .progress_chars("=> ");
    let mut bars: std::collections::HashMap<i64, ProgressBar> = Default::default();
    // Operators' changes are said as soon as the run sees them.
    let mut changes = run.subscribe();
    let mut wait = Box::pin(run.wait());
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut line_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + lines.map_or(Duration::from_secs(3600), |l| l.0),
        lines.map_or(Duration::from_secs(3600), |l| l.0),
    );
    let mut interrupted = false;
    let mut counted_from: Option<(i64, Instant)> = None;
    let mut stop = StopSignal::new()?;
    let mut state: Option<tranche::store::RunState> = None;
    let mut health: Option<String> = None;
    loop {
        tokio::select! {
            report = &mut wait => {
                for b in bars.values() { b.finish_and_clear(); }
                total.finish_and_clear();
                return match report {
                    // The shutdown's grace period ended before the pages in
                    // flight were confirmed.
                    Err(tranche::Error::Shutdown) if interrupted => Err(anyhow::Error::new(
                        tranche::Error::Shutdown,
                    )
                    .context(
                        "interrupted, and the shutdown grace period ended with pages still in \
                         flight: they were abandoned and their partitions' leases will expire \
                         (another instance then repeats at most those pages)",
                    )),
                    report => Ok(report?),
                };
            }
            _ = stop.recv(), if !interrupted => {
                interrupted = true;
                total.set_message("interrupted: finishing pages and checkpointing…");
                let rt = runtime.clone();
                tokio::spawn(async move { rt.shutdown().await });
            }
            Ok(()) = changes.changed() => {
                let p = changes.borrow_and_update().clone();
                if !p.planned {
                    continue;
                }
                // Said on stdout, with or without a terminal.
                if state != Some(p.state) {
                    let why = match p.state {
                        tranche::store::RunState::Paused =>
                            ": partitions handed back; waiting for `tranche resume`",
                        tranche::store::RunState::Cancelled => ": no page starts; ending",
                        _ => "",
                    };
                    match state {
                        Some(was) => multi.suspend(|| println!(
                            "  run {} {} -> {}{why}", p.run_id, was.as_str(), p.state.as_str()
                        )),
                        // Joining a run an operator has already paused.
                        None if p.state != tranche::store::RunState::Running => multi.suspend(|| {
                            println!("  run {} is {}{why}", p.run_id, p.state.as_str())
                        }),
                        None => {}
                    }
                    state = Some(p.state);
                }
                if p.health != health {
                    let said = match &p.health {
                        Some(why) => format!("  database unhealthy, no page starts: {why}"),
                        None => "  database healthy again".to_owned(),
                    };
                    multi.suspend(|| println!("{said}"));
                    health = p.health.clone();
                }
            }
            _ = line_tick.tick(), if lines.is_some() => {
                let p = progress.borrow().clone();
                if p.planned {
                    if let Some((_, format)) = lines {
                        eprintln!("{}", progress_line(&p, format));
                    }
                }
            }
            _ = tick.tick() => {
                let p = progress.borrow().clone();
                if !p.planned {
                    continue;
                }
                if counted_from.is_none() {
                    counted_from = Some((p.rows_done_at_start, Instant::now()));
                    total.set_length(p.rows_identified.max(0) as u64);
                    total.set_position(p.rows_done_at_start.max(0) as u64);
                    total.reset_eta();
                    if p.resumed {
                        total.println(format!(
                            "  resuming from checkpoints: {} of {} rows already done",
                            p.rows_done_at_start, p.rows_identified
                        ));
                    }
                }
                total.set_position(p.rows_done.max(0) as u64);
                if let (Some((start, since)), false) = (counted_from, interrupted) {
                    let rate = (p.rows_done - start) as f64 / since.elapsed().as_secs_f64().max(1e-3);
                    let active = p.partitions.iter().filter(|pp| pp.active).count();
                    let held_elsewhere = p
                        .partitions
                        .iter()
                        .filter(|pp| !pp.active && pp.state == tranche::store::PartitionState::Claimed)
                        .count();
                    total.set_message(if p.state == tranche::store::RunState::Paused {
                        "paused by an operator".to_owned()
                    } else if let Some(why) = &p.health {
                        format!("held back: {why}")
                    } else if active == 0 && held_elsewhere > 0 {
                        format!(
                            "waiting for {held_elsewhere} partitions held by a stopped process \
                             (their leases expire within --lease)"
                        )
                    } else {
                        format!("{rate:.0} rows/s  {active} of {} partitions active", p.partitions.len())
                    });
                }
                draw_partitions(multi, &part_style, &mut bars, &p.partitions);
            }
        }
    }
}

pub(crate) fn draw_partitions(
    multi: &MultiProgress,
    style: &ProgressStyle,
    bars: &mut std::collections::HashMap<i64, ProgressBar>,
    partitions: &[PartitionProgress],
) {
    for p in partitions {
        match (p.active, bars.get(&p.id)) {
            (true, Some(bar)) => bar.set_position(p.rows_done.max(0) as u64),
            (true, None) => {
                let bar = multi.add(ProgressBar::new(p.rows_planned.max(0) as u64));
                bar.set_style(style.clone());
                bar.set_prefix(format!("part {}", p.number));
                bar.set_message(p.scope.clone());
                bar.set_position(p.rows_done.max(0) as u64);
                bars.insert(p.id, bar);
            }
            (false, Some(_)) => {
                if let Some(bar) = bars.remove(&p.id) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
            }
            (false, None) => {}
        }
    }
}

pub(crate) fn print_report(report: &RunReport, verification: Option<&Verification>) {
    let (elapsed, rows_per_s) = (report.elapsed, report.rows_per_s());
    println!(
        "  identified {} rows in {} partitions (run {})",
        report.rows_identified,
        report.partitions.len(),
        report.run_id
    );
    if report.resumed {
        println!(
            "  resumed from checkpoints: {} rows were already done",
            report.rows_done_at_start
        );
    }
    println!(
        "  this instance processed {} rows in {:.2} s ({:.0} rows/s); published {}, replayed {}",
        report.rows_checkpointed,
        elapsed.as_secs_f64(),
        rows_per_s,
        report.rows_published,
        report.rows_replayed
    );
    if report.rows_possibly_replayed > 0 {
        println!(
            "  at most {} rows may have been delivered twice: this instance resumed partitions \
             from checkpoints an earlier holder may have published past",
            report.rows_possibly_replayed
        );
    }
    if let Some(rate) = report.run_rows_per_s {
        println!("  the whole run, every instance: {rate:.0} rows/s");
    }
    if let Some(error) = &report.error {
        println!("  run error: {error}");
    }
    if report.takeovers + report.steals + report.leases_lost > 0 {
        println!(
            "  took over {} expired partitions, split {} busy ranges, lost {} leases",
            report.takeovers, report.steals, report.leases_lost
        );
    }
    for p in report.failed_partitions() {
        println!(
            "  partition {} FAILED after {} attempts: {}",
            p.number,
            p.attempts,
            p.last_error.as_deref().unwrap_or("unknown error")
        );
    }
    if report.interrupted {
        println!(
            "  interrupted: {} of {} rows done; run the same command again to continue",
            report.rows_done, report.rows_identified
        );
        return;
    }
    if let Some(v) = verification {
        println!(
            "  verification: {} — {} eligible, {} delivered, {} lost, {} unexpected, {} duplicates",
            if v.verified { "OK" } else { "FAILED" },
            v.eligible,
            v.delivered,
            v.lost,
            v.unexpected,
            v.duplicates
        );
    }
}

/// Seconds as `42 s`, `3m05s` or `2h10m`.
pub(crate) fn fmt_secs(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

//! The scheduler: recurring runs (a fixed interval or a cron expression) and
//! one-time runs at a given instant.
//!
//! Each tick names its run with a key derived from the tick's instant
//! (`tick-2026-11-22T03:00:00Z`), so every instance whose scheduler fires
//! the same tick joins the same run instead of starting another; ticks of an
//! interval are aligned to the UNIX epoch for the same reason. A tick that
//! finds an earlier run of the job still active is skipped: runs of one job
//! never overlap. Every run, with its key, stays in the run history
//! ([`Store::runs`](crate::store::Store::runs)).

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::watch;

use super::{RunReport, RuntimeHandle};
use crate::error::Error;
use crate::error_text::Chain;
use crate::job::Job;
use crate::model::ConfigError;

/// When a job runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Schedule {
    /// Every `interval`, at multiples of it since the UNIX epoch (so
    /// instances agree on the ticks): hourly runs tick on the hour.
    Every(Duration),
    /// At the times of a cron expression, in UTC.
    Cron(Box<cron::Schedule>),
    /// Once, at this instant (at once if it has passed).
    At(SystemTime),
}

/// The longest interval a schedule takes: beyond a century an interval is a
/// mistake, and far beyond it the calendar arithmetic of the next tick
/// overflows.
const MAX_INTERVAL: Duration = Duration::from_secs(100 * 366 * 86_400);

impl Schedule {
    /// A fixed interval of at least one second.
    pub fn every(interval: Duration) -> Result<Self, ConfigError> {
        if interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "schedule.every",
                "must be at least one second",
            ));
        }
        if interval > MAX_INTERVAL {
            return Err(ConfigError::new(
                "schedule.every",
                "must be at most 100 years",
            ));
        }
        Ok(Schedule::Every(interval))
    }

    /// A cron expression: five fields (`min hour day month weekday`), or
    /// six or seven with seconds first and an optional year, in UTC.
    pub fn cron(expression: &str) -> Result<Self, ConfigError> {
        let fields = expression.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {expression}"),
            6 | 7 => expression.to_owned(),
            _ => {
                return Err(ConfigError::new(
                    "schedule.cron",
                    format!("{expression:?} has {fields} fields; expected 5, 6 or 7"),
                ))
            }
        };
        let parsed = cron::Schedule::from_str(&full)
            .map_err(|e| ConfigError::new("schedule.cron", format!("{expression:?}: {e}")))?;
        Ok(Schedule::Cron(Box::new(parsed)))
    }

    /// Once, at `at`.
    pub fn at(at: SystemTime) -> Self {
        Schedule::At(at)
    }

    /// Parses an interval such as `90s`, `15m`, `2h`, `1d` or `500ms`.
    pub fn parse_interval(text: &str) -> Result<Duration, ConfigError> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let bad = || {
            ConfigError::new(
                "schedule.every",
                format!("{text:?} is not an interval like 90s, 15m, 2h or 1d"),
            )
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let ms = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        match n.checked_mul(ms).map(Duration::from_millis) {
            Some(interval) if interval <= MAX_INTERVAL => Ok(interval),
            _ => Err(ConfigError::new(
                "schedule.every",
                format!("{text:?} is longer than 100 years"),
            )),
        }
    }

    /// The first tick strictly after `now`, or `None` when there is none
    /// (a one-time schedule that already fired, an exhausted cron year).
    pub fn next_after(&self, now: SystemTime, fired: Option<SystemTime>) -> Option<SystemTime> {
        match self {
            Schedule::Every(interval) => {
                let step = interval.as_millis().max(1);
                let since = now.duration_since(UNIX_EPOCH).ok()?.as_millis();
                let next = (since / step + 1) * step;
                Some(UNIX_EPOCH + Duration::from_millis(u64::try_from(next).ok()?))
            }
            Schedule::Cron(cron) => {
                let now: DateTime<Utc> = now.into();
                cron.after(&now).next().map(SystemTime::from)
            }
            Schedule::At(at) => fired.is_none().then_some(*at),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", crate::model::duration::format(*d)),
            Schedule::Cron(c) => write!(f, "cron {}", c.source()),
            Schedule::At(t) => {
                let at: DateTime<Utc> = (*t).into();
                write!(f, "at {}", at.to_rfc3339_opts(SecondsFormat::Secs, true))
            }
        }
    }
}

/// A schedule started on a runtime, as [`RuntimeHandle::schedules`] lists it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ScheduledJob {
    /// The job it runs.
    pub job: String,
    /// When, in words (`every 1h`, `cron 0 0 3 * * *`, `at 2026-12-01T03:00:00Z`).
    pub schedule: String,
    /// What it has done so far.
    pub status: ScheduleStatus,
}

/// The run key of a tick: the same on every instance that fires it.
pub fn tick_key(tick: SystemTime) -> String {
    let at: DateTime<Utc> = tick.into();
    format!("tick-{}", at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// What a schedule has done so far.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ScheduleStatus {
    /// The next tick, if any.
    pub next_tick: Option<SystemTime>,
    /// Ticks fired.
    pub ticks: u64,
    /// Ticks that started or joined a run.
    pub runs: u64,
    /// Ticks skipped because an earlier run of the job was still active.
    pub skipped: u64,
    /// The report of the latest run that ended on this instance.
    pub last_report: Option<RunReport>,
    /// The latest error (a run that failed on this instance, a store error).
    pub last_error: Option<String>,
    /// True once the schedule has no more ticks (or was cancelled) and no
    /// run it started is still going on this instance.
    pub finished: bool,
}

/// Follows and controls a schedule started with
/// [`RuntimeHandle::schedule`].
pub struct ScheduleHandle {
    status: watch::Receiver<ScheduleStatus>,
    cancel: watch::Sender<bool>,
}

impl ScheduleHandle {
    /// What the schedule has done so far.
    pub fn status(&self) -> ScheduleStatus {
        self.status.borrow().clone()
    }

    /// A receiver that wakes on every change of the status.
    pub fn subscribe(&self) -> watch::Receiver<ScheduleStatus> {
        self.status.clone()
    }

    /// Stops firing ticks. A run already started goes on to its end (or to
    /// the runtime's shutdown).
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }
}

/// One actor per schedule, on the runtime's arbiter.
pub(crate) struct Scheduler {
    runtime: RuntimeHandle,
    job: Job,
    schedule: Schedule,
    status: watch::Sender<ScheduleStatus>,
    cancel: watch::Receiver<bool>,
    fired: Option<SystemTime>,
    /// No tick is left to fire.
    done_ticking: bool,
    /// Runs started by ticks and not yet ended here.
    running: usize,
}

impl Scheduler {
    pub(crate) fn start(
        runtime: RuntimeHandle,
        job: Job,
        schedule: Schedule,
    ) -> Result<ScheduleHandle, Error> {
        let (status_tx, status_rx) = watch::channel(ScheduleStatus::default());
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let arbiter = runtime.inner.arbiter.clone();
        let actor = Scheduler {
            runtime,
            job,
            schedule,
            status: status_tx,
            cancel: cancel_rx,
            fired: None,
            done_ticking: false,
            running: 0,
        };
        if !arbiter.spawn(async move {
            actor.start();
        }) {
            return Err(Error::Shutdown);
        }
        Ok(ScheduleHandle {
            status: status_rx,
            cancel: cancel_tx,
        })
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow() || self.runtime.is_shutting_down()
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        let now = SystemTime::now();
        let next = if self.cancelled() {
            None
        } else {
            self.schedule.next_after(now, self.fired)
        };
        self.status.send_modify(|s| s.next_tick = next);
        let Some(tick) = next else {
            self.done_ticking = true;
            self.stop_when_idle(ctx);
            return;
        };
        let delay = tick.duration_since(now).unwrap_or_default();
        tracing::debug!(job = %self.job.name, key = %tick_key(tick), ?delay, "next tick");
        ctx.run_later(delay, move |act, ctx| act.fire(tick, ctx));
    }

    /// Stops once no tick is left and every run it started has reported.
    fn stop_when_idle(&mut self, ctx: &mut Context<Self>) {
        if self.done_ticking && self.running == 0 {
            tracing::info!(job = %self.job.name, "schedule finished");
            self.status.send_modify(|s| s.finished = true);
            ctx.stop();
        }
    }

    fn fire(&mut self, tick: SystemTime, ctx: &mut Context<Self>) {
        if self.cancelled() {
            self.arm(ctx);
            return;
        }
        self.fired = Some(tick);
        self.status.send_modify(|s| s.ticks += 1);
        let key = tick_key(tick);
        let store = self.runtime.store().clone();
        let name = self.job.name.clone();
        let check_key = key.clone();
        // Decide, then arm the next tick at once: a long run must not
        // delay the ticks that will find it active and skip.
        ctx.spawn(
            async move {
                match store.active_run(&name).await {
                    Ok(Some(run)) if run.run_key.as_deref() != Some(check_key.as_str()) => {
                        Ok(Some(run.id))
                    }
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            .into_actor(self)
            .map(move |active, act, ctx| {
                match active {
                    Ok(Some(run_id)) => {
                        tracing::warn!(job = %act.job.name, tick = %key, active_run = run_id, "tick skipped: the previous run is still active");
                        act.status.send_modify(|s| s.skipped += 1);
                    }
                    Ok(None) => act.start_run(key, ctx),
                    Err(e) => {
                        tracing::warn!(job = %act.job.name, tick = %key, error = %Chain(&e), "tick skipped: store unavailable");
                        act.status.send_modify(|s| {
                            s.skipped += 1;
                            s.last_error = Some(crate::error_text::chain(&e));
                        });
                    }
                }
                act.arm(ctx);
            }),
        );
    }

    fn start_run(&mut self, key: String, ctx: &mut Context<Self>) {
        let job = match self.job.clone().with_run_key(key.clone()) {
            Ok(job) => job,
            Err(e) => {
                self.status
                    .send_modify(|s| s.last_error = Some(crate::error_text::chain(&e)));
                return;
            }
        };
        let run = match self.runtime.start_run(job) {
            Ok(run) => run,
            Err(e) => {
                self.status
                    .send_modify(|s| s.last_error = Some(crate::error_text::chain(&e)));
                return;
            }
        };
        tracing::info!(job = %self.job.name, key = %key, "tick: run started or joined");
        self.status.send_modify(|s| s.runs += 1);
        self.running += 1;
        ctx.spawn(run.wait().into_actor(self).map(|report, act, ctx| {
            act.running -= 1;
            act.status.send_modify(|s| match report {
                Ok(report) => {
                    if report.failed_partitions().next().is_some() {
                        s.last_error = Some(format!("run {} ended failed", report.run_id));
                    }
                    s.last_report = Some(report);
                }
                Err(e) => s.last_error = Some(crate::error_text::chain(&e)),
            });
            act.stop_when_idle(ctx);
        }));
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Stop promptly on cancel, not only at the next tick.
        let mut cancel = self.cancel.clone();
        ctx.spawn(
            async move {
                while !*cancel.borrow_and_update() {
                    if cancel.changed().await.is_err() {
                        return;
                    }
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.status.send_modify(|s| s.next_tick = None);
                act.done_ticking = true;
                act.stop_when_idle(ctx);
            }),
        );
        self.arm(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&Utc)
            .into()
    }

    #[test]
    fn intervals_tick_on_multiples_of_themselves() {
        let hourly = Schedule::every(Duration::from_secs(3600)).unwrap();
        assert_eq!(
            hourly.next_after(at("2026-11-22T01:59:59Z"), None),
            Some(at("2026-11-22T02:00:00Z"))
        );
        assert_eq!(
            hourly.next_after(at("2026-11-22T02:00:00Z"), None),
            Some(at("2026-11-22T03:00:00Z")),
            "strictly after"
        );
        assert!(Schedule::every(Duration::from_millis(999)).is_err());
    }

    #[test]
    fn cron_takes_five_or_six_fields_in_utc() {
        let five = Schedule::cron("30 4 * * *").unwrap();
        assert_eq!(
            five.next_after(at("2026-11-22T05:00:00Z"), None),
            Some(at("2026-11-23T04:30:00Z"))
        );
        let six = Schedule::cron("*/10 * * * * *").unwrap();
        assert_eq!(
            six.next_after(at("2026-11-22T05:00:01Z"), None),
            Some(at("2026-11-22T05:00:10Z"))
        );
        let e = Schedule::cron("* *").unwrap_err();
        assert_eq!(e.field, "schedule.cron");
        assert!(Schedule::cron("61 * * * *").is_err());
    }

    #[test]
    fn a_one_time_schedule_fires_once() {
        let once = Schedule::at(at("2026-11-22T05:00:00Z"));
        let t = once.next_after(at("2026-11-22T06:00:00Z"), None);
        assert_eq!(t, Some(at("2026-11-22T05:00:00Z")), "past: at once");
        assert_eq!(once.next_after(at("2026-11-22T06:00:00Z"), t), None);
    }

    #[test]
    fn intervals_parse_with_units_and_name_the_field() {
        assert_eq!(
            Schedule::parse_interval("15m").unwrap(),
            Duration::from_secs(900)
        );
        assert_eq!(
            Schedule::parse_interval("2h").unwrap(),
            Duration::from_secs(7200)
        );
        assert_eq!(
            Schedule::parse_interval("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            Schedule::parse_interval("ten").unwrap_err().field,
            "schedule.every"
        );
        assert!(Schedule::parse_interval("5 weeks").is_err());
    }

    #[test]
    fn tick_keys_name_the_instant_in_utc() {
        assert_eq!(
            tick_key(at("2026-11-22T03:00:00+01:00")),
            "tick-2026-11-22T02:00:00.000Z"
        );
    }
}

//! The run supervisor: plans a run, claims its partitions, runs a worker on
//! each (up to the configured concurrency), restarts failed workers with
//! backoff, fails a partition for good after its attempts while the others
//! go on, and gathers every partition's result into the run's report
//! (scatter/gather).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, WrapFuture,
};
use tokio::sync::watch;
use tracing::Instrument;

use super::context::RunContext;
use super::lease_keeper::HeldLeases;
use super::progress::{PartitionProgress, RunReport};
use super::publisher::{Publisher, PublisherLoad};
use super::worker::{PartitionWorker, WorkerExited, WorkerOutcome, WorkerSetup};
use super::{ActiveRunGuard, RuntimeConfig};
use crate::error::Error;
use crate::error_text::Chain;
use crate::job::Job;
use crate::store::{
    PartitionRecord, PartitionState, PlanOutcome, RunState, Steal, Store, StoreError,
};

/// A partition this instance holds, and the flag the lease keeper raises if
/// the lease is lost.
struct Active {
    record: PartitionRecord,
    lost: Arc<AtomicBool>,
}

pub(crate) struct RunSupervisor {
    run: RunContext,
    held: HeldLeases,
    report: Option<super::run_handle::RunEnd>,
    publisher: Option<Addr<Publisher>>,
    /// The publisher's load, for its gauges.
    publisher_load: Arc<PublisherLoad>,
    run_id: Option<i64>,
    /// Partitions held by this instance, running or waiting for a restart.
    active: HashMap<i64, Active>,
    /// A claim is in flight; claims are made one at a time.
    claiming: bool,
    /// Set once the report is being produced; nothing new starts.
    finishing: bool,
    /// A poll of the run's controls is in flight.
    polling: bool,
    /// When the health checks last ran.
    health_checked: Option<Instant>,
    /// Rows done by the whole run at recent polls, for its rate.
    samples: VecDeque<(Instant, i64)>,
    started: Instant,
    /// Keeps the runtime's count of live runs (for graceful shutdown).
    _guard: ActiveRunGuard,
}

pub(crate) struct SupervisorSetup {
    pub(crate) run: RunContext,
    pub(crate) held: HeldLeases,
    pub(crate) report: super::run_handle::RunEnd,
    pub(crate) guard: ActiveRunGuard,
}

impl RunSupervisor {
    pub(crate) fn new(s: SupervisorSetup) -> Self {
        let started = s.run.started;
        Self {
            run: s.run,
            held: s.held,
            report: Some(s.report),
            publisher: None,
            publisher_load: Arc::default(),
            run_id: None,
            active: HashMap::new(),
            claiming: false,
            finishing: false,
            polling: false,
            health_checked: None,
            samples: VecDeque::new(),
            started,
            _guard: s.guard,
        }
    }

    /// Counts one event of the run in the series `name`.
    fn count(&self, name: &'static str) {
        if let Some(run_id) = self.run_id {
            super::metrics::run_counter(name, &self.run.job.name, run_id).increment(1);
        }
    }

    fn shutting_down(&self) -> bool {
        *self.run.shutdown.borrow()
    }

    fn planned(&mut self, plan: PlanOutcome, ctx: &mut Context<Self>) {
        let PlanOutcome {
            run,
            partitions,
            reused,
        } = plan;
        self.run.span.record("run.id", run.id);
        tracing::info!(
            parent: &self.run.span,
            partitions = partitions.len(),
            rows = run.rows_identified,
            reused,
            "run planned"
        );
        self.run_id = Some(run.id);
        let done_at_start: i64 = partitions.iter().map(|p| p.rows_done).sum();
        let resumed = partitions
            .iter()
            .any(|p| p.rows_done > 0 || p.state != PartitionState::Pending);
        self.run.progress.send_modify(|p| {
            p.run_id = run.id;
            p.planned = true;
            p.resumed = resumed;
            p.rows_identified = run.rows_identified;
            p.rows_done = done_at_start;
            p.rows_done_at_start = done_at_start;
            p.partitions = partitions.iter().map(PartitionProgress::from).collect();
            p.state = run.state;
        });
        self.run.control.send_modify(|c| {
            c.state = run.state;
            c.throttle = run.throttle.clone();
            // Under a health gate no page starts before the first check.
            if c.throttle.has_health_check() {
                c.unhealthy = Some("not checked yet".into());
            }
        });
        // Operators steer the run through its row: read it now and every
        // poll interval.
        self.poll(ctx);
        ctx.run_interval(self.run.config.poll_interval, |act, ctx| act.poll(ctx));
        self.fill(ctx);
    }

    /// Reads the run's controls (state, throttles), runs the health checks
    /// when they are due, and hands what changed to the workers.
    fn poll(&mut self, ctx: &mut Context<Self>) {
        let Some(run_id) = self.run_id else { return };
        if self.polling || self.finishing {
            return;
        }
        self.polling = true;
        let store = self.run.store.clone();
        let throttle = self.run.control.borrow().throttle.clone();
        let due = throttle.has_health_check()
            && self
                .health_checked
                .is_none_or(|at| at.elapsed() >= throttle.health_interval());
        ctx.spawn(
            async move {
                let view = store.control_view(run_id).await?;
                let health = if due {
                    let found = store.check_health(&view.run.throttle).await?;
                    if found != view.run.health {
                        store.set_health(run_id, found.clone()).await?;
                    }
                    Some(found)
                } else if !view.run.throttle.has_health_check() {
                    // The checks were removed: whatever was found is void.
                    if view.run.health.is_some() {
                        store.set_health(run_id, None).await?;
                    }
                    Some(None)
                } else {
                    None
                };
                Ok::<_, StoreError>((view, health))
            }
            .into_actor(self)
            .map(move |res, act, ctx| {
                act.polling = false;
                match res {
                    Ok((view, health)) => {
                        if due {
                            act.health_checked = Some(Instant::now());
                        }
                        act.apply(view, health, ctx);
                    }
                    Err(e) => {
                        tracing::warn!(parent: &act.run.span, error = %Chain(&e), "could not read the run's controls; will try again")
                    }
                }
            }),
        );
    }

    fn apply(
        &mut self,
        view: crate::store::ControlView,
        health: Option<Option<String>>,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        let job = &self.run.job.name;
        super::metrics::run_gauge("tranche_rows_remaining", job, view.run.id).set(
            (view.run.rows_identified - view.run.rows_dead_at_plan - view.rows_done).max(0) as f64,
        );
        let run_id = view.run.id;
        let gauge = |name| super::metrics::run_gauge(name, job, run_id);
        gauge("tranche_partitions_active").set(self.active.len() as f64);
        gauge("tranche_partitions_pending").set(view.pending as f64);
        gauge("tranche_partitions_failed").set(view.failed as f64);
        gauge("tranche_oldest_lease_age_seconds")
            .set(view.oldest_lease_age_ms.unwrap_or(0).max(0) as f64 / 1000.0);
        gauge("tranche_throttle_rows_per_s")
            .set(view.run.throttle.max_rows_per_s.unwrap_or(0) as f64);
        // Held back: paused by an operator, or by the health gate.
        let held = view.run.state == crate::store::RunState::Paused || view.run.health.is_some();
        gauge("tranche_throttle_held").set(if held { 1.0 } else { 0.0 });
        let sink = self.run.job.sink.name();
        let sink_gauge = |name| super::metrics::sink_gauge(name, job, run_id, sink);
        sink_gauge("tranche_messages_in_flight").set(
            self.publisher_load
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        );
        sink_gauge("tranche_publisher_mailbox_depth").set(
            self.publisher_load
                .queued
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        );
        self.samples.push_back((now, view.rows_done));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(60))
        {
            self.samples.pop_front();
        }
        let rate = match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, r0)), Some(&(t1, r1))) if t1 > t0 => {
                Some((r1 - r0).max(0) as f64 / t1.duration_since(t0).as_secs_f64())
            }
            _ => None,
        };
        let surplus = match view.run.throttle.max_active_partitions {
            Some(cap) if view.claimed.len() > cap as usize => view.claimed[cap as usize..].to_vec(),
            _ => Vec::new(),
        };
        let before = self.run.control.borrow().state;
        let state = view.run.state;
        if before != state {
            tracing::info!(parent: &self.run.span,
                run = view.run.id,
                from = before.as_str(),
                to = state.as_str(),
                "run state changed"
            );
        }
        self.run.control.send_if_modified(|c| {
            let old = c.clone();
            c.state = state;
            c.throttle = view.run.throttle.clone();
            if let Some(h) = &health {
                if c.unhealthy != *h {
                    match h {
                        Some(why) => {
                            tracing::warn!(parent: &self.run.span, reason = %why, "database unhealthy; no page starts")
                        }
                        None => tracing::info!(parent: &self.run.span, "database healthy again; pages start"),
                    }
                }
                c.unhealthy = h.clone();
            }
            c.surplus = surplus;
            *c != old
        });
        let unhealthy = self.run.control.borrow().unhealthy.clone();
        let identified = view.run.rows_identified;
        let elapsed = self.started.elapsed();
        self.run.progress.send_modify(|p| {
            p.state = state;
            p.health = unhealthy;
            p.elapsed = elapsed;
            p.rows_done = p.rows_done.max(view.rows_done);
            p.rows_per_s = rate;
            p.eta = rate
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64((identified - p.rows_done).max(0) as f64 / r));
        });
        if before != state {
            self.fill(ctx);
        }
    }

    /// Claims partitions until the concurrency is reached or none is left.
    fn fill(&mut self, ctx: &mut Context<Self>) {
        if self.finishing || self.claiming {
            return;
        }
        let Some(run_id) = self.run_id else { return };
        if self.shutting_down() {
            if self.active.is_empty() {
                self.finish(ctx);
            }
            return;
        }
        let state = self.run.control.borrow().state;
        match state {
            // Claims wait for a resume; polls call again on a change.
            RunState::Paused => return,
            RunState::Cancelled => {
                if self.active.is_empty() {
                    self.finish(ctx);
                }
                return;
            }
            _ => {}
        }
        if self.active.len() >= self.run.config.concurrency {
            return;
        }
        self.claiming = true;
        let store = self.run.store.clone();
        let owner = self.run.owner.clone();
        let lease = self.run.config.lease;
        ctx.spawn(
            async move { store.claim(run_id, &owner, lease).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.claiming = false;
                    match res {
                        Ok(Some(p)) => {
                            act.start_worker(p, None, ctx);
                            act.fill(ctx);
                        }
                        Ok(None) => act.steal(ctx),
                        Err(e) => act.store_trouble(e, ctx),
                    }
                }),
        );
    }

    /// Nothing is left to claim but a worker is idle: split the largest
    /// remaining range of the run (work stealing). When there is nothing
    /// worth splitting either, either end (no partition held here) or look
    /// again after a poll interval, since another instance's lease may
    /// expire.
    fn steal(&mut self, ctx: &mut Context<Self>) {
        let Some(run_id) = self.run_id else { return };
        if !self.run.config.work_stealing || self.shutting_down() {
            self.idle(ctx);
            return;
        }
        self.claiming = true;
        let (store, job, owner) = (
            self.run.store.clone(),
            self.run.job.clone(),
            self.run.owner.clone(),
        );
        let lease = self.run.config.lease;
        // Pages may grow up to the throttle's bound when they adapt: the
        // split keeps clear of what such pages read ahead.
        let page_size = {
            let control = self.run.control.borrow();
            match control.throttle.target_page_ms {
                Some(_) => self
                    .run
                    .config
                    .page_size
                    .max(control.throttle.page_size_bounds().1),
                None => self.run.config.page_size,
            }
        };
        let steal = Steal::for_page_size(page_size);
        ctx.spawn(
            async move { store.steal(&job.source, run_id, &owner, lease, steal).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.claiming = false;
                    match res {
                        Ok(Some(p)) => {
                            tracing::info!(parent: &act.run.span,
                                partition = p.id,
                                from = ?p.split_from,
                                rows = p.rows_planned,
                                "split a range held by a busy worker; took its second half"
                            );
                            act.run.progress.send_modify(|prog| prog.steals += 1);
                            act.count("tranche_steals_total");
                            act.start_worker(p, None, ctx);
                            act.fill(ctx);
                        }
                        Ok(None) => act.idle(ctx),
                        Err(e) => {
                            // Stealing is an optimisation: a failed split
                            // changed nothing and never ends the run.
                            tracing::warn!(parent: &act.run.span, error = %Chain(&e), "could not split a range; will look again");
                            act.idle(ctx);
                        }
                    }
                }),
        );
    }

    fn idle(&mut self, ctx: &mut Context<Self>) {
        if self.active.is_empty() {
            self.finish(ctx);
        } else {
            ctx.run_later(self.run.config.poll_interval, |act, ctx| act.fill(ctx));
        }
    }

    /// A store call of the supervisor failed: retry later if it may pass,
    /// otherwise end the run's work here with the error.
    fn store_trouble(&mut self, e: StoreError, ctx: &mut Context<Self>) {
        if e.is_retryable() {
            tracing::warn!(parent: &self.run.span, error = %Chain(&e), "store unavailable; retrying");
            ctx.run_later(self.run.config.poll_interval, |act, ctx| act.fill(ctx));
        } else {
            self.fail(Error::Store(e), ctx);
        }
    }

    fn start_worker(
        &mut self,
        record: PartitionRecord,
        lost: Option<Arc<AtomicBool>>,
        ctx: &mut Context<Self>,
    ) {
        let restarted = lost.is_some();
        let lost = lost.unwrap_or_else(|| self.held.hold(record.id, record.epoch));
        // Resuming from a checkpoint that an earlier holder (another
        // process, or this worker before it failed) may have published past:
        // up to a page of those rows may be delivered again.
        let possibly_replayed = if record.taken_over || restarted {
            let left = (record.rows_planned - record.rows_done).max(0) as u64;
            left.min(self.run.config.page_size as u64)
        } else {
            0
        };
        if record.taken_over {
            tracing::info!(parent: &self.run.span, partition = record.id, from = ?record.cursor, "took over an expired lease");
        }
        let taken_over = record.taken_over;
        if taken_over {
            self.count("tranche_takeovers_total");
        }
        self.run.progress.send_modify(|p| {
            if taken_over {
                p.takeovers += 1;
            }
            p.rows_possibly_replayed += possibly_replayed;
            if !p.partitions.iter().any(|pp| pp.id == record.id) {
                // Made by a split after this instance read the plan.
                p.partitions.push(PartitionProgress::from(&record));
            }
            if let Some(pp) = p.partitions.iter_mut().find(|pp| pp.id == record.id) {
                pp.active = true;
                pp.state = PartitionState::Claimed;
                pp.rows_done = record.rows_done;
                pp.rows_planned = record.rows_planned;
            }
        });
        let publisher = self.publisher.clone().expect("publisher started first");
        PartitionWorker::new(WorkerSetup {
            run: self.run.clone(),
            partition: record.clone(),
            publisher,
            exited: ctx.address().recipient(),
            lost: Arc::clone(&lost),
        })
        .start();
        self.active.insert(record.id, Active { record, lost });
    }

    fn set_partition(&self, id: i64, state: PartitionState, error: Option<String>) {
        self.run.progress.send_modify(|p| {
            if let Some(pp) = p.partitions.iter_mut().find(|pp| pp.id == id) {
                pp.active = false;
                pp.state = state;
                if error.is_some() {
                    pp.attempts += 1;
                    pp.last_error = error;
                }
            }
        });
    }

    /// Ends the run on this instance: when nothing is left to claim, closes
    /// it in the store if every partition ended (otherwise other instances
    /// still hold some: poll, since their leases may expire), then reports.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        let Some(run_id) = self.run_id else { return };
        let interrupted = self.shutting_down();
        let store = self.run.store.clone();
        self.finishing = true;
        ctx.spawn(
            async move {
                if interrupted {
                    store.run_record(run_id).await
                } else {
                    store.finish_run_if_complete(run_id).await
                }
            }
            .into_actor(self)
            .map(move |res, act, ctx| match res {
                Ok(run) if interrupted || run.state.is_finished() => {
                    act.run.progress.send_modify(|p| {
                        p.elapsed = act.started.elapsed();
                        p.rows_done = p.rows_done.max(run.rows_done);
                        p.state = run.state;
                        p.eta = None;
                    });
                    let mut report = RunReport::from_progress(
                        act.run.progress.borrow().clone(),
                        run.state,
                        interrupted,
                    );
                    report.run_rows_per_s = run.finished_ms.map(|end| {
                        let ms = (end - run.started_ms).max(1) as f64;
                        run.rows_done as f64 * 1000.0 / ms
                    });
                    report.error = run.last_error.clone();
                    tracing::info!(parent: &act.run.span,
                        run = run_id,
                        state = ?run.state,
                        interrupted,
                        rows_done = report.rows_done,
                        "run ended on this instance"
                    );
                    act.send_report(Ok(report), ctx);
                }
                Ok(_) => {
                    act.finishing = false;
                    ctx.run_later(act.run.config.poll_interval, |act, ctx| act.fill(ctx));
                }
                Err(e) => {
                    act.finishing = false;
                    act.store_trouble(e, ctx);
                }
            }),
        );
    }

    fn fail(&mut self, e: Error, ctx: &mut Context<Self>) {
        tracing::error!(parent: &self.run.span, error = %Chain(&e), "run failed on this instance");
        self.finishing = true;
        self.send_report(Err(e), ctx);
    }

    fn send_report(&mut self, report: Result<RunReport, Error>, ctx: &mut Context<Self>) {
        if let Some(tx) = self.report.take() {
            tx.send(report);
        }
        ctx.stop();
    }
}

impl Actor for RunSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let publisher = Publisher::new(
            Arc::clone(&self.run.job.sink),
            self.run.config.lanes,
            self.run.config.mailbox_capacity,
        );
        self.publisher_load = publisher.load();
        self.publisher = Some(publisher.start());
        let (job, store, owner, config) = (
            self.run.job.clone(),
            self.run.store.clone(),
            self.run.owner.clone(),
            Arc::clone(&self.run.config),
        );
        let shutdown = self.run.shutdown.clone();
        ctx.spawn(
            async move {
                let job = preflight(job, &store, &config, &shutdown).await?;
                let plan = identify(&job, &store, &owner, &config, &shutdown).await?;
                Ok::<_, Error>((job, plan))
            }
            .instrument(self.run.span.clone())
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok((job, plan)) => {
                    // With its order kind taken from the catalog.
                    act.run.job = job;
                    act.planned(plan, ctx)
                }
                Err(e) => act.fail(e, ctx),
            }),
        );
    }
}

impl Handler<WorkerExited> for RunSupervisor {
    type Result = ();

    fn handle(&mut self, msg: WorkerExited, ctx: &mut Context<Self>) {
        let Some(active) = self.active.remove(&msg.partition_id) else {
            return;
        };
        let id = msg.partition_id;
        match msg.outcome {
            Ok(WorkerOutcome::Completed) => {
                self.held.drop_hold(id);
                self.set_partition(id, PartitionState::Done, None);
            }
            Ok(WorkerOutcome::Released) => {
                self.held.drop_hold(id);
                self.set_partition(id, PartitionState::Pending, None);
            }
            Err(Error::Store(StoreError::LeaseLost { .. })) => {
                self.held.drop_hold(id);
                tracing::warn!(parent: &self.run.span,
                    partition = id,
                    epoch = msg.epoch,
                    "lease lost; partition abandoned to its new holder"
                );
                self.run.progress.send_modify(|p| p.leases_lost += 1);
                self.count("tranche_leases_lost_total");
                self.set_partition(id, PartitionState::Claimed, None);
            }
            Err(e) => {
                let retry = e.is_retryable() && !self.shutting_down();
                let reason = crate::error_text::chain(&e);
                let store = self.run.store.clone();
                let owner = self.run.owner.clone();
                let max = i64::from(self.run.config.max_attempts);
                let attempts_before = i64::from(active.record.attempts);
                let give_up = !retry || attempts_before + 1 >= max;
                // Keep the partition counted as held while deciding.
                self.active.insert(id, active);
                ctx.spawn(
                    async move {
                        let attempts = store
                            .record_failure(id, &owner, msg.epoch, &reason, give_up)
                            .await?;
                        let fresh = if give_up {
                            None
                        } else {
                            Some(store.partition(id).await?)
                        };
                        Ok::<_, StoreError>((attempts, fresh, reason))
                    }
                    .into_actor(self)
                    .map(move |res, act, ctx| {
                        let Some(active) = act.active.remove(&id) else {
                            return;
                        };
                        match res {
                            Ok((attempts, Some(fresh), reason)) => {
                                let delay = act.run.config.retry_backoff().jittered(attempts as u32);
                                tracing::warn!(parent: &act.run.span, partition = id, attempts, error = %reason, ?delay, "worker failed; restarting after backoff");
                                act.count("tranche_partition_retries_total");
                                act.set_partition(id, PartitionState::Claimed, Some(reason));
                                let lost = Arc::clone(&active.lost);
                                act.active.insert(id, active);
                                ctx.run_later(delay, move |act, ctx| {
                                    if act.active.remove(&id).is_some() {
                                        act.start_worker(fresh, Some(lost), ctx);
                                    }
                                });
                            }
                            Ok((attempts, None, reason)) => {
                                act.held.drop_hold(id);
                                tracing::error!(parent: &act.run.span, partition = id, attempts, error = %reason, "partition failed");
                                act.set_partition(id, PartitionState::Failed, Some(reason));
                                act.fill(ctx);
                            }
                            Err(e) => {
                                act.held.drop_hold(id);
                                tracing::warn!(parent: &act.run.span, partition = id, error = %Chain(&e), "could not record the failure; the lease will expire and the partition be retried");
                                act.set_partition(id, PartitionState::Claimed, None);
                                act.fill(ctx);
                            }
                        }
                    }),
                );
                return;
            }
        }
        self.fill(ctx);
    }
}

/// Checks the job against the database catalog before anything is opened,
/// claimed or written: its source (see [`crate::catalog`]) and what its
/// sink writes to. Returns the job with its source's order kind resolved.
/// A database that cannot be reached is waited for, like identification.
pub(crate) async fn preflight(
    mut job: Job,
    store: &Store,
    config: &RuntimeConfig,
    shutdown: &watch::Receiver<bool>,
) -> Result<Job, Error> {
    let info = loop {
        if *shutdown.borrow() {
            return Err(Error::Shutdown);
        }
        match store.describe_table(&job.source.table).await {
            Ok(info) => break info,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %Chain(&e), "store unavailable; retrying");
                tokio::time::sleep(config.poll_interval).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    job.source = crate::catalog::check_source(&job.source, job.scopes.known(), info.as_ref())?;
    job.sink.check().await?;
    Ok(job)
}

/// Identification: one instance at a time plans the run (or reuses its
/// plan) under the job lease; the others wait for the plan and join.
async fn identify(
    job: &Job,
    store: &Store,
    owner: &str,
    config: &RuntimeConfig,
    shutdown: &watch::Receiver<bool>,
) -> Result<PlanOutcome, Error> {
    loop {
        if *shutdown.borrow() {
            return Err(Error::Shutdown);
        }
        match store
            .acquire_job_lease(&job.name, owner, config.lease)
            .await
        {
            Ok(true) => {
                let plan = async {
                    let run = store
                        .open_run(
                            &job.name,
                            &job.params.to_string(),
                            job.run_key(),
                            &job.throttle,
                        )
                        .await?;
                    match store
                        .plan_run(
                            run.id,
                            &job.source,
                            &job.scopes,
                            job.strategy,
                            config.skip_limit,
                        )
                        .await
                    {
                        // Not left planning for good: failed, with its error.
                        Err(e) if !e.is_retryable() => {
                            if let Err(f) = store
                                .fail_planning(run.id, &crate::error_text::chain(&e))
                                .await
                            {
                                tracing::warn!(error = %f, "could not record the planning failure");
                            }
                            Err(e)
                        }
                        planned => planned,
                    }
                };
                // Identification can outlast the lease on a big table: keep
                // renewing it, so the others keep waiting instead of
                // planning in parallel (which the run's row lock would make
                // harmless, but wasteful).
                let renew = async {
                    loop {
                        tokio::time::sleep(config.heartbeat).await;
                        match store.renew_job_lease(&job.name, owner, config.lease).await {
                            Ok(true) => {}
                            Ok(false) => tracing::warn!("identification lease lost while planning"),
                            Err(e) => {
                                tracing::warn!(error = %Chain(&e), "could not renew the identification lease")
                            }
                        }
                    }
                };
                let planned = tokio::select! {
                    planned = plan => planned,
                    never = renew => never,
                };
                if let Err(e) = store.release_job_lease(&job.name, owner).await {
                    tracing::warn!(error = %Chain(&e), "could not release the identification lease; it will expire");
                }
                match planned {
                    Ok(plan) => return Ok(plan),
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %Chain(&e), "identification failed; retrying")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(false) => {
                let run = match job.run_key() {
                    Some(key) => store.run_by_key(&job.name, key).await?,
                    None => store.active_run(&job.name).await?,
                };
                if let Some(run) = run {
                    if run.state != RunState::Planning {
                        let partitions = store.partitions(run.id).await?;
                        return Ok(PlanOutcome {
                            run,
                            partitions,
                            reused: true,
                        });
                    }
                }
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %Chain(&e), "store unavailable; retrying")
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(config.poll_interval).await;
    }
}

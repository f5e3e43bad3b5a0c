//! The end-to-end bench behind `tranche bench`: tranche side by side with
//! the systems it replaces and with the limits of the machine, on one
//! PostgreSQL table and one message size.
//!
//! [`run`] seeds the table, then measures in turn:
//!
//! - **limits**: a keyset walk of the table alone, one page after another
//!   on one connection, and `COPY ... TO STDOUT` of it; a bare client
//!   publishing as many messages with pipelined confirmations to RabbitMQ
//!   (persistent, publisher confirms), to NATS JetStream (file storage,
//!   acknowledgements) and to Kafka (idempotent producer, acks=all);
//! - **baselines**: one sequential worker confirming every
//!   message before the next, and the quick fix of N modulo workers each
//!   doing so; a baseline still running at its time budget is stopped and
//!   its time projected from the rows it did;
//! - **brokers at a distance**: the bare clients, the baselines and
//!   tranche again, through a relay inside the bench that adds a remote broker's round trip
//!   (20 ms by default) between the bench and each broker, since on
//!   loopback a confirmation takes a millisecond or less;
//! - **tranche** with the null sink, the in-process update step (SQLite and
//!   PostgreSQL), RabbitMQ, JetStream and Kafka, and with a sink whose every
//!   confirmation takes a fixed delay, against the baselines on that sink;
//! - **memory**: the peak resident set of a `tranche run` process walking
//!   tables of each size to the null sink.
//!
//! The [`BenchReport`] holds every rate, the ratios of tranche to the
//! others of its group and the targets; [`write()`] saves it as JSON,
//! Markdown and a PNG chart.

mod chart;
pub(crate) mod command;
pub(crate) mod cpu;
mod data;
#[cfg(any(feature = "amqp", feature = "nats", feature = "kafka"))]
mod delay;
mod legacy;
mod limits;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "amqp")]
mod peers;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use report::{BenchReport, Kind, Measurement, MemoryMeasurement, Target};

use tranche::sink::UpdateSpec;
use tranche::sink::{NullSink, Sink, UpdateSink};
use tranche::store::RunState;
use tranche::{RuntimeConfig, RuntimeHandle};

/// Why a bench run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A setting is wrong or a measurement went wrong in a way that names
    /// its cause.
    #[error("{0}")]
    Config(String),
    /// A step failed.
    #[error("{what}: {reason}")]
    Step {
        /// The step.
        what: String,
        /// What went wrong.
        reason: String,
    },
}

impl BenchError {
    /// `what` failed with `e`: an error (shown with its causes) or a
    /// message.
    pub(crate) fn step(what: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let e = e.into();
        let mut reason = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            reason = format!("{reason}: {c}");
            cause = c.source();
        }
        Self::Step {
            what: what.to_owned(),
            reason: tranche::redact::redact_text(&reason),
        }
    }

    pub(crate) fn connect(
        url: &str,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::step(
            &format!("connecting to {}", tranche::redact::redact_url(url)),
            e,
        )
    }
}

impl From<tranche::ConfigError> for BenchError {
    fn from(e: tranche::ConfigError) -> Self {
        Self::Config(e.to_string())
    }
}

impl From<tranche::store::StoreError> for BenchError {
    fn from(e: tranche::store::StoreError) -> Self {
        Self::step("the store", e)
    }
}

impl From<tranche::Error> for BenchError {
    fn from(e: tranche::Error) -> Self {
        Self::step("tranche", e)
    }
}

/// What to measure, and how. [`BenchConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// A PostgreSQL URL; the bench drops and creates the database
    /// [`Self::database`] beside the one it names and works there.
    pub pg_url: String,
    /// The bench's own database, dropped and created again (default
    /// `tranche_bench`); also the name of its RabbitMQ exchange and queue
    /// and, in capitals, of its JetStream stream.
    pub database: String,
    /// Rows in the table (default 1,000,000).
    pub rows: u64,
    /// Bytes of each message's payload, the body column (default 200).
    pub payload_bytes: usize,
    /// Rows per page, for tranche and the keyset walk (default 1000).
    pub page_size: usize,
    /// Rounds of the read group (keyset walk, COPY, tranche into the null
    /// sink, interleaved); each reports its median round (default 3).
    pub read_rounds: u32,
    /// tranche's partitions worked at once (default 4).
    pub concurrency: usize,
    /// tranche's range partitions (default 8).
    pub partitions: u32,
    /// Workers of the modulo-workers baseline (default 5).
    pub quick_fix_workers: u64,
    /// How long a baseline may run before it is stopped and projected
    /// (default 20 s).
    pub baseline_budget: Duration,
    /// Each confirmation's delay in the latency-bound rows (default 20 ms).
    pub latency: Duration,
    /// Row counts of the latency-bound rows (default 1,000 and 100,000).
    pub latency_rows: Vec<u64>,
    /// RabbitMQ, when measured (`amqp://...`).
    pub amqp_url: Option<String>,
    /// NATS JetStream, when measured (`nats://...`).
    pub nats_url: Option<String>,
    /// Kafka's bootstrap brokers, when measured (`host:port[,...]`). Its
    /// topic is named after [`Self::database`] and the run, and deleted
    /// at the end. Kafka is measured on this machine only: its clients
    /// connect to the address the broker advertises, past any relay.
    pub kafka_brokers: Option<String>,
    /// The round trip added between the bench and RabbitMQ and JetStream
    /// for the broker rows at a distance (default 20 ms, what a legacy job against a remote broker
    /// waited for each confirmation): every byte is held half of it on its
    /// way in each direction by a relay inside the bench. Zero leaves
    /// those rows out.
    pub broker_rtt: Duration,
    /// Rows of the broker rows at a distance (default 100,000).
    pub broker_rtt_rows: u64,
    /// Unconfirmed messages in flight, for tranche's broker sinks and the
    /// bare clients alike (default 1024).
    pub window: usize,
    /// Table sizes whose peak memory is measured (default 1,000,000 and
    /// 10,000,000); empty for none.
    pub memory_rows: Vec<u64>,
    /// The `tranche` binary that the memory rows run (`tranche run` with
    /// the null sink); without it they are skipped.
    pub tranche_exe: Option<PathBuf>,
    /// A MySQL or MariaDB server (admin URL, `mysql://...`), when its
    /// read group and update step are measured: the bench drops and
    /// creates the database [`Self::database`] there (a build with the
    /// `mysql` feature; without it, those rows are skipped with the reason).
    pub mysql_url: Option<String>,
    /// The peers' harness (`benches/peers` of the source tree, its
    /// packages installed with `npm ci`); `None` leaves the peers out.
    /// They run in the RabbitMQ group, when Node.js is present.
    pub peers_dir: Option<PathBuf>,
    /// How long a peer's batched configuration may work before it is
    /// stopped and projected (default 600 s); its one-job-per-row one gets
    /// [`Self::baseline_budget`], as the baselines do.
    pub peer_budget: Duration,
    /// Where the SQLite database and the results go.
    pub out_dir: PathBuf,
}

impl BenchConfig {
    /// The defaults, on the PostgreSQL server of `pg_url`.
    pub fn new(pg_url: &str) -> Self {
        Self {
            pg_url: pg_url.to_owned(),
            database: "tranche_bench".into(),
            rows: 1_000_000,
            payload_bytes: 200,
            page_size: 1000,
            read_rounds: 3,
            concurrency: 4,
            partitions: 8,
            quick_fix_workers: 5,
            baseline_budget: Duration::from_secs(20),
            latency: Duration::from_millis(20),
            latency_rows: vec![1_000, 100_000],
            amqp_url: None,
            nats_url: None,
            kafka_brokers: None,
            broker_rtt: Duration::from_millis(20),
            broker_rtt_rows: 100_000,
            window: 1024,
            memory_rows: vec![1_000_000, 10_000_000],
            tranche_exe: None,
            mysql_url: None,
            peers_dir: Some(PathBuf::from("benches/peers")),
            peer_budget: Duration::from_secs(600),
            out_dir: PathBuf::from("target/tranche-bench"),
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |field: &str, why: &str| Err(BenchError::Config(format!("{field}: {why}")));
        let name_ok = |n: &str| {
            n.starts_with(|c: char| c.is_ascii_lowercase())
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && n.len() <= 48
        };
        if !name_ok(&self.database) {
            return bad(
                "database",
                "must be a lowercase letter, then lowercase letters, digits or _ (at most 48)",
            );
        }
        if self.rows == 0 {
            return bad("rows", "must be at least 1");
        }
        if self.payload_bytes == 0 {
            return bad("payload_bytes", "must be at least 1");
        }
        if self.page_size == 0 || self.concurrency == 0 || self.partitions == 0 {
            return bad("page_size, concurrency, partitions", "must be at least 1");
        }
        if self.read_rounds == 0 {
            return bad("read_rounds", "must be at least 1");
        }
        if self.quick_fix_workers == 0 {
            return bad("quick_fix_workers", "must be at least 1");
        }
        if self.window == 0 {
            return bad("window", "must be at least 1");
        }
        if !self.broker_rtt.is_zero() && !(1..=self.rows).contains(&self.broker_rtt_rows) {
            return bad(
                "broker_rtt_rows",
                &format!("{} is not within 1..={}", self.broker_rtt_rows, self.rows),
            );
        }
        if let Some(r) = self.latency_rows.iter().find(|&&r| r == 0 || r > self.rows) {
            return bad(
                "latency_rows",
                &format!("{r} is not within 1..={}", self.rows),
            );
        }
        Ok(())
    }
}

/// What [`run`] tells as it goes.
pub trait Progress {
    /// A step starts.
    fn step(&mut self, what: &str);
    /// A measurement is done.
    fn measured(&mut self, m: &Measurement);
}

/// A [`Progress`] that prints each step and result on standard output.
pub struct PrintProgress;

impl Progress for PrintProgress {
    fn step(&mut self, what: &str) {
        println!("... {what}");
    }
    fn measured(&mut self, m: &Measurement) {
        println!(
            "    {} / {}: {} rows in {:.3} s{}, {:.0} rows/s",
            m.group,
            m.name,
            m.rows,
            m.seconds,
            if m.projected {
                format!(" (projected from {} rows)", m.measured_rows)
            } else {
                String::new()
            },
            m.rows_per_s
        );
    }
}

const READ: &str = "PostgreSQL read";
const UPDATE: &str = "update step";
const SEQUENTIAL: &str = "sequential worker (1)";

struct Bench<'a> {
    config: &'a BenchConfig,
    url: String,
    stamp: i64,
    /// tranche runs so far, numbering their jobs.
    runs: u32,
    report: BenchReport,
    progress: &'a mut dyn Progress,
    /// The PostgreSQL server, when its CPU can be read (on this machine).
    server: Option<cpu::Server>,
}

impl Bench<'_> {
    fn push(&mut self, m: Measurement) {
        self.progress.measured(&m);
        self.report.measurements.push(m);
    }

    fn skip(&mut self, what: &str, why: impl std::fmt::Display) {
        let why = tranche::redact::redact_text(&why.to_string());
        println!("    skipped {what}: {why}");
        self.report.skipped.push((what.to_owned(), why));
    }

    /// Starts measuring CPU: this process's and the PostgreSQL server's.
    fn meter(&self) -> cpu::Meter {
        cpu::Meter::start(self.server.as_ref())
    }

    fn quick_fix(&self) -> String {
        format!("modulo workers ({})", self.config.quick_fix_workers)
    }

    /// A runtime on the database at `url`, with the bench's settings.
    async fn runtime(&self, url: &str) -> Result<RuntimeHandle, BenchError> {
        let c = self.config;
        let mut rc = RuntimeConfig::new(url);
        rc.concurrency = c.concurrency;
        rc.page_size = c.page_size;
        rc.db_threads = (2 * c.concurrency).clamp(2, 16);
        Ok(RuntimeHandle::start(rc).await?)
    }

    /// One tranche run of a fresh job over the bench table (or its first
    /// `upto` rows) into `sink`, on the database at `url`.
    async fn tranche(
        &mut self,
        group: &str,
        name: &str,
        url: &str,
        sink: Arc<dyn Sink>,
        upto: Option<u64>,
    ) -> Result<(), BenchError> {
        let runtime = self.runtime(url).await?;
        self.tranche_on(runtime, group, name, sink, upto).await
    }

    /// [`Self::tranche`] on a started runtime, which it shuts down.
    async fn tranche_on(
        &mut self,
        runtime: RuntimeHandle,
        group: &str,
        name: &str,
        sink: Arc<dyn Sink>,
        upto: Option<u64>,
    ) -> Result<(), BenchError> {
        let (seconds, cpu) = self
            .tranche_seconds(runtime, group, name, sink, (upto, data::Walk::Order))
            .await?;
        let want = upto.unwrap_or(self.config.rows);
        self.push(Measurement::new(group, name, Kind::Tranche, want, want, seconds).with_cpu(cpu));
        Ok(())
    }

    /// One run of a fresh job, as [`Self::tranche_on`], without recording
    /// it: the seconds it took, planning included, and the CPU (the
    /// PostgreSQL server's only when the store is there).
    async fn tranche_seconds(
        &mut self,
        runtime: RuntimeHandle,
        group: &str,
        name: &str,
        sink: Arc<dyn Sink>,
        (upto, walk): (Option<u64>, data::Walk),
    ) -> Result<(f64, cpu::Cpu), BenchError> {
        let c = self.config;
        self.runs += 1;
        let job_name = format!(
            "bench-{}-{}",
            name.replace(|ch: char| !ch.is_ascii_alphanumeric(), "-"),
            self.runs
        );
        let job = data::job(
            &job_name,
            data::TABLE,
            sink,
            c.partitions,
            (upto, walk),
            self.stamp,
        )?;
        let on_postgres = runtime.store().dialect() == tranche::store::Dialect::Postgres;
        let meter = cpu::Meter::start(self.server.as_ref().filter(|_| on_postgres));
        let started = Instant::now();
        let report = runtime.run(job).await;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = meter.stop();
        runtime.shutdown().await;
        let report = report?;
        let want = upto.unwrap_or(c.rows);
        if report.state != RunState::Done || report.rows_done != want as i64 {
            return Err(BenchError::Config(format!(
                "{group} / {name}: the run ended {:?} with {} of {want} rows",
                report.state, report.rows_done
            )));
        }
        Ok((seconds, cpu))
    }

    /// The sequential worker and the modulo workers into `sink`, over `rows` rows.
    async fn legacy(
        &mut self,
        group: &str,
        sink: Arc<dyn Sink>,
        rows: u64,
    ) -> Result<(), BenchError> {
        let c = self.config;
        let plan = legacy::Plan {
            url: self.url.clone(),
            table: data::TABLE.to_owned(),
            sink,
            job: "bench-s1".into(),
            version: self.stamp,
            page_size: c.page_size,
            upto: (rows < c.rows).then_some(rows),
        };
        self.progress.step(&format!("{group}: sequential worker"));
        let meter = self.meter();
        let one = legacy::run(&plan, 1, c.baseline_budget).await?;
        self.push(
            Measurement::new(
                group,
                SEQUENTIAL,
                Kind::Baseline,
                rows,
                one.rows,
                one.elapsed.as_secs_f64(),
            )
            .with_cpu(meter.stop()),
        );
        self.progress.step(&format!("{group}: modulo workers"));
        // Ids of their own, so a broker does not take them for replays of
        // the baseline's.
        let plan = legacy::Plan {
            job: "bench-s1-quick-fix".into(),
            ..plan
        };
        let meter = self.meter();
        let n = legacy::run(&plan, c.quick_fix_workers, c.baseline_budget).await?;
        let name = self.quick_fix();
        self.push(
            Measurement::new(
                group,
                &name,
                Kind::Baseline,
                rows,
                n.rows,
                n.elapsed.as_secs_f64(),
            )
            .with_cpu(meter.stop()),
        );
        Ok(())
    }
}

/// Runs every measurement `config` asks for and returns the report (also
/// when some were skipped: brokers that cannot be reached, no binary for
/// the memory rows).
pub async fn run(
    config: &BenchConfig,
    progress: &mut dyn Progress,
) -> Result<BenchReport, BenchError> {
    config.validate()?;
    // The bench connects to PostgreSQL directly, not only through stores.
    tranche::internals::init_openssl();
    std::fs::create_dir_all(&config.out_dir)
        .map_err(|e| BenchError::step(&format!("creating {}", config.out_dir.display()), e))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as i64);
    progress.step(&format!("creating the database {}", config.database));
    let url =
        tokio::task::block_in_place(|| data::bench_database(&config.pg_url, &config.database))?;
    let mut b = Bench {
        config,
        url: url.clone(),
        stamp,
        runs: 0,
        report: BenchReport::default(),
        progress,
        server: cpu::Server::of(&url),
    };
    b.report.settings = settings(config);
    b.report.settings.insert(
        "CPU".into(),
        if b.server.is_some() {
            "process CPU (user + system) from /proc: the bench's own while tranche, a bare client or a baseline runs in it, a peer's as it reports it; the PostgreSQL server's as the postmaster and its children, those exited included".into()
        } else {
            "process CPU (user + system) from /proc; the PostgreSQL server's is not measured (not on this machine, or its processes cannot be read)".into()
        },
    );
    let c = config;

    b.progress.step(&format!(
        "seeding {} rows of {} payload bytes",
        c.rows, c.payload_bytes
    ));
    let seeded = Instant::now();
    tokio::task::block_in_place(|| {
        data::seed_postgres(&url, data::TABLE, c.rows, c.payload_bytes)
    })?;
    b.report.settings.insert(
        "seeding".into(),
        format!("{:.1} s", seeded.elapsed().as_secs_f64()),
    );

    // Reading alone, then tranche reading into the null sink, in rounds.
    read_rows(&mut b).await?;

    // The brokers on this machine, then at a remote broker's round trip.
    #[cfg(any(feature = "amqp", feature = "nats", feature = "kafka"))]
    {
        let mut round_trips = vec![Duration::ZERO];
        if !c.broker_rtt.is_zero() {
            round_trips.push(c.broker_rtt);
        }
        for rtt in round_trips {
            for (broker, url) in Broker::configured(c) {
                if !rtt.is_zero() && !broker.behind_relay() {
                    continue;
                }
                let group = broker_group_name(broker.name(), rtt);
                let done = async {
                    let route = Route::new(&group, &url, broker.default_port(), rtt, c).await?;
                    broker.rows(&mut b, &route).await
                };
                if let Err(e) = done.await {
                    b.skip(&group, e);
                }
            }
        }
    }

    // A sink whose every confirmation takes the same time.
    for &rows in &c.latency_rows {
        let group = format!("latency {} ms, {rows} rows", c.latency.as_millis());
        let sink: Arc<dyn Sink> = Arc::new(NullSink::with_delay(c.latency));
        b.legacy(&group, Arc::clone(&sink), rows).await?;
        b.progress.step(&format!("{group}: tranche"));
        let upto = (rows < c.rows).then_some(rows);
        b.tranche(&group, "tranche", &url.clone(), sink, upto)
            .await?;
    }

    // The update step, last since it rewrites the table.
    b.progress
        .step("tranche, update step, SQLite (seeding first)");
    let sqlite_path = c.out_dir.join("bench.db");
    remove_sqlite(&sqlite_path);
    let sqlite = format!("sqlite://{}", sqlite_path.display());
    {
        let runtime = b.runtime(&sqlite).await?;
        let store = runtime.store().clone();
        data::seed_sqlite(&store, c.rows, c.payload_bytes).await?;
        let sink = Arc::new(UpdateSink::new(store, update_spec()?));
        b.tranche_on(runtime, UPDATE, "tranche, update step, SQLite", sink, None)
            .await?;
    }
    remove_sqlite(&sqlite_path);
    b.progress.step("tranche, update step, PostgreSQL");
    {
        let runtime = b.runtime(&url).await?;
        let sink = Arc::new(UpdateSink::new(runtime.store().clone(), update_spec()?));
        b.tranche_on(
            runtime,
            UPDATE,
            "tranche, update step, PostgreSQL",
            sink,
            None,
        )
        .await?;
    }

    // The same table on MySQL or MariaDB: read alone and by tranche, then
    // the update step there.
    if let Some(admin) = c.mysql_url.clone() {
        #[cfg(feature = "mysql")]
        if let Err(e) = mysql_rows(&mut b, &admin).await {
            b.skip("MySQL", e);
        }
        #[cfg(not(feature = "mysql"))]
        {
            let _ = admin;
            b.skip("MySQL", "this build has no mysql feature");
        }
    }

    // Peak memory of a separate tranche process per table size.
    for &rows in &c.memory_rows {
        let Some(exe) = c.tranche_exe.clone() else {
            b.skip(&format!("memory at {rows} rows"), "no tranche binary given");
            continue;
        };
        b.progress
            .step(&format!("memory: tranche run over {rows} rows"));
        match memory(c, &url, &exe, rows).await {
            Ok(m) => {
                println!(
                    "    peak RSS {:.1} MiB",
                    m.peak_rss_bytes as f64 / 1048576.0
                );
                b.report.memory.push(m)
            }
            Err(e) => b.skip(&format!("memory at {rows} rows"), e),
        }
    }

    b.report.compute_ratios();
    b.report.targets = targets(&b.report, c);
    Ok(b.report)
}

/// The read group: the keyset walk, `COPY`, and tranche into the null
/// sink in `(order, key)` order and in key order alone, run [`BenchConfig::read_rounds`] times in turn (so a slow spell
/// of the machine falls on all three alike), each after a `CHECKPOINT` so
/// no flush of earlier writes lands inside a measurement. Each reports its
/// median round.
async fn read_rows(b: &mut Bench<'_>) -> Result<(), BenchError> {
    let c = b.config;
    let url = b.url.clone();
    let rounds = c.read_rounds as usize;
    let mut walk = Vec::with_capacity(rounds);
    let mut copy = Vec::with_capacity(rounds);
    let mut null = Vec::with_capacity(rounds);
    let mut by_key = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let of = format!("round {round} of {rounds}");
        b.progress.step(&format!("keyset walk, {of}"));
        tokio::task::block_in_place(|| limits::checkpoint(&url))?;
        let meter = b.meter();
        let (rows, took) =
            tokio::task::block_in_place(|| limits::keyset_walk(&url, data::TABLE, c.page_size))?;
        walk.push((rows, took, meter.stop()));
        b.progress.step(&format!("COPY TO STDOUT, {of}"));
        tokio::task::block_in_place(|| limits::checkpoint(&url))?;
        let meter = b.meter();
        let (rows, took) = tokio::task::block_in_place(|| limits::copy_out(&url))?;
        copy.push((rows, took, meter.stop()));
        for (name, walk, runs) in [
            ("tranche, null sink", data::Walk::Order, &mut null),
            ("tranche, key order only", data::Walk::Key, &mut by_key),
        ] {
            b.progress.step(&format!("{name}, {of}"));
            let runtime = b.runtime(&url).await?;
            tokio::task::block_in_place(|| limits::checkpoint(&url))?;
            let (seconds, cpu) = b
                .tranche_seconds(runtime, READ, name, Arc::new(NullSink::new()), (None, walk))
                .await?;
            runs.push((c.rows, Duration::from_secs_f64(seconds), cpu));
        }
    }
    for (name, kind, runs) in [
        ("keyset walk, 1 connection", Kind::Limit, walk),
        ("COPY TO STDOUT", Kind::Limit, copy),
        ("tranche, null sink", Kind::Tranche, null),
        ("tranche, key order only", Kind::Tranche, by_key),
    ] {
        let (rows, took, cpu) = median(runs);
        b.push(Measurement::new(READ, name, kind, rows, rows, took.as_secs_f64()).with_cpu(cpu));
    }
    Ok(())
}

/// The MySQL read group (the keyset walk alone, then tranche into the null
/// sink, in rounds, each reporting its median) and the update step on the
/// same server. The group is named after the server (`MariaDB read`).
#[cfg(feature = "mysql")]
async fn mysql_rows(b: &mut Bench<'_>, admin: &str) -> Result<(), BenchError> {
    let c = b.config;
    b.progress
        .step(&format!("MySQL: creating the database {}", c.database));
    let (url, server) = tokio::task::block_in_place(|| mysql::bench_database(admin, &c.database))?;
    b.report.settings.insert(
        server.clone(),
        format!("{}: InnoDB table", tranche::redact::redact_url(admin)),
    );
    b.progress
        .step(&format!("{server}: seeding {} rows", c.rows));
    tokio::task::block_in_place(|| mysql::seed(&url, data::TABLE, c.rows, c.payload_bytes))?;
    let group = format!("{server} read");
    let rounds = c.read_rounds as usize;
    let (mut walk, mut null) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let of = format!("round {round} of {rounds}");
        b.progress.step(&format!("{group}: keyset walk, {of}"));
        let meter = cpu::Meter::start(None);
        let (rows, took) =
            tokio::task::block_in_place(|| mysql::keyset_walk(&url, data::TABLE, c.page_size))?;
        walk.push((rows, took, meter.stop()));
        b.progress
            .step(&format!("{group}: tranche, null sink, {of}"));
        let runtime = b.runtime(&url).await?;
        let (seconds, cpu) = b
            .tranche_seconds(
                runtime,
                &group,
                "tranche, null sink",
                Arc::new(NullSink::new()),
                (None, data::Walk::Order),
            )
            .await?;
        null.push((c.rows, Duration::from_secs_f64(seconds), cpu));
    }
    for (name, kind, runs) in [
        ("keyset walk, 1 connection", Kind::Limit, walk),
        ("tranche, null sink", Kind::Tranche, null),
    ] {
        let (rows, took, cpu) = median(runs);
        b.push(Measurement::new(&group, name, kind, rows, rows, took.as_secs_f64()).with_cpu(cpu));
    }
    let name = format!("tranche, update step, {server}");
    b.progress.step(&name);
    let runtime = b.runtime(&url).await?;
    let sink = Arc::new(UpdateSink::new(runtime.store().clone(), update_spec()?));
    b.tranche_on(runtime, UPDATE, &name, sink, None).await
}

/// Removes a SQLite database and its write-ahead log and shared-memory
/// files (the log of the update step's million rows is hundreds of MiB).
fn remove_sqlite(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(side);
    }
}

/// The median of the rounds by time (the upper one of an even count).
fn median(mut runs: Vec<(u64, Duration, cpu::Cpu)>) -> (u64, Duration, cpu::Cpu) {
    runs.sort_by_key(|r| r.1);
    runs[runs.len() / 2]
}

fn update_spec() -> Result<UpdateSpec, BenchError> {
    Ok(UpdateSpec::new(data::TABLE, "id", "version")?)
}

/// The name of a broker's group: the broker's alone on this machine,
/// with the round trip added when `rtt` is not zero.
fn broker_group_name(broker: &str, rtt: Duration) -> String {
    if rtt.is_zero() {
        broker.to_owned()
    } else {
        format!("{broker}, {} ms round trip", rtt.as_millis())
    }
}

/// A broker the bench measures, by the cargo feature that brings it.
#[cfg(any(feature = "amqp", feature = "nats", feature = "kafka"))]
#[derive(Clone, Copy)]
enum Broker {
    #[cfg(feature = "amqp")]
    RabbitMQ,
    #[cfg(feature = "nats")]
    JetStream,
    #[cfg(feature = "kafka")]
    Kafka,
}

#[cfg(any(feature = "amqp", feature = "nats", feature = "kafka"))]
impl Broker {
    /// The brokers `c` names, in the order they are measured, with their
    /// URLs.
    fn configured(c: &BenchConfig) -> Vec<(Self, String)> {
        let mut out = Vec::new();
        #[cfg(feature = "amqp")]
        out.extend(c.amqp_url.clone().map(|u| (Self::RabbitMQ, u)));
        #[cfg(feature = "nats")]
        out.extend(c.nats_url.clone().map(|u| (Self::JetStream, u)));
        #[cfg(feature = "kafka")]
        out.extend(c.kafka_brokers.clone().map(|u| (Self::Kafka, u)));
        out
    }

    /// The name its groups start with.
    fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "amqp")]
            Self::RabbitMQ => "RabbitMQ",
            #[cfg(feature = "nats")]
            Self::JetStream => "JetStream",
            #[cfg(feature = "kafka")]
            Self::Kafka => "Kafka",
        }
    }

    /// The port of a URL that names none.
    fn default_port(self) -> u16 {
        match self {
            #[cfg(feature = "amqp")]
            Self::RabbitMQ => 5672,
            #[cfg(feature = "nats")]
            Self::JetStream => 4222,
            #[cfg(feature = "kafka")]
            Self::Kafka => 9092,
        }
    }

    /// Whether the delay relay can stand in front of it: not Kafka, whose
    /// clients connect to the address the broker advertises.
    fn behind_relay(self) -> bool {
        match self {
            #[cfg(feature = "kafka")]
            Self::Kafka => false,
            #[allow(unreachable_patterns)]
            _ => true,
        }
    }

    /// Its group's rows over `route`.
    async fn rows(self, b: &mut Bench<'_>, route: &Route) -> Result<(), BenchError> {
        match self {
            #[cfg(feature = "amqp")]
            Self::RabbitMQ => amqp_rows(b, route).await,
            #[cfg(feature = "nats")]
            Self::JetStream => nats_rows(b, route).await,
            #[cfg(feature = "kafka")]
            Self::Kafka => kafka_rows(b, route).await,
        }
    }
}

/// Where a broker group's messages go.
#[cfg(any(feature = "amqp", feature = "nats", feature = "kafka"))]
struct Route {
    /// The group's name.
    group: String,
    /// The broker's own URL: for setting up and emptying its queue or
    /// stream, never measured.
    admin: String,
    /// The URL the measured clients publish to: the broker's own, or the
    /// relay's in front of it.
    url: String,
    /// Rows each measurement publishes.
    rows: u64,
    /// The relay adding the round trip, kept open as long as the route.
    _relay: Option<delay::DelayProxy>,
}

#[cfg(any(feature = "amqp", feature = "nats", feature = "kafka"))]
impl Route {
    /// To the broker at `url` (`default_port` when it names none): straight
    /// there over all the bench's rows when `rtt` is zero, else through a
    /// relay adding `rtt` to every round trip, over
    /// [`BenchConfig::broker_rtt_rows`].
    async fn new(
        group: &str,
        url: &str,
        default_port: u16,
        rtt: Duration,
        c: &BenchConfig,
    ) -> Result<Self, BenchError> {
        let mut route = Self {
            group: group.to_owned(),
            admin: url.to_owned(),
            url: url.to_owned(),
            rows: c.rows,
            _relay: None,
        };
        if !rtt.is_zero() {
            let upstream = delay::upstream(url, default_port)?;
            let relay = delay::DelayProxy::start(upstream, rtt / 2)
                .await
                .map_err(|e| BenchError::step("starting the delay relay", e))?;
            route.url = relay.url(url)?;
            route.rows = c.broker_rtt_rows;
            route._relay = Some(relay);
        }
        Ok(route)
    }
}

/// A broker's rows: its bare client (`raw`), the sequential and modulo workers
/// through `baseline`, and tranche through `sink`, each over the route's
/// rows, with the queue or stream emptied (`purge`) before each and after
/// the last.
#[cfg(any(feature = "amqp", feature = "nats", feature = "kafka"))]
async fn broker_group<P, F, R>(
    b: &mut Bench<'_>,
    route: &Route,
    sink: Arc<dyn Sink>,
    baseline: Arc<dyn Sink>,
    raw: R,
    purge: P,
) -> Result<(), BenchError>
where
    P: Fn() -> F,
    F: std::future::Future<Output = Result<(), BenchError>>,
    R: std::future::Future<Output = Result<(u64, Duration), BenchError>>,
{
    let group = route.group.as_str();
    purge().await?;
    b.progress.step(&format!("{group}: bare client, pipelined"));
    let meter = b.meter();
    let (rows, took) = raw.await?;
    b.push(
        Measurement::new(
            group,
            "bare client, pipelined",
            Kind::Limit,
            rows,
            rows,
            took.as_secs_f64(),
        )
        .with_cpu(meter.stop()),
    );
    purge().await?;
    b.legacy(group, baseline, route.rows).await?;
    purge().await?;
    b.progress.step(&format!("{group}: tranche"));
    let upto = (route.rows < b.config.rows).then_some(route.rows);
    b.tranche(group, "tranche", &b.url.clone(), sink, upto)
        .await?;
    purge().await
}

#[cfg(feature = "amqp")]
async fn amqp_rows(b: &mut Bench<'_>, route: &Route) -> Result<(), BenchError> {
    use tranche::sink::{AmqpConfig, AmqpSink};
    let c = b.config;
    let name = c.database.clone();
    let mut config = AmqpConfig::new(&route.url, &name, &name);
    config.queue = Some(name.clone());
    config.window = c.window;
    let sink = AmqpSink::new(config)?;
    sink.connect()
        .await
        .map_err(|e| BenchError::step("RabbitMQ", e))?;
    let raw = limits::raw_amqp(
        &route.url,
        &name,
        &name,
        route.rows,
        c.payload_bytes,
        c.window,
    );
    let sink: Arc<dyn Sink> = Arc::new(sink);
    broker_group(b, route, Arc::clone(&sink), sink, raw, || {
        purge_amqp(&route.admin, &name)
    })
    .await?;
    // The peers on this machine's broker only.
    if route._relay.is_none() {
        if let Err(e) = peer_rows(b, route, &name).await {
            b.skip(&format!("{}: peers", route.group), e);
        }
    }
    Ok(())
}

/// graphile-worker to the RabbitMQ group's exchange: one job per
/// 1,000-row range with tranche's concurrency, then one job per row with
/// the settings graphile-worker's performance page gives (24 jobs at
/// once, a local queue of 500), each stopped at its budget and projected.
/// Skipped, with the reason, without Node.js or the harness's packages.
#[cfg(feature = "amqp")]
async fn peer_rows(b: &mut Bench<'_>, route: &Route, exchange: &str) -> Result<(), BenchError> {
    let c = b.config;
    let Some(dir) = &c.peers_dir else {
        return Ok(());
    };
    let script = match peers::harness(dir) {
        Ok(s) => s,
        Err(why) => {
            b.skip(&format!("{}: peers (graphile-worker)", route.group), why);
            return Ok(());
        }
    };
    let url = b.url.clone();
    let target = peers::Target {
        pg_url: &url,
        amqp_url: &route.url,
        exchange,
        table: data::TABLE,
        rows: route.rows,
        version: b.stamp,
    };
    let range = 1000;
    let batched = c.concurrency;
    for (name, mode, concurrency, local_queue, budget) in [
        (
            format!("graphile-worker, a job per {range} rows ({batched} at once)"),
            peers::Mode::Range(range),
            batched,
            batched + 1,
            c.peer_budget,
        ),
        (
            "graphile-worker, a job per row (24 at once)".to_owned(),
            peers::Mode::Row,
            24,
            500,
            c.baseline_budget,
        ),
    ] {
        purge_amqp(&route.admin, exchange).await?;
        b.progress.step(&format!("{}: {name}", route.group));
        let meter = b.meter();
        let run = peers::run(
            &script,
            &target,
            mode,
            concurrency,
            local_queue,
            budget.as_secs().max(1),
        )?;
        let cpu = meter.stop_with(run.cpu);
        if run.rows_done == 0 {
            return Err(BenchError::Config(format!(
                "{name}: no job completed within {} s",
                budget.as_secs()
            )));
        }
        // Enqueueing is part of the work: a projected run's time is its
        // whole enqueue time and its work time scaled to every row.
        let share = run.rows_done as f64 / route.rows as f64;
        let seconds = run.enqueue_s * share + run.work_s;
        let mut m = Measurement::new(
            &route.group,
            &name,
            Kind::Peer,
            route.rows,
            run.rows_done,
            seconds,
        )
        .with_cpu(cpu);
        m.note = Some(format!(
            "{} jobs enqueued in {:.2} s (included){}; peak RSS {:.0} MiB",
            run.jobs,
            run.enqueue_s,
            if run.budget_hit {
                format!(", stopped after {:.0} s of work", run.work_s)
            } else {
                String::new()
            },
            run.peak_rss_bytes as f64 / 1048576.0
        ));
        b.push(m);
    }
    purge_amqp(&route.admin, exchange).await
}

#[cfg(feature = "amqp")]
async fn purge_amqp(url: &str, queue: &str) -> Result<(), BenchError> {
    use lapin::options::QueuePurgeOptions;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| BenchError::step("connecting to RabbitMQ", e))?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| BenchError::step("opening a channel", e))?;
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .map_err(|e| BenchError::step(&format!("purging {queue}"), e))?;
    let _ = conn.close(200, "purged".into()).await;
    Ok(())
}

#[cfg(feature = "nats")]
async fn nats_rows(b: &mut Bench<'_>, route: &Route) -> Result<(), BenchError> {
    use tranche::sink::{NatsConfig, NatsSink};
    let c = b.config;
    let stream = c.database.to_ascii_uppercase();
    let subject = format!("{}.rows", c.database);
    // A fresh stream for each group, as the database is fresh: an earlier
    // one may store other subjects, and its duplicate window holds the ids
    // that the baselines and the bare client send again.
    let client = async_nats::connect(&route.admin)
        .await
        .map_err(|e| BenchError::step("connecting to NATS", e))?;
    let _ = async_nats::jetstream::new(client)
        .delete_stream(&stream)
        .await;
    let mut config = NatsConfig::new(&route.url, &stream, &subject);
    config.window = c.window;
    let sink = NatsSink::new(config)?;
    sink.connect()
        .await
        .map_err(|e| BenchError::step("JetStream", e))?;
    let raw = limits::raw_nats(
        &route.url,
        &subject,
        route.rows,
        c.payload_bytes,
        c.window,
        b.stamp,
    );
    let sink: Arc<dyn Sink> = Arc::new(sink);
    broker_group(b, route, Arc::clone(&sink), sink, raw, || {
        purge_nats(&route.admin, &stream)
    })
    .await
}

#[cfg(feature = "nats")]
async fn purge_nats(url: &str, stream: &str) -> Result<(), BenchError> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| BenchError::step("connecting to NATS", e))?;
    let js = async_nats::jetstream::new(client);
    let s = js
        .get_stream(stream)
        .await
        .map_err(|e| BenchError::step(&format!("stream {stream}"), e))?;
    s.purge()
        .await
        .map_err(|e| BenchError::step(&format!("purging {stream}"), e))?;
    Ok(())
}

/// Kafka's rows, on a topic of the run's own (`{database}-{stamp}`, three
/// partitions) that is deleted at the end. Nothing is emptied between the
/// measurements: the idempotent producer keys its deduplication on the
/// producer, not on the message, so later ones are not taken for replays.
/// The baselines' sink sends each message at once (`linger.ms` 0), as a
/// client awaiting every message would be set up; tranche's and the bare
/// client's wait up to the sink's 5 ms to fill a batch.
#[cfg(feature = "kafka")]
async fn kafka_rows(b: &mut Bench<'_>, route: &Route) -> Result<(), BenchError> {
    use tranche::sink::{KafkaConfig, KafkaSink};
    let c = b.config;
    let brokers = route.url.clone();
    let first = brokers
        .strip_prefix("kafka://")
        .unwrap_or(&brokers)
        .split(',')
        .next()
        .unwrap_or_default()
        .to_owned();
    // librdkafka retries an absent broker for as long as its timeouts
    // allow; a closed port is told at once.
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&first),
    )
    .await
    .map_err(|_| BenchError::step(&format!("connecting to Kafka at {first}"), "timed out"))?
    .map_err(|e| BenchError::step(&format!("connecting to Kafka at {first}"), e))?;
    let topic = format!("{}-{}", c.database, b.stamp);
    let sink = KafkaSink::new(KafkaConfig::new(&brokers, &topic))?;
    sink.connect()
        .await
        .map_err(|e| BenchError::step("Kafka", e))?;
    let mut config = KafkaConfig::new(&brokers, &topic);
    config.properties = vec![("linger.ms".into(), "0".into())];
    let baseline = KafkaSink::new(config)?;
    baseline
        .connect()
        .await
        .map_err(|e| BenchError::step("Kafka", e))?;
    let raw = limits::raw_kafka(&brokers, &topic, route.rows, c.payload_bytes, c.window);
    let done = broker_group(
        b,
        route,
        Arc::new(sink),
        Arc::new(baseline),
        raw,
        || async { Ok(()) },
    )
    .await;
    delete_kafka_topic(&route.admin, &topic).await;
    done
}

/// Deletes `topic`, as far as the broker allows: the bench's results do
/// not depend on it.
#[cfg(feature = "kafka")]
async fn delete_kafka_topic(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: Result<AdminClient<DefaultClientContext>, _> = rdkafka::ClientConfig::new()
        .set(
            "bootstrap.servers",
            brokers.strip_prefix("kafka://").unwrap_or(brokers),
        )
        .create();
    if let Ok(admin) = admin {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        if let Err(e) = admin.delete_topics(&[topic], &options).await {
            tracing::warn!(topic, error = %e, "the bench could not delete its Kafka topic");
        }
    }
}

/// Runs `tranche run` over a table of `rows` rows into the null sink and
/// reads its peak resident set from its summary.
async fn memory(
    c: &BenchConfig,
    url: &str,
    exe: &Path,
    rows: u64,
) -> Result<MemoryMeasurement, BenchError> {
    let table = if rows == c.rows {
        data::TABLE.to_owned()
    } else {
        let table = format!("tranche_bench_rows_{rows}");
        let (u, t) = (url.to_owned(), table.clone());
        let payload = c.payload_bytes;
        tokio::task::block_in_place(|| data::seed_postgres(&u, &t, rows, payload))?;
        table
    };
    let job_file = c.out_dir.join(format!("memory-{rows}.toml"));
    let summary = c.out_dir.join(format!("memory-{rows}.json"));
    let text = format!(
        "database_url = {url:?}\n\n[job]\nname = \"bench-memory-{rows}\"\n\n\
         [source]\ntable = \"{table}\"\nkey_column = \"id\"\norder_column = \"at\"\ncolumns = [\"body\"]\n\n\
         [strategy]\nkind = \"range\"\npartitions = {}\n\n\
         [runtime]\nconcurrency = {}\npage_size = {}\n\n[sink]\nkind = \"null\"\n",
        c.partitions, c.concurrency, c.page_size
    );
    std::fs::write(&job_file, text).map_err(|e| BenchError::step("writing the job file", e))?;
    let started = Instant::now();
    let status = tokio::task::block_in_place(|| {
        std::process::Command::new(exe)
            .args(["run", "--quiet", "--config"])
            .arg(&job_file)
            .arg("--summary-json")
            .arg(&summary)
            .stdout(std::process::Stdio::null())
            .status()
    })
    .map_err(|e| BenchError::step(&format!("starting {}", exe.display()), e));
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&job_file);
    if table != data::TABLE {
        let (u, t) = (url.to_owned(), table.clone());
        let _ = tokio::task::block_in_place(|| data::drop_table(&u, &t));
    }
    let status = status?;
    if !status.success() {
        return Err(BenchError::Config(format!(
            "tranche run exited with {status}"
        )));
    }
    let text = std::fs::read_to_string(&summary)
        .map_err(|e| BenchError::step("reading the run summary", e))?;
    let _ = std::fs::remove_file(&summary);
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| BenchError::step("reading the run summary", e))?;
    if json["rows_done"].as_u64() != Some(rows) {
        return Err(BenchError::Config(format!(
            "the memory run did {} of {rows} rows",
            json["rows_done"]
        )));
    }
    let peak = json["peak_rss_bytes"].as_u64().ok_or_else(|| {
        BenchError::Config("the run summary has no peak_rss_bytes (not Linux?)".into())
    })?;
    Ok(MemoryMeasurement {
        rows,
        peak_rss_bytes: peak,
        seconds,
    })
}

/// The settings printed with the results.
fn settings(c: &BenchConfig) -> std::collections::BTreeMap<String, String> {
    let mut s = std::collections::BTreeMap::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    s.insert(
        "machine".into(),
        format!(
            "{} {}, {cores} cores",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
    );
    s.insert("table".into(), format!("{} rows, payload {} bytes, PostgreSQL (unlogged table, same server as tranche's state)", c.rows, c.payload_bytes));
    s.insert(
        "tranche".into(),
        format!(
            "concurrency {}, {} range partitions, page {} rows, checkpoint per page",
            c.concurrency, c.partitions, c.page_size
        ),
    );
    s.insert("RabbitMQ".into(), format!("{}: persistent messages (delivery mode 2), mandatory, publisher confirms, durable queue, window {}", c.amqp_url.as_deref().map_or("not measured".into(), tranche::redact::redact_url), c.window));
    s.insert(
        "JetStream".into(),
        format!(
            "{}: file storage, Nats-Msg-Id per message, acknowledgements awaited, window {}",
            c.nats_url
                .as_deref()
                .map_or("not measured".into(), tranche::redact::redact_url),
            c.window
        ),
    );
    s.insert(
        "Kafka".into(),
        format!(
            "{}: idempotent producer, acks=all, a topic of 3 partitions, message key and message-id header per message, window {}; tranche and the bare client linger 5 ms, the baselines 0 ms; on this machine only (clients connect to the address the broker advertises, past any relay)",
            c.kafka_brokers.as_deref().unwrap_or("not measured"),
            c.window
        ),
    );
    s.insert(
        "brokers at a distance".into(),
        if c.broker_rtt.is_zero() {
            "not measured".into()
        } else {
            format!(
                "{} rows through a relay inside the bench that holds every byte {:.1} ms on its way in each direction ({} ms round trip, as a remote broker's confirmations take); latency only, no bandwidth cap or loss; the database stays local",
                c.broker_rtt_rows,
                c.broker_rtt.as_secs_f64() * 500.0,
                c.broker_rtt.as_millis()
            )
        },
    );
    s.insert("baselines".into(), format!("sequential worker: 1 worker, pages of {} rows, each message confirmed before the next; modulo workers: {} workers, id % {} = k in SQL, each the same; stopped after {} s and projected", c.page_size, c.quick_fix_workers, c.quick_fix_workers, c.baseline_budget.as_secs()));
    s.insert(
        "reads".into(),
        format!(
            "keyset walk, COPY and tranche into the null sink in turn, {} rounds, a CHECKPOINT before each; each shows its median round; statements prepared (walk and tranche alike); tranche's time includes planning the run",
            c.read_rounds
        ),
    );
    s.insert(
        "latency-bound sink".into(),
        format!(
            "every delivery confirmed {} ms after it is made",
            c.latency.as_millis()
        ),
    );
    s
}

/// The targets the bench holds tranche to, against what this run measured.
fn targets(r: &BenchReport, c: &BenchConfig) -> Vec<Target> {
    let mut out = Vec::new();
    let rate = |g: &str, n: &str| r.find(g, n).map(|m| m.rows_per_s);
    let ratio = |what: String, t: Option<f64>, o: Option<f64>, want: f64| {
        let got = t.zip(o).map(|(t, o)| t / o.max(1e-9));
        Target {
            what,
            wanted: format!("at least {want}x"),
            measured: got.map_or("-".into(), |g| format!("{g:.2}x")),
            met: got.map(|g| g >= want),
        }
    };
    // On this machine tranche must keep up with (RabbitMQ: beat) a bare
    // client; at a distance, where the window bounds both, come close.
    // Against the sequential worker, 100x here and 200x at a distance,
    // where its every confirmation waits the round trip.
    for (broker, here, far) in [("RabbitMQ", 1.5, 0.8), ("JetStream", 0.9, 0.7)] {
        let mut groups = vec![(broker.to_owned(), here, 100.0)];
        if !c.broker_rtt.is_zero() {
            groups.push((broker_group_name(broker, c.broker_rtt), far, 200.0));
        }
        for (group, raw_share, over_s1) in &groups {
            let t = rate(group, "tranche");
            out.push(ratio(
                format!("{group}: tranche / bare client"),
                t,
                rate(group, "bare client, pipelined"),
                *raw_share,
            ));
            out.push(ratio(
                format!("{group}: tranche / sequential worker"),
                t,
                rate(group, SEQUENTIAL),
                *over_s1,
            ));
        }
    }
    // Ahead of the peer a user would pick instead, and cheaper per row.
    let batched = format!(
        "graphile-worker, a job per 1000 rows ({} at once)",
        c.concurrency
    );
    let tranche_rabbit = r.find("RabbitMQ", "tranche");
    let peer = r.find("RabbitMQ", &batched);
    out.push(ratio(
        format!("RabbitMQ: tranche / {batched}"),
        tranche_rabbit.map(|m| m.rows_per_s),
        peer.map(|m| m.rows_per_s),
        1.3,
    ));
    let t_cpu = tranche_rabbit.and_then(Measurement::cpu_per_m_rows);
    let p_cpu = peer.and_then(Measurement::cpu_per_m_rows);
    out.push(Target {
        what: "RabbitMQ: tranche's process CPU per 1M rows against that peer's".into(),
        wanted: "less".into(),
        measured: match (t_cpu, p_cpu) {
            (Some(t), Some(p)) => format!("{t:.2} s against {p:.2} s"),
            _ => "-".into(),
        },
        met: t_cpu.zip(p_cpu).map(|(t, p)| t < p),
    });
    // What checkpoints, leases and claims cost the database: the server's
    // CPU in tranche's RabbitMQ run beyond what reading the same rows in
    // the same pages alone costs it.
    let walk_pg = r
        .find(READ, "keyset walk, 1 connection")
        .and_then(Measurement::postgres_per_m_rows);
    let run_pg = tranche_rabbit.and_then(Measurement::postgres_per_m_rows);
    let extra = run_pg.zip(walk_pg).map(|(t, w)| (t - w).max(0.0));
    out.push(Target {
        what: "RabbitMQ: PostgreSQL CPU per 1M rows for tranche's checkpoints and leases (its run's beyond the keyset walk's)".into(),
        wanted: "at most 1.5 s".into(),
        measured: extra.map_or("-".into(), |e| format!("{e:.2} s")),
        met: extra.map(|e| e <= 1.5),
    });
    let null = rate(READ, "tranche, null sink");
    out.push(ratio(
        "PostgreSQL read: null sink / COPY TO STDOUT".into(),
        null,
        rate(READ, "COPY TO STDOUT"),
        0.8,
    ));
    out.push(ratio(
        "PostgreSQL read: null sink / keyset walk".into(),
        null,
        rate(READ, "keyset walk, 1 connection"),
        1.0,
    ));
    if let Some(&rows) = c.latency_rows.iter().min() {
        let group = format!("latency {} ms, {rows} rows", c.latency.as_millis());
        let t = r.find(&group, "tranche").map(|m| m.seconds);
        out.push(Target {
            what: format!("latency-bound sink, {rows} rows: tranche"),
            wanted: "under 0.5 s".into(),
            measured: t.map_or("-".into(), |s| format!("{s:.3} s")),
            met: t.map(|s| s < 0.5),
        });
        let s1 = r.find(&group, SEQUENTIAL).map(|m| m.seconds);
        out.push(Target {
            what: format!("latency-bound sink, {rows} rows: sequential worker (for reference)"),
            wanted: format!("about {:.0} s", rows as f64 * c.latency.as_secs_f64()),
            measured: s1.map_or("-".into(), |s| format!("{s:.1} s")),
            met: None,
        });
        out.push(ratio(
            format!("latency-bound sink, {rows} rows: tranche / sequential worker"),
            rate(&group, "tranche"),
            rate(&group, SEQUENTIAL),
            100.0,
        ));
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    let small = r.memory.iter().min_by_key(|m| m.rows);
    let large = r.memory.iter().max_by_key(|m| m.rows);
    out.push(Target {
        what: small.map_or("peak memory (not measured)".into(), |m| {
            format!("peak memory at {} rows", m.rows)
        }),
        wanted: "at most 32 MiB".into(),
        measured: small.map_or("-".into(), |m| format!("{:.1} MiB", mib(m.peak_rss_bytes))),
        met: small.map(|m| mib(m.peak_rss_bytes) <= 32.0),
    });
    if let (Some(s), Some(l)) = (small, large) {
        if l.rows > s.rows {
            let growth = l.peak_rss_bytes as f64 / s.peak_rss_bytes.max(1) as f64 - 1.0;
            out.push(Target {
                what: format!("peak memory at {} rows against {} rows", l.rows, s.rows),
                wanted: "within 10%".into(),
                measured: format!("{:+.1}%", growth * 100.0),
                met: Some(growth <= 0.10),
            });
        }
    }
    out
}

/// Writes `report` into `dir` as `bench.json`, `bench.md` and `bench.png`,
/// returning their paths.
pub fn write(report: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    let io = |p: &Path, e: std::io::Error| BenchError::step(&format!("writing {}", p.display()), e);
    let json = dir.join("bench.json");
    let text =
        serde_json::to_string_pretty(report).map_err(|e| BenchError::step("serialising", e))?;
    std::fs::write(&json, text).map_err(|e| io(&json, e))?;
    let md = dir.join("bench.md");
    std::fs::write(&md, report.to_markdown()).map_err(|e| io(&md, e))?;
    let png = dir.join("bench.png");
    let title = format!(
        "tranche bench: {}",
        report
            .settings
            .get("table")
            .map_or("", |s| s.split(',').next().unwrap_or(""))
    );
    chart::draw(report, &title, &png)?;
    Ok(vec![json, md, png])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_and_database_targets_compare_the_right_measurements() {
        let cpu = |process: f64, pg: f64| cpu::Cpu {
            process: cpu::CpuTime {
                user_s: process,
                system_s: 0.0,
            },
            postgres: Some(cpu::CpuTime {
                user_s: pg,
                system_s: 0.0,
            }),
        };
        let peer = "graphile-worker, a job per 1000 rows (4 at once)";
        let report = BenchReport {
            measurements: vec![
                Measurement::new(
                    READ,
                    "keyset walk, 1 connection",
                    Kind::Limit,
                    1000,
                    1000,
                    1.0,
                )
                .with_cpu(cpu(0.5, 1.0)),
                Measurement::new(READ, "COPY TO STDOUT", Kind::Limit, 1000, 1000, 1.0),
                Measurement::new(READ, "tranche, null sink", Kind::Tranche, 1000, 1000, 1.2),
                Measurement::new("RabbitMQ", "tranche", Kind::Tranche, 1000, 1000, 1.0)
                    .with_cpu(cpu(8.0, 3.0)),
                Measurement::new("RabbitMQ", peer, Kind::Peer, 1000, 1000, 1.2)
                    .with_cpu(cpu(10.0, 1.0)),
            ],
            ..BenchReport::default()
        };
        let mut c = BenchConfig::new("postgres://h/db");
        c.broker_rtt = Duration::ZERO;
        let targets = targets(&report, &c);
        let find = |what: &str| {
            targets
                .iter()
                .find(|t| t.what.starts_with(what))
                .unwrap_or_else(|| panic!("{what}: {targets:?}"))
        };
        // 1,000 rows a second against 833: 1.2x, short of 1.3x.
        let against_peer = find(&format!("RabbitMQ: tranche / {peer}"));
        assert_eq!(
            (against_peer.measured.as_str(), against_peer.met),
            ("1.20x", Some(false))
        );
        // 8 s of CPU per 1,000 rows against 10: 8,000 s and 10,000 s per 1M.
        let cheaper = find("RabbitMQ: tranche's process CPU");
        assert_eq!(cheaper.met, Some(true), "{cheaper:?}");
        // 3 s of server CPU in the run against 1 s in the walk, per 1,000
        // rows: 2,000 s per 1M beyond the walk's.
        let database = find("RabbitMQ: PostgreSQL CPU");
        assert_eq!(
            (database.measured.as_str(), database.met),
            ("2000.00 s", Some(false))
        );
        let copy = find("PostgreSQL read: null sink / COPY");
        assert_eq!((copy.measured.as_str(), copy.met), ("0.83x", Some(true)));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let err = |f: &dyn Fn(&mut BenchConfig)| {
            let mut c = BenchConfig::new("postgres://h/db");
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(err(&|c| c.rows = 0).starts_with("rows:"));
        assert!(err(&|c| c.latency_rows = vec![2_000_000]).starts_with("latency_rows:"));
        assert!(err(&|c| c.database = "x; DROP".into()).starts_with("database:"));
        assert!(err(&|c| c.window = 0).starts_with("window:"));
        assert!(err(&|c| c.broker_rtt_rows = 0).starts_with("broker_rtt_rows:"));
        assert!(err(&|c| c.broker_rtt_rows = 2_000_000).starts_with("broker_rtt_rows:"));
        // Without the round trip, the rows at a distance are not run.
        let mut c = BenchConfig::new("postgres://h/db");
        c.broker_rtt = Duration::ZERO;
        c.broker_rtt_rows = 0;
        assert!(c.validate().is_ok());
        assert!(BenchConfig::new("postgres://h/db").validate().is_ok());
    }
}

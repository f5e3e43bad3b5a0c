//! `tranche bench`: the end-to-end bench of [`super`], from the
//! command line, writing its table as JSON, Markdown and a PNG chart.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::bench::{self, BenchConfig, PrintProgress};

#[derive(clap::Parser)]
pub struct BenchArgs {
    /// PostgreSQL server (admin URL): the bench drops and creates the
    /// database --database beside the one named here.
    #[arg(
        long,
        env = "TRANCHE_BENCH_PG",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg: String,
    /// The bench's own database on that server (dropped and created again),
    /// also naming its RabbitMQ queue and JetStream stream.
    #[arg(long, default_value = "tranche_bench")]
    database: String,
    /// Rows in the table.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Bytes of each message's payload.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Rows per page (tranche and the keyset walk).
    #[arg(long, default_value_t = 1000)]
    page_size: usize,
    /// Rounds of the read group (walk, COPY, tranche into the null sink);
    /// each reports its median.
    #[arg(long, default_value_t = 3)]
    read_rounds: u32,
    /// tranche's partitions worked at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// tranche's range partitions.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Workers of the modulo-workers baseline.
    #[arg(long, default_value_t = 5)]
    quick_fix_workers: u64,
    /// Seconds a baseline may run before it is stopped and projected.
    #[arg(long, default_value_t = 20)]
    baseline_budget_s: u64,
    /// Each confirmation's delay in the latency-bound rows, ms.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Row counts for the latency-bound sink.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    latency_rows: Vec<u64>,
    /// RabbitMQ to measure.
    #[arg(
        long,
        env = "TRANCHE_BENCH_AMQP",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp: String,
    /// Leave RabbitMQ out.
    #[arg(long)]
    no_amqp: bool,
    /// NATS JetStream to measure.
    #[arg(
        long,
        env = "TRANCHE_BENCH_NATS",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,
    /// Leave JetStream out.
    #[arg(long)]
    no_nats: bool,
    /// Kafka to measure (bootstrap brokers, `host:port[,host:port...]`).
    #[arg(long, env = "TRANCHE_BENCH_KAFKA", default_value = "127.0.0.1:9092")]
    kafka: String,
    /// Leave Kafka out.
    #[arg(long)]
    no_kafka: bool,
    /// Round trip added to RabbitMQ and JetStream for the broker rows at a
    /// distance,
    /// ms (a relay inside the bench holds each byte half of it each way);
    /// 0 leaves those rows out.
    #[arg(long, default_value_t = 20)]
    broker_rtt_ms: u64,
    /// Rows of the broker rows at a distance.
    #[arg(long, default_value_t = 100_000)]
    broker_rtt_rows: u64,
    /// Unconfirmed messages in flight (tranche's broker sinks and the bare
    /// clients).
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Table sizes whose peak memory is measured; `none` for none.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    memory_rows: Vec<String>,
    /// A MySQL or MariaDB server (admin URL) whose read group and update
    /// step are measured; the bench drops and creates --database there.
    /// Needs a build with the mysql feature.
    #[arg(long, env = "TRANCHE_BENCH_MYSQL")]
    mysql: Option<String>,
    /// The peers' harness directory (graphile-worker, measured in the
    /// RabbitMQ group when Node.js and its packages are installed:
    /// `npm ci --prefix benches/peers`); `none` leaves the peers out.
    #[arg(long, default_value = "benches/peers")]
    peers: String,
    /// Seconds graphile-worker's batched configuration may work before it
    /// is stopped and projected (its job-per-row one gets
    /// --baseline-budget-s).
    #[arg(long, default_value_t = 600)]
    peer_budget_s: u64,
    /// Where the results (bench.json, bench.md, bench.png) go.
    #[arg(long, default_value = "target/tranche-bench")]
    out: PathBuf,
}

pub async fn bench_main(args: BenchArgs) -> anyhow::Result<i32> {
    let mut config = BenchConfig::new(&args.pg);
    config.database = args.database;
    config.rows = args.rows;
    config.payload_bytes = args.payload_bytes;
    config.page_size = args.page_size;
    config.read_rounds = args.read_rounds;
    config.concurrency = args.concurrency;
    config.partitions = args.partitions;
    config.quick_fix_workers = args.quick_fix_workers;
    config.baseline_budget = Duration::from_secs(args.baseline_budget_s);
    config.latency = Duration::from_millis(args.latency_ms);
    config.latency_rows = args.latency_rows;
    config.amqp_url = (!args.no_amqp).then_some(args.amqp);
    config.nats_url = (!args.no_nats).then_some(args.nats);
    config.kafka_brokers = (!args.no_kafka).then_some(args.kafka);
    config.broker_rtt = Duration::from_millis(args.broker_rtt_ms);
    config.broker_rtt_rows = args.broker_rtt_rows;
    config.window = args.window;
    config.memory_rows = args
        .memory_rows
        .iter()
        .filter(|r| r.as_str() != "none" && !r.is_empty())
        .map(|r| {
            r.parse()
                .map_err(|_| anyhow::anyhow!("--memory-rows: {r:?} is not a row count"))
        })
        .collect::<anyhow::Result<_>>()?;
    config.mysql_url = args.mysql;
    config.peers_dir = (args.peers != "none").then(|| PathBuf::from(&args.peers));
    config.peer_budget = Duration::from_secs(args.peer_budget_s);
    config.tranche_exe = std::env::current_exe().ok();
    config.out_dir = args.out;
    if cfg!(debug_assertions) {
        eprintln!("tranche bench: this is a debug build; measure with --release");
    }
    let report = bench::run(&config, &mut PrintProgress).await?;
    println!();
    print!("{}", report.to_text());
    println!("\nsettings:");
    for (k, v) in &report.settings {
        println!("  {k}: {v}");
    }
    for path in bench::write(&report, &config.out_dir)? {
        println!("wrote {}", path.display());
    }
    Ok(0)
}

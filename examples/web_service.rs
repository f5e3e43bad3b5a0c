//! A whole service embedding tranche in actix-web: `POST /backfill` starts
//! (or joins) a run, `GET /backfill` shows its progress, the console is
//! mounted under `/tranche/`, Prometheus metrics are on `/metrics`, and
//! SIGINT or SIGTERM stops it cleanly (the server drains, then the runtime
//! hands its partitions back at their last checkpoint).
//!
//! ```sh
//! cargo run --example web_service            # then open http://127.0.0.1:8080/tranche/
//! curl -XPOST http://127.0.0.1:8080/backfill
//! curl http://127.0.0.1:8080/backfill
//! ```
//!
//! `LISTEN` sets the address (default `127.0.0.1:8080`; port 0 lets the
//! system choose, and the first line printed says which), `DATABASE_URL`
//! the database (default: a SQLite file in a temporary directory), `ROWS`
//! the rows seeded (default 20,000) and `ROWS_PER_S` the run's throttle
//! (default 2,000, so that there is time to watch it).

use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tranche::job::Throttle;
use tranche::sink::NullSink;
use tranche::store::{Bind, Sql};
use tranche::web::Console;
use tranche::{
    Job, Message, RunHandle, RuntimeConfig, RuntimeHandle, Scope, Source, SourceRow, Strategy,
};

/// What the handlers share.
struct Service {
    runtime: RuntimeHandle,
    job: Job,
    metrics: PrometheusHandle,
    /// The latest backfill started here.
    latest: std::sync::Mutex<Option<RunHandle>>,
}

/// Starts the backfill, or joins the run already going on.
async fn start(service: web::Data<Service>) -> HttpResponse {
    match service.runtime.start_run(service.job.clone()) {
        Ok(run) => {
            let progress = run.progress();
            *service.latest.lock().unwrap() = Some(run);
            HttpResponse::Accepted().json(progress)
        }
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

/// The progress of the latest backfill started here, if any (its report
/// once it ended).
async fn progress(service: web::Data<Service>) -> HttpResponse {
    match service.latest.lock().unwrap().as_ref() {
        Some(run) => HttpResponse::Ok().json(run.progress()),
        None => HttpResponse::NotFound().body("no backfill was started here\n"),
    }
}

async fn serve_metrics(service: web::Data<Service>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(service.metrics.render())
}

fn backfill_job(rows_per_s: u64) -> anyhow::Result<Job> {
    Ok(Job::builder("welcome-backfill")
        .source(Source::new("users", "id", "signed_up")?)
        .strategy(Strategy::Range { partitions: 4 })
        .processor(|row: &SourceRow, _: &Scope| {
            let payload = format!("{{\"user\":{}}}", row.key).into_bytes();
            Ok(Some(Message::new("welcome", row.key, 1, payload)))
        })
        // A real service sends these to its broker (AmqpSink, NatsSink,
        // KafkaSink) or applies them (UpdateSink).
        .sink(Arc::new(NullSink::new()))
        .throttle(Throttle::default().with_max_rows_per_s(rows_per_s))
        .build()?)
}

async fn seed(runtime: &RuntimeHandle, rows: i64) -> anyhow::Result<()> {
    runtime
        .store()
        .run(move |c| {
            c.batch(
                "CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, signed_up BIGINT NOT NULL); \
                 CREATE INDEX IF NOT EXISTS users_signed_up ON users (signed_up, id)",
            )?;
            for chunk in (1..=rows).collect::<Vec<_>>().chunks(500) {
                let mut sql = Sql::new("INSERT INTO users (id, signed_up) VALUES ");
                for (i, id) in chunk.iter().enumerate() {
                    sql.push(
                        if i == 0 { "(?, ?)" } else { ", (?, ?)" },
                        [Bind::Int(*id), Bind::Int(id % 997)],
                    );
                }
                sql.push(" ON CONFLICT (id) DO NOTHING", None);
                c.execute(&sql)?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}")),
        Err(_) => Ok(default),
    }
}

#[actix::main]
async fn main() -> anyhow::Result<()> {
    let listen: std::net::SocketAddr = env_or("LISTEN", "127.0.0.1:8080".parse()?)?;
    let rows: i64 = env_or("ROWS", 20_000)?;
    let rows_per_s: u64 = env_or("ROWS_PER_S", 2_000)?;
    let dir = tempfile::tempdir()?;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("service.db").display()));

    // The host's own recorder: tranche's series land in it.
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let runtime = RuntimeHandle::start(RuntimeConfig::new(url)).await?;
    seed(&runtime, rows).await?;
    let job = backfill_job(rows_per_s)?;

    // The console can requeue this job's dead letters, since it has it.
    let console = Console::new(runtime.clone()).with_job(job.clone());
    let service = web::Data::new(Service {
        runtime: runtime.clone(),
        job,
        metrics,
        latest: Default::default(),
    });
    // actix-web stops on SIGINT and SIGTERM: it stops accepting, lets the
    // requests in flight finish, and `run` returns.
    let server = HttpServer::new(move || {
        App::new()
            .app_data(service.clone())
            .route("/backfill", web::post().to(start))
            .route("/backfill", web::get().to(progress))
            .route("/metrics", web::get().to(serve_metrics))
            .service(console.scope("/tranche"))
    })
    .workers(2)
    .bind(listen)?;
    let addr = server.addrs()[0];
    println!("listening on http://{addr}/ (console: http://{addr}/tranche/)");
    server.run().await?;

    // Then the runtime: pages in flight are confirmed and checkpointed,
    // partitions handed back, so another instance continues at once.
    let shutdown = runtime.shutdown().await;
    println!("stopped: {shutdown:?}");
    Ok(())
}

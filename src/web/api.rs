//! The console's JSON API under `api/`, and the probes.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{json, Value};

use super::Console;
use crate::control::{ControlError, Operator};
use crate::model::Throttle;
use crate::store::RunRecord;

/// What every handler shares: the console and the path it is mounted at.
pub(crate) struct Ctx {
    pub(super) console: Console,
    /// The scope's path, without a trailing slash (`""` at the root).
    pub(super) base: String,
}

/// Samples of a run's rows done shown in its chart: the last hour.
const CHART_WINDOW_MS: i64 = 3_600_000;
const CHART_SAMPLES: i64 = 720;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/api/runs", web::get().to(runs))
        .route("/api/runs/{id}", web::get().to(run))
        .route("/api/runs/{id}/dead-letters", web::get().to(dead_letters))
        .service(
            web::resource("/api/runs/{id}/dead-letters/requeue").route(web::post().to(requeue)),
        )
        .service(web::resource("/api/runs/{id}/pause").route(web::post().to(pause)))
        .service(web::resource("/api/runs/{id}/resume").route(web::post().to(resume)))
        .service(web::resource("/api/runs/{id}/cancel").route(web::post().to(cancel)))
        .service(web::resource("/api/runs/{id}/retry").route(web::post().to(retry)))
        .service(web::resource("/api/runs/{id}/throttle").route(web::post().to(throttle)))
        .route("/api/schedules", web::get().to(schedules));
}

/// A JSON error answer.
pub(super) fn error_response(status: StatusCode, why: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .insert_header(("cache-control", "no-store"))
        .body(json!({ "error": why }).to_string())
}

fn ok_json(value: &impl Serialize) -> HttpResponse {
    match serde_json::to_string(value) {
        Ok(body) => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("cache-control", "no-store"))
            .body(body),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// A request refused or failed: its status and why, answered as JSON.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    why: String,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, why: impl Into<String>) -> Self {
        Self {
            status,
            why: why.into(),
        }
    }

    fn bad_request(why: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, why)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl actix_web::ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        error_response(self.status, &self.why)
    }
}

impl From<ControlError> for Refusal {
    fn from(e: ControlError) -> Self {
        control_error(&e)
    }
}

impl From<crate::store::StoreError> for Refusal {
    fn from(e: crate::store::StoreError) -> Self {
        control_error(&e.into())
    }
}

type Answer = Result<HttpResponse, Refusal>;

/// The answer for a failed operation.
fn control_error(e: &ControlError) -> Refusal {
    let status = match e {
        ControlError::UnknownJob(_)
        | ControlError::UnknownRun { .. }
        | ControlError::UnknownPartition { .. } => StatusCode::NOT_FOUND,
        ControlError::NoActiveRun(_) | ControlError::Forbidden { .. } => StatusCode::CONFLICT,
        ControlError::Config(_) => StatusCode::BAD_REQUEST,
        ControlError::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "console request failed");
    }
    Refusal::new(status, e.to_string())
}

/// The run id in the path, or a 400 naming it.
pub(super) fn run_id(req: &HttpRequest) -> Result<i64, Refusal> {
    let raw = req.match_info().get("id").unwrap_or_default();
    raw.parse::<i64>()
        .map_err(|_| Refusal::bad_request(format!("the run id must be an integer, not {raw:?}")))
}

/// A query parameter `name` as a count in `1..=max`, `default` without it.
fn limit(req: &HttpRequest, name: &str, default: i64, max: i64) -> Result<i64, Refusal> {
    let Some(raw) = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
    else {
        return Ok(default);
    };
    match raw.parse::<i64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(Refusal::bad_request(format!(
            "{name} must be a whole number from 1 to {max}, not {raw:?}"
        ))),
    }
}

/// The operator acting for this request, named in the audit trail.
fn operator(ctx: &Ctx, req: &HttpRequest) -> Operator {
    let who = match req.peer_addr() {
        Some(peer) => format!("console {}", peer.ip()),
        None => "console".to_owned(),
    };
    Operator::new(ctx.console.inner.runtime.store().clone(), who)
}

/// The run of the path's id, or the answer to give instead.
pub(super) async fn find_run(ctx: &Ctx, req: &HttpRequest) -> Result<RunRecord, Refusal> {
    let id = run_id(req)?;
    ctx.console
        .inner
        .runtime
        .store()
        .find_run(id)
        .await?
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, format!("unknown run {id}")))
}

/// A JSON object body (an empty body is `{}`), or a 400 naming the problem.
fn object_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, Refusal> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Refusal::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(Refusal::bad_request(format!(
            "the request body is not JSON: {e}"
        ))),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(ctx: web::Data<Ctx>) -> HttpResponse {
    let store = ctx.console.inner.runtime.store();
    let answer = match store.now_ms().await {
        Err(e) => Err(format!("the database does not answer: {e}")),
        Ok(_) => match store.pending_migrations().await {
            Err(e) => Err(format!("cannot read the migrations: {e}")),
            Ok(pending) if !pending.is_empty() => Err(format!(
                "migrations not applied: {} (run `tranche migrate`)",
                pending.join(", ")
            )),
            Ok(_) => Ok(()),
        },
    };
    match answer {
        Ok(()) => ok_json(&json!({ "ready": true })),
        Err(why) => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(json!({ "ready": false, "reason": why }).to_string()),
    }
}

async fn runs(ctx: web::Data<Ctx>, req: HttpRequest) -> Answer {
    let limit = limit(&req, "limit", 50, 500)?;
    let now_ms = ctx.console.inner.runtime.store().now_ms().await?;
    let runs = operator(&ctx, &req).recent_runs(limit).await?;
    Ok(ok_json(&json!({ "now_ms": now_ms, "runs": runs })))
}

async fn run(ctx: web::Data<Ctx>, req: HttpRequest) -> Answer {
    let record = find_run(&ctx, &req).await?;
    let status = operator(&ctx, &req)
        .status(&record.job_name, Some(record.id))
        .await?;
    let samples = ctx
        .console
        .inner
        .runtime
        .store()
        .samples(record.id, status.now_ms - CHART_WINDOW_MS, CHART_SAMPLES)
        .await?;
    let mut value = serde_json::to_value(&status)
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Value::Object(map) = &mut value {
        map.insert("samples".into(), json!(samples));
        map.insert(
            "requeue".into(),
            json!(ctx.console.inner.jobs.contains_key(&record.job_name)),
        );
    }
    Ok(ok_json(&value))
}

async fn dead_letters(ctx: web::Data<Ctx>, req: HttpRequest) -> Answer {
    let record = find_run(&ctx, &req).await?;
    let limit = limit(&req, "limit", 500, 10_000)?;
    let store = ctx.console.inner.runtime.store();
    let total = store.dead_letter_count(record.id).await?;
    let letters = store.dead_letters_limited(record.id, limit).await?;
    Ok(ok_json(&json!({
        "run_id": record.id,
        "job": record.job_name,
        "total": total,
        "requeue": ctx.console.inner.jobs.contains_key(&record.job_name),
        "dead_letters": letters.iter().map(|d| json!({
            "row_key": d.row_key,
            "partition_id": d.partition_id,
            "reason": d.reason,
        })).collect::<Vec<_>>(),
    })))
}

async fn requeue(ctx: web::Data<Ctx>, req: HttpRequest) -> Answer {
    let record = find_run(&ctx, &req).await?;
    let Some(job) = ctx.console.inner.jobs.get(&record.job_name).cloned() else {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!(
                "this console cannot requeue the dead letters of job {:?}: it was started \
                 without that job (tranche serve --config FILE, or Console::with_job)",
                record.job_name
            ),
        ));
    };
    let runtime = &ctx.console.inner.runtime;
    let report = runtime.requeue_dead_letters(job, Some(record.id)).await?;
    Ok(ok_json(&report))
}

async fn state_change(ctx: web::Data<Ctx>, req: HttpRequest, op: &str) -> Answer {
    let record = find_run(&ctx, &req).await?;
    let operator = operator(&ctx, &req);
    let (job, id) = (record.job_name.as_str(), Some(record.id));
    let transition = match op {
        "pause" => operator.pause(job, id).await?,
        "resume" => operator.resume(job, id).await?,
        _ => operator.cancel(job, id).await?,
    };
    Ok(ok_json(&transition))
}

async fn pause(ctx: web::Data<Ctx>, req: HttpRequest) -> Answer {
    state_change(ctx, req, "pause").await
}

async fn resume(ctx: web::Data<Ctx>, req: HttpRequest) -> Answer {
    state_change(ctx, req, "resume").await
}

async fn cancel(ctx: web::Data<Ctx>, req: HttpRequest) -> Answer {
    state_change(ctx, req, "cancel").await
}

async fn retry(ctx: web::Data<Ctx>, req: HttpRequest, body: web::Bytes) -> Answer {
    let record = find_run(&ctx, &req).await?;
    let mut partition = None;
    for (key, value) in object_body(&body)? {
        match (key.as_str(), value) {
            ("partition", Value::Null) => {}
            ("partition", v) => match v.as_i64().and_then(|n| i32::try_from(n).ok()) {
                Some(n) => partition = Some(n),
                None => {
                    return Err(Refusal::bad_request(format!(
                        "partition must be a partition number, not {v}"
                    )))
                }
            },
            (other, _) => {
                return Err(Refusal::bad_request(format!(
                    "unknown field {other:?}: retry takes only \"partition\""
                )))
            }
        }
    }
    let n = operator(&ctx, &req)
        .retry(&record.job_name, Some(record.id), partition)
        .await?;
    Ok(ok_json(&json!({ "run_id": record.id, "partitions": n })))
}

async fn throttle(ctx: web::Data<Ctx>, req: HttpRequest, body: web::Bytes) -> Answer {
    let record = find_run(&ctx, &req).await?;
    let changes = object_body(&body)?;
    // The stored throttle with the fields given replaced, read back through
    // the throttle's own (strict) form: an unknown field or a wrong type is
    // named by it.
    let mut merged = match serde_json::to_value(&record.throttle) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for (key, value) in changes {
        if value.is_null() {
            merged.remove(&key);
        } else {
            merged.insert(key, value);
        }
    }
    let throttle: Throttle = serde_json::from_value(Value::Object(merged))
        .map_err(|e| Refusal::bad_request(format!("invalid throttle: {e}")))?;
    let throttle = operator(&ctx, &req)
        .set_throttle(&record.job_name, Some(record.id), throttle)
        .await?;
    Ok(ok_json(&throttle))
}

fn epoch_ms(t: std::time::SystemTime) -> Option<u128> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis())
}

async fn schedules(ctx: web::Data<Ctx>) -> Answer {
    let runtime = &ctx.console.inner.runtime;
    let here: Vec<Value> = runtime
        .schedules()
        .into_iter()
        .map(|s| {
            json!({
                "job": s.job,
                "schedule": s.schedule,
                "next_tick_ms": s.status.next_tick.and_then(epoch_ms),
                "ticks": s.status.ticks,
                "runs": s.status.runs,
                "skipped": s.status.skipped,
                "last_error": s.status.last_error,
                "finished": s.status.finished,
            })
        })
        .collect();
    // What the database knows: the latest run of each job a tick started.
    let recent = runtime.store().recent_runs(500).await?;
    let mut ticked: BTreeMap<String, (RunRecord, u64)> = BTreeMap::new();
    for run in recent {
        if !run
            .run_key
            .as_deref()
            .is_some_and(|k| k.starts_with("tick-"))
        {
            continue;
        }
        ticked
            .entry(run.job_name.clone())
            .and_modify(|(_, n)| *n += 1)
            .or_insert((run, 1));
    }
    let ticked: Vec<Value> = ticked
        .into_values()
        .map(|(run, n)| {
            json!({
                "job": run.job_name,
                "latest_tick": run.run_key.as_deref().and_then(|k| k.strip_prefix("tick-")),
                "latest_run": run.id,
                "state": run.state,
                "started_ms": run.started_ms,
                "finished_ms": run.finished_ms,
                "ticked_runs": n,
            })
        })
        .collect();
    Ok(ok_json(&json!({ "here": here, "ticked": ticked })))
}

//! The web console: its JSON API and pages over a real run, what it
//! refuses (unknown runs, malformed requests, forbidden actions, cross-site
//! actions, missing tokens), that database values reach the page as text,
//! and, in a real headless Chromium, pausing and resuming a live run.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tranche::job::Throttle;
use tranche::sink::NullSink;
use tranche::store::RunState;
use tranche::web::{Console, ConsoleError};
use tranche::{Job, Message, Poison, RuntimeConfig, RuntimeHandle, Scope, Source, SourceRow};

use common::{http, HttpAnswer};

/// What the processor rejects rows with: markup a careless page would run.
const XSS: &str = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=1;alert(1)</script>";

/// A job over `events` whose processor rejects every 100th row with the
/// markup above as its reason.
fn job(name: &str, throttle: Throttle) -> Job {
    let job_name = name.to_owned();
    Job::builder(name)
        .source(Source::new("events", "id", "at").unwrap())
        .strategy(tranche::Strategy::Range { partitions: 4 })
        .processor(move |row: &SourceRow, _: &Scope| {
            if row.key % 100 == 0 {
                return Err(Poison(format!("row {}: {XSS}", row.key)));
            }
            Ok(Some(Message::new(&job_name, row.key, 1, b"{}".to_vec())))
        })
        .sink(Arc::new(NullSink::new()))
        .throttle(throttle)
        .build()
        .unwrap()
}

async fn runtime(url: &str, rows: i64) -> RuntimeHandle {
    let mut config = RuntimeConfig::new(url);
    config.page_size = 25;
    config.concurrency = 2;
    config.poll_interval = Duration::from_millis(50);
    let runtime = RuntimeHandle::start(config).await.unwrap();
    common::seed_events(runtime.store(), rows, 10).await;
    runtime
}

fn get(addr: SocketAddr, path: &str) -> HttpAnswer {
    http(addr, "GET", path, &[], "")
}

fn act(addr: SocketAddr, path: &str, body: &str) -> HttpAnswer {
    http(addr, "POST", path, &[("X-Tranche-Console", "1")], body)
}

async fn api_case(url: String) {
    let runtime = runtime(&url, 300).await;
    let job = job("console-api", Throttle::default());
    let report = runtime.run(job.clone()).await.unwrap();
    assert_eq!(report.state, RunState::Done);
    let server = Console::new(runtime.clone())
        .with_job(job)
        .serve("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let addr = server.local_addr();
    let id = report.run_id;

    // The runs list and the run, as the report has them.
    let runs = get(addr, "/api/runs");
    assert_eq!(runs.status, 200, "{}", runs.body);
    assert!(runs
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let runs = runs.json();
    let first = &runs["runs"][0];
    assert_eq!(first["run"]["id"], id);
    assert_eq!(first["run"]["state"], "done");
    assert_eq!(first["run"]["rows_identified"], 300);
    let run = get(addr, &format!("/api/runs/{id}")).json();
    assert_eq!(run["rows_done"], 300);
    assert_eq!(run["dead_letters"], 3);
    assert_eq!(run["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(run["requeue"], true);
    let letters = get(addr, &format!("/api/runs/{id}/dead-letters?limit=2")).json();
    assert_eq!(letters["total"], 3);
    assert_eq!(letters["dead_letters"].as_array().unwrap().len(), 2);
    assert_eq!(letters["dead_letters"][0]["row_key"], 100);
    assert!(letters["dead_letters"][0]["reason"]
        .as_str()
        .unwrap()
        .contains(XSS));

    // Pages are shells the script fills; the reason never reaches HTML.
    for path in [
        "/",
        &format!("/runs/{id}"),
        &format!("/runs/{id}/dead-letters"),
        "/schedules",
    ] {
        let page = get(addr, path);
        assert_eq!(page.status, 200, "{path}");
        assert!(page
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(page
            .header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'"));
        assert!(
            !page.body.contains("<script>window"),
            "{path}: {}",
            page.body
        );
        assert!(
            !page.body.contains("http://") && !page.body.contains("https://"),
            "{path} links elsewhere"
        );
    }
    assert!(get(addr, "/assets/console.js").body.contains("textContent"));

    // Unknown runs and paths are 404s; malformed requests 400s naming why.
    let missing = get(addr, "/runs/999999");
    assert_eq!(missing.status, 404);
    assert!(missing
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(missing.body.contains("No run 999999"), "{}", missing.body);
    assert_eq!(get(addr, "/nowhere").status, 404);
    let api_missing = get(addr, "/api/runs/999999");
    assert_eq!(api_missing.status, 404);
    assert_eq!(api_missing.json()["error"], "unknown run 999999");
    assert_eq!(get(addr, "/api/nowhere").status, 404);
    let bad = get(addr, "/api/runs/abc");
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"].as_str().unwrap().contains("integer"),
        "{}",
        bad.body
    );
    let bad = get(addr, "/api/runs?limit=0");
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"].as_str().unwrap().starts_with("limit"),
        "{}",
        bad.body
    );
    let bad = act(
        addr,
        &format!("/api/runs/{id}/throttle"),
        r#"{"max_rows_per_sec": 5}"#,
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap()
            .contains("max_rows_per_sec"),
        "{}",
        bad.body
    );
    let bad = act(
        addr,
        &format!("/api/runs/{id}/throttle"),
        r#"{"max_rows_per_s": "fast"}"#,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(
        act(addr, &format!("/api/runs/{id}/throttle"), "[1]").status,
        400
    );
    let bad = act(addr, &format!("/api/runs/{id}/retry"), "{not json");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("not JSON"));
    let bad = act(
        addr,
        &format!("/api/runs/{id}/retry"),
        r#"{"partitions": 1}"#,
    );
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]
        .as_str()
        .unwrap()
        .contains("\"partitions\""));

    // Actions: POST only, with the console's header, same-site, and only
    // where the run's state allows them.
    assert_eq!(get(addr, &format!("/api/runs/{id}/pause")).status, 405);
    let plain = http(addr, "POST", &format!("/api/runs/{id}/pause"), &[], "");
    assert_eq!(plain.status, 403);
    assert!(plain.json()["error"]
        .as_str()
        .unwrap()
        .contains("x-tranche-console"));
    let cross = http(
        addr,
        "POST",
        &format!("/api/runs/{id}/pause"),
        &[
            ("X-Tranche-Console", "1"),
            ("Origin", "http://evil.example"),
        ],
        "",
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    let cross = http(
        addr,
        "POST",
        &format!("/api/runs/{id}/pause"),
        &[("X-Tranche-Console", "1"), ("Sec-Fetch-Site", "cross-site")],
        "",
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    let done = act(addr, &format!("/api/runs/{id}/pause"), "");
    assert_eq!(done.status, 409);
    assert_eq!(
        done.json()["error"],
        format!("cannot pause run {id}: it is done (ended)")
    );
    assert_eq!(act(addr, &format!("/api/runs/{id}/cancel"), "").status, 409);
    assert_eq!(act(addr, &format!("/api/runs/{id}/retry"), "").status, 409);
    // A requeue reads the rows again: the processor still rejects them.
    let requeue = act(addr, &format!("/api/runs/{id}/dead-letters/requeue"), "");
    assert_eq!(requeue.status, 200, "{}", requeue.body);
    assert_eq!(requeue.json()["still_failing"], 3);

    // Without a token, only loopback names are answered (DNS rebinding).
    let rebound = http(addr, "GET", "/api/runs", &[("Host", "evil.example:80")], "");
    assert_eq!(rebound.status, 403);
    assert_eq!(
        http(addr, "GET", "/api/runs", &[("Host", "localhost")], "").status,
        200
    );

    // Probes.
    let health = get(addr, "/healthz");
    assert_eq!((health.status, health.body.trim()), (200, "ok"));
    let ready = get(addr, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["ready"], true);

    // No answer carries the database's address.
    let secret = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    for path in [
        "/api/runs",
        &format!("/api/runs/{id}"),
        "/api/schedules",
        "/readyz",
    ] {
        let body = get(addr, path).body;
        assert!(
            !body.contains(&url) && !body.contains(&format!("{secret}/")),
            "{path}: {body}"
        );
    }
    server.stop().await;
    runtime.shutdown().await;
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread")]
    api_case
);

#[tokio::test(flavor = "multi_thread")]
async fn a_token_guards_every_page_and_action() {
    let (dir, url) = common::sqlite_database();
    let runtime = runtime(&url, 50).await;
    runtime
        .run(job("console-token", Throttle::default()))
        .await
        .unwrap();
    let token = "tok-0123456789abcdef";
    let console = Console::new(runtime.clone()).with_token(token);

    // Bound beyond loopback it needs a token; a token must be long enough.
    let open = Console::new(runtime.clone()).serve("0.0.0.0:0".parse().unwrap());
    assert!(
        matches!(open, Err(ConsoleError::TokenRequired(_))),
        "{open:?}"
    );
    let short = Console::new(runtime.clone())
        .with_token("short")
        .serve("127.0.0.1:0".parse().unwrap());
    assert!(matches!(short, Err(ConsoleError::BadToken)), "{short:?}");

    let server = console.serve("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "/api/runs").status, 401);
    assert_eq!(get(addr, "/").status, 401);
    let wrong = http(
        addr,
        "GET",
        "/api/runs",
        &[("Authorization", "Bearer tok-0123456789abcdeX")],
        "",
    );
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {token}");
    let right = http(addr, "GET", "/api/runs", &[("Authorization", &bearer)], "");
    assert_eq!(right.status, 200);
    assert!(!right.body.contains(token));
    // With a token, any host name may be used.
    let named = http(
        addr,
        "GET",
        "/api/runs",
        &[("Authorization", &bearer), ("Host", "tranche.internal")],
        "",
    );
    assert_eq!(named.status, 200);
    // Opening a page with ?token= sets an HttpOnly, SameSite cookie and
    // drops the token from the address.
    let visit = get(addr, &format!("/runs/1?token={token}"));
    assert_eq!(visit.status, 303);
    assert_eq!(visit.header("location"), Some("/runs/1"));
    let cookie = visit.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(
        http(addr, "GET", "/api/runs", &[("Cookie", pair)], "").status,
        200
    );
    assert_eq!(get(addr, &format!("/runs/1?token={token}X")).status, 401);
    // An action needs the token too, even with the console's header.
    assert_eq!(act(addr, "/api/runs/1/pause", "").status, 401);
    // Probes answer without it.
    assert_eq!(get(addr, "/healthz").status, 200);
    assert_eq!(get(addr, "/readyz").status, 200);
    server.stop().await;
    runtime.shutdown().await;

    // The binary refuses the same before it opens the database.
    let never = dir.path().join("never.db");
    let out = common::run_tranche(&[
        "serve",
        "--db",
        &format!("sqlite://{}", never.display()),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a token"), "{stderr}");
    assert!(!never.exists(), "the database was opened");
}

/// A WebDriver session on a chromedriver this test started, through the
/// W3C protocol's JSON over HTTP.
struct Browser {
    driver: std::process::Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` (the test skips) when chromedriver is not installed, unless
    /// the services are required.
    fn start() -> Option<Self> {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let driver = std::process::Command::new("chromedriver")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success());
        let (Some(chromium), Some(_)) = (chromium, driver) else {
            if common::services_required() {
                panic!("Chromium and chromedriver are required (TRANCHE_REQUIRE_SERVICES=1): apt-get install chromium chromium-driver");
            }
            eprintln!("skipped: chromium or chromedriver is not installed");
            return None;
        };
        let port = common::free_port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        common::wait_until("chromedriver to answer", 30, || {
            std::net::TcpStream::connect(addr).is_ok()
                && http(addr, "GET", "/status", &[], "").json()["value"]["ready"] == true
        });
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--window-size=1100,900",
                ],
            },
        }}});
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let answer = browser.call("POST", "/session", caps);
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        Some(browser)
    }

    fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let answer = http(
            self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            &body,
        );
        let json = answer.json();
        assert_eq!(answer.status, 200, "WebDriver {method} {path}: {json}");
        json["value"].clone()
    }

    fn session(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn open(&self, url: &str) {
        self.session("POST", "/url", serde_json::json!({ "url": url }));
    }

    /// Runs `script` in the page and returns its value.
    fn eval(&self, script: &str) -> serde_json::Value {
        self.session(
            "POST",
            "/execute/sync",
            serde_json::json!({ "script": script, "args": [] }),
        )
    }

    fn click(&self, css: &str) {
        let found = self.session(
            "POST",
            "/element",
            serde_json::json!({ "using": "css selector", "value": css }),
        );
        let id = found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned();
        self.session(
            "POST",
            &format!("/element/{id}/click"),
            serde_json::json!({}),
        );
    }

    fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let data = self.session("GET", "/screenshot", serde_json::Value::Null);
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap()
    }

    /// Waits until `script` returns true in the page.
    fn wait_for(&self, what: &str, script: &str) {
        common::wait_until(what, 60, || self.eval(script) == true);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                "",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Sum of the partitions' progress bars on the run page (an expression).
const PROGRESS: &str = "Array.from(document.querySelectorAll('tr.partition .bar'))\
    .reduce(function (s, b) { return s + Number(b.dataset.percent); }, 0)";

#[test]
fn a_browser_watches_pauses_and_resumes_a_live_run() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_dir, url) = common::sqlite_database();
    let runtime = rt.block_on(runtime(&url, 2_000));
    // Slow enough to watch: 150 rows a second for the whole run.
    let job = job("console-live", Throttle::default().with_max_rows_per_s(150));
    let handle = rt
        .block_on(async { runtime.start_run(job.clone()) })
        .unwrap();
    let store = runtime.store().clone();
    let run_id = {
        let mut id = None;
        common::wait_until("the run to be planned", 60, || {
            id = rt
                .block_on(store.recent_runs(1))
                .unwrap()
                .first()
                .filter(|r| r.partitions > 0)
                .map(|r| r.id);
            id.is_some()
        });
        id.unwrap()
    };
    let server = Console::new(runtime.clone())
        .with_job(job)
        .serve("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let base = format!("http://{}", server.local_addr());

    // The runs page lists it; its link leads to the run's page.
    browser.open(&format!("{base}/"));
    browser.wait_for(
        "the runs page to list the run",
        &format!("return document.querySelector('tr[data-run=\"{run_id}\"] a') !== null;"),
    );
    browser.click(&format!("tr[data-run=\"{run_id}\"] a"));
    browser.wait_for(
        "the run page to show its partitions",
        "return document.querySelectorAll('tr.partition').length === 4;",
    );
    // The partitions' progress advances while we watch.
    let first = browser
        .eval(&format!("return {PROGRESS};"))
        .as_f64()
        .unwrap();
    browser.wait_for(
        "the partitions' progress to advance",
        &format!("return {PROGRESS} > {first} + 5;"),
    );
    // And the rate chart has a line once samples span a few seconds.
    browser.wait_for(
        "the rate chart to draw",
        "return document.querySelector('#chart polyline') !== null;",
    );

    // What the README shows: the run page while it runs.
    let shot = browser.screenshot();
    assert!(shot.starts_with(b"\x89PNG"));
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("console-run.png"), &shot).unwrap();

    // Pause: the database says paused, and so does the page.
    browser.click("button[data-action=pause]");
    common::wait_until("the run to be paused in the database", 30, || {
        rt.block_on(store.find_run(run_id)).unwrap().unwrap().state == RunState::Paused
    });
    browser.wait_for(
        "the page to show the run paused",
        "var s = document.getElementById('state'); return s !== null && s.dataset.state === 'paused';",
    );
    // Paused, it stops: no partition is held.
    common::wait_until("the paused run to hand its partitions back", 30, || {
        rt.block_on(store.partitions(run_id))
            .unwrap()
            .iter()
            .all(|p| p.state != tranche::store::PartitionState::Claimed)
    });

    // Resume, and wait for the end.
    browser.wait_for(
        "Resume to be enabled",
        "return !document.querySelector('button[data-action=resume]').disabled;",
    );
    browser.click("button[data-action=resume]");
    let report = rt.block_on(handle.wait()).unwrap();
    assert_eq!(report.state, RunState::Done);
    assert_eq!(report.rows_done, 2_000);
    assert_eq!(report.dead_letters, 20);
    browser.wait_for(
        "the page to show the run done",
        "var s = document.getElementById('state'); return s !== null && s.dataset.state === 'done';",
    );
    let audit: Vec<String> = rt
        .block_on(store.audit_log("console-live", 10))
        .unwrap()
        .into_iter()
        .map(|a| format!("{} {}", a.action, a.actor))
        .collect();
    assert!(
        audit.iter().any(|a| a.starts_with("pause console")),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|a| a.starts_with("resume console")),
        "{audit:?}"
    );
    std::fs::write(target.join("console-done.png"), browser.screenshot()).unwrap();

    // The dead letters' reasons are markup; the page shows them as text
    // and runs none of it.
    browser.open(&format!("{base}/runs/{run_id}/dead-letters"));
    browser.wait_for(
        "the dead letters to be listed",
        "return document.querySelectorAll('td.reason').length === 20;",
    );
    let shown = browser.eval("return document.querySelector('td.reason').textContent;");
    assert!(shown.as_str().unwrap().contains(XSS), "{shown}");
    assert_eq!(browser.eval("return typeof window.__xss;"), "undefined");
    assert_eq!(
        browser.eval("return document.querySelectorAll('td.reason img, td.reason script').length;"),
        0
    );

    rt.block_on(server.stop());
    rt.block_on(runtime.shutdown());
}

/// `examples/web_service.rs`, as `cargo test` builds it beside this test
/// (built here when missing or older than this test, as when only this
/// test was asked for).
fn example_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/console-... → target/debug/examples/web_service
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join("web_service");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&example) < modified(&exe) {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--example", "web_service"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build --example web_service");
        assert!(status.success());
    }
    example
}

#[test]
fn the_example_service_runs_a_backfill_shows_it_and_stops_cleanly() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("service.db");
    /// Kills the service if the test fails before it stops it.
    struct Service(std::process::Child);
    impl Drop for Service {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = std::process::Command::new(example_binary())
        .env("LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("ROWS", "3000")
        .env("ROWS_PER_S", "1500")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut child = Service(child);
    let first = lines.next().unwrap().unwrap();
    let addr: SocketAddr = first
        .split("http://")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .parse()
        .unwrap();

    // Nothing started yet; POST starts the backfill, GET follows it.
    assert_eq!(get(addr, "/backfill").status, 404);
    let started = http(addr, "POST", "/backfill", &[], "");
    assert_eq!(started.status, 202, "{}", started.body);
    assert_eq!(started.json()["job"], "welcome-backfill");
    common::wait_until("the backfill to finish", 60, || {
        let p = get(addr, "/backfill").json();
        p["planned"] == true && p["rows_done"] == 3000
    });
    // Its metrics, and the console mounted under /tranche.
    let metrics = get(addr, "/metrics").body;
    let checkpointed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tranche_rows_checkpointed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(checkpointed, 3000.0, "{metrics}");
    common::wait_until("the console to show the run done", 30, || {
        get(addr, "/tranche/api/runs").json()["runs"][0]["run"]["state"] == "done"
    });
    let page = get(addr, "/tranche/");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("href=\"/tranche/assets/console.css\""),
        "{}",
        page.body
    );
    assert_eq!(get(addr, "/tranche/runs/77").status, 404);

    // A second backfill (a new run), stopped by SIGTERM while it runs: the
    // service exits cleanly and holds no partition.
    assert_eq!(http(addr, "POST", "/backfill", &[], "").status, 202);
    common::wait_until("the second run to make progress", 60, || {
        let p = get(addr, "/backfill").json();
        p["run_id"] != 1 && p["rows_done"].as_i64().unwrap_or(0) > 0
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("stopped: Clean")),
        "{rest:?}"
    );
    use diesel::{Connection as _, RunQueryDsl as _};
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = diesel::SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    let held: Vec<Count> =
        diesel::sql_query("SELECT COUNT(*) AS n FROM tranche_partitions WHERE state = 'claimed'")
            .load(&mut c)
            .unwrap();
    assert_eq!(held[0].n, 0, "a partition is still held after a clean stop");
}

//! The web console: pages and a JSON API to watch and steer runs, over
//! actix-web (feature `web`).
//!
//! A [`Console`] is built on a [`RuntimeHandle`] and served three ways:
//!
//! - as a scope in an actix-web host's `App` ([`Console::scope`]);
//! - on an address of its own, from any host (axum, plain tokio), with
//!   [`Console::serve`]: the server runs on a thread of its own and
//!   [`ConsoleServer::stop`] stops it;
//! - by the binary, `tranche serve --db URL --listen 127.0.0.1:8080`.
//!
//! The pages (runs; one run with its partitions, rate chart, errors and
//! audit trail; dead letters; schedules) are rendered in the browser from
//! the JSON API under `api/`, which they refresh every two seconds; every
//! asset is embedded in the crate, nothing is fetched from elsewhere.
//! Values from the database only ever reach the page as text (never as
//! markup), and no response carries a database URL or a credential.
//!
//! # Security
//!
//! - Without a token, requests must name a loopback host (`localhost`,
//!   `127.0.0.1`, `[::1]`), which defeats DNS rebinding, and
//!   [`Console::serve`] refuses an address other than a loopback one.
//! - With a token ([`Console::with_token`]), every request but `healthz`
//!   and `readyz` carries it: `Authorization: Bearer TOKEN`, or a cookie
//!   that visiting any page with `?token=TOKEN` once sets (`HttpOnly`,
//!   `SameSite=Strict`).
//! - Actions are `POST` only and must carry the header
//!   `X-Tranche-Console: 1` (which a cross-site form cannot send and a
//!   cross-site script cannot send without a CORS preflight, which is never
//!   granted); a request whose `Origin` or `Sec-Fetch-Site` says it comes
//!   from another site is refused.
//!
//! # The JSON API
//!
//! | method and path | answers |
//! |---|---|
//! | `GET api/runs?limit=N` | `{"now_ms", "runs": [{"run", "percent", "rows_per_s", "eta_s"}]}`, newest first (N ≤ 500, default 50) |
//! | `GET api/runs/ID` | the run's status (as `tranche status --json`) with `samples` (`[at_ms, rows_done]` over the last hour) and `requeue` (whether this console can requeue its dead letters) |
//! | `GET api/runs/ID/dead-letters?limit=N` | `{"run_id", "total", "dead_letters": [{"row_key", "partition_id", "reason"}]}` (N ≤ 10000, default 500) |
//! | `GET api/schedules` | `{"here": [...]}` (schedules started on this runtime) and `{"ticked": [...]}` (the latest run of each job started by a schedule tick, from the database) |
//! | `POST api/runs/ID/pause`, `resume`, `cancel` | `{"run_id", "from", "to"}` |
//! | `POST api/runs/ID/retry` | `{"partitions"}`; body `{"partition": N}` to retry one |
//! | `POST api/runs/ID/throttle` | the throttle now in force; body: the fields to change, `null` to clear one (`{"max_rows_per_s": 500}`) |
//! | `POST api/runs/ID/dead-letters/requeue` | the requeue's counts |
//! | `GET healthz` | `ok` while the process answers |
//! | `GET readyz` | 200 when the database answers and its migrations are current, 503 with the reason otherwise |
//!
//! Errors are `{"error": "..."}`: 400 for a malformed request (naming the
//! field), 401 without the token, 403 for a cross-site action, 404 for an
//! unknown run, 409 when the run's state forbids the action (with the
//! reason), 500 when the database failed.
//!
//! ```no_run
//! # async fn f(runtime: tranche::RuntimeHandle) -> Result<(), Box<dyn std::error::Error>> {
//! let console = tranche::web::Console::new(runtime);
//! // On an address of its own...
//! let server = console.serve("127.0.0.1:8080".parse()?)?;
//! println!("console on http://{}/", server.local_addr());
//! // ... or inside an actix-web app:
//! // App::new().service(console.scope("/tranche"))
//! server.stop().await;
//! # Ok(()) }
//! ```

mod api;
mod guard;
mod pages;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use tokio::sync::oneshot;

use crate::job::Job;
use crate::runtime::RuntimeHandle;

/// Why a console could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// Bound to an address other than a loopback one without a token.
    #[error(
        "refusing to serve the console on {0} without a token: anyone who can reach it could \
         pause or cancel runs; give one (--token or TRANCHE_WEB_TOKEN), or listen on 127.0.0.1"
    )]
    TokenRequired(SocketAddr),
    /// The token is too short or has characters a header or a cookie
    /// cannot carry as they are.
    #[error("the console token must be 16 to 512 letters, digits or -._~+/=")]
    BadToken,
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server's thread could not start.
    #[error("cannot start the console's thread: {0}")]
    Start(std::io::Error),
}

/// Whether a console may listen on `addr` with `token`: a token must be
/// well formed, and an address other than a loopback one needs one. What
/// [`Console::serve`] checks, for a host to check before it opens anything.
pub fn check_listen(addr: SocketAddr, token: Option<&str>) -> Result<(), ConsoleError> {
    match token {
        Some(t) if !guard::valid_token(t) => Err(ConsoleError::BadToken),
        None if !addr.ip().is_loopback() => Err(ConsoleError::TokenRequired(addr)),
        _ => Ok(()),
    }
}

/// The web console over one runtime's store. Cheap to clone.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: RuntimeHandle,
    token: Option<String>,
    /// Jobs whose dead letters this console can requeue, by name.
    jobs: HashMap<String, Job>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("token", &self.inner.token.as_ref().map(|_| "<redacted>"))
            .field("jobs", &self.inner.jobs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Console {
    /// A console over `runtime`'s store; its actions are recorded in the
    /// audit trail as `console` with the caller's address.
    pub fn new(runtime: RuntimeHandle) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime,
                token: None,
                jobs: HashMap::new(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => f(inner),
            None => {
                let mut inner = Inner {
                    runtime: self.inner.runtime.clone(),
                    token: self.inner.token.clone(),
                    jobs: self.inner.jobs.clone(),
                };
                f(&mut inner);
                self.inner = Arc::new(inner);
            }
        }
        self
    }

    /// Requires `token` on every request but `healthz` and `readyz` (see
    /// the module's security notes). A token other than 16 to 512
    /// letters, digits or `-._~+/=` is refused by [`Console::serve`] and
    /// [`Console::check_token`].
    pub fn with_token(self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.edit(|i| i.token = Some(token))
    }

    /// Lets the console requeue the dead letters of `job` (a requeue reads
    /// the rows again and delivers them through the job's processor and
    /// sink, so it needs the job itself).
    pub fn with_job(self, job: Job) -> Self {
        self.edit(|i| {
            i.jobs.insert(job.name.clone(), job);
        })
    }

    /// Checks the token given with [`Console::with_token`], if any.
    pub fn check_token(&self) -> Result<(), ConsoleError> {
        match &self.inner.token {
            Some(t) if !guard::valid_token(t) => Err(ConsoleError::BadToken),
            _ => Ok(()),
        }
    }

    /// The console as a scope to mount in an actix-web `App` under `path`
    /// (`""` for the root): `App::new().service(console.scope("/tranche"))`.
    /// The host chooses the address; a console meant to be reached from
    /// other hosts should have a token.
    pub fn scope(
        &self,
        path: &str,
    ) -> actix_web::Scope<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        let base = path.trim_end_matches('/').to_owned();
        let ctx = web::Data::new(api::Ctx {
            console: self.clone(),
            base: base.clone(),
        });
        let guard_ctx = ctx.clone();
        web::scope(&base)
            .app_data(ctx)
            .wrap_fn(move |req, srv| guard::check(&guard_ctx, req, srv))
            .configure(api::routes)
            .configure(pages::routes)
            .default_service(web::to(pages::not_found))
    }

    /// Serves the console on `addr` from a thread of its own (an actix-web
    /// server with one worker), whatever runtime the caller is on. An
    /// address other than a loopback one needs a token.
    pub fn serve(&self, addr: SocketAddr) -> Result<ConsoleServer, ConsoleError> {
        self.preflight(addr)?;
        let listener =
            TcpListener::bind(addr).map_err(|source| ConsoleError::Bind { addr, source })?;
        self.serve_listener(listener)
    }

    fn preflight(&self, addr: SocketAddr) -> Result<(), ConsoleError> {
        check_listen(addr, self.inner.token.as_deref())
    }

    /// [`Console::serve`] on a listener the caller bound.
    pub fn serve_listener(&self, listener: TcpListener) -> Result<ConsoleServer, ConsoleError> {
        let addr = listener.local_addr().map_err(ConsoleError::Start)?;
        self.preflight(addr)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let console = self.clone();
        std::thread::Builder::new()
            .name("tranche-console".into())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                system.block_on(async move {
                    let server = HttpServer::new(move || App::new().service(console.scope("")))
                        .workers(1)
                        .disable_signals()
                        .listen(listener)
                        .map_err(|source| ConsoleError::Bind { addr, source });
                    let server = match server {
                        Ok(s) => s.run(),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(server.handle()));
                    if let Err(e) = server.await {
                        tracing::error!(error = %e, "the console's server stopped");
                    }
                });
                let _ = done_tx.send(());
            })
            .map_err(ConsoleError::Start)?;
        let handle = ready_rx.recv().map_err(|_| {
            ConsoleError::Start(std::io::Error::other("the console's thread ended"))
        })??;
        tracing::info!(%addr, "console listening");
        Ok(ConsoleServer {
            addr,
            handle,
            done: done_rx,
        })
    }
}

/// A console served on an address of its own by [`Console::serve`].
#[derive(Debug)]
pub struct ConsoleServer {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    done: oneshot::Receiver<()>,
}

impl ConsoleServer {
    /// The address it listens on (with the port the system chose, when
    /// bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets requests in flight finish, and
    /// waits for the server's thread to end.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.done.await;
    }
}

//! The console's pages: HTML shells the embedded script fills from the
//! JSON API, the embedded assets, and the 404 page.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use super::api::{find_run, Ctx};
use crate::store::RunRecord;

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// No script, style or connection from elsewhere; not framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(runs_page))
        .route("/", web::get().to(runs_page))
        .route("/runs/{id}", web::get().to(run_page))
        .route("/runs/{id}/dead-letters", web::get().to(dead_letters_page))
        .route("/schedules", web::get().to(schedules_page))
        .route("/assets/console.js", web::get().to(script))
        .route("/assets/console.css", web::get().to(style));
}

/// Text made safe to place in HTML, in an element or a quoted attribute.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page: `page` names what the script renders into it, `run` the run it
/// is about.
fn shell(ctx: &Ctx, status: StatusCode, page: &str, title: &str, run: Option<i64>) -> HttpResponse {
    let base = escape(&ctx.base);
    let title = escape(title);
    let run = run.map(|r| r.to_string()).unwrap_or_default();
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · tranche</title>\
         <link rel=\"stylesheet\" href=\"{base}/assets/console.css\"></head>\
         <body><header><a class=\"brand\" href=\"{base}/\">tranche</a><nav>\
         <a href=\"{base}/\">Runs</a><a href=\"{base}/schedules\">Schedules</a></nav>\
         <span id=\"live\" class=\"live\" role=\"status\"></span></header>\
         <main id=\"app\" data-page=\"{page}\" data-base=\"{base}\" data-run=\"{run}\">\
         <h1 id=\"title\">{title}</h1><div id=\"content\"><p class=\"muted\">Loading…</p></div>\
         </main><script src=\"{base}/assets/console.js\"></script></body></html>\n"
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("content-security-policy", CSP))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header(("cache-control", "no-store"))
        .body(body)
}

/// The 404 page (or, under `api/`, a JSON 404).
pub(super) async fn not_found(ctx: web::Data<Ctx>, req: HttpRequest) -> HttpResponse {
    if req.path().starts_with(&format!("{}/api/", ctx.base)) {
        return super::api::error_response(
            StatusCode::NOT_FOUND,
            &format!("no such API path: {} {}", req.method(), req.path()),
        );
    }
    shell(&ctx, StatusCode::NOT_FOUND, "missing", "Not found", None)
}

async fn runs_page(ctx: web::Data<Ctx>) -> HttpResponse {
    shell(&ctx, StatusCode::OK, "runs", "Runs", None)
}

/// A page about the path's run, or the 404 page when there is none (a
/// database failure is answered as it is).
async fn run_shell(
    ctx: &Ctx,
    req: &HttpRequest,
    page: &str,
    title: impl FnOnce(&RunRecord) -> String,
) -> HttpResponse {
    match find_run(ctx, req).await {
        Ok(run) => shell(ctx, StatusCode::OK, page, &title(&run), Some(run.id)),
        Err(refusal) if refusal.status.is_server_error() => refusal.error_response(),
        Err(_) => {
            let id = req.match_info().get("id").unwrap_or_default();
            shell(
                ctx,
                StatusCode::NOT_FOUND,
                "missing",
                &format!("No run {id}"),
                None,
            )
        }
    }
}

async fn run_page(ctx: web::Data<Ctx>, req: HttpRequest) -> HttpResponse {
    run_shell(&ctx, &req, "run", |run| {
        format!("Run {} of {}", run.id, run.job_name)
    })
    .await
}

async fn dead_letters_page(ctx: web::Data<Ctx>, req: HttpRequest) -> HttpResponse {
    run_shell(&ctx, &req, "dead-letters", |run| {
        format!("Dead letters of run {} of {}", run.id, run.job_name)
    })
    .await
}

async fn schedules_page(ctx: web::Data<Ctx>) -> HttpResponse {
    shell(&ctx, StatusCode::OK, "schedules", "Schedules", None)
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("x-content-type-options", "nosniff"))
        .body(SCRIPT)
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("x-content-type-options", "nosniff"))
        .body(STYLE)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}

//! Who may use the console: the token, loopback hosts without one, and
//! cross-site requests refused for actions.

use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpResponse};
use futures::future::{ready, Either, LocalBoxFuture};

use super::api::{error_response, Ctx};

/// The cookie a `?token=` visit sets.
const COOKIE: &str = "tranche_console_token";

/// The header every action must carry.
pub(super) const ACTION_HEADER: &str = "x-tranche-console";

/// Whether `token` is acceptable: 16 to 512 characters of letters, digits
/// and `-._~+/=` (what a header and a cookie carry as they are).
pub(super) fn valid_token(token: &str) -> bool {
    (16..=512).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
}

/// Compares in time that depends on the lengths only.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn header_str(req: &ServiceRequest, name: impl header::AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The host part of a `Host` header or an origin's authority.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

fn is_loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn token_given(req: &ServiceRequest) -> Option<&str> {
    if let Some(auth) = header_str(req, header::AUTHORIZATION) {
        if let Some(t) = auth.strip_prefix("Bearer ") {
            return Some(t.trim());
        }
    }
    header_str(req, header::COOKIE).and_then(|cookies| {
        cookies.split(';').find_map(|c| {
            let (name, value) = c.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
    })
}

fn query_token(req: &ServiceRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

fn refuse(req: ServiceRequest, status: StatusCode, why: &str) -> ServiceResponse<BoxBody> {
    req.into_response(error_response(status, why))
}

/// Decides whether the request may reach the console: `None` lets it
/// through, `Some` is the answer instead.
fn decide(ctx: &Ctx, req: &ServiceRequest) -> Option<(StatusCode, String)> {
    let path = req.path();
    let probe = path == format!("{}/healthz", ctx.base) || path == format!("{}/readyz", ctx.base);
    match &ctx.console.inner.token {
        None => {
            // Without a token only loopback names are answered, so a page
            // from elsewhere cannot reach the console by DNS rebinding.
            let host = req.connection_info().host().to_owned();
            if !is_loopback_name(host_name(&host)) && !probe {
                return Some((
                    StatusCode::FORBIDDEN,
                    format!(
                        "this console has no token and answers only requests for localhost, \
                         not {host:?}; start it with a token to reach it by another name"
                    ),
                ));
            }
        }
        Some(token) if !probe => {
            if !token_given(req).is_some_and(|t| same(t, token)) {
                return Some((
                    StatusCode::UNAUTHORIZED,
                    "this console needs its token: open it once with ?token=... or send \
                     Authorization: Bearer ..."
                        .into(),
                ));
            }
        }
        Some(_) => {}
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if header_str(req, ACTION_HEADER) != Some("1") {
            return Some((
                StatusCode::FORBIDDEN,
                format!("an action must carry the header {ACTION_HEADER}: 1"),
            ));
        }
        if let Some(site) = header_str(req, "sec-fetch-site") {
            if site != "same-origin" && site != "none" {
                return Some((
                    StatusCode::FORBIDDEN,
                    format!("a cross-site action is refused (Sec-Fetch-Site: {site})"),
                ));
            }
        }
        if let Some(origin) = header_str(req, header::ORIGIN) {
            let host = req.connection_info().host().to_owned();
            let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or(origin);
            if !authority.eq_ignore_ascii_case(&host) {
                return Some((
                    StatusCode::FORBIDDEN,
                    format!("a cross-site action is refused (Origin {origin:?}, host {host:?})"),
                ));
            }
        }
    }
    None
}

type Served = Result<ServiceResponse<BoxBody>, actix_web::Error>;

/// What the middleware gives back: its own answer, or the console's.
pub(super) type Checked = Either<futures::future::Ready<Served>, LocalBoxFuture<'static, Served>>;

/// The console's middleware: the token (and the `?token=` visit that sets
/// its cookie), loopback hosts, and cross-site actions.
pub(super) fn check<S>(ctx: &web::Data<Ctx>, req: ServiceRequest, srv: &S) -> Checked
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>,
    S::Future: 'static,
{
    // A page opened with the right ?token= sets the cookie and drops the
    // token from the address bar.
    if let (Some(token), Some(given)) = (&ctx.console.inner.token, query_token(&req)) {
        if req.method() == Method::GET && same(&given, token) {
            let path = req.path().to_owned();
            let cookie_path = if ctx.base.is_empty() { "/" } else { &ctx.base };
            let response = HttpResponse::SeeOther()
                .insert_header((header::LOCATION, path))
                .insert_header((
                    header::SET_COOKIE,
                    format!("{COOKIE}={token}; Path={cookie_path}; HttpOnly; SameSite=Strict"),
                ))
                .finish();
            return Either::Left(ready(Ok(req.into_response(response))));
        }
    }
    if let Some((status, why)) = decide(ctx, &req) {
        return Either::Left(ready(Ok(refuse(req, status, &why))));
    }
    Either::Right(Box::pin(srv.call(req)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_cut_from_their_port() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert!(is_loopback_name("::1"));
        assert!(is_loopback_name("127.0.0.1"));
        assert!(is_loopback_name("LOCALHOST"));
        assert!(!is_loopback_name("evil.example"));
        assert!(!is_loopback_name("10.0.0.1"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abcdefghijklmnop", "abcdefghijklmnop"));
        assert!(!same("abcdefghijklmnop", "abcdefghijklmnoq"));
        assert!(!same("abc", "abcd"));
        assert!(valid_token("0123456789abcdef"));
        assert!(!valid_token("short"));
        assert!(!valid_token("0123456789 abcdef"));
        assert!(!valid_token("0123456789;abcdef"));
    }
}

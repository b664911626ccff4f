//! Authentication of the HTTP side: a login token for people (dashboard, API, approve/revoke),
//! a separate bearer token for Prometheus (`/metrics` only), `/healthz` open.
//!
//! - **Login**: the server prints `http://HOST:8081/?token=LOGIN`. A GET with a valid `token`
//!   query parameter is answered `303 See Other` to the same URL without it, setting the
//!   session cookie `lanmon_session` (`HttpOnly; SameSite=Strict; Path=/`), as Jupyter does;
//!   the token then leaves the address bar and the history. The cookie's value is
//!   `HMAC-SHA256(login token, "lanmon session v1")`: no server-side session table, sessions
//!   survive a restart, and replacing `http.token` logs everyone out.
//! - **API clients** may send `Authorization: Bearer LOGIN` instead of the cookie.
//! - **`/metrics`** takes `Authorization: Bearer METRICS` (`metrics.token`, the file
//!   Prometheus' `authorization: {credentials_file: …}` reads) or a login.
//! - **`/healthz`**, the dashboard's static files (no data in them), and the agent installer
//!   (`/install.sh`, `/download/agent`: a new machine has no login; the hashes in the install
//!   command from the server's console make them trustworthy) are open.
//! - **Writes** (`POST` etc.: approve, revoke) need a login; when it comes from the cookie, the
//!   request's `Origin` (else `Referer`) must name this server's own `Host` — with
//!   `SameSite=Strict`, two independent defences against cross-site request forgery. A bearer
//!   header cannot be forged cross-site, so it needs no such check.
//!
//! Every comparison of a secret is constant-time ([`crate::auth::mac::ct_eq`]). [`decide`] is
//! the pure policy; [`guard`] is the actix-web middleware around it. `http.rs` adopts it
//! ([`crate::server::http::Http::start_with_auth`]: `.app_data(web::Data::from(auth))` and
//! `.wrap(middleware::from_fn(http_auth::guard))`); with no [`HttpAuth`] in the app data the
//! guard lets everything through (`--auth off`).

use std::path::Path;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use crate::auth::base32;
use crate::auth::error::{AuthError, AuthResult};
use crate::auth::keys;
use crate::auth::mac;

/// The login token file in the data directory.
pub const LOGIN_TOKEN_FILE: &str = "http.token";
/// The `/metrics` bearer token file in the data directory.
pub const METRICS_TOKEN_FILE: &str = "metrics.token";
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "lanmon_session";
/// The query parameter that carries the login token.
pub const TOKEN_PARAM: &str = "token";
const SESSION_LABEL: &[u8] = b"lanmon session v1";

/// The HTTP secrets.
#[derive(Clone)]
pub struct HttpAuth {
    login: String,
    metrics: String,
    session: String,
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpAuth(..)")
    }
}

/// A new random token: 160 bits in Crockford base32 (32 symbols).
pub fn new_token() -> AuthResult<String> {
    let mut b = [0u8; 20];
    keys::random_bytes(&mut b)?;
    Ok(base32::encode(&b))
}

/// Reads a plain token file (created 0600 if missing); refused if others may read it.
fn load_or_create_token(path: &Path) -> AuthResult<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            keys::check_private(path)?;
            let t = text.trim().to_owned();
            if t.len() < 16 {
                return Err(AuthError::BadKeyFile {
                    path: path.into(),
                    kind: "token",
                    why: "shorter than 16 characters".into(),
                });
            }
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No trailing newline: the file is usable as Prometheus' credentials_file as is.
            let token = new_token()?;
            if keys::write_new_private(path, token.as_bytes())? {
                Ok(token)
            } else {
                load_or_create_token(path)
            }
        }
        Err(e) => Err(AuthError::io(path, e)),
    }
}

impl HttpAuth {
    pub fn new(login: String, metrics: String) -> Self {
        let session = base32::encode(&mac::hmac_sha256(login.as_bytes(), &[SESSION_LABEL]));
        Self {
            login,
            metrics,
            session,
        }
    }

    /// Loads both tokens from `data_dir`, creating them at first start.
    pub fn load_or_create(data_dir: &Path) -> AuthResult<Self> {
        let login = load_or_create_token(&data_dir.join(LOGIN_TOKEN_FILE))?;
        let metrics = load_or_create_token(&data_dir.join(METRICS_TOKEN_FILE))?;
        Ok(Self::new(login, metrics))
    }

    /// The login token (for the banner's URL and `server agents`' API calls).
    pub fn login(&self) -> &str {
        &self.login
    }

    /// The URL to print: `http://{host_port}/?token=…`.
    pub fn dashboard_url(&self, host_port: &str) -> String {
        format!("http://{host_port}/?{TOKEN_PARAM}={}", self.login)
    }

    fn is_login(&self, candidate: &str) -> bool {
        mac::ct_eq(candidate.as_bytes(), self.login.as_bytes())
    }
    fn is_metrics(&self, candidate: &str) -> bool {
        mac::ct_eq(candidate.as_bytes(), self.metrics.as_bytes())
    }
    fn is_session(&self, candidate: &str) -> bool {
        mac::ct_eq(candidate.as_bytes(), self.session.as_bytes())
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    Metrics,
    Read,
    Write,
}

/// The access level of `method path`.
pub fn classify(method: &Method, path: &str) -> Access {
    let read = *method == Method::GET || *method == Method::HEAD;
    match path {
        "/healthz" | "/install.sh" | "/download/agent" if read => Access::Open,
        p if read && (p.starts_with("/static/") || p == "/favicon.ico") => Access::Open,
        "/metrics" if read => Access::Metrics,
        _ if read || *method == Method::OPTIONS => Access::Read,
        _ => Access::Write,
    }
}

/// The parts of a request [`decide`] looks at.
#[derive(Debug, Clone, Default)]
pub struct RequestView<'a> {
    pub method: Method,
    pub path: &'a str,
    pub query: &'a str,
    pub cookie: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub host: Option<&'a str>,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// 303 to `location`, setting the session cookie (`set_cookie` is the header value).
    Login {
        location: String,
        set_cookie: String,
    },
    Unauthorized(&'static str),
    Forbidden(&'static str),
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    let v = authorization?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie_value<'a>(cookies: Option<&'a str>, name: &str) -> Option<&'a str> {
    cookies?.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v.trim())
    })
}

fn query_token(query: &str) -> (Option<&str>, String) {
    let mut token = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter(|kv| match kv.split_once('=') {
            Some((TOKEN_PARAM, v)) => {
                token = Some(v);
                false
            }
            _ => true,
        })
        .collect();
    (token, rest.join("&"))
}

/// `origin` (scheme://host[:port]) names `host` (the Host header).
fn same_origin(origin: &str, host: &str) -> bool {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|r| {
        let authority = r.split('/').next().unwrap_or_default();
        authority.eq_ignore_ascii_case(host)
    })
}

/// The policy (see the module docs). Pure.
pub fn decide(auth: &HttpAuth, r: &RequestView<'_>) -> Verdict {
    let access = classify(&r.method, r.path);
    if access == Access::Open {
        return Verdict::Allow;
    }
    let bearer = bearer(r.authorization);
    if bearer.is_some_and(|t| auth.is_login(t)) {
        return Verdict::Allow;
    }
    if access == Access::Metrics && bearer.is_some_and(|t| auth.is_metrics(t)) {
        return Verdict::Allow;
    }
    let read = access != Access::Write;
    let (query_token, rest) = query_token(r.query);
    if let Some(t) = query_token
        && read
    {
        if !auth.is_login(t) {
            return Verdict::Unauthorized("wrong login token");
        }
        let location = if rest.is_empty() {
            r.path.to_owned()
        } else {
            format!("{}?{rest}", r.path)
        };
        return Verdict::Login {
            location,
            set_cookie: format!(
                "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                auth.session
            ),
        };
    }
    if !cookie_value(r.cookie, SESSION_COOKIE).is_some_and(|v| auth.is_session(v)) {
        return Verdict::Unauthorized(
            "authentication required: open the dashboard URL the server printed \
             (http://HOST:PORT/?token=…), or send `Authorization: Bearer <token>`",
        );
    }
    if read {
        return Verdict::Allow;
    }
    let Some(host) = r.host else {
        return Verdict::Forbidden("no Host header");
    };
    match (r.origin, r.referer) {
        (Some(o), _) if same_origin(o, host) => Verdict::Allow,
        (Some(_), _) => Verdict::Forbidden("cross-origin request refused"),
        (None, Some(rf)) if same_origin(rf, host) => Verdict::Allow,
        _ => Verdict::Forbidden("a write needs an Origin or Referer header of this server"),
    }
}

/// The actix-web middleware: applies [`decide`] when the app data holds an [`HttpAuth`]
/// (`web::Data<HttpAuth>`), else lets everything through.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(auth) = req.app_data::<web::Data<HttpAuth>>().map(|d| Arc::clone(d)) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let h = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let view = RequestView {
        method: req.method().clone(),
        path: req.path(),
        query: req.query_string(),
        cookie: h(header::COOKIE),
        authorization: h(header::AUTHORIZATION),
        origin: h(header::ORIGIN),
        referer: h(header::REFERER),
        host: h(header::HOST),
    };
    let response = match decide(&auth, &view) {
        Verdict::Allow => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_left_body);
        }
        Verdict::Login {
            location,
            set_cookie,
        } => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, location))
            .insert_header((header::SET_COOKIE, set_cookie))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .finish(),
        Verdict::Unauthorized(why) => HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"lanmon\""))
            .json(serde_json::json!({ "error": why })),
        Verdict::Forbidden(why) => {
            HttpResponse::Forbidden().json(serde_json::json!({ "error": why }))
        }
    };
    Ok(req.into_response(response).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::test::{TestRequest, call_service, init_service};
    use actix_web::{App, http::StatusCode};

    use super::*;

    fn auth() -> HttpAuth {
        HttpAuth::new("L0GINTOKENL0GINTOKEN".into(), "METRICSTOKENMETRICS".into())
    }

    macro_rules! app {
        ($auth:expr) => {{
            let mut app = App::new();
            if let Some(a) = $auth {
                app = app.app_data(web::Data::new(a));
            }
            init_service(
                app.wrap(from_fn(guard))
                    .route("/healthz", web::get().to(|| async { "ok" }))
                    .route("/metrics", web::get().to(|| async { "metrics" }))
                    .route("/api/agents", web::get().to(|| async { "agents" }))
                    .route(
                        "/api/agents/{id}/approve",
                        web::post().to(|| async { "approved" }),
                    )
                    .route("/", web::get().to(|| async { "page" })),
            )
            .await
        }};
    }

    fn session_cookie(a: &HttpAuth) -> String {
        format!("{SESSION_COOKIE}={}", a.session)
    }

    /// Without credentials the API, the page and /metrics are 401 (with WWW-Authenticate);
    /// /healthz stays open; with the login bearer token the API is 200.
    #[actix_web::test]
    async fn no_token_401_with_token_200() {
        let app = app!(Some(auth()));
        for path in ["/api/agents", "/", "/metrics"] {
            let res = call_service(&app, TestRequest::get().uri(path).to_request()).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert!(res.headers().contains_key(header::WWW_AUTHENTICATE));
        }
        let res = call_service(&app, TestRequest::get().uri("/healthz").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let req = TestRequest::get()
            .uri("/api/agents")
            .insert_header((header::AUTHORIZATION, "Bearer L0GINTOKENL0GINTOKEN"))
            .to_request();
        assert_eq!(call_service(&app, req).await.status(), StatusCode::OK);
        let req = TestRequest::get()
            .uri("/api/agents")
            .insert_header((header::AUTHORIZATION, "Bearer L0GINTOKENL0GINTOKEX"))
            .to_request();
        assert_eq!(
            call_service(&app, req).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    /// The metrics token opens /metrics and nothing else.
    #[actix_web::test]
    async fn metrics_token_is_scoped() {
        let app = app!(Some(auth()));
        let with = |path: &str| {
            TestRequest::get()
                .uri(path)
                .insert_header((header::AUTHORIZATION, "Bearer METRICSTOKENMETRICS"))
                .to_request()
        };
        assert_eq!(
            call_service(&app, with("/metrics")).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            call_service(&app, with("/api/agents")).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    /// `/?token=…` redirects to the same URL without the token and sets the session cookie;
    /// the cookie then opens the page and the API. A wrong token gets no cookie.
    #[actix_web::test]
    async fn login_url_sets_cookie_and_redirects() {
        let a = auth();
        let app = app!(Some(a.clone()));
        let req = TestRequest::get()
            .uri("/?token=L0GINTOKENL0GINTOKEN&x=1")
            .to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers().get(header::LOCATION).unwrap(), "/?x=1");
        let cookie = res
            .headers()
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(cookie.starts_with(&session_cookie(&a)), "{cookie}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attr), "{cookie}");
        }
        for path in ["/", "/api/agents", "/metrics"] {
            let req = TestRequest::get()
                .uri(path)
                .insert_header((header::COOKIE, format!("other=1; {}", session_cookie(&a))))
                .to_request();
            assert_eq!(
                call_service(&app, req).await.status(),
                StatusCode::OK,
                "{path}"
            );
        }
        let req = TestRequest::get().uri("/?token=nope").to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(!res.headers().contains_key(header::SET_COOKIE));
        let req = TestRequest::get()
            .uri("/")
            .insert_header((header::COOKIE, format!("{SESSION_COOKIE}=forged")))
            .to_request();
        assert_eq!(
            call_service(&app, req).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    /// A write with the cookie needs a same-origin Origin (or Referer); cross-site and
    /// header-less ones are 403; a bearer write passes; a write without login is 401.
    #[actix_web::test]
    async fn writes_need_login_and_same_origin() {
        let a = auth();
        let app = app!(Some(a.clone()));
        let post = |origin: Option<&str>, referer: Option<&str>| {
            let mut r = TestRequest::post()
                .uri("/api/agents/a1/approve")
                .insert_header((header::HOST, "lab:8081"))
                .insert_header((header::COOKIE, session_cookie(&a)));
            if let Some(o) = origin {
                r = r.insert_header((header::ORIGIN, o));
            }
            if let Some(rf) = referer {
                r = r.insert_header((header::REFERER, rf));
            }
            r.to_request()
        };
        let ok = StatusCode::OK;
        let forbidden = StatusCode::FORBIDDEN;
        assert_eq!(
            call_service(&app, post(Some("http://lab:8081"), None))
                .await
                .status(),
            ok
        );
        assert_eq!(
            call_service(&app, post(None, Some("http://lab:8081/x")))
                .await
                .status(),
            ok
        );
        let evil = post(Some("http://evil.example"), None);
        assert_eq!(call_service(&app, evil).await.status(), forbidden);
        let evil = post(Some("http://lab:8081.evil.example"), None);
        assert_eq!(call_service(&app, evil).await.status(), forbidden);
        assert_eq!(
            call_service(&app, post(None, None)).await.status(),
            forbidden
        );
        let bearer = TestRequest::post()
            .uri("/api/agents/a1/approve")
            .insert_header((header::AUTHORIZATION, "Bearer L0GINTOKENL0GINTOKEN"))
            .to_request();
        assert_eq!(call_service(&app, bearer).await.status(), ok);
        let anon = TestRequest::post()
            .uri("/api/agents/a1/approve")
            .to_request();
        assert_eq!(
            call_service(&app, anon).await.status(),
            StatusCode::UNAUTHORIZED
        );
        // The login token in a POST's query string does not log in.
        let q = TestRequest::post()
            .uri("/api/agents/a1/approve?token=L0GINTOKENL0GINTOKEN")
            .to_request();
        assert_eq!(
            call_service(&app, q).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    /// Without an HttpAuth in the app data (`--auth off`) everything passes, as today.
    #[actix_web::test]
    async fn auth_off_lets_everything_through() {
        let app = app!(None::<HttpAuth>);
        for path in ["/api/agents", "/", "/metrics"] {
            let res = call_service(&app, TestRequest::get().uri(path).to_request()).await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
        }
    }

    /// The token files are created once, 0600, without a trailing newline (Prometheus reads
    /// the metrics one as is), and the URL carries the login token.
    #[test]
    fn token_files() {
        let dir = std::env::temp_dir().join(format!("lanmon-http-{}", crate::util::random_u64()));
        let a = HttpAuth::load_or_create(&dir).unwrap();
        let b = HttpAuth::load_or_create(&dir).unwrap();
        assert_eq!(a.login, b.login);
        assert_ne!(a.login, a.metrics);
        let raw = std::fs::read_to_string(dir.join(METRICS_TOKEN_FILE)).unwrap();
        assert_eq!(raw, a.metrics);
        keys::check_private(&dir.join(LOGIN_TOKEN_FILE)).unwrap();
        assert_eq!(
            a.dashboard_url("10.0.0.5:8081"),
            format!("http://10.0.0.5:8081/?token={}", a.login)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

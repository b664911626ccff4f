//! The HTTP side of the server (actix-web): read-only JSON API, Prometheus `/metrics`, and the
//! web dashboard.
//!
//! - `GET /healthz` — liveness, for service managers and containers.
//! - `GET /api/agents` — the same snapshot as `--report-format json`.
//! - `GET /api/agents/{id}/history?from=&to=&step=&series=&cores=` — an agent's series
//!   (avg/min/max per point); times in ms since the Unix epoch, `step` in ms, `series` which
//!   quantities ([`selection`]: default cpu, mem, cores), `cores=0` for no per-core series.
//!   With a store, from the tier that suits the range ([`store::choose_tier`]), read on a
//!   blocking thread through one of the store's read-only connections, at most
//!   [`store::MAX_HISTORY_CELLS`] values, counting every series asked for (a coarser step
//!   otherwise, named in the answer); without one, from the Registry's in-memory ring.
//!   `source` says which. At most [`history_gate::MAX_HISTORY_REQUESTS`] are answered at once
//!   ([`history_gate::Gate`]). Bad parameters: 400 with a message; unknown agent: 404; too
//!   busy: 503.
//! - `GET /metrics` — Prometheus text exposition ([`super::prometheus`]).
//! - `GET /` — the dashboard ([`super::web`]); `GET /static/{name}` — its embedded files.
//! - `GET /api/events` — the dashboard's live feed: Server-Sent Events, one snapshot per
//!   second ([`super::web::events`]).
//! - `GET /api/alerts` — active and recent alerts ([`super::alerts::Board`]), read without
//!   asking any actor.
//! - `GET /install.sh` — the agent installer ([`crate::install::script`]); `GET
//!   /download/agent` — the agent binary it installs, streamed from the open file
//!   ([`crate::install::download`]); 404 with the reason when the server has none. Both stay
//!   reachable without a login: a new machine has none, and the hashes in the install command
//!   (from the server's console) are what make them trustworthy.
//!
//! - `GET /api/enrollment` — every enrolled, pending and revoked agent key (the trust layer's
//!   registry, `agents.json`); `POST /api/agents/{id|name|fingerprint}/approve` and
//!   `…/revoke` — the operator's two write actions (also `server agents approve|revoke` and the
//!   dashboard's buttons). 404 when the server runs `--auth off`.
//!
//! Authentication (off unless the server passes an [`http_auth::HttpAuth`] to
//! [`Http::start_with_auth`]): the middleware [`http_auth::guard`] wraps every route: the
//! login token (URL → session cookie, or a bearer header) for the dashboard and the API,
//! `/metrics`' own bearer token, a same-origin check on the writes; `/healthz`, `/install.sh`,
//! `/download/agent` and the dashboard's `/static/` files stay open.
//!
//! Handlers ask the Registry, through [`RegistryQueries`] (recipients, usable from the HTTP
//! worker thread; a probe in tests); the only writes are approve and revoke, through the
//! trust layer ([`Trust`]).
//!
//! Every request first passes [`HostPolicy`]: a `Host` header that is not an IP literal,
//! `localhost`, this machine's host name or a name given with `--http-host` is answered 421,
//! so that a web page on some other site cannot read the API through DNS rebinding (its name
//! resolving to this server). Every answer carries [`SECURITY_HEADERS`]: no MIME sniffing, no
//! framing (clickjacking), no referrer, and a Content-Security-Policy that allows the
//! dashboard its own scripts, styles and API and nothing else.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter, Recipient};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CACHE_CONTROL, HOST};
use actix_web::middleware::{DefaultHeaders, Next, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::{Deserialize, Serialize};

use crate::auth::http_auth;
use crate::server::alerts;
use crate::server::history::Bucket;
use crate::server::history_gate;
use crate::server::registry::{GetHistory, GetSnapshotParts};
use crate::server::selection::{self, Selected, Selection};
use crate::server::store;
use crate::server::trust::Trust;
use crate::server::web::{self as dashboard, events};
use crate::util::now_ms;

/// Longest range one history request may span, in points.
pub const MAX_HISTORY_POINTS: u64 = 10_000;
/// Default history range when `from` is not given.
pub const DEFAULT_HISTORY_RANGE: Duration = Duration::from_secs(3600);

/// Headers on every HTTP answer (see the module docs). The dashboard uses no inline script or
/// style, so `'self'` is all it needs.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
];

/// Which `Host` headers the HTTP side answers: IP literals (v4, `[v6]`, with or without a
/// port), `localhost`, this machine's host name(s), and the names given (`--http-host`);
/// compared without case and without a trailing dot. A request without `Host` (HTTP/1.0) is
/// answered too: browsers always send one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    names: Vec<String>,
}

impl HostPolicy {
    /// `localhost`, this machine's host name (and its first label, and `<that>.local`), and
    /// `extra`.
    pub fn new(extra: &[String]) -> Self {
        let host = crate::util::host_name();
        let short = host.split('.').next().unwrap_or(&host).to_string();
        let mut names = vec!["localhost".to_string(), host.clone(), short.clone()];
        names.push(format!("{short}.local"));
        names.extend(extra.iter().cloned());
        Self::with_names(names)
    }

    /// Exactly `names` (and IP literals).
    pub fn with_names(names: impl IntoIterator<Item = String>) -> Self {
        let mut names: Vec<String> = names.into_iter().map(|n| normalise(&n)).collect();
        names.retain(|n| !n.is_empty());
        names.sort();
        names.dedup();
        Self { names }
    }

    /// Whether a request with this `Host` header value is answered.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim();
        // `[v6]` or `[v6]:port`.
        if let Some(rest) = host.strip_prefix('[') {
            return rest.split_once(']').is_some_and(|(ip, port)| {
                ip.parse::<std::net::Ipv6Addr>().is_ok() && valid_port(port)
            });
        }
        let name = match host.rsplit_once(':') {
            Some((name, port)) if valid_port(&format!(":{port}")) => name,
            _ => host,
        };
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return true;
        }
        let name = normalise(name);
        self.names.contains(&name)
    }

    /// The names allowed, for messages.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Empty, or `:` and a port number.
fn valid_port(s: &str) -> bool {
    s.is_empty()
        || s.strip_prefix(':')
            .is_some_and(|p| p.parse::<u16>().is_ok())
}

/// Answers 421 to a request whose `Host` the policy does not allow (see the module docs).
async fn check_host(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let policy = req.app_data::<web::Data<State>>().map(|s| &s.hosts);
    let host = req
        .headers()
        .get(HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}"));
    if let (Some(policy), Some(host)) = (policy, host)
        && !policy.allows(host)
    {
        let message = format!(
            "this server does not answer for the host name `{}` (it answers IP addresses, {}); an operator who wants that name starts the server with --http-host {}",
            crate::text::for_terminal(host),
            policy.names().join(", "),
            crate::text::for_terminal(host.rsplit_once(':').map_or(host, |(name, _)| name)),
        );
        let refused = HttpResponse::MisdirectedRequest().json(ApiError { error: message });
        return Ok(req.into_response(refused).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// The HTTP side's settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    /// Host names answered besides IP literals, `localhost` and this machine's names
    /// (`--http-host`, see [`HostPolicy`]).
    pub hosts: Vec<String>,
    /// Export `lanmon_cpu_core_usage_ratio` (one series per core per agent).
    pub per_core_metrics: bool,
    /// The durable history, read by the history endpoint; `None`: the in-memory ring.
    pub store: Option<Arc<store::Reader>>,
    /// The durable history's health, shown by `/healthz`.
    pub store_health: Option<Arc<store::StoreHealth>>,
    /// The alerts' board: `/api/alerts` and `lanmon_alerts` in `/metrics` (`None`: alerts off).
    pub alerts: Option<Arc<alerts::Board>>,
    /// The agent binary offered at `GET /download/agent`; `None`: none (404).
    pub agent: Option<crate::install::download::Offer>,
    /// The trust layer, for the enrollment endpoints (`None`: 404, `--auth off`).
    pub trust: Option<Arc<Trust>>,
}

/// What the HTTP side asks the Registry: snapshots (also the dashboard's feed) and histories.
#[derive(Clone)]
pub struct RegistryQueries {
    pub snapshot: Recipient<GetSnapshotParts>,
    pub history: Recipient<GetHistory>,
}

impl RegistryQueries {
    /// The queries to an actor that answers both.
    pub fn to<A>(registry: &Addr<A>) -> Self
    where
        A: Actor<Context = actix::Context<A>>
            + actix::Handler<GetSnapshotParts>
            + actix::Handler<GetHistory>,
    {
        Self {
            snapshot: registry.clone().recipient(),
            history: registry.clone().recipient(),
        }
    }
}

impl HttpConfig {
    /// Default HTTP address: every interface, so Prometheus and browsers on the LAN reach it.
    pub const DEFAULT_BIND: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8081));

    /// HTTP on `bind` with the per-core series; the server fills in the store's parts.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            per_core_metrics: true,
            store: None,
            store_health: None,
            alerts: None,
            agent: None,
            trust: None,
            hosts: Vec::new(),
        }
    }
}

#[derive(Clone)]
struct State {
    registry: RegistryQueries,
    per_core_metrics: bool,
    store: Option<Arc<store::Reader>>,
    store_health: Option<Arc<store::StoreHealth>>,
    events: Addr<events::Broadcaster>,
    alerts: Option<Arc<alerts::Board>>,
    agent: Option<crate::install::download::Offer>,
    trust: Option<Arc<Trust>>,
    hosts: HostPolicy,
    history_gate: Arc<history_gate::Gate>,
}

/// A running HTTP server.
pub struct Http {
    handle: actix_web::dev::ServerHandle,
    events: Addr<events::Broadcaster>,
}

impl Http {
    /// Binds `config.bind` (port 0 allowed). Returns the bound socket, to be started with
    /// [`Http::start`] once the registry exists.
    pub fn bind(config: &HttpConfig) -> std::io::Result<TcpListener> {
        TcpListener::bind(config.bind)
    }

    /// Starts serving on `socket` in the current actix system, without authentication.
    pub fn start(
        socket: TcpListener,
        config: &HttpConfig,
        registry: RegistryQueries,
    ) -> std::io::Result<Http> {
        Self::start_with_auth(socket, config, registry, None)
    }

    /// [`Http::start`], with every request checked by [`http_auth::guard`] when `auth` is
    /// given (login token / session cookie, `/metrics` bearer, CSRF check on writes; `/healthz`
    /// open). `None` keeps today's open behaviour (`--auth off`).
    pub fn start_with_auth(
        socket: TcpListener,
        config: &HttpConfig,
        registry: RegistryQueries,
        auth: Option<Arc<http_auth::HttpAuth>>,
    ) -> std::io::Result<Http> {
        // Its own thread: encoding a large fleet's snapshot every second must not delay ingest.
        let events_source = registry.snapshot.clone();
        let events = events::Broadcaster::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            events::Broadcaster::new(events_source, events::EVENTS_INTERVAL)
        });
        let state = State {
            registry,
            per_core_metrics: config.per_core_metrics,
            store: config.store.clone(),
            store_health: config.store_health.clone(),
            events: events.clone(),
            alerts: config.alerts.clone(),
            agent: config.agent.clone(),
            trust: config.trust.clone(),
            hosts: HostPolicy::new(&config.hosts),
            history_gate: Arc::new(history_gate::Gate::default()),
        };
        let server = HttpServer::new(move || {
            let headers = SECURITY_HEADERS
                .iter()
                .fold(DefaultHeaders::new(), |h, &header| h.add(header));
            let mut app = App::new().app_data(web::Data::new(state.clone()));
            if let Some(auth) = &auth {
                app = app.app_data(web::Data::from(auth.clone()));
            }
            app.wrap(actix_web::middleware::from_fn(http_auth::guard))
                .wrap(from_fn(check_host))
                .wrap(headers)
                .route("/healthz", get_or_head().to(healthz))
                .route("/api/agents", get_or_head().to(agents))
                .route("/api/agents/{id}/history", get_or_head().to(history))
                .route("/metrics", get_or_head().to(metrics))
                .route("/", get_or_head().to(dashboard_page))
                .route("/static/{name}", get_or_head().to(static_asset))
                .route("/api/events", web::get().to(live_events))
                .route("/api/alerts", get_or_head().to(alerts_api))
                .route("/api/enrollment", get_or_head().to(enrollment))
                .route("/api/agents/{id}/approve", web::post().to(approve))
                .route("/api/agents/{id}/revoke", web::post().to(revoke))
                .route("/install.sh", get_or_head().to(install_script))
                .route("/download/agent", get_or_head().to(download_agent))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(socket)?
        .run();
        let handle = server.handle();
        actix::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("HTTP server failed: {e}");
            }
        });
        Ok(Http { handle, events })
    }

    /// Stops serving (open requests get up to a second; dashboard streams end at once).
    pub async fn stop(&self) {
        let _ = self.events.send(events::Stop).await;
        self.handle.stop(true).await;
    }
}

/// GET, and HEAD for the same resource (headers only: what monitors and `curl -I` send).
fn get_or_head() -> actix_web::Route {
    web::route().guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head()))
}

fn bad_request(message: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(ApiError {
        error: message.into(),
    })
}

#[derive(Serialize)]
struct ApiError {
    error: String,
}

/// `{"status":"ok","version":…}` (and, with a store, `"store":{"status":"ok"}`); while the
/// store cannot write, 503 with `"status":"degraded"` and the store's error: the server runs
/// and keeps its agents connected, but acknowledges nothing.
async fn healthz(state: web::Data<State>) -> HttpResponse {
    let store = state.store_health.as_ref().map(|h| h.view());
    let failing = store
        .as_ref()
        .is_some_and(|s| s.status == crate::snapshot::StoreStatus::Failing);
    let body = Health {
        status: if failing { "degraded" } else { "ok" },
        version: crate::VERSION,
        store,
    };
    if failing {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

/// The body of `/healthz`.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<crate::snapshot::StoreView>,
}

async fn agents(state: web::Data<State>) -> HttpResponse {
    // The Registry hands over a cheap copy; the snapshot is built here, off the ingest thread.
    match state.registry.snapshot.send(GetSnapshotParts).await {
        Ok(parts) => HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-store"))
            .json(parts.into_snapshot()),
        Err(e) => HttpResponse::ServiceUnavailable().json(ApiError {
            error: format!("registry unavailable: {e}"),
        }),
    }
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    match state.registry.snapshot.send(GetSnapshotParts).await {
        Ok(parts) => {
            let mut body =
                super::prometheus::render(&parts.into_snapshot(), state.per_core_metrics);
            if let Some(board) = &state.alerts {
                body.push_str(&board.prometheus());
            }
            HttpResponse::Ok()
                .content_type(super::prometheus::CONTENT_TYPE)
                .body(body)
        }
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("registry unavailable: {e}")),
    }
}

/// Active and recent alerts ([`alerts::AlertsView`]); 404 when alerts are off.
async fn alerts_api(state: web::Data<State>) -> HttpResponse {
    match &state.alerts {
        Some(board) => HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-store"))
            .json(board.view()),
        None => HttpResponse::NotFound().json(ApiError {
            error: "alerts are off (--no-alerts)".into(),
        }),
    }
}

/// Query of `GET /api/agents/{id}/history`; all optional, as strings so a bad value gets
/// our own 400 message.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
    /// Which series ([`Selection::parse`]).
    series: Option<String>,
    cores: Option<String>,
}

/// `cores=`: whether to answer per-core series (default yes).
pub fn parse_cores(cores: Option<&str>) -> Result<bool, String> {
    match cores {
        None | Some("1" | "true" | "yes") => Ok(true),
        Some("0" | "false" | "no") => Ok(false),
        Some(other) => Err(format!("`cores` must be 0 or 1, got `{other}`")),
    }
}

/// A validated history request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from_ms: u64,
    pub to_ms: u64,
    pub step_ms: u64,
}

/// Checks `from`/`to`/`step` (ms): defaults to the last hour in about 300 points; refuses
/// `from >= to`, a zero step and more than [`MAX_HISTORY_POINTS`] points.
pub fn parse_range(
    from: Option<&str>,
    to: Option<&str>,
    step: Option<&str>,
    now_ms: u64,
) -> Result<Range, String> {
    let number = |name: &str, v: Option<&str>| -> Result<Option<u64>, String> {
        v.map(|s| {
            s.parse::<u64>().map_err(|_| {
                format!("`{name}` must be a whole number of milliseconds since the Unix epoch (or a step in ms), got `{s}`")
            })
        })
        .transpose()
    };
    let to_ms = number("to", to)?.unwrap_or(now_ms);
    let default_range = u64::try_from(DEFAULT_HISTORY_RANGE.as_millis()).unwrap_or(u64::MAX);
    let from_ms = number("from", from)?.unwrap_or(to_ms.saturating_sub(default_range));
    if from_ms >= to_ms {
        return Err(format!("`from` ({from_ms}) must be before `to` ({to_ms})"));
    }
    let span = to_ms - from_ms;
    let step_ms = match number("step", step)? {
        Some(0) => return Err("`step` must be at least 1 ms".into()),
        Some(s) => s,
        None => (span / 300).max(1000),
    };
    if span / step_ms > MAX_HISTORY_POINTS {
        return Err(format!(
            "{} points requested; at most {MAX_HISTORY_POINTS} (use a larger `step`)",
            span / step_ms
        ));
    }
    Ok(Range {
        from_ms,
        to_ms,
        step_ms,
    })
}

#[derive(Serialize)]
struct HistoryResponse<'a> {
    agent: String,
    from: u64,
    to: u64,
    /// The step of the points: the one asked for, or a coarser one (then `requested_step`).
    step: u64,
    /// Where the points come from: `memory` (the server's recent-history ring, without a
    /// store), or the store's tier: `raw`, `1m`, `10m` or `1h`.
    source: &'static str,
    /// With `series=`: the series the points carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    series: Option<Vec<&'static str>>,
    /// With the `fs` series: the mount points a point's `fs[i]` belong to.
    #[serde(skip_serializing_if = "Option::is_none")]
    filesystems: Option<Vec<String>>,
    points: Vec<Selected<'a>>,
    /// The step asked for, when the answer uses a coarser one to stay within
    /// [`store::MAX_HISTORY_CELLS`] values.
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_step: Option<u64>,
    /// Cores left out of the per-core series (beyond [`store::MAX_HISTORY_CORES`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    cores_omitted: Option<u32>,
    /// Says why the answer differs from the request, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl<'a> HistoryResponse<'a> {
    /// The answer for `agent` over `range`, whose `points` were read at `step` (coarser
    /// than asked or not), with the series `selection` (`asked`: whether the request named
    /// them) and the agent's `filesystems` (their names, for the `fs` series).
    fn new(
        (agent, range, step, source): (String, Range, u64, &'static str),
        (selection, asked): (Selection, bool),
        points: &'a [Bucket],
        filesystems: Vec<String>,
    ) -> Self {
        let requested_step = (step != range.step_ms).then_some(range.step_ms);
        let note = requested_step.map(|asked| {
            format!(
                "one point per {step} ms instead of {asked} ms: an answer holds at most {} values (points x (1 + cores + further series))",
                store::MAX_HISTORY_CELLS
            )
        });
        Self {
            agent,
            from: range.from_ms,
            to: range.to_ms,
            step,
            source,
            series: asked.then(|| selection.names()),
            filesystems: (asked && selection.contains(selection::Series::Fs))
                .then_some(filesystems),
            points: points
                .iter()
                .map(|point| Selected { point, selection })
                .collect(),
            requested_step,
            cores_omitted: None,
            note,
        }
    }

    /// Notes `n` cores left out of the per-core series.
    fn cores_omitted(mut self, n: u32) -> Self {
        if n > 0 {
            self.cores_omitted = Some(n);
            let more = format!(
                "per-core series for the first {} cores only ({n} left out)",
                store::MAX_HISTORY_CORES
            );
            self.note = Some(match self.note.take() {
                Some(note) => format!("{note}; {more}"),
                None => more,
            });
        }
        self
    }

    /// The answer as a body that keeps `turn` until sent ([`history_gate::Gate::body`]).
    fn send(self, gate: &history_gate::Gate, turn: history_gate::Turn) -> HttpResponse {
        match serde_json::to_vec(&self) {
            Ok(body) => {
                let len = body.len() as u64;
                HttpResponse::Ok()
                    .content_type("application/json")
                    .no_chunking(len)
                    .streaming(gate.body(turn, body.into()))
            }
            Err(e) => HttpResponse::InternalServerError().json(ApiError {
                error: format!("cannot encode the history: {e}"),
            }),
        }
    }
}

async fn history(
    state: web::Data<State>,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> HttpResponse {
    let parsed = parse_range(
        query.from.as_deref(),
        query.to.as_deref(),
        query.step.as_deref(),
        now_ms(),
    )
    .and_then(|range| Ok((range, parse_cores(query.cores.as_deref())?)));
    let (range, cores) = match parsed {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    let asked_for = match Selection::parse(query.series.as_deref()) {
        Ok(s) => (s, query.series.is_some()),
        Err(message) => return bad_request(message),
    };
    let agent_id = id.into_inner();
    let unknown = |agent_id: &str| {
        HttpResponse::NotFound().json(ApiError {
            error: format!("no agent with id `{agent_id}`"),
        })
    };
    let gate = &state.history_gate;
    let Some(turn) = gate.enter().await else {
        return HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(ApiError {
                error: format!(
                    "{} history requests are being answered; try again in a moment",
                    history_gate::MAX_HISTORY_REQUESTS
                ),
            });
    };
    if let Some(reader) = state.store.clone() {
        let id = agent_id.clone();
        let (selection, _) = asked_for;
        let q = store::HistoryQuery {
            from_ms: range.from_ms,
            to_ms: range.to_ms,
            step_ms: range.step_ms,
            now_ms: now_ms(),
            cores: cores && selection.contains(selection::Series::Cores),
            fs: selection.contains(selection::Series::Fs),
            point_values: selection.point_values(),
        };
        return match web::block(move || reader.read(&id, &q)).await {
            Ok(Ok(Some(series))) => HistoryResponse::new(
                (agent_id, range, series.step_ms, series.tier.name()),
                asked_for,
                &series.points,
                series.filesystems,
            )
            .cores_omitted(series.cores_omitted)
            .send(gate, turn),
            Ok(Ok(None)) => unknown(&agent_id),
            Ok(Err(e)) => HttpResponse::InternalServerError().json(ApiError {
                error: format!("cannot read the history: {e}"),
            }),
            Err(e) => HttpResponse::ServiceUnavailable().json(ApiError {
                error: format!("history reader unavailable: {e}"),
            }),
        };
    }
    let asked = GetHistory {
        agent_id: agent_id.clone(),
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        step_ms: range.step_ms,
    };
    match state.registry.history.send(asked).await {
        Ok(Some(points)) => HistoryResponse::new(
            (agent_id, range, range.step_ms, "memory"),
            asked_for,
            &points,
            Vec::new(),
        )
        .send(gate, turn),
        Ok(None) => unknown(&agent_id),
        Err(e) => HttpResponse::ServiceUnavailable().json(ApiError {
            error: format!("registry unavailable: {e}"),
        }),
    }
}

/// The dashboard page, embedded in the binary.
async fn dashboard_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(dashboard::INDEX.content_type)
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(dashboard::INDEX.body)
}

/// The dashboard's embedded scripts, styles and icon.
async fn static_asset(name: web::Path<String>) -> HttpResponse {
    match dashboard::asset(&name) {
        Some(asset) => HttpResponse::Ok()
            .content_type(asset.content_type)
            .insert_header((CACHE_CONTROL, "no-cache"))
            .body(asset.body),
        None => HttpResponse::NotFound().json(ApiError {
            error: format!("no file `{name}`"),
        }),
    }
}

/// The dashboard's live feed: a `text/event-stream` of snapshots, one per second. Each browser
/// has a small bounded queue ([`events::Broadcaster`]); a browser that does not keep up is
/// disconnected and its `EventSource` reconnects.
async fn live_events(state: web::Data<State>, req: actix_web::HttpRequest) -> HttpResponse {
    let ip = req
        .peer_addr()
        .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| {
            a.ip()
        });
    match state.events.send(events::Subscribe { ip }).await {
        Ok(Ok(rx)) => {
            let stream = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::ReceiverStream::new(rx),
                Ok::<_, std::convert::Infallible>,
            );
            HttpResponse::Ok()
                .content_type("text/event-stream")
                .insert_header((CACHE_CONTROL, "no-store"))
                .streaming(stream)
        }
        Ok(Err(refused)) => HttpResponse::ServiceUnavailable().json(ApiError {
            error: refused.to_string(),
        }),
        Err(e) => HttpResponse::ServiceUnavailable().json(ApiError {
            error: format!("live feed unavailable: {e}"),
        }),
    }
}

/// The body of `GET /api/enrollment`.
#[derive(Serialize)]
struct EnrollmentView {
    /// The server's key fingerprint, as agents see it.
    fingerprint: String,
    agents: Vec<crate::auth::enroll::Entry>,
}

fn no_trust() -> HttpResponse {
    HttpResponse::NotFound().json(ApiError {
        error: "the server runs with --auth off: no enrollment".into(),
    })
}

/// Every agent key the server knows: pending first, then by name.
async fn enrollment(state: web::Data<State>) -> HttpResponse {
    let Some(trust) = &state.trust else {
        return no_trust();
    };
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(EnrollmentView {
            fingerprint: trust.fingerprint().to_string(),
            agents: trust.entries(),
        })
}

/// Approves (`approve`) or revokes the agent that `id` names (an agent id, a name or a key
/// fingerprint): the entry as it is now, 404 for no match, 409 for an ambiguous or refused
/// one.
async fn enroll_action(state: &State, id: &str, approve: bool) -> HttpResponse {
    let Some(trust) = state.trust.clone() else {
        return no_trust();
    };
    let id = id.to_string();
    let result = web::block(move || {
        if approve {
            trust.approve(&id)
        } else {
            trust.revoke(&id)
        }
    })
    .await;
    match result {
        Ok(Ok(entry)) => HttpResponse::Ok().json(entry),
        Ok(Err(e)) => {
            let message = e.to_string();
            if message.starts_with("no agent matches") {
                HttpResponse::NotFound().json(ApiError { error: message })
            } else {
                HttpResponse::Conflict().json(ApiError { error: message })
            }
        }
        Err(e) => HttpResponse::ServiceUnavailable().json(ApiError {
            error: format!("enrollment unavailable: {e}"),
        }),
    }
}

async fn approve(state: web::Data<State>, id: web::Path<String>) -> HttpResponse {
    enroll_action(&state, &id, true).await
}

async fn revoke(state: web::Data<State>, id: web::Path<String>) -> HttpResponse {
    enroll_action(&state, &id, false).await
}

/// The agent installer script (the same bytes for every request: its hash is in the banner).
async fn install_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(crate::install::script::SCRIPT)
}

/// The agent binary, streamed a chunk at a time from the file opened (and hashed) at start.
async fn download_agent(state: web::Data<State>) -> HttpResponse {
    use crate::install::download::Offer;
    let not_found = |why: &str| {
        HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body(format!("this server offers no agent binary: {why}\n"))
    };
    let file = match &state.agent {
        Some(Offer::Ready(file)) => file,
        Some(Offer::Missing(why)) => return not_found(why),
        None => return not_found("start the server with --agent-binary PATH"),
    };
    match file.stream() {
        Some(stream) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .insert_header((CACHE_CONTROL, "no-cache"))
            .insert_header(("Content-Disposition", "attachment; filename=\"agent\""))
            .no_chunking(file.len())
            .streaming(stream),
        None => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "2"))
            .body("too many downloads at once; try again in a moment\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GET `path` on `addr` (optionally with a bearer token); the status code.
    async fn status(addr: SocketAddr, path: &str, bearer: Option<&str>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        String::from_utf8_lossy(&head[9..12]).parse().unwrap()
    }

    /// With `start_with_auth` the real server refuses the API, the page and /metrics without
    /// a token (401), opens them with it, and keeps /healthz open; `start` stays open.
    #[test]
    fn start_with_auth_guards_the_real_routes() {
        actix::System::new().block_on(async {
            let info = crate::snapshot::ServerInfo {
                id: "s".into(),
                name: "lab".into(),
                version: "0".into(),
                listen: "127.0.0.1:0".into(),
                http: None,
                auth: None,
                fingerprint: None,
            };
            let registry =
                RegistryQueries::to(&crate::server::registry::Registry::new(info, 16).start());
            let config = HttpConfig {
                per_core_metrics: false,
                ..HttpConfig::new("127.0.0.1:0".parse().unwrap())
            };
            let auth =
                http_auth::HttpAuth::new("LOGINLOGINLOGIN0".into(), "METRICSMETRICS00".into());
            let socket = Http::bind(&config).unwrap();
            let addr = socket.local_addr().unwrap();
            let http =
                Http::start_with_auth(socket, &config, registry.clone(), Some(Arc::new(auth)))
                    .unwrap();
            for path in ["/api/agents", "/", "/metrics", "/api/events"] {
                assert_eq!(status(addr, path, None).await, 401, "{path}");
                assert_eq!(
                    status(addr, path, Some("LOGINLOGINLOGIN0")).await,
                    200,
                    "{path}"
                );
            }
            assert_eq!(
                status(addr, "/metrics", Some("METRICSMETRICS00")).await,
                200
            );
            assert_eq!(
                status(addr, "/api/agents", Some("METRICSMETRICS00")).await,
                401
            );
            assert_eq!(status(addr, "/healthz", None).await, 200);
            http.stop().await;

            let socket = Http::bind(&config).unwrap();
            let addr = socket.local_addr().unwrap();
            let open = Http::start(socket, &config, registry).unwrap();
            assert_eq!(status(addr, "/api/agents", None).await, 200);
            open.stop().await;
        });
    }

    /// Proves: IP literals (with or without a port), localhost and the configured names are
    /// answered, whatever their case or trailing dot; any other name, a bad port or a
    /// malformed literal is not.
    #[test]
    fn host_policy_allows_addresses_and_known_names_only() {
        let policy = HostPolicy::with_names(["localhost".into(), "lanmon.lab".into()]);
        for ok in [
            "127.0.0.1",
            "192.168.1.10:8081",
            "[::1]",
            "[fe80::1]:8081",
            "localhost:8081",
            "LANMON.lab.",
            "lanmon.lab:80",
        ] {
            assert!(policy.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8081",
            "lanmon.lab.evil.example",
            "127.0.0.1.nip.io",
            "localhost:99999",
            "[::1",
            "[evil]:80",
            "",
        ] {
            assert!(!policy.allows(bad), "{bad}");
        }
    }

    /// `cores=` takes 0/1 (and false/true, no/yes), defaults to per-core series, and
    /// refuses anything else with a message naming the parameter.
    #[test]
    fn history_cores_parameter() {
        assert_eq!(parse_cores(None), Ok(true));
        assert_eq!(parse_cores(Some("1")), Ok(true));
        assert_eq!(parse_cores(Some("0")), Ok(false));
        assert_eq!(parse_cores(Some("false")), Ok(false));
        assert!(parse_cores(Some("2")).is_err_and(|e| e.contains("`cores`")));
    }

    #[test]
    fn history_range_defaults_and_errors() {
        let now = 10_000_000;
        let r = parse_range(None, None, None, now);
        assert_eq!(
            r,
            Ok(Range {
                from_ms: now - 3_600_000,
                to_ms: now,
                step_ms: 12_000
            })
        );
        assert!(parse_range(Some("x"), None, None, now).is_err_and(|e| e.contains("`from`")));
        assert!(parse_range(Some("5"), Some("5"), None, now).is_err_and(|e| e.contains("before")));
        assert!(parse_range(None, None, Some("0"), now).is_err_and(|e| e.contains("step")));
        assert!(
            parse_range(Some("0"), Some("100000"), Some("1"), now)
                .is_err_and(|e| e.contains("at most"))
        );
        assert_eq!(
            parse_range(Some("0"), Some("60000"), Some("1000"), now).map(|r| r.step_ms),
            Ok(1000)
        );
    }
}

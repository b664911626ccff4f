//! A tiny HTTP/1.1 client over `std::net::TcpStream` (one request per connection,
//! `Connection: close`), and the server's API bodies as typed values.
//!
//! Logged in by default: a server the harness starts registers its HTTP address with its login
//! token ([`log_in`]), and requests to that address carry `Authorization: Bearer <token>`, as a
//! browser that opened the dashboard URL carries its session cookie. [`anonymous`] sends
//! without; [`request_with`] with exactly the headers given (tests of the authentication).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, OnceLock};

use lanmon::snapshot::StoreView;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{DEADLINE, LOOPBACK};

/// One point of `/api/agents/{id}/history`.
pub use lanmon::server::history::Bucket;

/// The body of `GET /api/agents/{id}/history`.
#[derive(Debug, Deserialize)]
pub struct History {
    /// `memory`, or the store's tier: `raw`, `1m`, `10m`, `1h`.
    pub source: String,
    pub points: Vec<Bucket>,
}

impl History {
    /// Samples behind all the points.
    pub fn samples(&self) -> u64 {
        self.points.iter().map(|p| p.n).sum()
    }
}

/// The body of `GET /healthz`.
#[derive(Debug, Deserialize)]
pub struct Health {
    /// `ok`, or `degraded` while the store cannot write.
    pub status: String,
    pub version: String,
    /// With a store.
    #[serde(default)]
    pub store: Option<StoreView>,
}

/// The body of an API error (400, 404, …).
#[derive(Debug, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// An HTTP response, body decoded (chunked or not).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, for checks of its shape; panics with the body if it is not JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        self.parse()
    }

    /// The body as a `T`; panics with the body if it is not one.
    #[track_caller]
    pub fn parse<T: DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not a {} ({e}):\n{}",
                std::any::type_name::<T>(),
                self.body
            )
        })
    }
}

fn logins() -> &'static Mutex<HashMap<String, String>> {
    static LOGINS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    LOGINS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Requests to `addr` from now on carry `Authorization: Bearer <login>`.
pub fn log_in(addr: &str, login: &str) {
    super::lock(logins()).insert(addr.to_string(), login.to_string());
}

/// The login registered for `addr`, if any.
fn login_for(addr: &str) -> Option<String> {
    super::lock(logins()).get(addr).cloned()
}

/// `GET path` on `addr` (`127.0.0.1:PORT`), logged in; panics if there is no complete answer.
#[track_caller]
pub fn get(addr: &str, path: &str) -> Response {
    request("GET", addr, path)
}

/// `GET path` on `addr` without any credentials.
#[track_caller]
pub fn anonymous(addr: &str, path: &str) -> Response {
    request_with("GET", addr, path, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// `method path` on `addr` (`127.0.0.1:PORT`), logged in; panics if there is no complete
/// answer.
#[track_caller]
pub fn request(method: &str, addr: &str, path: &str) -> Response {
    try_request(method, addr, path).unwrap_or_else(|e| panic!("{e}"))
}

/// `method path` on `addr` (`127.0.0.1:PORT`) with `Connection: close`, logged in; reads to
/// EOF. An error says what went wrong (for a peer that may not be up yet).
#[track_caller]
pub fn try_request(method: &str, addr: &str, path: &str) -> Result<Response, String> {
    let bearer = login_for(addr).map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| ("Authorization", b))
        .into_iter()
        .collect();
    request_with(method, addr, path, &headers)
}

/// `method path` on `addr` with exactly `headers` besides the usual ones.
#[track_caller]
pub fn request_with(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    assert!(
        addr.starts_with(&format!("{LOOPBACK}:")),
        "tests only talk to {LOOPBACK}, not {addr}"
    );
    let mut stream =
        TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(DEADLINE))
        .map_err(|e| format!("cannot set a read timeout: {e}"))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: lanmon-it\r\nAccept: */*\r\n\
         {extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send {method} {path} to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{method} {path} on {addr}: no complete answer: {e}"))?;
    parse_response(&raw, method == "HEAD").map_err(|e| {
        format!(
            "{method} {path} on {addr}: {e}\n{}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Parses a whole HTTP/1.1 response; the answer to a HEAD request has headers only.
fn parse_response(raw: &[u8], head_only: bool) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|e| format!("head not UTF-8: {e}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("bad header line {l:?}"))
        })
        .collect::<Result<_, _>>()?;
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if head_only {
        if !body.is_empty() {
            return Err(format!("{} bytes of body after HEAD", body.len()));
        }
    } else if chunked {
        body = dechunk(&body)?;
    } else if let Some((_, len)) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        let len: usize = len
            .parse()
            .map_err(|e| format!("content-length {len:?}: {e}"))?;
        if body.len() != len {
            return Err(format!("content-length {len} but {} bytes", body.len()));
        }
    }
    let body = String::from_utf8(body).map_err(|e| format!("body not UTF-8: {e}"))?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked body (RFC 9112 §7.1), without trailers.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not terminated")?;
        let size_line = std::str::from_utf8(&rest[..eol]).map_err(|e| e.to_string())?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| format!("chunk size {size_line:?}: {e}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("chunk shorter than its size")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("chunk not followed by CRLF")?;
    }
}

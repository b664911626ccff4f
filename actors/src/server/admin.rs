//! The operator's commands from the command line: `server agents list | approve | revoke`,
//! `server rotate-key`, `server token`. What the `server` binary's subcommands call.
//!
//! `server agents` works on the server of a data directory whether or not it runs:
//!
//! - **running** (it holds `trust.lock`): through its HTTP API on loopback — the address from
//!   `http.url`, which the server writes at start, and the login token from `http.token`, both
//!   in the data directory (so only a user who can read that directory can do it). The server
//!   applies the change at once (a revocation closes the agent's connection) and saves it.
//! - **stopped** (the lock is free): `agents.json` is edited in place while this command holds
//!   the lock, so a server starting meanwhile waits for nothing and reads the result.
//!
//! `server rotate-key` needs the server stopped: a running server reads its keys at start.
//! `server token` prints the join token (and creates the identity if there is none yet).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::enroll::{Enrollment, Entry, Policy};
use crate::auth::http_auth::{HttpAuth, LOGIN_TOKEN_FILE};
use crate::auth::keys::NetworkKey;
use crate::auth::rotation::Rotation;
use crate::auth::token::JoinToken;
use crate::server::trust::{self, HTTP_URL_FILE};
use crate::util::now_ms;

/// How long one API call may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the commands act.
enum Target {
    /// The running server's API.
    Api { url: String, login: String },
    /// The files, under the lock (held as long as this value lives).
    Files { dir: PathBuf, _lock: std::fs::File },
}

/// The server of one data directory, running or not (see the module docs).
pub struct Admin {
    target: Target,
}

fn other(e: impl std::fmt::Display) -> crate::Error {
    crate::Error::Other(e.to_string())
}

#[derive(Deserialize)]
struct ApiError {
    error: String,
}

#[derive(Deserialize)]
struct EnrollmentView {
    agents: Vec<Entry>,
}

impl Admin {
    /// Finds out whether the server of `dir` runs, and how to reach it.
    pub fn open(dir: &Path) -> crate::Result<Admin> {
        if !dir.is_dir() {
            return Err(other(format!(
                "{} does not exist: no server has run with this data directory (--data-dir)",
                dir.display()
            )));
        }
        if let Some(lock) = trust::try_lock_dir(dir).map_err(other)? {
            return Ok(Admin {
                target: Target::Files {
                    dir: dir.to_path_buf(),
                    _lock: lock,
                },
            });
        }
        let url = std::fs::read_to_string(dir.join(HTTP_URL_FILE)).map_err(|_| {
            other(format!(
                "the server of {} runs without HTTP (--no-http), so it cannot be reached: stop \
                 it to change its enrollment here, or restart it with HTTP",
                dir.display()
            ))
        })?;
        let login = HttpAuth::load_or_create(dir)
            .map_err(|e| other(format!("cannot read {LOGIN_TOKEN_FILE}: {e}")))?
            .login()
            .to_string();
        Ok(Admin {
            target: Target::Api {
                url: url.trim().to_string(),
                login,
            },
        })
    }

    /// True when the command goes through the running server.
    pub fn is_live(&self) -> bool {
        matches!(self.target, Target::Api { .. })
    }

    /// Every entry: pending first, then by name.
    pub fn list(&self) -> crate::Result<Vec<Entry>> {
        match &self.target {
            Target::Api { url, login } => {
                let view: EnrollmentView = call(url, login, "GET", "/api/enrollment")?;
                Ok(view.agents)
            }
            Target::Files { dir, .. } => Ok(load(dir)?.list()),
        }
    }

    /// Approves the agent `selector` names (id, name or key fingerprint).
    pub fn approve(&self, selector: &str) -> crate::Result<Entry> {
        self.act(selector, true)
    }

    /// Revokes the agent `selector` names; a running server closes its connection at once.
    pub fn revoke(&self, selector: &str) -> crate::Result<Entry> {
        self.act(selector, false)
    }

    fn act(&self, selector: &str, approve: bool) -> crate::Result<Entry> {
        let verb = if approve { "approve" } else { "revoke" };
        match &self.target {
            Target::Api { url, login } => {
                let path = format!("/api/agents/{}/{verb}", path_segment(selector));
                call(url, login, "POST", &path)
            }
            Target::Files { dir, .. } => {
                let mut enrollment = load(dir)?;
                let now = now_ms();
                let entry = if approve {
                    enrollment.approve(selector, now)
                } else {
                    enrollment.revoke(selector, now)
                }
                .map_err(other)?;
                enrollment.save(dir).map_err(other)?;
                Ok(entry)
            }
        }
    }
}

fn load(dir: &Path) -> crate::Result<Enrollment> {
    Enrollment::load(dir, Policy::Manual).map_err(other)
}

/// Percent-encodes everything but unreserved characters (a fingerprint's `:` included).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// One API call with the login token; the JSON answer, or the API's error sentence.
fn call<T: for<'de> Deserialize<'de>>(
    base: &str,
    login: &str,
    method: &str,
    path: &str,
) -> crate::Result<T> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(API_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let url = format!("{base}{path}");
    let auth = format!("Bearer {login}");
    let response = match method {
        "POST" => agent.post(&url).header("Authorization", &auth).send_empty(),
        _ => agent.get(&url).header("Authorization", &auth).call(),
    };
    let mut response = response.map_err(|e| {
        other(format!(
            "cannot reach the running server at {base} ({e}); is it still running?"
        ))
    })?;
    let status = response.status();
    let text = response
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .map_err(other)?;
    if !status.is_success() {
        let why = serde_json::from_str::<ApiError>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        return Err(other(format!("{why} (HTTP {status})")));
    }
    serde_json::from_str(&text).map_err(|e| other(format!("unexpected answer from {url}: {e}")))
}

/// `server rotate-key`: a new server key, the current one accepted for `grace` more. Refused
/// while the server runs. Returns the new fingerprint and join token.
pub fn rotate_key(dir: &Path, grace: Duration) -> crate::Result<(String, String)> {
    let Some(_lock) = trust::try_lock_dir(dir).map_err(other)? else {
        return Err(other(format!(
            "the server of {} is running: stop it, rotate, and start it again (it reads its \
             keys at start; agents reconnect by themselves)",
            dir.display()
        )));
    };
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    let rotation = Rotation::rotate_files(dir, now_ms(), grace_ms).map_err(other)?;
    Ok((
        crate::auth::fingerprint::Fingerprint::of(&rotation.current.public()).to_string(),
        join_token_of(dir, &rotation)?,
    ))
}

/// `server token`: the join token of the server of `dir` (its identity — keys and HTTP
/// tokens — is created if there is none yet, as the server's first start would).
pub fn join_token(dir: &Path) -> crate::Result<String> {
    crate::auth::keys::create_private_dir(dir).map_err(other)?;
    let (rotation, _) = Rotation::load(dir, now_ms()).map_err(other)?;
    HttpAuth::load_or_create(dir).map_err(other)?;
    join_token_of(dir, &rotation)
}

fn join_token_of(dir: &Path, rotation: &Rotation) -> crate::Result<String> {
    let (network_key, _) = NetworkKey::load_or_create(dir).map_err(other)?;
    let fp = crate::auth::fingerprint::Fingerprint::of(&rotation.current.public());
    Ok(JoinToken {
        server_key: rotation.current.public(),
        network_key,
        server_id: trust::server_id_of(&fp),
    }
    .encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fingerprints survive the trip into a URL path segment.
    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("web-1"), "web-1");
        assert_eq!(path_segment("SHA256:AB/C d"), "SHA256%3AAB%2FC%20d");
    }

    /// With the server stopped, approve edits agents.json under the lock; rotate-key is
    /// refused while the directory is locked and then changes the token.
    #[test]
    fn offline_edits_and_rotation() {
        let dir = std::env::temp_dir().join(format!("lanmon-admin-{}", crate::util::random_u64()));
        let token = join_token(&dir).unwrap();
        let mut e = Enrollment::new(Policy::Manual);
        let key = crate::auth::keys::StaticKeypair::generate()
            .unwrap()
            .public();
        e.admit(
            crate::auth::enroll::Claim {
                key: &key,
                proof: crate::auth::noise::Proof::Absent,
                agent_id: "a1",
                name: "web-1",
                hostname: "h",
                ip: "10.0.0.1",
            },
            1,
        );
        e.save(&dir).unwrap();
        let admin = Admin::open(&dir).unwrap();
        assert!(!admin.is_live());
        assert_eq!(admin.list().unwrap().len(), 1);
        let entry = admin.approve("web-1").unwrap();
        assert_eq!(entry.status, crate::auth::enroll::Status::Approved);
        assert!(rotate_key(&dir, Duration::from_secs(60)).is_err(), "locked");
        drop(admin);
        let (_, new_token) = rotate_key(&dir, Duration::from_secs(60)).unwrap();
        assert_ne!(new_token, token);
        assert_eq!(join_token(&dir).unwrap(), new_token);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

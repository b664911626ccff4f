//! The server's side of the trust layer, wired: its identity, who may send, and the HTTP
//! secrets, shared by the Listener (handshakes), the Sessions (admission), the HTTP API
//! (approve, revoke) and the banner.
//!
//! Owns: the server's keys ([`Rotation`]: the current key and, during a rotation's grace
//! period, the previous one) and the network key; the enrollment registry ([`Enrollment`],
//! `agents.json`); the authenticated sessions that are open, by agent key, so that a
//! revocation closes them at once; the HTTP tokens ([`HttpAuth`]); the lock that keeps a second
//! server off the same data directory. Not an actor: a shared structure behind one lock, like
//! the connection counts ([`crate::server::limits`]); every call is short (map lookups), and
//! files are written outside the lock.
//!
//! Files (all 0600, under the data directory; see `bins/docs/SECURITY-DESIGN.md` and the
//! README's "Security and trust"): `server.key`, `network.key` (created at first start),
//! `server.key.previous` + `rotation.json` (during a rotation), `agents.json`, `http.token`,
//! `metrics.token`, `trust.lock` (held while the server runs), `http.url` (where `server
//! agents` finds the running server's API). Without a directory
//! ([`TrustConfig::dir`] `None`, in-process tests) the identity is made in memory for this run.
//!
//! Receives calls from: the Listener ([`Trust::identity`], [`Trust::handshake_failed`]),
//! Sessions ([`Trust::admit`], [`Trust::leave`], [`Trust::check_unauthenticated`],
//! [`Trust::notice_for`]), the HTTP API ([`Trust::approve`], [`Trust::revoke`],
//! [`Trust::entries`]), the Registry's snapshots ([`Trust::pending`]). Sends [`Close::Revoked`]
//! to the sessions of a revoked key. Automatic enrollment changes are saved by the
//! [`Saver`] thread at most once per [`SAVE_DEBOUNCE_MS`]; operator actions at once.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix::Recipient;

use crate::auth::enroll::{self, Claim, Decision, Enrollment, Entry, Policy, SAVE_DEBOUNCE_MS};
use crate::auth::fingerprint::Fingerprint;
use crate::auth::http_auth::{self, HttpAuth};
use crate::auth::keys::{NetworkKey, PublicKey, StaticKeypair};
use crate::auth::noise::ServerIdentity;
use crate::auth::rotation::{KeyUpdate, Rotation};
use crate::auth::token::JoinToken;
use crate::auth::{AuthError, AuthResult};
use crate::config::AuthMode;
use crate::server::messages::{Close, SessionId};
use crate::snapshot::PendingAgent;
use crate::util::now_ms;

/// Held while a server runs on a data directory (`server agents` edits the files itself only
/// when it can take this lock).
pub const TRUST_LOCK_FILE: &str = "trust.lock";
/// The running server's API address, for `server agents` (loopback form, e.g.
/// `http://127.0.0.1:8081`).
pub const HTTP_URL_FILE: &str = "http.url";
/// At most one "handshake failed" line per this period (with the count of the others).
pub const HANDSHAKE_LOG_EVERY: Duration = Duration::from_secs(1);

/// The trust layer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustConfig {
    pub mode: AuthMode,
    /// Where the identity, `agents.json` and the tokens live (the data directory, also with
    /// `--no-store`: join tokens must survive a restart). `None`: an identity made in memory
    /// for this run only (in-process tests); tokens and logins die with the server.
    pub dir: Option<PathBuf>,
    /// Approval of keys that bring no valid join proof (`--auto-approve`: every key).
    pub policy: Policy,
}

impl TrustConfig {
    /// The secure default: protocol 2 required, manual approval, identity in `dir`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            mode: AuthMode::Required,
            dir,
            policy: Policy::Manual,
        }
    }
}

struct Book {
    enrollment: Enrollment,
    /// Open authenticated sessions, by agent key.
    live: HashMap<PublicKey, Vec<(SessionId, Recipient<Close>)>>,
}

/// See the module docs.
pub struct Trust {
    mode: AuthMode,
    dir: Option<PathBuf>,
    rotation: Rotation,
    network_key: NetworkKey,
    fingerprint: Fingerprint,
    server_id: String,
    http: Arc<HttpAuth>,
    book: Mutex<Book>,
    created: bool,
    failed_handshakes: AtomicU64,
    last_failure_log_ms: AtomicU64,
    /// The data directory's lock, released at shutdown ([`Trust::release`]).
    lock: Mutex<Option<File>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("mode", &self.mode)
            .field("dir", &self.dir)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The server id of a key: the first 8 bytes of its fingerprint in hex, so that it is the same
/// after every restart and the id in a join token stays true.
pub fn server_id_of(fp: &Fingerprint) -> String {
    fp.0[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Takes the data directory's trust lock (creating the directory, 0700); `None` if another
/// process holds it.
pub fn try_lock_dir(dir: &Path) -> AuthResult<Option<File>> {
    crate::auth::keys::create_private_dir(dir)?;
    let path = dir.join(TRUST_LOCK_FILE);
    let file = File::create(&path).map_err(|e| AuthError::Io {
        path: path.clone(),
        source: e,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(AuthError::Io { path, source: e }),
    }
}

impl Trust {
    /// Loads (or creates, at first start) the identity, the enrollment and the tokens; takes
    /// the directory's lock. `None` for `--auth off`.
    pub fn open(config: &TrustConfig) -> crate::Result<Option<Trust>> {
        if config.mode == AuthMode::Off {
            return Ok(None);
        }
        let err = |e: AuthError| crate::Error::Other(e.to_string());
        let now = now_ms();
        let (rotation, network_key, http, enrollment, created, lock) = match &config.dir {
            Some(dir) => {
                let lock = try_lock_dir(dir).map_err(err)?.ok_or_else(|| {
                    crate::Error::Other(format!(
                        "{} is in use by another server ({TRUST_LOCK_FILE} is locked): one \
                         server per data directory",
                        dir.display()
                    ))
                })?;
                let (rotation, created) = Rotation::load(dir, now).map_err(err)?;
                let (network_key, _) = NetworkKey::load_or_create(dir).map_err(err)?;
                let http = HttpAuth::load_or_create(dir).map_err(err)?;
                let enrollment = Enrollment::load(dir, config.policy).map_err(err)?;
                (rotation, network_key, http, enrollment, created, Some(lock))
            }
            None => {
                let key = StaticKeypair::generate().map_err(err)?;
                let http = HttpAuth::new(
                    http_auth::new_token().map_err(err)?,
                    http_auth::new_token().map_err(err)?,
                );
                (
                    Rotation::new(key),
                    NetworkKey::generate().map_err(err)?,
                    http,
                    Enrollment::new(config.policy),
                    true,
                    None,
                )
            }
        };
        let fingerprint = Fingerprint::of(&rotation.current.public());
        Ok(Some(Trust {
            mode: config.mode,
            dir: config.dir.clone(),
            server_id: server_id_of(&fingerprint),
            fingerprint,
            rotation,
            network_key,
            http: Arc::new(http),
            book: Mutex::new(Book {
                enrollment,
                live: HashMap::new(),
            }),
            created,
            failed_handshakes: AtomicU64::new(0),
            last_failure_log_ms: AtomicU64::new(0),
            lock: Mutex::new(lock),
        }))
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // Every change is one step on consistent maps: usable after a panic elsewhere.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Where the files are (`None`: in memory).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// True when this start created the identity.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The fingerprint of the current key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The server id derived from the key ([`server_id_of`]).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The network key (beacons are signed with a key derived from it).
    pub fn network_key(&self) -> &NetworkKey {
        &self.network_key
    }

    /// The join token agents are given (`agent --join …`): the current key to pin, the
    /// network key, the server id.
    pub fn join_token(&self) -> String {
        JoinToken {
            server_key: self.rotation.current.public(),
            network_key: self.network_key.clone(),
            server_id: self.server_id.clone(),
        }
        .encode()
    }

    /// The HTTP secrets (login, `/metrics` bearer).
    pub fn http(&self) -> Arc<HttpAuth> {
        Arc::clone(&self.http)
    }

    /// The file Prometheus' `credentials_file` reads, when the tokens are on disk.
    pub fn metrics_token_path(&self) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(http_auth::METRICS_TOKEN_FILE))
    }

    /// When the previous key of a rotation stops being accepted, if one is.
    pub fn previous_until_ms(&self) -> Option<u64> {
        self.rotation
            .previous
            .as_ref()
            .map(|(_, until)| *until)
            .filter(|until| now_ms() < *until)
    }

    /// The keys a handshake may present now (current first) and the network key.
    pub fn identity(&self) -> ServerIdentity {
        ServerIdentity {
            keys: self.rotation.keys(now_ms()),
            network_key: self.network_key.clone(),
        }
    }

    /// Records a failed handshake: one log line per [`HANDSHAKE_LOG_EVERY`] at most, with the
    /// number of failures since the last line.
    pub fn handshake_failed(&self, peer: std::net::SocketAddr, why: &dyn std::fmt::Display) {
        let n = self.failed_handshakes.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        let last = self.last_failure_log_ms.load(Ordering::Relaxed);
        let every = u64::try_from(HANDSHAKE_LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) >= every
            && self
                .last_failure_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%peer, "handshake failed, connection closed: {why} ({n} failed so far)");
        }
    }

    /// The enrollment decision for an authenticated `hello` (see [`Enrollment::admit`]); an
    /// accepted session is remembered, so that revoking its key closes it.
    pub fn admit(&self, claim: Claim<'_>, session: SessionId, close: Recipient<Close>) -> Decision {
        let mut book = self.book();
        let decision = book.enrollment.admit(claim, now_ms());
        if decision == Decision::Accept {
            book.live
                .entry(*claim.key)
                .or_default()
                .push((session, close));
        }
        decision
    }

    /// An admitted session ended.
    pub fn leave(&self, key: &PublicKey, session: SessionId) {
        let mut book = self.book();
        if let Some(list) = book.live.get_mut(key) {
            list.retain(|(s, _)| *s != session);
            if list.is_empty() {
                book.live.remove(key);
            }
        }
    }

    /// Refuses an unauthenticated (protocol 1) `hello` that uses an enrolled agent's id.
    pub fn check_unauthenticated(&self, agent_id: &str) -> Result<(), String> {
        if self.book().enrollment.is_bound(agent_id) {
            return Err(format!(
                "agent id {agent_id} is enrolled with a key: an unauthenticated (protocol 1) \
                 connection cannot use it"
            ));
        }
        Ok(())
    }

    /// The rotation notice for a session that was shown key `index` (`> 0`: a previous key).
    pub fn notice_for(&self, index: usize) -> Option<KeyUpdate> {
        if index == 0 {
            return None;
        }
        let (previous, _) = self.rotation.previous.as_ref()?;
        self.rotation.notice_for(&previous.public())
    }

    /// Every enrollment entry (pending first, then by name).
    pub fn entries(&self) -> Vec<Entry> {
        self.book().enrollment.list()
    }

    /// The fingerprints of the revoked keys, for the snapshot (`auth: revoked`).
    pub fn revoked(&self) -> HashSet<String> {
        self.book()
            .enrollment
            .revoked()
            .map(|e| e.fp.clone())
            .collect()
    }

    /// The keys waiting for approval, for the snapshot.
    pub fn pending(&self) -> Vec<PendingAgent> {
        self.book()
            .enrollment
            .pending()
            .into_iter()
            .map(|e| PendingAgent {
                fp: e.fp.clone(),
                id: e.agent_id.clone(),
                name: e.name.clone(),
                hostname: e.hostname.clone(),
                ip: e.last_ip.clone(),
                first_seen_ms: e.first_seen_ms,
                last_seen_ms: e.last_seen_ms,
            })
            .collect()
    }

    /// The operator approves an agent (by id, name or fingerprint); saved at once.
    pub fn approve(&self, selector: &str) -> AuthResult<Entry> {
        let entry = self.book().enrollment.approve(selector, now_ms())?;
        tracing::info!(
            "approved agent {} ({}), key {}",
            entry.name,
            entry.agent_id,
            entry.fp
        );
        self.save_now()?;
        Ok(entry)
    }

    /// The operator revokes an agent: refused from now on, and its open sessions are closed at
    /// once; saved at once.
    pub fn revoke(&self, selector: &str) -> AuthResult<Entry> {
        let (entry, closed) = {
            let mut book = self.book();
            let entry = book.enrollment.revoke(selector, now_ms())?;
            let key = PublicKey::from_base32(&entry.key);
            let sessions = key.and_then(|k| book.live.remove(&k)).unwrap_or_default();
            for (_, close) in &sessions {
                close.do_send(Close::Revoked);
            }
            (entry, sessions.len())
        };
        tracing::warn!(
            "revoked agent {} ({}), key {}: {closed} open connection(s) closed",
            entry.name,
            entry.agent_id,
            entry.fp
        );
        self.save_now()?;
        Ok(entry)
    }

    /// Writes `agents.json` now (operator actions).
    fn save_now(&self) -> AuthResult<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let changes = self.book().enrollment.take_changes();
        changes.write(dir)
    }

    /// Writes `agents.json` if something changed since the last save ([`Saver`], shutdown).
    pub fn flush(&self) {
        let Some(dir) = &self.dir else { return };
        let changes = {
            let mut book = self.book();
            if !book.enrollment.is_dirty() {
                return;
            }
            book.enrollment.take_changes()
        };
        if let Err(e) = changes.write(dir) {
            tracing::warn!("cannot save {}: {e}", enroll::AGENTS_FILE);
            // Try again at the next tick: the in-memory registry is still right.
            self.book().enrollment.mark_dirty();
        }
    }

    /// Writes where the running server's API answers (for `server agents`): `http://IP:PORT`
    /// with a loopback IP when HTTP listens on every interface.
    pub fn publish_http(&self, addr: std::net::SocketAddr) {
        let Some(dir) = &self.dir else { return };
        let ip = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
            ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        let url = format!("http://{}", std::net::SocketAddr::new(ip, addr.port()));
        if let Err(e) =
            crate::auth::keys::write_replace_private(&dir.join(HTTP_URL_FILE), url.as_bytes())
        {
            tracing::warn!(
                "cannot write {HTTP_URL_FILE}: {e} (`server agents` will not find the API)"
            );
        }
    }

    /// At shutdown, after the last save: removes `http.url` and releases the directory's
    /// lock (a new server may start on it while this one's actors wind down).
    pub fn release(&self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.join(HTTP_URL_FILE));
        }
        drop(
            self.lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}

/// Saves automatic enrollment changes on a thread of its own, at most once per
/// [`SAVE_DEBOUNCE_MS`] (a reconnect storm of token holders is a few writes, not one per
/// agent); a last save when stopped.
pub struct Saver {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Saver {
    pub fn start(trust: Arc<Trust>) -> std::io::Result<Saver> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let every = Duration::from_millis(SAVE_DEBOUNCE_MS);
        let thread = std::thread::Builder::new()
            .name("enrollment saver".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    trust.flush();
                }
                trust.flush();
            })?;
        Ok(Saver {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread after a last save.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::noise::Proof;

    fn temp_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "lanmon-trust-{name}-{}-{:x}",
            std::process::id(),
            crate::util::random_u64()
        ))
    }

    /// The first start creates the identity under the data directory; the second reads the
    /// same (same fingerprint, server id and token); a second server on the directory is
    /// refused while the first holds it.
    #[test]
    fn identity_is_created_once_and_the_directory_is_locked() {
        let dir = temp_dir("identity");
        let config = TrustConfig::new(Some(dir.clone()));
        let first = Trust::open(&config).unwrap().unwrap();
        assert!(first.created());
        let err = Trust::open(&config).unwrap_err().to_string();
        assert!(err.contains("in use by another server"), "{err}");
        let (fp, id, token) = (
            first.fingerprint(),
            first.server_id().to_string(),
            first.join_token(),
        );
        drop(first);
        let second = Trust::open(&config).unwrap().unwrap();
        assert!(!second.created());
        assert_eq!(second.fingerprint(), fp);
        assert_eq!(second.server_id(), id);
        assert_eq!(second.join_token(), token);
        let decoded = JoinToken::decode(&token).unwrap();
        assert_eq!(decoded.server_id, id);
        for f in ["server.key", "network.key", "http.token", "metrics.token"] {
            crate::auth::keys::check_private(&dir.join(f)).unwrap();
        }
        assert!(
            Trust::open(&TrustConfig {
                mode: AuthMode::Off,
                ..config
            })
            .unwrap()
            .is_none()
        );
        drop(second);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Pending keys are listed for the snapshot with what they presented; approval by
    /// fingerprint enrolls and saves at once; revocation closes the open session.
    #[actix_rt::test]
    async fn pending_then_approved_and_saved() {
        let dir = temp_dir("pending");
        let trust = Trust::open(&TrustConfig::new(Some(dir.clone())))
            .unwrap()
            .unwrap();
        let key = StaticKeypair::generate().unwrap().public();
        let (probe, mut closed) = crate::server::probe::start::<Close>();
        let close = probe.recipient();
        let claim = Claim {
            key: &key,
            proof: Proof::Absent,
            agent_id: "a1",
            name: "web-1",
            hostname: "web-1.lan",
            ip: "10.0.0.9",
        };
        assert_eq!(trust.admit(claim, 1, close.clone()), Decision::Pending);
        let pending = trust.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].name.as_str(), pending[0].ip.as_deref()),
            ("web-1", Some("10.0.0.9"))
        );
        trust.approve(&pending[0].fp).unwrap();
        assert!(trust.pending().is_empty());
        let saved = Enrollment::load(&dir, Policy::Manual).unwrap();
        assert_eq!(saved.status_of(&key), Some(enroll::Status::Approved));
        assert_eq!(trust.admit(claim, 2, close), Decision::Accept);
        assert!(trust.check_unauthenticated("a1").is_err());
        assert!(trust.check_unauthenticated("other").is_ok());
        // Revoking closes the open session at once; the key is refused from then on.
        trust.revoke("a1").unwrap();
        assert_eq!(closed.next("close").await, Close::Revoked);
        let (probe, _) = crate::server::probe::start::<Close>();
        assert_eq!(trust.admit(claim, 3, probe.recipient()), Decision::Revoked);
        drop(trust);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The server's enrollment registry: which agent keys may send samples, as whom.
//!
//! Pure state plus its file. Each entry maps an agent's static public key (authenticated by
//! the Noise handshake) to the agent id it is bound to, its last name and host name, a
//! [`Status`] and times. [`Enrollment::admit`] is the one decision the session asks for when
//! a v2 `hello` arrives, with the key and the join proof's verdict from the handshake:
//!
//! 1. a **revoked** key → refused (`revoked`);
//! 2. a key **approved** as one id that presents another id → refused (`identity_mismatch`:
//!    one key, one agent);
//! 3. an id **bound** to another key (approved or revoked) → refused (`identity_mismatch`):
//!    an insider with the network key cannot take over an enrolled agent's id;
//! 4. an approved key with its id → accepted;
//! 5. an unknown or pending key with a **valid join proof**, or under the `--auto-approve`
//!    lab policy → approved now, its id bound → accepted;
//! 6. otherwise → **pending** (`pending_approval`): recorded with its name for the operator,
//!    zero samples accepted; the agent retries with backoff.
//!
//! Pending entries do not bind ids (else anyone could squat an id before the real agent
//! connects) and are bounded ([`MAX_PENDING`], oldest dropped first), so unknown keys cannot
//! grow memory or the file without bound. `approve` / `revoke` / `forget` are the operator's
//! (`server agents …`, the dashboard); `revoke` returns the ids whose live sessions the caller
//! must close at once.
//!
//! # Storage: `agents.json` in the data directory
//!
//! A JSON file rather than a table in the history database: enrollment must work with the
//! history store off or being rebuilt (it is identity, not history); an operator can read,
//! back up and, in an emergency, edit it; and it is small (≈ 250 bytes per agent, 2.5 MB for
//! 10,000). It is replaced atomically (temporary file, fsync, rename; 0600). Operator actions
//! save at once; automatic changes only mark it dirty and the owner saves at most once per
//! [`SAVE_DEBOUNCE_MS`], so a reconnect storm of 10,000 token holders is a handful of writes,
//! not 10,000. Losing the last second of automatic approvals in a crash is harmless: those
//! agents prove their token again at their next connection.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::auth::error::{AuthError, AuthResult};
use crate::auth::fingerprint::Fingerprint;
use crate::auth::keys::{self, PublicKey};
use crate::auth::noise::Proof;
use crate::protocol::{ErrorCode, MAX_TEXT_LEN};

/// The registry's file in the data directory.
pub const AGENTS_FILE: &str = "agents.json";
/// Most pending entries kept; the oldest is dropped for a new one.
pub const MAX_PENDING: usize = 1024;
/// Automatic changes are saved at most this often.
pub const SAVE_DEBOUNCE_MS: u64 = 1000;
const FILE_VERSION: u32 = 1;

/// An agent key's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Revoked,
}

/// How an entry came to be approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovedBy {
    /// A valid join proof (the agent holds the token).
    Token,
    /// `server agents approve` or the dashboard.
    Operator,
    /// The `--auto-approve` lab policy.
    Policy,
}

/// One agent key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The agent's static public key, base32.
    pub key: String,
    pub fp: String,
    /// The id it presented (bound once approved).
    pub agent_id: String,
    pub name: String,
    pub hostname: String,
    pub status: Status,
    pub first_seen_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<ApprovedBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
    /// When this key last presented itself (a `hello`), and from which address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ip: Option<String>,
}

/// What the session does with a `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    /// Refuse with the error code `pending_approval`.
    Pending,
    /// Refuse with the error code `identity_mismatch`; the sentence says which binding.
    IdentityMismatch(String),
    /// Refuse with the error code `revoked`.
    Revoked,
}

impl Decision {
    /// The wire error code of a refusal (`None` for [`Decision::Accept`]).
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Decision::Accept => None,
            Decision::Pending => Some(ErrorCode::PendingApproval),
            Decision::IdentityMismatch(_) => Some(ErrorCode::IdentityMismatch),
            Decision::Revoked => Some(ErrorCode::Revoked),
        }
    }
}

/// The approval policy for keys without a join proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Pending until an operator approves (the default).
    #[default]
    Manual,
    /// Approve every new key (`--auto-approve`, for a closed lab).
    AutoApprove,
}

/// Who presents itself, from the handshake and the `hello`.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub key: &'a PublicKey,
    pub proof: Proof,
    pub agent_id: &'a str,
    pub name: &'a str,
    pub hostname: &'a str,
    /// The connection's source address, as text (shown to the operator).
    pub ip: &'a str,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    agents: Vec<Entry>,
}

/// The registry (see the module docs).
#[derive(Debug, Default)]
pub struct Enrollment {
    entries: HashMap<PublicKey, Entry>,
    /// Agent id → the key it is bound to (approved or revoked entries only).
    bound: HashMap<String, PublicKey>,
    policy: Policy,
    dirty: bool,
}

/// Cuts agent-controlled text to the protocol's limit (at a char boundary).
fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_TEXT_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].chars().filter(|c| !c.is_control()).collect()
}

impl Enrollment {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The decision for a `hello` (see the module docs), recording what it changes.
    pub fn admit(&mut self, c: Claim<'_>, now_ms: u64) -> Decision {
        let decision = self.decide(c, now_ms);
        if let Some(e) = self.entries.get_mut(c.key) {
            // Kept in memory; saved with the next change (a reconnect alone writes nothing).
            e.last_seen_ms = Some(now_ms);
            if e.last_ip.as_deref() != Some(c.ip) {
                e.last_ip = Some(clip(c.ip));
            }
        }
        decision
    }

    fn decide(&mut self, c: Claim<'_>, now_ms: u64) -> Decision {
        if let Some(e) = self.entries.get(c.key) {
            match e.status {
                Status::Revoked => return Decision::Revoked,
                Status::Approved if e.agent_id != c.agent_id => {
                    return Decision::IdentityMismatch(format!(
                        "this key is enrolled as agent {}, not {}",
                        e.agent_id,
                        clip(c.agent_id)
                    ));
                }
                Status::Approved => {
                    let (name, hostname) = (clip(c.name), clip(c.hostname));
                    if let Some(e) = self.entries.get_mut(c.key)
                        && (e.name != name || e.hostname != hostname)
                    {
                        e.name = name;
                        e.hostname = hostname;
                        self.dirty = true;
                    }
                    return Decision::Accept;
                }
                Status::Pending => {}
            }
        }
        if self.bound.get(c.agent_id).is_some_and(|k| k != c.key) {
            return Decision::IdentityMismatch(format!(
                "agent id {} is enrolled with another key",
                clip(c.agent_id)
            ));
        }
        let approve = match (c.proof, self.policy) {
            (Proof::Valid, _) => Some(ApprovedBy::Token),
            (_, Policy::AutoApprove) => Some(ApprovedBy::Policy),
            _ => None,
        };
        if approve.is_none() && !self.entries.contains_key(c.key) {
            self.make_room_for_pending();
        }
        let entry = self.entries.entry(*c.key).or_insert_with(|| Entry {
            key: c.key.to_base32(),
            fp: Fingerprint::of(c.key).to_string(),
            agent_id: String::new(),
            name: String::new(),
            hostname: String::new(),
            status: Status::Pending,
            first_seen_ms: now_ms,
            approved_at_ms: None,
            approved_by: None,
            revoked_at_ms: None,
            last_seen_ms: None,
            last_ip: None,
        });
        entry.agent_id = clip(c.agent_id);
        entry.name = clip(c.name);
        entry.hostname = clip(c.hostname);
        self.dirty = true;
        match approve {
            Some(by) => {
                entry.status = Status::Approved;
                entry.approved_at_ms = Some(now_ms);
                entry.approved_by = Some(by);
                self.bound.insert(entry.agent_id.clone(), *c.key);
                Decision::Accept
            }
            None => Decision::Pending,
        }
    }

    fn make_room_for_pending(&mut self) {
        let pending: Vec<(u64, PublicKey)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.status == Status::Pending)
            .map(|(k, e)| (e.first_seen_ms, *k))
            .collect();
        if pending.len() >= MAX_PENDING
            && let Some((_, oldest)) = pending.iter().min()
        {
            self.entries.remove(oldest);
        }
    }

    /// Entries matching `selector`: an agent id, a name, a fingerprint (any accepted form) or
    /// a base32 key.
    fn select(&self, selector: &str) -> Vec<PublicKey> {
        let fp = Fingerprint::parse(selector);
        let mut keys: Vec<PublicKey> = self
            .entries
            .iter()
            .filter(|(k, e)| {
                e.agent_id == selector
                    || e.name == selector
                    || e.key == selector
                    || fp.is_some_and(|f| Fingerprint::of(k) == f)
            })
            .map(|(k, _)| *k)
            .collect();
        keys.sort();
        keys
    }

    fn select_one(&self, selector: &str) -> AuthResult<PublicKey> {
        match self.select(selector).as_slice() {
            [k] => Ok(*k),
            [] => Err(AuthError::Other(format!("no agent matches {selector:?}"))),
            many => Err(AuthError::Other(format!(
                "{} agents match {selector:?}; name one by fingerprint: {}",
                many.len(),
                many.iter()
                    .map(|k| Fingerprint::of(k).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The operator approves one agent (pending or revoked). Refused if its id is bound to
    /// another key.
    pub fn approve(&mut self, selector: &str, now_ms: u64) -> AuthResult<Entry> {
        let key = self.select_one(selector)?;
        let id = self
            .entries
            .get(&key)
            .map(|e| e.agent_id.clone())
            .unwrap_or_default();
        if self.bound.get(&id).is_some_and(|k| *k != key) {
            return Err(AuthError::Other(format!(
                "agent id {id} is enrolled with another key: revoke and forget that one first"
            )));
        }
        let Some(e) = self.entries.get_mut(&key) else {
            return Err(AuthError::Other(format!("no agent matches {selector:?}")));
        };
        e.status = Status::Approved;
        e.approved_at_ms = Some(now_ms);
        e.approved_by = Some(ApprovedBy::Operator);
        e.revoked_at_ms = None;
        self.bound.insert(id, key);
        self.dirty = true;
        Ok(e.clone())
    }

    /// The operator revokes one agent: refused from now on, its id stays bound to the revoked
    /// key. Returns the entry; the caller closes the live session of `entry.agent_id`.
    pub fn revoke(&mut self, selector: &str, now_ms: u64) -> AuthResult<Entry> {
        let key = self.select_one(selector)?;
        let Some(e) = self.entries.get_mut(&key) else {
            return Err(AuthError::Other(format!("no agent matches {selector:?}")));
        };
        e.status = Status::Revoked;
        e.revoked_at_ms = Some(now_ms);
        self.bound.insert(e.agent_id.clone(), key);
        self.dirty = true;
        Ok(e.clone())
    }

    /// Removes an entry entirely (frees its id for another key).
    pub fn forget(&mut self, selector: &str) -> AuthResult<Entry> {
        let key = self.select_one(selector)?;
        let e = self
            .entries
            .remove(&key)
            .ok_or_else(|| AuthError::Other(format!("no agent matches {selector:?}")))?;
        if self.bound.get(&e.agent_id) == Some(&key) {
            self.bound.remove(&e.agent_id);
        }
        self.dirty = true;
        Ok(e)
    }

    /// Every entry, pending first, then by name.
    pub fn list(&self) -> Vec<Entry> {
        let mut all: Vec<Entry> = self.entries.values().cloned().collect();
        all.sort_by(|a, b| {
            (a.status != Status::Pending, &a.name, &a.key).cmp(&(
                b.status != Status::Pending,
                &b.name,
                &b.key,
            ))
        });
        all
    }

    pub fn status_of(&self, key: &PublicKey) -> Option<Status> {
        self.entries.get(key).map(|e| e.status)
    }

    /// The entry of `key`, if any.
    pub fn get(&self, key: &PublicKey) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// True if `agent_id` is bound to an enrolled (approved or revoked) key: an unauthenticated
    /// (protocol 1) connection may not use it.
    pub fn is_bound(&self, agent_id: &str) -> bool {
        self.bound.contains_key(agent_id)
    }

    /// The revoked entries, in no particular order (the snapshot's `auth: revoked`).
    pub fn revoked(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .values()
            .filter(|e| e.status == Status::Revoked)
    }

    /// The pending entries, oldest first.
    pub fn pending(&self) -> Vec<&Entry> {
        let mut p: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| e.status == Status::Pending)
            .collect();
        p.sort_by(|a, b| (a.first_seen_ms, &a.key).cmp(&(b.first_seen_ms, &b.key)));
        p
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True without entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Marks the registry as changed (a save failed: try again).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// True if something changed since the last save.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Loads `agents.json` from `data_dir` (empty if there is none).
    pub fn load(data_dir: &Path, policy: Policy) -> AuthResult<Self> {
        let path = data_dir.join(AGENTS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new(policy)),
            Err(e) => return Err(AuthError::io(path, e)),
        };
        let bad = |why: String| AuthError::BadKeyFile {
            path: path.clone(),
            kind: "enrollment",
            why,
        };
        let file: File = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if file.version != FILE_VERSION {
            return Err(bad(format!(
                "version {} (this server reads {FILE_VERSION})",
                file.version
            )));
        }
        let mut me = Self::new(policy);
        for e in file.agents {
            let key = PublicKey::from_base32(&e.key)
                .ok_or_else(|| bad(format!("bad key {:?}", e.key)))?;
            if e.status != Status::Pending {
                me.bound.insert(e.agent_id.clone(), key);
            }
            me.entries.insert(key, e);
        }
        Ok(me)
    }

    /// Writes `agents.json` atomically and clears the dirty mark.
    pub fn save(&mut self, data_dir: &Path) -> AuthResult<()> {
        let pending = self.take_changes();
        pending.write(data_dir)
    }

    /// What a save would write, taken now (a copy of every entry) so that the caller can
    /// encode and write it without holding its lock; clears the dirty mark. The owner saves
    /// automatic changes this way, at most once per [`SAVE_DEBOUNCE_MS`].
    pub fn take_changes(&mut self) -> PendingSave {
        self.dirty = false;
        PendingSave {
            agents: self.entries.values().cloned().collect(),
        }
    }
}

/// A copy of the registry to be written to `agents.json` ([`Enrollment::take_changes`]).
#[derive(Debug)]
pub struct PendingSave {
    agents: Vec<Entry>,
}

impl PendingSave {
    /// Encodes and writes `agents.json` in `data_dir`, atomically (0600).
    pub fn write(mut self, data_dir: &Path) -> AuthResult<()> {
        self.agents
            .sort_by(|a, b| (a.first_seen_ms, &a.key).cmp(&(b.first_seen_ms, &b.key)));
        let file = File {
            version: FILE_VERSION,
            agents: self.agents,
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| AuthError::Other(format!("cannot encode {AGENTS_FILE}: {e}")))?;
        keys::write_replace_private(&data_dir.join(AGENTS_FILE), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn claim<'a>(k: &'a PublicKey, proof: Proof, id: &'a str) -> Claim<'a> {
        Claim {
            key: k,
            proof,
            agent_id: id,
            name: id,
            hostname: "host",
            ip: "10.0.0.1",
        }
    }

    /// A token holder is enrolled at once; its key is then bound to its id both ways.
    #[test]
    fn valid_proof_auto_approves_and_binds() {
        let mut r = Enrollment::new(Policy::Manual);
        let k = key(1);
        assert_eq!(r.admit(claim(&k, Proof::Valid, "a1"), 10), Decision::Accept);
        assert_eq!(r.status_of(&k), Some(Status::Approved));
        assert_eq!(
            r.admit(claim(&k, Proof::Absent, "a1"), 11),
            Decision::Accept
        );
        // Same key, another id: refused.
        assert!(matches!(
            r.admit(claim(&k, Proof::Valid, "a2"), 12),
            Decision::IdentityMismatch(_)
        ));
    }

    /// An unknown key without a proof (or with an invalid one) is pending, accepted after the
    /// operator approves it; pending does not bind the id.
    #[test]
    fn unknown_key_is_pending_until_approved() {
        let mut r = Enrollment::new(Policy::Manual);
        let (k, squatter) = (key(1), key(2));
        assert_eq!(
            r.admit(claim(&squatter, Proof::Absent, "a1"), 1),
            Decision::Pending
        );
        assert_eq!(
            r.admit(claim(&k, Proof::Invalid, "a1"), 2),
            Decision::Pending
        );
        assert_eq!(
            Decision::Pending.error_code().map(ErrorCode::as_str),
            Some("pending_approval")
        );
        assert_eq!(r.list().len(), 2);
        let fp = Fingerprint::of(&k).to_string();
        assert!(r.approve("a1", 3).is_err(), "ambiguous by id");
        let e = r.approve(&fp, 3).unwrap();
        assert_eq!(
            (e.status, e.approved_by),
            (Status::Approved, Some(ApprovedBy::Operator))
        );
        assert_eq!(r.admit(claim(&k, Proof::Absent, "a1"), 4), Decision::Accept);
        // The squatter's pending entry cannot now be approved onto the bound id.
        let sq = Fingerprint::of(&squatter).to_string();
        assert!(r.approve(&sq, 5).is_err());
    }

    /// An insider with the network key (valid proof) cannot take an enrolled agent's id.
    #[test]
    fn insider_cannot_impersonate_an_enrolled_id() {
        let mut r = Enrollment::new(Policy::AutoApprove);
        assert_eq!(
            r.admit(claim(&key(1), Proof::Valid, "a1"), 1),
            Decision::Accept
        );
        let d = r.admit(claim(&key(9), Proof::Valid, "a1"), 2);
        assert!(matches!(d, Decision::IdentityMismatch(ref s) if s.contains("another key")));
        assert_eq!(d.error_code(), Some(ErrorCode::IdentityMismatch));
        // The wire form of the new codes, and an old agent's reading of them (`other`).
        let json = serde_json::to_string(&ErrorCode::IdentityMismatch).unwrap();
        assert_eq!(json, r#""identity_mismatch""#);
        let old: ErrorCode = serde_json::from_str(r#""some_future_code""#).unwrap();
        assert_eq!(old, ErrorCode::Other);
        assert_eq!(
            r.status_of(&key(9)),
            None,
            "nothing recorded for the impostor"
        );
    }

    /// A revoked key is refused, even with a valid proof; its id stays bound until forgotten.
    #[test]
    fn revoked_is_refused_until_forgotten() {
        let mut r = Enrollment::new(Policy::Manual);
        let k = key(1);
        r.admit(claim(&k, Proof::Valid, "a1"), 1);
        let e = r.revoke("a1", 2).unwrap();
        assert_eq!(e.agent_id, "a1");
        assert_eq!(r.admit(claim(&k, Proof::Valid, "a1"), 3), Decision::Revoked);
        assert!(matches!(
            r.admit(claim(&key(2), Proof::Valid, "a1"), 3),
            Decision::IdentityMismatch(_)
        ));
        r.forget("a1").unwrap();
        assert_eq!(
            r.admit(claim(&key(2), Proof::Valid, "a1"), 4),
            Decision::Accept
        );
    }

    /// The lab policy approves keys without a proof; Manual does not.
    #[test]
    fn auto_approve_policy() {
        let mut r = Enrollment::new(Policy::AutoApprove);
        assert_eq!(
            r.admit(claim(&key(1), Proof::Absent, "a1"), 1),
            Decision::Accept
        );
        let e = &r.list()[0];
        assert_eq!(e.approved_by, Some(ApprovedBy::Policy));
    }

    /// Pending entries are bounded: a flood of unknown keys keeps at most MAX_PENDING.
    #[test]
    fn pending_is_bounded() {
        let mut r = Enrollment::new(Policy::Manual);
        r.admit(claim(&key(0), Proof::Valid, "keep"), 0);
        for i in 0..(MAX_PENDING as u64 + 50) {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i + 1).to_be_bytes());
            let k = PublicKey(b);
            assert_eq!(
                r.admit(claim(&k, Proof::Absent, "x"), i + 1),
                Decision::Pending
            );
        }
        let pending = r
            .list()
            .iter()
            .filter(|e| e.status == Status::Pending)
            .count();
        assert_eq!(pending, MAX_PENDING);
        assert_eq!(r.status_of(&key(0)), Some(Status::Approved));
    }

    /// Agent-controlled text is clipped and stripped of control characters.
    #[test]
    fn hostile_text_is_clipped() {
        let mut r = Enrollment::new(Policy::Manual);
        let long = format!("a\u{7}{}", "é".repeat(400));
        let k = key(3);
        r.admit(
            Claim {
                key: &k,
                proof: Proof::Absent,
                agent_id: &long,
                name: &long,
                hostname: "h\nx",
                ip: "10.0.0.1",
            },
            1,
        );
        let e = &r.list()[0];
        assert!(e.name.len() <= MAX_TEXT_LEN && !e.name.contains('\u{7}'));
        assert_eq!(e.hostname, "hx");
    }

    /// Saved and loaded back the registry decides the same; the file is 0600 and the dirty
    /// mark follows changes.
    #[test]
    fn persists_atomically() {
        let dir = std::env::temp_dir().join(format!("lanmon-enroll-{}", crate::util::random_u64()));
        let mut r = Enrollment::new(Policy::Manual);
        assert!(!r.is_dirty());
        r.admit(claim(&key(1), Proof::Valid, "a1"), 1);
        r.admit(claim(&key(2), Proof::Absent, "a2"), 2);
        r.admit(claim(&key(3), Proof::Valid, "a3"), 3);
        r.revoke("a3", 4).unwrap();
        assert!(r.is_dirty());
        r.save(&dir).unwrap();
        assert!(!r.is_dirty());
        keys::check_private(&dir.join(AGENTS_FILE)).unwrap();
        let mut back = Enrollment::load(&dir, Policy::Manual).unwrap();
        assert_eq!(back.list(), r.list());
        assert_eq!(
            back.admit(claim(&key(1), Proof::Absent, "a1"), 5),
            Decision::Accept
        );
        assert_eq!(
            back.admit(claim(&key(2), Proof::Absent, "a2"), 5),
            Decision::Pending
        );
        assert_eq!(
            back.admit(claim(&key(3), Proof::Valid, "a3"), 5),
            Decision::Revoked
        );
        assert!(matches!(
            back.admit(claim(&key(4), Proof::Valid, "a3"), 5),
            Decision::IdentityMismatch(_)
        ));
        std::fs::write(dir.join(AGENTS_FILE), b"{\"version\":7,\"agents\":[]}").unwrap();
        assert!(Enrollment::load(&dir, Policy::Manual).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

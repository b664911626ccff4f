//! Rotating the server's static key with a grace period, and telling pinned agents.
//!
//! `server rotate-key [--grace 7d]` ([`Rotation::rotate_files`], the server stopped) makes a
//! new key current and keeps the old one, with the end of its grace period, in
//! [`SERVER_PREVIOUS_KEY_FILE`] and `rotation.json`. During the grace period the server
//! accepts handshakes on both keys: an agent's pin hint ([`crate::auth::noise`]) picks the one
//! it expects ([`Rotation::keys`] lists the current key first). To every agent that connected
//! on the old key the server sends, over the authenticated channel, a [`KeyUpdate`] frame:
//!
//! ```json
//! {"type":"server_key","key":"<base32 public key>","fp":"SHA256:…","previous_until_ms":…}
//! ```
//!
//! (`ServerFrame::ServerKey`, an additive server → agent frame of protocol 2). The agent adds the new key to its pins ([`Pins::apply`]) and saves
//! them; from then on it pins the new key first. When the grace ends the old key is dropped:
//! an agent that never connected in that time is refused (pin mismatch) and must join again
//! with a new token. The update is trusted only because it arrives inside a session whose
//! server key was pinned: an unpinned (TOFU) agent applies it the same way, since it trusts
//! its first server anyway.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::auth::error::{AuthError, AuthResult};
use crate::auth::fingerprint::Fingerprint;
use crate::auth::keys::{self, PublicKey, SERVER_PREVIOUS_KEY_FILE, StaticKeypair};

/// Default grace period of a rotation.
pub const DEFAULT_ROTATION_GRACE_MS: u64 = 7 * 24 * 3600 * 1000;
/// The rotation's metadata, beside the keys.
pub const ROTATION_FILE: &str = "rotation.json";
/// The agent's pinned server keys, in its state directory.
pub const PINS_FILE: &str = "pins.json";

/// The server's keys: the current one and, during a grace period, the previous one.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub current: StaticKeypair,
    pub previous: Option<(StaticKeypair, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RotationFile {
    previous_until_ms: u64,
}

impl Rotation {
    pub fn new(current: StaticKeypair) -> Self {
        Self {
            current,
            previous: None,
        }
    }

    /// The keys valid at `now_ms`, current first (for [`crate::auth::noise::ServerIdentity`]).
    pub fn keys(&self, now_ms: u64) -> Vec<StaticKeypair> {
        let mut keys = vec![self.current.clone()];
        if let Some((prev, until)) = &self.previous
            && now_ms < *until
        {
            keys.push(prev.clone());
        }
        keys
    }

    /// Makes `new` current; the old current key stays valid until `now_ms + grace_ms`.
    pub fn rotate(&mut self, new: StaticKeypair, now_ms: u64, grace_ms: u64) {
        let old = std::mem::replace(&mut self.current, new);
        self.previous = Some((old, now_ms.saturating_add(grace_ms)));
    }

    /// Forgets the previous key once its grace is over; true if it did.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        if self
            .previous
            .as_ref()
            .is_some_and(|(_, until)| now_ms >= *until)
        {
            self.previous = None;
            return true;
        }
        false
    }

    /// The notice for an agent that connected on the previous key (`None` otherwise).
    pub fn notice_for(&self, used: &PublicKey) -> Option<KeyUpdate> {
        let (prev, until) = self.previous.as_ref()?;
        (prev.public() == *used).then(|| KeyUpdate::new(&self.current.public(), *until))
    }

    /// The server's keys in `data_dir`: the current key (created at first start; the bool
    /// says so) and, during a grace period, the previous one. A previous key whose grace is
    /// over is left out (and its files removed).
    pub fn load(data_dir: &Path, now_ms: u64) -> AuthResult<(Rotation, bool)> {
        let (current, created) = StaticKeypair::load_or_create_server(data_dir)?;
        let mut rotation = Rotation::new(current);
        rotation.load_previous(data_dir)?;
        if rotation.expire(now_ms) {
            let _ = std::fs::remove_file(data_dir.join(SERVER_PREVIOUS_KEY_FILE));
            let _ = std::fs::remove_file(data_dir.join(ROTATION_FILE));
        }
        Ok((rotation, created))
    }

    /// Rotates the keys in `data_dir` (`server rotate-key`): a new key becomes current, the
    /// current one is kept as the previous key until `now_ms + grace_ms`. The server must not
    /// be running (the caller holds its lock): a running server reads its keys at start.
    /// Written in an order that a crash cannot break: the previous key and `rotation.json`
    /// first, then `server.key` (a crash in between leaves previous = current, harmless).
    pub fn rotate_files(data_dir: &Path, now_ms: u64, grace_ms: u64) -> AuthResult<Rotation> {
        let (mut rotation, _) = Rotation::load(data_dir, now_ms)?;
        let new = StaticKeypair::generate()?;
        rotation.rotate(new, now_ms, grace_ms);
        let Some((previous, until)) = &rotation.previous else {
            return Err(AuthError::Other("rotation without a previous key".into()));
        };
        previous.save_replace(
            &data_dir.join(SERVER_PREVIOUS_KEY_FILE),
            keys::SERVER_KEY_KIND,
        )?;
        let meta = serde_json::to_vec_pretty(&RotationFile {
            previous_until_ms: *until,
        })
        .map_err(|e| AuthError::Other(format!("cannot encode {ROTATION_FILE}: {e}")))?;
        keys::write_replace_private(&data_dir.join(ROTATION_FILE), &meta)?;
        rotation
            .current
            .save_replace(&data_dir.join(keys::SERVER_KEY_FILE), keys::SERVER_KEY_KIND)?;
        Ok(rotation)
    }

    /// Loads the previous key and its grace from `data_dir`, if a rotation is under way.
    pub fn load_previous(&mut self, data_dir: &Path) -> AuthResult<()> {
        let Some(prev) =
            StaticKeypair::load(&data_dir.join(SERVER_PREVIOUS_KEY_FILE), "server key")?
        else {
            return Ok(());
        };
        let path = data_dir.join(ROTATION_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| AuthError::io(&path, e))?;
        let meta: RotationFile =
            serde_json::from_str(&text).map_err(|e| AuthError::BadKeyFile {
                path: path.clone(),
                kind: "rotation",
                why: e.to_string(),
            })?;
        self.previous = Some((prev, meta.previous_until_ms));
        Ok(())
    }
}

/// The `server_key` frame (see the module docs): [`crate::protocol::ServerKey`].
pub use crate::protocol::ServerKey as KeyUpdate;

impl KeyUpdate {
    pub fn new(key: &PublicKey, previous_until_ms: u64) -> Self {
        Self {
            key: key.to_base32(),
            fp: Fingerprint::of(key).to_string(),
            previous_until_ms,
        }
    }
}

/// One pinned server key on the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub key: String,
    pub fp: String,
    /// `token`, `tofu` or `rotation`: how the agent learned it.
    pub source: String,
    /// Dropped after this time (the old key of a rotation); `None`: no end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

/// The agent's pinned server keys, newest first (the first one is the pin hint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    pub pins: Vec<Pin>,
}

impl Pins {
    pub fn with(key: &PublicKey, source: &str) -> Self {
        Self {
            pins: vec![Pin {
                key: key.to_base32(),
                fp: Fingerprint::of(key).to_string(),
                source: source.into(),
                until_ms: None,
            }],
        }
    }

    /// The keys pinned at `now_ms`, newest first.
    pub fn keys(&self, now_ms: u64) -> Vec<PublicKey> {
        self.pins
            .iter()
            .filter(|p| p.until_ms.is_none_or(|u| now_ms < u))
            .filter_map(|p| PublicKey::from_base32(&p.key))
            .collect()
    }

    /// Applies a `server_key` notice received in a session with `session_key`: the new key is
    /// pinned first; `session_key` stays until the notice's grace end. False if the notice
    /// is malformed or changes nothing.
    pub fn apply(&mut self, update: &KeyUpdate, session_key: &PublicKey) -> bool {
        let Some(new) = PublicKey::from_base32(&update.key) else {
            return false;
        };
        if Fingerprint::of(&new).to_string() != update.fp {
            return false;
        }
        if self.pins.first().is_some_and(|p| p.key == update.key) {
            return false;
        }
        let old = session_key.to_base32();
        for p in &mut self.pins {
            if p.key == old {
                p.until_ms = Some(update.previous_until_ms);
            }
        }
        self.pins.retain(|p| p.key != update.key);
        self.pins.insert(
            0,
            Pin {
                key: update.key.clone(),
                fp: update.fp.clone(),
                source: "rotation".into(),
                until_ms: None,
            },
        );
        self.pins.truncate(4);
        true
    }

    pub fn load(state_dir: &Path) -> AuthResult<Option<Self>> {
        let path = state_dir.join(PINS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| AuthError::BadKeyFile {
                    path,
                    kind: "pins",
                    why: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AuthError::io(path, e)),
        }
    }

    pub fn save(&self, state_dir: &Path) -> AuthResult<()> {
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        keys::write_replace_private(&state_dir.join(PINS_FILE), &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both keys are offered during the grace, only the new one after; the notice goes only to
    /// sessions on the old key.
    #[test]
    fn grace_period_and_notice() {
        let old = StaticKeypair::generate().unwrap();
        let new = StaticKeypair::generate().unwrap();
        let mut r = Rotation::new(old.clone());
        assert_eq!(r.keys(0).len(), 1);
        r.rotate(new.clone(), 1000, 500);
        let during: Vec<_> = r.keys(1400).iter().map(StaticKeypair::public).collect();
        assert_eq!(during, vec![new.public(), old.public()]);
        assert_eq!(r.keys(1500).len(), 1);
        let notice = r.notice_for(&old.public()).unwrap();
        assert_eq!(notice.key, new.public().to_base32());
        assert_eq!(notice.previous_until_ms, 1500);
        assert_eq!(r.notice_for(&new.public()), None);
        assert!(!r.expire(1499));
        assert!(r.expire(1500));
        assert_eq!(r.notice_for(&old.public()), None);
        let json = serde_json::to_string(&crate::protocol::ServerFrame::ServerKey(notice.clone()))
            .unwrap();
        assert!(
            json.starts_with(r#"{"type":"server_key","key":""#),
            "{json}"
        );
    }

    /// An agent applies a notice once: new key first, old key kept until the grace end, then
    /// dropped; a notice whose fingerprint does not match its key is ignored.
    #[test]
    fn agent_pins_follow_a_rotation() {
        let old = StaticKeypair::generate().unwrap().public();
        let new = StaticKeypair::generate().unwrap().public();
        let mut pins = Pins::with(&old, "token");
        let notice = KeyUpdate::new(&new, 2000);
        let mut forged = notice.clone();
        forged.fp = Fingerprint::of(&old).to_string();
        assert!(!pins.apply(&forged, &old));
        assert!(pins.apply(&notice, &old));
        assert!(!pins.apply(&notice, &old), "applied twice");
        assert_eq!(pins.keys(1999), vec![new, old]);
        assert_eq!(pins.keys(2000), vec![new]);
        let dir = std::env::temp_dir().join(format!("lanmon-pins-{}", crate::util::random_u64()));
        pins.save(&dir).unwrap();
        assert_eq!(Pins::load(&dir).unwrap(), Some(pins));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Rotating the files keeps the old key as the previous one for the grace period, loads
    /// back the same, and drops the previous key (and its files) once the grace is over.
    #[test]
    fn rotate_files_and_load_back() {
        let dir = std::env::temp_dir().join(format!("lanmon-rotate-{}", crate::util::random_u64()));
        let (first, created) = Rotation::load(&dir, 0).unwrap();
        assert!(created);
        let r = Rotation::rotate_files(&dir, 1000, 500).unwrap();
        assert_ne!(r.current.public(), first.current.public());
        let (back, created) = Rotation::load(&dir, 1200).unwrap();
        assert!(!created);
        assert_eq!(back.current.public(), r.current.public());
        let keys: Vec<_> = back.keys(1200).iter().map(StaticKeypair::public).collect();
        assert_eq!(keys, vec![r.current.public(), first.current.public()]);
        let (after, _) = Rotation::load(&dir, 1500).unwrap();
        assert!(after.previous.is_none());
        assert!(!dir.join(SERVER_PREVIOUS_KEY_FILE).exists());
        assert!(!dir.join(ROTATION_FILE).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The agent's side of the trust layer: its own key, the server keys it has pinned, and the
//! network key from its join token, in its state directory.
//!
//! Files (0600, in [`crate::auth::keys::default_state_dir`] or `--state-dir`): `agent.key`
//! (created at first start: it *is* the agent; the server binds the agent id to it),
//! `pins.json` ([`Pins`]: the server keys it accepts, newest first, with how each was learned:
//! `token`, `tofu` or `rotation`), `network.key` (from the join token: the join proof and
//! beacon verification). Without a state directory (in-process tests) all of it lives in
//! memory for the run.
//!
//! A join token pins its server key (unless that key is pinned already, e.g. a token left in a
//! service's settings after a rotation) and stores the network key. An agent without a token
//! and without pins trusts the first server it talks to (trust on first use, like SSH) and
//! pins its key from then on. A `server_key` notice received over an authenticated session
//! pins the new key first and keeps the session's key until the end of the grace period.

use std::path::{Path, PathBuf};

use crate::auth::beacon_auth::BeaconVerifier;
use crate::auth::fingerprint::Fingerprint;
use crate::auth::keys::{NetworkKey, PublicKey, StaticKeypair};
use crate::auth::noise::ClientConfig;
use crate::auth::rotation::{KeyUpdate, Pins};
use crate::auth::token::JoinToken;
use crate::discovery::Gate;
use crate::util::now_ms;

/// The network key's file in the agent's state directory.
pub const AGENT_NETWORK_KEY_FILE: &str = "network.key";

/// See the module docs.
#[derive(Debug)]
pub struct Identity {
    keypair: StaticKeypair,
    pins: Pins,
    network_key: Option<NetworkKey>,
    state_dir: Option<PathBuf>,
}

fn err(e: crate::auth::AuthError) -> crate::Error {
    crate::Error::Other(e.to_string())
}

impl Identity {
    /// Loads (or creates) the agent's identity in `state_dir` (`None`: in memory), joining
    /// with `join` when given.
    pub fn load(state_dir: Option<&Path>, join: Option<&JoinToken>) -> crate::Result<Identity> {
        let (keypair, mut pins, mut network_key, created) = match state_dir {
            Some(dir) => {
                let (keypair, created) = StaticKeypair::load_or_create_agent(dir).map_err(err)?;
                let pins = Pins::load(dir).map_err(err)?.unwrap_or_default();
                let nk = NetworkKey::load(&dir.join(AGENT_NETWORK_KEY_FILE)).map_err(err)?;
                (keypair, pins, nk, created)
            }
            None => (
                StaticKeypair::generate().map_err(err)?,
                Pins::default(),
                None,
                true,
            ),
        };
        if created && let Some(dir) = state_dir {
            tracing::info!(
                "created this agent's key in {} (fingerprint {})",
                dir.display(),
                Fingerprint::of(&keypair.public())
            );
        }
        let mut changed = false;
        if let Some(token) = join {
            let key = token.server_key.to_base32();
            if !pins.pins.iter().any(|p| p.key == key) {
                if !pins.pins.is_empty() {
                    tracing::warn!(
                        "joining with a token of another server key ({}): it replaces the pinned {}",
                        Fingerprint::of(&token.server_key),
                        pins.pins
                            .iter()
                            .map(|p| p.fp.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                pins = Pins::with(&token.server_key, "token");
                changed = true;
            }
            if network_key.as_ref() != Some(&token.network_key) {
                network_key = Some(token.network_key.clone());
                if let Some(dir) = state_dir {
                    token
                        .network_key
                        .save_replace(&dir.join(AGENT_NETWORK_KEY_FILE))
                        .map_err(err)?;
                }
            }
        }
        let me = Identity {
            keypair,
            pins,
            network_key,
            state_dir: state_dir.map(Path::to_path_buf),
        };
        if changed {
            me.save_pins();
        }
        Ok(me)
    }

    /// The agent's key fingerprint (what the operator approves).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.keypair.public())
    }

    /// The server keys pinned now, newest first.
    pub fn pinned(&self) -> Vec<PublicKey> {
        self.pins.keys(now_ms())
    }

    /// True when the agent holds a join token's network key.
    pub fn joined(&self) -> bool {
        self.network_key.is_some()
    }

    /// What a handshake needs.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            keypair: self.keypair.clone(),
            pins: self.pinned(),
            network_key: self.network_key.clone(),
        }
    }

    /// Which beacons to take: verified ones with a network key, pinned ones with pins alone,
    /// any without either.
    pub fn gate(&self) -> Gate {
        let pins: Vec<Fingerprint> = self.pinned().iter().map(Fingerprint::of).collect();
        match (&self.network_key, pins.is_empty()) {
            (_, true) => Gate::Open,
            (Some(nk), false) => Gate::Verified(BeaconVerifier::new(nk, pins)),
            (None, false) => Gate::Pinned(pins),
        }
    }

    /// After a handshake: pins `server` if nothing was pinned (trust on first use). True if it
    /// did.
    pub fn trust_on_first_use(&mut self, server: &PublicKey) -> bool {
        if !self.pinned().is_empty() {
            return false;
        }
        self.pins = Pins::with(server, "tofu");
        self.save_pins();
        true
    }

    /// A `server_key` notice from the session with `session_key`; true if the pins changed.
    pub fn apply_rotation(&mut self, update: &KeyUpdate, session_key: &PublicKey) -> bool {
        let changed = self.pins.apply(update, session_key);
        if changed {
            self.save_pins();
        }
        changed
    }

    fn save_pins(&self) {
        if let Some(dir) = &self.state_dir
            && let Err(e) = self.pins.save(dir)
        {
            tracing::warn!("cannot save the pinned server keys: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("lanmon-agent-id-{}", crate::util::random_u64()))
    }

    fn token(server: &PublicKey) -> JoinToken {
        JoinToken {
            server_key: *server,
            network_key: NetworkKey([4; 32]),
            server_id: "s".into(),
        }
    }

    /// A join pins the token's key and keeps the network key across restarts (no token the
    /// second time); the agent key stays the same; the beacon gate verifies.
    #[test]
    fn join_is_remembered() {
        let dir = temp_dir();
        let server = StaticKeypair::generate().unwrap().public();
        let first = Identity::load(Some(&dir), Some(&token(&server))).unwrap();
        assert_eq!(first.pinned(), vec![server]);
        assert!(matches!(first.gate(), Gate::Verified(_)));
        let again = Identity::load(Some(&dir), None).unwrap();
        assert_eq!(again.pinned(), vec![server]);
        assert!(again.joined());
        assert_eq!(again.fingerprint(), first.fingerprint());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Without a token the first server is pinned (TOFU) and only then; a stale token of a
    /// key still pinned after a rotation does not undo the rotation.
    #[test]
    fn tofu_then_rotation_survives_an_old_token() {
        let dir = temp_dir();
        let old = StaticKeypair::generate().unwrap().public();
        let new = StaticKeypair::generate().unwrap().public();
        let mut id = Identity::load(Some(&dir), None).unwrap();
        assert!(matches!(id.gate(), Gate::Open));
        assert!(id.trust_on_first_use(&old));
        assert!(!id.trust_on_first_use(&new));
        assert!(matches!(id.gate(), Gate::Pinned(_)));
        assert!(id.apply_rotation(&KeyUpdate::new(&new, u64::MAX), &old));
        let back = Identity::load(Some(&dir), Some(&token(&old))).unwrap();
        assert_eq!(back.pinned(), vec![new, old]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

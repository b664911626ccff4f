//! Identities and secrets on disk: the server's static key (`server.key`) and network key
//! (`network.key`) under its data directory, the agent's static key (`agent.key`) under its
//! state directory, and the HTTP tokens ([`crate::auth::http_auth`]) beside the server's keys.
//!
//! Every secret file is created at first start, mode 0600, atomically: written to a
//! temporary file opened with `O_CREAT|O_EXCL`, synced, then hard-linked to its final name (a
//! link never replaces an existing file, so two processes starting at once end up with the
//! same key: the loser reads the winner's). A secret file readable by group or others is
//! refused with a message that says how to fix it. Files are text: a header line naming the
//! kind, then the secret in Crockford base32 ([`crate::auth::base32`]), so `cat` shows what a
//! file is without showing anything useful to a shoulder-surfer's memory.
//!
//! Randomness comes from the OS (`getrandom`); X25519 public keys are computed with
//! `curve25519-dalek`, the implementation `snow` itself uses.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use curve25519_dalek::montgomery::MontgomeryPoint;
use sha2::{Digest, Sha256};

use crate::auth::base32;
use crate::auth::error::{AuthError, AuthResult};

/// The server's static key pair, under its data directory.
pub const SERVER_KEY_FILE: &str = "server.key";
/// The previous server key during a rotation's grace period ([`crate::auth::rotation`]).
pub const SERVER_PREVIOUS_KEY_FILE: &str = "server.key.previous";
/// The network key: what a join token holder proves it has.
pub const NETWORK_KEY_FILE: &str = "network.key";
/// The agent's static key pair, under its state directory.
pub const AGENT_KEY_FILE: &str = "agent.key";
/// Length of every key and secret here.
pub const KEY_LEN: usize = 32;

/// The kind named in the first line of a server key file.
pub const SERVER_KEY_KIND: &str = "server key";
const AGENT_KEY_KIND: &str = "agent key";
/// The kind named in the first line of a network key file.
pub const NETWORK_KEY_KIND: &str = "network key";

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> AuthResult<()> {
    getrandom::fill(buf).map_err(|e| AuthError::Other(format!("the OS random source failed: {e}")))
}

/// 32 random bytes.
pub fn random_key() -> AuthResult<[u8; KEY_LEN]> {
    let mut k = [0u8; KEY_LEN];
    random_bytes(&mut k)?;
    Ok(k)
}

/// An X25519 public key (a server's or an agent's static key, as the other side sees it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// From exactly 32 bytes (what `snow`'s `get_remote_static` returns).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(PublicKey)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// SHA-256 of the key, the basis of [`crate::auth::fingerprint`].
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }

    /// Crockford base32 (52 symbols), as stored in `agents.json` and pin files.
    pub fn to_base32(&self) -> String {
        base32::encode(&self.0)
    }

    pub fn from_base32(text: &str) -> Option<Self> {
        base32::decode(text).ok().and_then(|b| Self::from_slice(&b))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKey({})",
            crate::auth::fingerprint::Fingerprint::of(self)
        )
    }
}

/// A static X25519 key pair. `Debug` never shows the private half.
#[derive(Clone)]
pub struct StaticKeypair {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

impl StaticKeypair {
    /// A new random key pair.
    pub fn generate() -> AuthResult<Self> {
        Ok(Self::from_private(random_key()?))
    }

    /// The pair of a private key (X25519 clamps it; the public half is computed).
    pub fn from_private(private: [u8; KEY_LEN]) -> Self {
        let public = PublicKey(MontgomeryPoint::mul_base_clamped(private).to_bytes());
        Self { private, public }
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The private half, for `snow::Builder::local_private_key` and the key file only.
    pub(crate) fn private_bytes(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// Writes this key pair to `path` as a `kind` key file, replacing what is there.
    pub fn save_replace(&self, path: &Path, kind: &'static str) -> AuthResult<()> {
        write_secret_replace(path, kind, &self.private)
    }

    /// Loads the server's key from `data_dir`, creating it at first start.
    pub fn load_or_create_server(data_dir: &Path) -> AuthResult<(Self, bool)> {
        Self::load_or_create(&data_dir.join(SERVER_KEY_FILE), SERVER_KEY_KIND)
    }

    /// Loads the agent's key from `state_dir`, creating it at first start.
    pub fn load_or_create_agent(state_dir: &Path) -> AuthResult<(Self, bool)> {
        Self::load_or_create(&state_dir.join(AGENT_KEY_FILE), AGENT_KEY_KIND)
    }

    /// Loads the key pair in `path`, or creates it. The bool is true when it was created.
    pub fn load_or_create(path: &Path, kind: &'static str) -> AuthResult<(Self, bool)> {
        let (bytes, created) = load_or_create_secret(path, kind, || random_key().map(Vec::from))?;
        let private: [u8; KEY_LEN] = bytes.try_into().map_err(|_| AuthError::BadKeyFile {
            path: path.into(),
            kind,
            why: "the key is not 32 bytes long".into(),
        })?;
        Ok((Self::from_private(private), created))
    }

    /// Loads an existing key pair (no creation), e.g. the previous server key.
    pub fn load(path: &Path, kind: &'static str) -> AuthResult<Option<Self>> {
        let Some(bytes) = read_secret(path, kind)? else {
            return Ok(None);
        };
        let private: [u8; KEY_LEN] = bytes.try_into().map_err(|_| AuthError::BadKeyFile {
            path: path.into(),
            kind,
            why: "the key is not 32 bytes long".into(),
        })?;
        Ok(Some(Self::from_private(private)))
    }
}

impl std::fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The network key: 32 random bytes that every join token carries. It proves "this agent was
/// given a token" (auto-approval) and authenticates beacons; it does not identify anyone.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey(pub [u8; KEY_LEN]);

impl NetworkKey {
    pub fn generate() -> AuthResult<Self> {
        random_key().map(NetworkKey)
    }

    /// Loads a network key file at `path` (no creation): the agent's copy from its join token.
    pub fn load(path: &Path) -> AuthResult<Option<Self>> {
        let Some(bytes) = read_secret(path, NETWORK_KEY_KIND)? else {
            return Ok(None);
        };
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| AuthError::BadKeyFile {
            path: path.into(),
            kind: NETWORK_KEY_KIND,
            why: "the key is not 32 bytes long".into(),
        })?;
        Ok(Some(NetworkKey(key)))
    }

    /// Writes the network key to `path` (replacing), 0600.
    pub fn save_replace(&self, path: &Path) -> AuthResult<()> {
        write_secret_replace(path, NETWORK_KEY_KIND, &self.0)
    }

    /// Loads the network key from `data_dir`, creating it at first start.
    pub fn load_or_create(data_dir: &Path) -> AuthResult<(Self, bool)> {
        let path = data_dir.join(NETWORK_KEY_FILE);
        let (bytes, created) =
            load_or_create_secret(&path, NETWORK_KEY_KIND, || random_key().map(Vec::from))?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| AuthError::BadKeyFile {
            path: path.clone(),
            kind: NETWORK_KEY_KIND,
            why: "the key is not 32 bytes long".into(),
        })?;
        Ok((NetworkKey(key), created))
    }

    /// A key for one purpose (`label`), so the beacon MAC and the join proof never share a key:
    /// HMAC-SHA256(network key, label).
    pub fn derive(&self, label: &str) -> [u8; 32] {
        crate::auth::mac::hmac_sha256(&self.0, &[label.as_bytes()])
    }
}

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkKey(..)")
    }
}

/// The agent's state directory: `$LANMON_STATE_DIR`, else `$XDG_STATE_HOME/lanmon`, else
/// `$HOME/.local/state/lanmon`, else `/var/lib/lanmon-agent` (a service without a home; unit
/// files set `LANMON_STATE_DIR=/var/lib/lanmon-agent`, e.g. via systemd's `StateDirectory`).
pub fn default_state_dir() -> PathBuf {
    state_dir_from(|k| std::env::var_os(k))
}

/// [`default_state_dir`] with the environment injected (tests).
pub fn state_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("LANMON_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = non_empty("XDG_STATE_HOME") {
        return PathBuf::from(xdg).join("lanmon");
    }
    if let Some(home) = non_empty("HOME") {
        return PathBuf::from(home).join(".local/state/lanmon");
    }
    PathBuf::from("/var/lib/lanmon-agent")
}

// ---- Secret files ----------------------------------------------------------------------------

fn header(kind: &str) -> String {
    format!("lanmon {kind} v1")
}

/// Reads a secret file: `None` if it does not exist; refused if group/others may read it.
pub fn read_secret(path: &Path, kind: &'static str) -> AuthResult<Option<Vec<u8>>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuthError::io(path, e)),
    };
    check_private(path)?;
    let bad = |why: &str| AuthError::BadKeyFile {
        path: path.into(),
        kind,
        why: why.into(),
    };
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(header(kind).as_str()) {
        return Err(bad(&format!(
            "the first line is not `{}` (wrong file?)",
            header(kind)
        )));
    }
    let body = lines.next().map(str::trim).unwrap_or_default();
    base32::decode(body)
        .map(Some)
        .map_err(|e| bad(&format!("the second line: {e}")))
}

/// Refuses a file that group or others may access (Unix; elsewhere the ACLs are the user's).
pub fn check_private(path: &Path) -> AuthResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| AuthError::io(path, e))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 != 0 {
            return Err(AuthError::KeyFilePermissions {
                path: path.into(),
                mode,
            });
        }
    }
    Ok(())
}

/// Writes a secret file of `kind` holding `bytes`, replacing any file at `path` (atomically,
/// 0600): for a rotation, which replaces `server.key` on purpose.
pub fn write_secret_replace(path: &Path, kind: &'static str, bytes: &[u8]) -> AuthResult<()> {
    let content = format!("{}\n{}\n", header(kind), base32::encode(bytes));
    write_replace_private(path, content.as_bytes())
}

/// Loads the secret in `path`, or creates it with `generate()`. True when created.
pub fn load_or_create_secret(
    path: &Path,
    kind: &'static str,
    generate: impl FnOnce() -> AuthResult<Vec<u8>>,
) -> AuthResult<(Vec<u8>, bool)> {
    if let Some(bytes) = read_secret(path, kind)? {
        return Ok((bytes, false));
    }
    let bytes = generate()?;
    let content = format!("{}\n{}\n", header(kind), base32::encode(&bytes));
    if write_new_private(path, content.as_bytes())? {
        Ok((bytes, true))
    } else {
        // Another process created it first: use theirs.
        read_secret(path, kind)?
            .map(|b| (b, false))
            .ok_or_else(|| AuthError::Other(format!("{} vanished while created", path.display())))
    }
}

/// Creates the directory (and parents) with mode 0700 where it does not exist.
pub fn create_private_dir(dir: &Path) -> AuthResult<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| AuthError::io(dir, e))
}

/// Writes `content` to a new file at `path` with mode 0600, atomically and without replacing
/// an existing file: false if `path` already existed (the content was not written).
pub fn write_new_private(path: &Path, content: &[u8]) -> AuthResult<bool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let tmp = tmp_path(path);
    write_tmp(&tmp, content)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(AuthError::io(path, e)),
    }
}

/// Replaces `path` with `content` atomically (temporary file, fsync, rename), mode 0600: for
/// files rewritten in place, like `agents.json` and pin files.
pub fn write_replace_private(path: &Path, content: &[u8]) -> AuthResult<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let tmp = tmp_path(path);
    write_tmp(&tmp, content)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        AuthError::io(path, e)
    })?;
    sync_parent(path);
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".tmp.{}.{:x}",
        std::process::id(),
        crate::util::random_u64()
    ));
    path.with_file_name(name)
}

fn write_tmp(tmp: &Path, content: &[u8]) -> AuthResult<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut f: File = options.open(tmp)?;
        f.write_all(content)?;
        f.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(tmp);
        AuthError::io(tmp, e)
    })
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lanmon-keys-{name}-{}-{:x}",
            std::process::id(),
            crate::util::random_u64()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// A key created at first start is 0600 and the same key is read back at the next start.
    #[test]
    fn created_once_private_and_stable() {
        let dir = temp_dir("stable");
        let (a, created) = StaticKeypair::load_or_create_server(&dir).unwrap();
        assert!(created);
        let (b, created) = StaticKeypair::load_or_create_server(&dir).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(SERVER_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let dmode = fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(dmode & 0o777, 0o700);
        }
        let (n1, _) = NetworkKey::load_or_create(&dir).unwrap();
        let (n2, _) = NetworkKey::load_or_create(&dir).unwrap();
        assert_eq!(n1, n2);
        assert_ne!(n1.0, [0; 32]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A key file that group or others can read is refused, naming the file and the fix.
    #[cfg(unix)]
    #[test]
    fn readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("perm");
        StaticKeypair::load_or_create_agent(&dir).unwrap();
        let path = dir.join(AGENT_KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = StaticKeypair::load_or_create_agent(&dir).unwrap_err();
        assert!(matches!(
            err,
            AuthError::KeyFilePermissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A damaged or foreign file is refused rather than silently replaced by a new identity.
    #[test]
    fn foreign_file_is_refused_not_overwritten() {
        let dir = temp_dir("foreign");
        let path = dir.join(NETWORK_KEY_FILE);
        write_new_private(&path, b"lanmon server key v1\n00\n").unwrap();
        let err = NetworkKey::load_or_create(&dir).unwrap_err();
        assert!(matches!(err, AuthError::BadKeyFile { .. }), "{err}");
        write_replace_private(&path, b"lanmon network key v1\nUUUU\n").unwrap();
        assert!(matches!(
            NetworkKey::load_or_create(&dir),
            Err(AuthError::BadKeyFile { .. })
        ));
        let _ = fs::remove_dir_all(&dir);
    }

    /// Creating never replaces an existing file: the second creator gets false and the
    /// first content stays.
    #[test]
    fn exclusive_create_keeps_the_first() {
        let dir = temp_dir("excl");
        let path = dir.join("x");
        assert!(write_new_private(&path, b"first").unwrap());
        assert!(!write_new_private(&path, b"second").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"first");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    /// The public half is X25519's base-point multiple (RFC 7748 test vector, Alice).
    #[test]
    fn public_key_matches_rfc7748() {
        let hex = |s: &str| -> [u8; 32] {
            let v: Vec<u8> = (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect();
            v.try_into().unwrap()
        };
        let k = StaticKeypair::from_private(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            k.public().0,
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert!(!format!("{k:?}").contains("77076d"));
    }

    /// The state directory follows LANMON_STATE_DIR, then XDG_STATE_HOME, then HOME.
    #[test]
    fn state_dir_precedence() {
        fn env<'a>(
            pairs: &'a [(&'a str, &'a str)],
        ) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        }
        let all = [
            ("LANMON_STATE_DIR", "/s"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(state_dir_from(env(&all)), PathBuf::from("/s"));
        assert_eq!(state_dir_from(env(&all[1..])), PathBuf::from("/x/lanmon"));
        assert_eq!(
            state_dir_from(env(&[("LANMON_STATE_DIR", ""), ("HOME", "/h")])),
            PathBuf::from("/h/.local/state/lanmon")
        );
        assert_eq!(
            state_dir_from(env(&[])),
            PathBuf::from("/var/lib/lanmon-agent")
        );
    }
}

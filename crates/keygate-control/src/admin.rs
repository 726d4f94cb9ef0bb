//! Admin credentials (AWS Signature Version 4 access keys) and bearer tokens.
//!
//! SigV4 needs the secret itself to check a signature, so secrets cannot be hashed like API keys.
//! They are sealed with ChaCha20-Poly1305 under a master key that lives outside the database: the
//! file `admin.key` in the data directory (created with mode 0600 on first use) or the
//! `KEYGATE_MASTER_KEY` environment variable (64 hex digits). A leaked database alone reveals no
//! usable secret. Bearer tokens are random and high-entropy, so a SHA-256 digest is enough.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use keygate_types::model::{ALPHANUMERIC, AdminCredential, AdminToken, new_id, random_string};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use keygate_store::Change;

use crate::{Error, Result, Store};

/// Environment variable holding the master key (64 hex digits), instead of the key file.
pub const MASTER_KEY_ENV: &str = "KEYGATE_MASTER_KEY";
/// File of the master key inside the data directory.
pub const MASTER_KEY_FILE: &str = "admin.key";

/// The key that seals admin secrets. Its `Debug` is redacted.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// From `env_value` (the `KEYGATE_MASTER_KEY` value, if set), else `<data_dir>/admin.key`,
    /// created when missing.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed key; an IO failure as [`Error::Invalid`] with the path.
    pub fn load(data_dir: &Path, env_value: Option<&str>) -> Result<Self> {
        if let Some(hex_key) = env_value {
            return Self::from_hex(hex_key.trim()).ok_or_else(|| {
                Error::Invalid(format!("{MASTER_KEY_ENV} must be 64 hexadecimal digits"))
            });
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                keygate_store::private::tighten_file(&path).map_err(|e| {
                    Error::Invalid(format!("cannot make {} private: {e}", path.display()))
                })?;
                Self::from_hex(text.trim()).ok_or_else(|| {
                    Error::Invalid(format!("{} is not a keygate master key", path.display()))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = [0u8; 32];
                rand::rng().fill_bytes(&mut k);
                keygate_store::private::prepare_data_dir(data_dir)
                    .and_then(|()| write_private(&path, &hex::encode(k)))
                    .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))?;
                Ok(Self(k))
            }
            Err(e) => Err(Error::Invalid(format!("cannot read {}: {e}", path.display()))),
        }
    }

    fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        // Encryption with a valid key and nonce cannot fail.
        out.extend(cipher.encrypt(Nonce::from_slice(&nonce), plaintext).unwrap_or_default());
        out
    }

    /// Opens a sealed secret; `None` if it was sealed under another key or tampered with.
    pub fn open(&self, sealed: &[u8]) -> Option<String> {
        if sealed.len() < 12 {
            return None;
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let plain = cipher.decrypt(Nonce::from_slice(&sealed[..12]), &sealed[12..]).ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A new credential, with its secret: shown once.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewCredential {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Issues an access key id and secret for SigV4 clients (`aws`, boto3).
///
/// # Errors
/// A store error.
pub async fn create_credential(
    store: &Store,
    master: &MasterKey,
    description: Option<String>,
) -> Result<NewCredential> {
    let access_key_id = format!("AKKG{}", random_string(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"));
    let secret = random_string(40, ALPHANUMERIC);
    store
        .apply(Change::CreateAdminCredential(AdminCredential {
            access_key_id: access_key_id.clone(),
            secret_sealed: master.seal(secret.as_bytes()),
            description,
            created_date: now(),
            revoked_date: None,
        }))
        .await?;
    Ok(NewCredential { access_key_id, secret_access_key: secret })
}

/// Revokes an admin credential (kept, marked revoked, for the audit trail).
///
/// # Errors
/// [`Error::NotFound`] for an unknown access key id.
pub async fn revoke_credential(store: &Store, access_key_id: &str) -> Result<()> {
    let change = Change::RevokeAdminCredential { access_key_id: access_key_id.to_owned() };
    store.apply(change).await?;
    Ok(())
}

/// The secret of an active credential, for signature checks; `None` when unknown or revoked.
///
/// # Errors
/// A store error, or [`Error::Invalid`] when the secret cannot be unsealed (wrong master key).
pub async fn credential_secret(
    store: &Store,
    master: &MasterKey,
    access_key_id: &str,
) -> Result<Option<String>> {
    let Some(c) = store.get_admin_credential(access_key_id).await? else { return Ok(None) };
    if c.revoked_date.is_some() {
        return Ok(None);
    }
    master.open(&c.secret_sealed).map(Some).ok_or_else(|| {
        Error::Invalid(format!(
            "the secret of {access_key_id} cannot be unsealed: the master key is not the one it \
             was created with"
        ))
    })
}

/// A new bearer token: shown once.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewToken {
    pub id: String,
    pub token: String,
}

/// Prefix of bearer tokens (so they are recognisable in a secret scanner).
pub const TOKEN_PREFIX: &str = "kgt_";

/// Issues a bearer token for curl and scripts.
///
/// # Errors
/// A store error.
pub async fn create_token(store: &Store, description: Option<String>) -> Result<NewToken> {
    let secret = random_string(40, ALPHANUMERIC);
    let token = format!("{TOKEN_PREFIX}{secret}");
    let id = new_id(10);
    store
        .apply(Change::CreateAdminToken(AdminToken {
            id: id.clone(),
            digest: Sha256::digest(token.as_bytes()).to_vec(),
            prefix: token[..8].to_owned(),
            description,
            created_date: now(),
            revoked_date: None,
        }))
        .await?;
    Ok(NewToken { id, token })
}

/// Revokes a bearer token (kept, marked revoked, for the audit trail).
///
/// # Errors
/// [`Error::NotFound`] for an unknown token id.
pub async fn revoke_token(store: &Store, id: &str) -> Result<()> {
    store.apply(Change::RevokeAdminToken { id: id.to_owned() }).await?;
    Ok(())
}

/// The active token presented, if any.
///
/// # Errors
/// A store error.
pub async fn check_token(store: &Store, token: &str) -> Result<Option<AdminToken>> {
    let found = store.find_admin_token(&Sha256::digest(token.as_bytes())).await?;
    Ok(found.filter(|t| t.revoked_date.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let k = MasterKey::load(dir.path(), None).unwrap();
        let again = MasterKey::load(dir.path(), None).unwrap();
        let sealed = k.seal(b"secret");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(again.open(&sealed).as_deref(), Some("secret"));
        let other = MasterKey::load(dir.path(), Some(&"11".repeat(32))).unwrap();
        assert_eq!(other.open(&sealed), None);
        assert!(MasterKey::load(dir.path(), Some("nothex")).is_err());
        assert!(!format!("{k:?}").contains(&hex::encode(k.0)));
    }

    #[cfg(unix)]
    #[test]
    fn the_master_key_file_is_private_and_a_loose_one_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state");
        MasterKey::load(&dir, None).unwrap();
        let path = dir.join(MASTER_KEY_FILE);
        assert_eq!((mode(&dir), mode(&path)), (0o711, 0o600));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        MasterKey::load(&dir, None).unwrap();
        assert_eq!(mode(&path), 0o600);
    }
}

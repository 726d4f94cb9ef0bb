//! API key values and their digests.
//!
//! A key value is a secret: [`ApiKeyValue`] never prints itself (`Debug` and `Display` are
//! redacted) and keygate stores only its SHA-256 [`KeyDigest`] plus a short display prefix.

use std::fmt;

use rand::distr::Alphanumeric;
use rand::{Rng, TryRngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of values keygate generates (the length AWS generates).
pub const GENERATED_LEN: usize = 40;
/// Shortest custom value accepted (AWS's current documented minimum).
pub const MIN_LEN: usize = 20;
/// Longest value accepted.
pub const MAX_LEN: usize = 128;
/// Characters of the value kept in clear as a non-secret display prefix.
pub const PREFIX_LEN: usize = 4;

/// A secret API key value. Construct with [`ApiKeyValue::generate`] or [`ApiKeyValue::parse`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiKeyValue(String);

/// Why a custom key value was refused. The message never contains the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidKeyValue {
    Length(usize),
    Character { position: usize },
}

impl fmt::Display for InvalidKeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(n) => write!(
                f,
                "an API key value must be {MIN_LEN} to {MAX_LEN} characters long, this one has {n}"
            ),
            Self::Character { position } => write!(
                f,
                "an API key value may contain only letters A-Z, a-z and digits 0-9; \
                 character {position} is not one of them"
            ),
        }
    }
}

impl std::error::Error for InvalidKeyValue {}

impl ApiKeyValue {
    /// A fresh value: [`GENERATED_LEN`] alphanumeric characters from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng.unwrap_err();
        let s: String = (0..GENERATED_LEN).map(|_| char::from(rng.sample(Alphanumeric))).collect();
        Self(s)
    }

    /// Validates a custom value: 20-128 characters of `[A-Za-z0-9]`.
    pub fn parse(s: &str) -> Result<Self, InvalidKeyValue> {
        if let Some(position) = s.bytes().position(|b| !b.is_ascii_alphanumeric()) {
            return Err(InvalidKeyValue::Character { position: position + 1 });
        }
        if !(MIN_LEN..=MAX_LEN).contains(&s.len()) {
            return Err(InvalidKeyValue::Length(s.len()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The secret itself. Call only to show it once to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(self.0.as_bytes())
    }

    /// The non-secret display prefix (first [`PREFIX_LEN`] characters).
    pub fn prefix(&self) -> String {
        self.0[..PREFIX_LEN].to_owned()
    }
}

impl TryFrom<String> for ApiKeyValue {
    type Error = InvalidKeyValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ApiKeyValue> for String {
    fn from(v: ApiKeyValue) -> String {
        v.0
    }
}

impl fmt::Debug for ApiKeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyValue(<redacted>)")
    }
}

/// SHA-256 of a key value: what the store keeps and what the gateway looks up.
#[derive(Clone, Copy, Eq, PartialOrd, Ord)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// Digest of raw bytes as presented in an `x-api-key` header.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a digest from stored bytes; `None` when the length is not 32.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(Self)
    }
}

impl PartialEq for KeyDigest {
    /// Constant-time comparison, so equality checks leak no timing about stored digests.
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::hash::Hash for KeyDigest {
    // Written out because `PartialEq` is: equal digests have equal bytes, so this agrees with it.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_are_40_alphanumerics_and_distinct() {
        let a = ApiKeyValue::generate();
        let b = ApiKeyValue::generate();
        assert_eq!(a.expose().len(), 40);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert!(ApiKeyValue::parse(a.expose()).is_ok());
    }

    #[test]
    fn custom_values_are_checked() {
        assert_eq!(ApiKeyValue::parse("short").unwrap_err(), InvalidKeyValue::Length(5));
        assert_eq!(
            ApiKeyValue::parse("abcdefghij-klmnopqrstu").unwrap_err(),
            InvalidKeyValue::Character { position: 11 }
        );
        assert!(ApiKeyValue::parse(&"a".repeat(128)).is_ok());
        assert!(ApiKeyValue::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn debug_never_shows_the_value() {
        let v = ApiKeyValue::parse("SuperSecretValue12345").unwrap();
        assert!(!format!("{v:?}").contains("Secret"));
        assert!(!InvalidKeyValue::Length(3).to_string().contains("Secret"));
    }
}

//! API key values and their digests.
//!
//! A key value is a secret: [`ApiKeyValue`] never prints itself (`Debug` and `Display` are
//! redacted) and keygate stores only its SHA-256 [`KeyDigest`] plus a short display prefix.
//!
//! Generated values check themselves: AWS's form (40 characters of `[A-Za-z0-9]`), made of
//! [`MARKER`], 30 random characters and a checksum, the CRC-32 of the first 34 characters in
//! base62 (`0-9A-Za-z`), six characters zero-padded (the scheme of GitHub's tokens). The pattern
//! `kgk1[0-9A-Za-z]{36}` finds a leaked keygate key, the checksum tells one from a random string,
//! and the gateway refuses a value of that form whose checksum is wrong before any lookup
//! ([`fails_checksum`]). Custom and imported values are taken as they are.

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
/// Characters of the value kept in clear as a non-secret display prefix (for a self-checking
/// value, after its [`MARKER`]).
pub const PREFIX_LEN: usize = 4;
/// How a self-checking generated value starts ("keygate key, form 1").
pub const MARKER: &str = "kgk1";
/// Characters of the checksum that ends a self-checking value.
const CHECKSUM_LEN: usize = 6;
/// The characters of the checksum's base62 digits, in order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The checksum of a self-checking value's body: its CRC-32 in base62, six digits.
fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body);
    let mut out = [b'0'; CHECKSUM_LEN];
    for digit in out.iter_mut().rev() {
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Whether `value` has the form of a self-checking value ([`GENERATED_LEN`] characters starting
/// with [`MARKER`]).
fn has_checked_form(value: &[u8]) -> bool {
    value.len() == GENERATED_LEN && value.starts_with(MARKER.as_bytes())
}

/// Whether `value` is a self-checking value: its form, and the checksum matches.
pub fn is_self_checking(value: &[u8]) -> bool {
    has_checked_form(value) && {
        let (body, sum) = value.split_at(GENERATED_LEN - CHECKSUM_LEN);
        checksum(body) == sum
    }
}

/// Whether `value` has the form of a self-checking value and its checksum does not match: a
/// mistyped or made-up value, refused without a lookup (unless the store holds a value of that
/// form which is not self-checking, see [`ApiKeyValue::prefix`]).
pub fn fails_checksum(value: &[u8]) -> bool {
    has_checked_form(value) && !is_self_checking(value)
}

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
    /// A fresh self-checking value: [`MARKER`], 30 alphanumeric characters from the OS CSPRNG
    /// (178 bits), and the checksum; [`GENERATED_LEN`] characters in all.
    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng.unwrap_err();
        let mut s = String::with_capacity(GENERATED_LEN);
        s.push_str(MARKER);
        let random = GENERATED_LEN - MARKER.len() - CHECKSUM_LEN;
        s.extend((0..random).map(|_| char::from(rng.sample(Alphanumeric))));
        let sum = checksum(s.as_bytes());
        s.extend(sum.iter().map(|&b| char::from(b)));
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

    /// The non-secret display prefix: the first [`PREFIX_LEN`] characters, after the
    /// [`MARKER`] of a self-checking value (`kgk1AbCd`), so listings tell keys apart. A stored
    /// prefix equal to [`MARKER`] alone is therefore a value of the self-checking form that is
    /// not one: while the store holds such a value, gateways look every value up.
    pub fn prefix(&self) -> String {
        let end = if self.is_self_checking() { MARKER.len() + PREFIX_LEN } else { PREFIX_LEN };
        self.0[..end].to_owned()
    }

    /// Whether this is a self-checking value ([`is_self_checking`]).
    pub fn is_self_checking(&self) -> bool {
        is_self_checking(self.0.as_bytes())
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
    fn generated_values_check_themselves_and_any_one_change_fails() {
        for _ in 0..200 {
            let v = ApiKeyValue::generate();
            let bytes = v.expose().as_bytes();
            assert!(v.expose().starts_with(MARKER));
            assert!(v.is_self_checking() && !fails_checksum(bytes));
            assert_eq!(v.prefix(), v.expose()[..8]);
            // One character changed, anywhere after the marker (to any other alphanumeric):
            // refused by the checksum alone.
            for at in MARKER.len()..GENERATED_LEN {
                for c in BASE62.iter().filter(|&&c| c != bytes[at]).step_by(7) {
                    let mut typo = bytes.to_vec();
                    typo[at] = *c;
                    assert!(fails_checksum(&typo), "{at}");
                }
            }
            // Two neighbours swapped (the commonest typo after one wrong character).
            for at in MARKER.len()..GENERATED_LEN - 1 {
                let mut typo = bytes.to_vec();
                typo.swap(at, at + 1);
                assert!(typo == bytes || fails_checksum(&typo), "{at}");
            }
        }
    }

    #[test]
    fn the_checksum_is_crc32_in_six_base62_digits() {
        // CRC-32 ("123456789"), the standard check value: 0xCBF43926, 3jZRME in base 62.
        assert_eq!(&checksum(b"123456789"), b"3jZRME");
        assert_eq!(&checksum(b""), b"000000");
    }

    #[test]
    fn values_of_other_forms_are_not_judged() {
        // AWS's own values, custom ones, and the marker on a value of another length: looked up
        // as they are, never refused by the checksum.
        for v in [
            "Sd8fJk2lQp4ZxY7uN0vB1mC3rT5wE9aH6gL8kJ2d",
            "kgk1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "kgk1short0123456789",
            "SuperSecretValue12345",
        ] {
            assert!(!fails_checksum(v.as_bytes()), "{v}");
            let parsed = ApiKeyValue::parse(v);
            assert!(parsed.is_err() || parsed.unwrap().prefix().len() == PREFIX_LEN);
        }
        // The form with a wrong checksum: a custom value may still be one (imported), and its
        // prefix is the marker alone, which tells the store about it.
        let lookalike = format!("{MARKER}{}", "A".repeat(36));
        assert!(fails_checksum(lookalike.as_bytes()));
        assert_eq!(ApiKeyValue::parse(&lookalike).unwrap().prefix(), MARKER);
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

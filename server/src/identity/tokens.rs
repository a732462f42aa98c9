//! A token's claims, and their verification: one algorithm pinned by
//! configuration (a token's header cannot switch it), `exp` required,
//! `nbf` honoured, `aud` and `iss` checked, all with a small leeway for
//! clocks; the token's size capped before anything is decoded.
//!
//! Tokens already verified are remembered until they expire, so a retry or
//! a double click costs a lookup instead of a signature check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::keys::PublicKeys;
use flashtix_model::input::has_control;

flashtix_model::named! {
    /// What a token lets its subject do.
    pub enum Access("a token role (buyer or organizer)") {
        /// Buys, and reads their own orders.
        Buyer = "buyer",
        /// Creates events and sees their orders and sales.
        Organizer = "organizer",
    }
}

/// The claims of a token this sale signs (`flashtix token`, the storm).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub role: Access,
}

impl Claims {
    /// Claims for `subject`, valid from now for `ttl`.
    pub fn new(subject: &str, role: Access, ttl: Duration, audience: &str, issuer: &str) -> Self {
        let now = jsonwebtoken::get_current_timestamp();
        Self {
            sub: subject.to_owned(),
            aud: audience.to_owned(),
            iss: issuer.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            role,
        }
    }
}

/// What the sale reads of a verified token (any other claim is ignored).
#[derive(Deserialize)]
struct Asserted {
    sub: String,
    exp: u64,
    /// A token without a role is a buyer's.
    #[serde(default = "buyer")]
    role: Access,
}

fn buyer() -> Access {
    Access::Buyer
}

/// Who is asking, as their verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: Arc<str>,
    pub access: Access,
}

/// Why a token is refused. Each says so in words a person can act on; none
/// repeats the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a bearer token is required (Authorization: Bearer TOKEN)")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token is signed with {0}; this sale accepts {1} only")]
    WrongAlgorithm(String, String),
    #[error("the token names a key (kid) this sale does not know")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token is for another audience (aud)")]
    WrongAudience,
    #[error("the token is from another issuer (iss)")]
    WrongIssuer,
    #[error("the token's claims are not usable: {0}")]
    BadClaims(String),
}

/// The longest token accepted, and the longest header in it: far above a
/// real access token (about 250 bytes here), far below what would let a
/// client make the sale parse megabytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
pub const MAX_HEADER_BYTES: usize = 512;
/// Clock slack allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 10;
/// The longest subject accepted (the orders' `user_id`).
pub const MAX_SUBJECT_CHARS: usize = 64;
/// How many verified tokens are remembered at most.
const REMEMBERED: usize = 100_000;

enum Keys {
    Secret(DecodingKey),
    Public(PublicKeys),
}

/// Verifies tokens against the configured keys.
pub struct Verifier {
    keys: Keys,
    algorithm: Algorithm,
    validation: Validation,
    /// Verified tokens and when each expires.
    remembered: Mutex<HashMap<Box<str>, (Caller, u64)>>,
    /// Signatures checked, and tokens found already verified.
    pub checked: AtomicU64,
    pub recalled: AtomicU64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.keys {
            Keys::Secret(_) => "a shared secret".to_owned(),
            Keys::Public(set) => format!("{} public keys", set.keys.len()),
        };
        write!(f, "Verifier({:?}, {keys})", self.algorithm)
    }
}

impl Verifier {
    /// Verifies HS256 tokens signed with `secret`.
    pub fn with_secret(secret: &[u8], audience: &str, issuer: &str) -> Self {
        Self::new(
            Keys::Secret(DecodingKey::from_secret(secret)),
            Algorithm::HS256,
            audience,
            issuer,
        )
    }

    /// Verifies `algorithm` tokens signed by any of `keys`.
    pub fn with_keys(keys: PublicKeys, algorithm: Algorithm, audience: &str, issuer: &str) -> Self {
        Self::new(Keys::Public(keys), algorithm, audience, issuer)
    }

    fn new(keys: Keys, algorithm: Algorithm, audience: &str, issuer: &str) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        Self {
            keys,
            algorithm,
            validation,
            remembered: Mutex::new(HashMap::new()),
            checked: AtomicU64::new(0),
            recalled: AtomicU64::new(0),
        }
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Who `token` says its bearer is, if it verifies.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed(format!(
                "it is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header_bytes = token.split('.').next().map_or(0, str::len);
        if header_bytes > MAX_HEADER_BYTES {
            return Err(TokenError::Malformed(format!(
                "its header is longer than {MAX_HEADER_BYTES} bytes"
            )));
        }
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(caller) = self.recall(token, now) {
            self.recalled.fetch_add(1, Relaxed);
            return Ok(caller);
        }
        self.checked.fetch_add(1, Relaxed);
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            TokenError::Malformed(
                "it is not a JWT (header.payload.signature) with a known alg".into(),
            )
        })?;
        if header.alg != self.algorithm {
            return Err(TokenError::WrongAlgorithm(
                format!("{:?}", header.alg),
                format!("{:?}", self.algorithm),
            ));
        }
        let key = self.key(header.kid.as_deref())?;
        let asserted = jsonwebtoken::decode::<Asserted>(token, key, &self.validation)
            .map_err(|error| refusal(error.kind()))?
            .claims;
        let chars = asserted.sub.chars().count();
        if chars == 0 || chars > MAX_SUBJECT_CHARS || has_control(&asserted.sub) {
            return Err(TokenError::BadClaims(format!(
                "sub must be 1 to {MAX_SUBJECT_CHARS} printable characters"
            )));
        }
        let caller = Caller {
            subject: asserted.sub.into(),
            access: asserted.role,
        };
        self.remember(token, &caller, asserted.exp, now);
        Ok(caller)
    }

    fn key(&self, kid: Option<&str>) -> Result<&DecodingKey, TokenError> {
        match &self.keys {
            Keys::Secret(key) => Ok(key),
            Keys::Public(set) => match (kid, set.keys.as_slice()) {
                (None, [(_, only)]) => Ok(only),
                (None, _) => Err(TokenError::UnknownKey),
                (Some(kid), keys) => keys
                    .iter()
                    .find(|(id, _)| id.as_deref() == Some(kid))
                    .map(|(_, key)| key)
                    .ok_or(TokenError::UnknownKey),
            },
        }
    }

    fn recall(&self, token: &str, now: u64) -> Option<Caller> {
        let remembered = self.remembered.lock().expect("never poisoned");
        let (caller, expires) = remembered.get(token)?;
        (now < expires.saturating_add(LEEWAY_SECONDS)).then(|| caller.clone())
    }

    fn remember(&self, token: &str, caller: &Caller, expires: u64, now: u64) {
        let mut remembered = self.remembered.lock().expect("never poisoned");
        if remembered.len() >= REMEMBERED {
            remembered.retain(|_, (_, expires)| now < expires.saturating_add(LEEWAY_SECONDS));
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
        }
        remembered.insert(token.into(), (caller.clone(), expires));
    }
}

/// The refusal a verification error stands for.
fn refusal(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm => TokenError::Malformed("its alg does not fit the key".into()),
        ErrorKind::MissingRequiredClaim(claim) => {
            TokenError::BadClaims(format!("the {claim} claim is required"))
        }
        ErrorKind::Json(error) => TokenError::BadClaims(error.to_string()),
        _ => TokenError::Malformed("it could not be decoded".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::{generate, key_set, SigningKey};
    use super::*;

    const SECRET: &[u8] = b"a test secret of thirty-two bytes or more";

    fn claims(subject: &str) -> Claims {
        Claims::new(
            subject,
            Access::Buyer,
            Duration::from_secs(60),
            "flashtix",
            "flashtix",
        )
    }

    #[test]
    fn a_remembered_token_is_recalled_until_it_expires() {
        let verifier = Verifier::with_secret(SECRET, "flashtix", "flashtix");
        let token = SigningKey::secret(SECRET).sign(&claims("alice"));
        assert_eq!(&*verifier.verify(&token).unwrap().subject, "alice");
        assert_eq!(&*verifier.verify(&token).unwrap().subject, "alice");
        assert_eq!(verifier.checked.load(Relaxed), 1);
        assert_eq!(verifier.recalled.load(Relaxed), 1);
        // Past its expiry (and the leeway), a remembered token is checked again.
        let later = jsonwebtoken::get_current_timestamp() + 60 + LEEWAY_SECONDS;
        assert_eq!(verifier.recall(&token, later), None);
    }

    #[test]
    fn either_of_two_keys_signs_and_a_third_is_unknown() {
        let (old_pem, old) = generate().unwrap();
        let (new_pem, new) = generate().unwrap();
        let (stranger_pem, _) = generate().unwrap();
        let keys =
            PublicKeys::parse(&key_set(vec![old, new]).to_string(), Algorithm::EdDSA).unwrap();
        let verifier = Verifier::with_keys(keys, Algorithm::EdDSA, "flashtix", "flashtix");
        for pem in [old_pem, new_pem] {
            let token = SigningKey::from_pem(&pem).unwrap().sign(&claims("bob"));
            assert_eq!(&*verifier.verify(&token).unwrap().subject, "bob");
        }
        let token = SigningKey::from_pem(&stranger_pem)
            .unwrap()
            .sign(&claims("bob"));
        assert_eq!(verifier.verify(&token), Err(TokenError::UnknownKey));
    }
}

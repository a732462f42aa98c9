//! Keys: an Ed25519 key pair made here (`flashtix keys init`), the public
//! keys the sale verifies with (a JWKS file: several at once, told apart by
//! `kid`, so a new key can sign while tokens of the old one still verify),
//! a shared secret read from a file, and signing.
//!
//! The private key is a PKCS #8 PEM file (what `openssl pkey` reads); its
//! `kid` is its public key's RFC 7638 thumbprint, so it is never stored
//! apart from the key and cannot disagree with it.

use std::path::Path;

use anyhow::{bail, Context};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

/// The shortest shared secret accepted: 256 bits, HS256's own strength.
pub const MIN_SECRET_BYTES: usize = 32;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// A new Ed25519 key pair: the private key as PEM, the public key as a JWK.
pub fn generate() -> anyhow::Result<(String, Value)> {
    let random = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&random)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("a generated key did not read back"))?;
    let body = STANDARD.encode(pkcs8.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
        .collect();
    let pem = format!("{PEM_BEGIN}\n{}\n{PEM_END}\n", lines.join("\n"));
    Ok((pem, public_jwk(&pair)))
}

/// The public half of `pair` as a JWK, with its thumbprint as `kid`.
fn public_jwk(pair: &Ed25519KeyPair) -> Value {
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": thumbprint(&x), "alg": "EdDSA", "use": "sig"})
}

/// RFC 7638's thumbprint of an Ed25519 public key (`x`, base64url):
/// SHA-256 over its required members in lexical order.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A JWKS document holding `keys`.
pub fn key_set(keys: Vec<Value>) -> Value {
    json!({ "keys": keys })
}

/// A shared secret: the file's bytes without the blanks that end it (a
/// file's last newline); at least [`MIN_SECRET_BYTES`].
pub fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)
        .with_context(|| format!("reading the token secret file {}", path.display()))?;
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    if bytes.len() < MIN_SECRET_BYTES {
        bail!(
            "the token secret file {} holds {} bytes; a secret needs at least {MIN_SECRET_BYTES} \
             (make one with `head -c 32 /dev/urandom | base64 > FILE`)",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes)
}

/// The keys tokens are verified with, by `kid`: from a JWKS file, only the
/// keys of the one algorithm the sale is configured for.
pub struct PublicKeys {
    pub keys: Vec<(Option<String>, DecodingKey)>,
}

impl PublicKeys {
    pub fn read(path: &Path, algorithm: Algorithm) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token keys {}", path.display()))?;
        Self::parse(&text, algorithm).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str, algorithm: Algorithm) -> anyhow::Result<Self> {
        let set: JwkSet =
            serde_json::from_str(text).context("not a JWKS document ({\"keys\": [JWK, ...]})")?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone();
            let name = kid.as_deref().unwrap_or("(no kid)");
            let family_fits = matches!(
                (&jwk.algorithm, algorithm),
                (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
                    | (
                        AlgorithmParameters::EllipticCurve(_),
                        Algorithm::ES256 | Algorithm::ES384
                    )
                    | (
                        AlgorithmParameters::RSA(_),
                        Algorithm::RS256
                            | Algorithm::RS384
                            | Algorithm::RS512
                            | Algorithm::PS256
                            | Algorithm::PS384
                            | Algorithm::PS512
                    )
            );
            if !family_fits {
                bail!("key {name} is not a key for {algorithm:?}, the algorithm tokens must use");
            }
            let key = DecodingKey::from_jwk(jwk)
                .with_context(|| format!("key {name} is not a usable public key"))?;
            keys.push((kid, key));
        }
        if keys.is_empty() {
            bail!("it holds no keys");
        }
        if keys.len() > 1 {
            // A token names its key by kid: a key without one, or a kid
            // twice, is a key no token could be sure to reach.
            let mut kids: Vec<&str> = keys.iter().filter_map(|(kid, _)| kid.as_deref()).collect();
            let named = kids.len();
            kids.sort_unstable();
            kids.dedup();
            if named < keys.len() || kids.len() < named {
                bail!("with several keys, each needs a kid of its own");
            }
        }
        Ok(Self { keys })
    }
}

/// What signs tokens: a private key with its `kid`, or a shared secret.
pub struct SigningKey {
    key: EncodingKey,
    algorithm: Algorithm,
    kid: Option<String>,
}

impl SigningKey {
    /// The Ed25519 private key of a PKCS #8 PEM file (`flashtix keys init`'s).
    pub fn read_pem(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the signing key {}", path.display()))?;
        Self::from_pem(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_pem(text: &str) -> anyhow::Result<Self> {
        let body = text
            .split_once(PEM_BEGIN)
            .and_then(|(_, rest)| rest.split_once(PEM_END))
            .map(|(body, _)| body)
            .context("not a PEM private key (\"-----BEGIN PRIVATE KEY-----\")")?;
        let der = STANDARD
            .decode(body.split_whitespace().collect::<String>())
            .context("the PEM body is not base64")?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| anyhow::anyhow!("not an Ed25519 private key (PKCS #8)"))?;
        let kid = public_jwk(&pair)["kid"].as_str().map(str::to_owned);
        Ok(Self {
            key: EncodingKey::from_ed_der(&der),
            algorithm: Algorithm::EdDSA,
            kid,
        })
    }

    /// HS256 with a shared secret (see [`read_secret`]).
    pub fn secret(secret: &[u8]) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            algorithm: Algorithm::HS256,
            kid: None,
        }
    }

    /// The `kid` tokens are signed under, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// A signed token carrying `claims` (a `Claims`, or any JSON).
    pub fn sign(&self, claims: &impl serde::Serialize) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key)
            .expect("claims are plain JSON and the key was read whole")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_and_its_public_half_has_its_thumbprint_as_kid() {
        let (pem, jwk) = generate().unwrap();
        let signing = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(signing.kid(), jwk["kid"].as_str());
        let (_, other) = generate().unwrap();
        assert_ne!(jwk["kid"], other["kid"], "two keys, two kids");
        let set = key_set(vec![jwk, other]).to_string();
        assert_eq!(
            PublicKeys::parse(&set, Algorithm::EdDSA)
                .unwrap()
                .keys
                .len(),
            2
        );
    }

    #[test]
    fn keys_of_another_algorithm_family_or_none_at_all_are_refused() {
        let (_, jwk) = generate().unwrap();
        let set = key_set(vec![jwk]).to_string();
        let error = PublicKeys::parse(&set, Algorithm::ES256).err().unwrap();
        assert!(
            format!("{error:#}").contains("not a key for ES256"),
            "{error:#}"
        );
        let error = PublicKeys::parse(r#"{"keys": []}"#, Algorithm::EdDSA)
            .err()
            .unwrap();
        assert!(format!("{error:#}").contains("no keys"), "{error:#}");
        let (_, twin) = generate().unwrap();
        let twice = key_set(vec![twin.clone(), twin]).to_string();
        let error = PublicKeys::parse(&twice, Algorithm::EdDSA).err().unwrap();
        assert!(
            format!("{error:#}").contains("a kid of its own"),
            "{error:#}"
        );
        assert!(PublicKeys::parse("{}", Algorithm::EdDSA).is_err());
    }

    #[test]
    fn a_short_secret_is_refused() {
        let dir = std::env::temp_dir().join(format!("flashtix-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "too short\n").unwrap();
        let error = read_secret(&file).unwrap_err().to_string();
        assert!(error.contains("holds 9 bytes"), "{error}");
        std::fs::write(&file, format!("{}\n", "k".repeat(32))).unwrap();
        assert_eq!(read_secret(&file).unwrap().len(), 32);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! What verifying a buyer's token costs, per algorithm the sale accepts, on
//! this machine: one thread, the sale's own verifier (claims checked, size
//! capped), each token seen once (a new buyer), and a token seen again (a
//! retry or a double click, answered from the verified tokens remembered).
//!   cargo run --release -p flashtix-server --example token_cost

use std::time::{Duration, Instant};

use flashtix_server::identity::keys::{generate, key_set, PublicKeys, SigningKey};
use flashtix_server::identity::tokens::Claims;
use flashtix_server::identity::{Access, Verifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

const TOKENS: usize = 20_000;

fn claims(n: usize) -> Claims {
    Claims::new(
        &format!("buyer-{n}"),
        Access::Buyer,
        Duration::from_secs(3600),
        "flashtix",
        "flashtix",
    )
}

/// Microseconds per verification of `tokens`, each once, then of the first
/// again (remembered).
fn measure(name: &str, verifier: &Verifier, tokens: &[String]) {
    let started = Instant::now();
    for token in tokens {
        verifier.verify(token).expect("a good token verifies");
    }
    let fresh = started.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64;
    let started = Instant::now();
    for _ in 0..tokens.len() {
        verifier.verify(&tokens[0]).expect("a good token verifies");
    }
    let again = started.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64;
    let bytes = tokens[0].len();
    println!(
        "{name:<6} {fresh:>7.1} µs a new token, {again:>5.2} µs one seen before; {bytes} bytes"
    );
}

fn main() {
    let (pem, public) = generate().expect("a key pair");
    let set = key_set(vec![public]).to_string();
    let eddsa = SigningKey::from_pem(&pem).expect("the key reads back");
    let verifier = Verifier::with_keys(
        PublicKeys::parse(&set, Algorithm::EdDSA).expect("keys"),
        Algorithm::EdDSA,
        "flashtix",
        "flashtix",
    );
    let tokens: Vec<String> = (0..TOKENS).map(|n| eddsa.sign(&claims(n))).collect();
    measure("EdDSA", &verifier, &tokens);

    let random = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
        .expect("a P-256 key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random)
        .expect("it reads back");
    let point = pair.public_key().as_ref();
    use base64::Engine;
    let coordinate = |range: std::ops::Range<usize>| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&point[range])
    };
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": coordinate(1..33), "y": coordinate(33..65), "kid": "p256"});
    let verifier = Verifier::with_keys(
        PublicKeys::parse(&key_set(vec![jwk]).to_string(), Algorithm::ES256).expect("keys"),
        Algorithm::ES256,
        "flashtix",
        "flashtix",
    );
    let key = EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("p256".into());
    let tokens: Vec<String> = (0..TOKENS)
        .map(|n| jsonwebtoken::encode(&header, &claims(n), &key).expect("signed"))
        .collect();
    measure("ES256", &verifier, &tokens);

    let secret = b"a secret of at least thirty-two bytes, for HS256";
    let verifier = Verifier::with_secret(secret, "flashtix", "flashtix");
    let signer = SigningKey::secret(secret);
    let tokens: Vec<String> = (0..TOKENS).map(|n| signer.sign(&claims(n))).collect();
    measure("HS256", &verifier, &tokens);
}

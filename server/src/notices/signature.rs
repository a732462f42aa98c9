//! A webhook delivery's signature: `v1=` and the HMAC-SHA256, in hex, of
//! `"{timestamp}.{body}"` under the sale's webhook secret. Signing the
//! timestamp with the body lets a receiver refuse a replay of an old
//! delivery, and tell a body changed on the way.

use ring::hmac;

/// The signature of `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &signed(timestamp, body));
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// Whether `signature` is `body`'s at `timestamp` under `secret`; the
/// error says what is wrong. The comparison takes the same time however
/// much of it matches.
pub fn verify(secret: &[u8], timestamp: &str, signature: &str, body: &[u8]) -> Result<(), String> {
    let timestamp: u64 = timestamp
        .parse()
        .map_err(|_| format!("the timestamp {timestamp:?} is not Unix seconds"))?;
    let hex = signature
        .strip_prefix("v1=")
        .ok_or_else(|| format!("the signature {signature:?} is not v1=HEX"))?;
    let tag = decode_hex(hex).ok_or_else(|| "the signature is not hex".to_owned())?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &signed(timestamp, body), &tag)
        .map_err(|_| "the signature does not match the body and timestamp".to_owned())
}

fn signed(timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    signed
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signature_verifies_only_for_its_body_time_and_secret() {
        let body = br#"{"id":"x"}"#;
        let signature = sign(SECRET, 1_700_000_000, body);
        assert!(signature.starts_with("v1=") && signature.len() == 3 + 64);
        assert_eq!(verify(SECRET, "1700000000", &signature, body), Ok(()));
        assert!(verify(SECRET, "1700000001", &signature, body).is_err());
        assert!(verify(SECRET, "1700000000", &signature, br#"{"id":"y"}"#).is_err());
        assert!(verify(
            b"another secret of thirty-two bytes!",
            "1700000000",
            &signature,
            body
        )
        .is_err());
        assert!(verify(SECRET, "soon", &signature, body).is_err());
        assert!(verify(SECRET, "1700000000", "sha256=00", body).is_err());
        assert!(verify(SECRET, "1700000000", "v1=zz", body).is_err());
    }
}

//! The buyers' tokens: every purchase's buyer signs in with a token of its
//! own, as a real buyer would. Either the storm signs them (`--signing-key`
//! or `--token-secret-file`), ahead of the first send when it knows how many
//! purchases this process sends, or it reads them (`--tokens FILE`, one a
//! line, from the operator's identity provider) and the buyers are their
//! subjects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use flashtix_server::identity::Access;

use crate::commands::keys::Signer;

/// How long a minted token is valid: longer than any storm and its settling.
const MINTED_TTL: Duration = Duration::from_secs(6 * 3600);
/// The most tokens signed before the first send (more are signed as sent):
/// about 350 MB of EdDSA tokens.
pub const MOST_AHEAD: u64 = 1_000_000;

/// The purchases this process sends: `first`, `first + step`, ... (its
/// shard's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbers {
    pub first: u64,
    pub step: u64,
}

/// Each purchase's token.
#[derive(Clone)]
pub enum BuyerTokens {
    Minted(Arc<Minted>),
    /// (subject, token), used in turn by the purchases.
    Listed(Arc<[(Box<str>, Box<str>)]>),
}

impl std::fmt::Debug for BuyerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Minted(minted) => write!(f, "Minted({} ahead)", minted.ahead.len()),
            Self::Listed(tokens) => write!(f, "Listed({})", tokens.len()),
        }
    }
}

/// Tokens the storm signs: those of this process's first purchases signed
/// before the storm starts, any later one as it is sent.
pub struct Minted {
    signer: Arc<Signer>,
    numbers: Numbers,
    ahead: Vec<Box<str>>,
}

/// What signing ahead took.
pub struct Minting {
    pub tokens: u64,
    pub took: Duration,
}

impl BuyerTokens {
    /// Signs the tokens of the first `ahead` of this process's purchases
    /// (`numbers`), on every core, before the first send: all of them when
    /// the plan says how many (none when it does not: a closed storm sends
    /// when answers come, on no schedule to fall behind). `user_id`: each
    /// purchase's buyer.
    pub fn mint(
        signer: Arc<Signer>,
        numbers: Numbers,
        ahead: u64,
        user_id: &dyn Fn(u64) -> String,
    ) -> (Self, Minting) {
        let started = Instant::now();
        let subjects: Vec<String> = (0..ahead)
            .map(|i| user_id(numbers.first + i * numbers.step))
            .collect();
        let ahead: Vec<Box<str>> = signer
            .sign_all(&subjects, MINTED_TTL)
            .into_iter()
            .map(String::into_boxed_str)
            .collect();
        let minting = Minting {
            tokens: ahead.len() as u64,
            took: started.elapsed(),
        };
        let minted = Minted {
            signer,
            numbers,
            ahead,
        };
        (Self::Minted(Arc::new(minted)), minting)
    }

    /// Tokens of a file, one a line; each buyer is its token's subject.
    pub fn read(file: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading --tokens {}", file.display()))?;
        let mut tokens = Vec::new();
        for (line, token) in text.lines().enumerate() {
            let token = token.trim();
            if token.is_empty() {
                continue;
            }
            if !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                bail!(
                    "--tokens {} line {}: a token is base64url parts and dots",
                    file.display(),
                    line + 1
                );
            }
            let subject = subject_of(token).with_context(|| {
                format!(
                    "--tokens {} line {}: not a token with a sub",
                    file.display(),
                    line + 1
                )
            })?;
            tokens.push((subject.into_boxed_str(), token.into()));
        }
        if tokens.is_empty() {
            bail!("--tokens {} holds no token", file.display());
        }
        Ok(Self::Listed(tokens.into()))
    }

    /// Purchase `number`'s buyer and token; `user_id`: the buyer it has
    /// when tokens are minted for it.
    pub fn of(&self, number: u64, user_id: String) -> (String, Arc<str>) {
        match self {
            Self::Minted(minted) => {
                let index = (number - minted.numbers.first) / minted.numbers.step;
                let token = match minted.ahead.get(index as usize) {
                    Some(token) => Arc::from(&**token),
                    None => minted
                        .signer
                        .sign(&user_id, Access::Buyer, MINTED_TTL)
                        .into(),
                };
                (user_id, token)
            }
            Self::Listed(tokens) => {
                let (subject, token) = &tokens[(number % tokens.len() as u64) as usize];
                (subject.to_string(), Arc::from(&**token))
            }
        }
    }
}

/// The `sub` of a token's payload, read without verifying it (the sale
/// does that): the storm only needs to know whom each token names.
fn subject_of(token: &str) -> anyhow::Result<String> {
    let payload = token.split('.').nth(1).context("no payload")?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .context("payload not base64url")?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).context("payload not JSON")?;
    Ok(claims["sub"].as_str().context("no sub")?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::keys::SignerArgs;

    fn signer() -> Signer {
        let dir =
            std::env::temp_dir().join(format!("flashtix-storm-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "a storm test secret, 32 bytes or more").unwrap();
        let args = SignerArgs {
            signing_key: None,
            token_secret_file: Some(secret),
            scope: Default::default(),
        };
        args.signer().unwrap().unwrap()
    }

    #[test]
    fn a_shards_first_tokens_are_signed_ahead_and_later_ones_when_sent() {
        // The second of three shards: purchases 1, 4, 7, ...; 3 of them ahead.
        let numbers = Numbers { first: 1, step: 3 };
        let user = |number: u64| format!("buyer-{number}");
        let (tokens, minting) = BuyerTokens::mint(Arc::new(signer()), numbers, 3, &user);
        assert_eq!(minting.tokens, 3);
        for number in [1, 4, 7, 10, 13] {
            let (buyer, token) = tokens.of(number, user(number));
            assert_eq!(buyer, user(number));
            assert_eq!(
                subject_of(&token).unwrap(),
                user(number),
                "purchase {number}"
            );
        }
    }

    #[test]
    fn listed_tokens_name_their_buyers_in_turn() {
        let signer = signer();
        let file = std::env::temp_dir().join(format!("flashtix-tokens-{}", std::process::id()));
        let lines: Vec<String> = ["ann", "ben"]
            .iter()
            .map(|sub| signer.sign(sub, Access::Buyer, MINTED_TTL))
            .collect();
        std::fs::write(&file, format!("{}\n\n{}\n", lines[0], lines[1])).unwrap();
        let tokens = BuyerTokens::read(&file).unwrap();
        assert_eq!(tokens.of(0, "x".into()).0, "ann");
        assert_eq!(tokens.of(3, "x".into()).0, "ben");
        std::fs::write(&file, "not-a-token\n").unwrap();
        assert!(BuyerTokens::read(&file).is_err());
        std::fs::remove_file(file).unwrap();
    }
}

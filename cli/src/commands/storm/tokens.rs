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

use super::engine::Shard;
use crate::commands::keys::Signer;

/// How long a minted token is valid: longer than any storm and its settling.
const MINTED_TTL: Duration = Duration::from_secs(6 * 3600);
/// The most tokens signed before the first send (more are signed as sent).
const MOST_AHEAD: u64 = 2_000_000;

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

/// Tokens the storm signs: those of this shard's first purchases signed
/// before the storm starts, any later one as it is sent.
pub struct Minted {
    signer: Arc<Signer>,
    shard: Shard,
    ahead: Vec<Box<str>>,
}

/// What signing ahead took.
pub struct Minting {
    pub tokens: u64,
    pub took: Duration,
}

impl BuyerTokens {
    /// Signs the tokens of this shard's purchases below `planned` (all of
    /// them when the plan says how many; none when it does not: a closed
    /// storm sends when answers come, on no schedule to fall behind), on
    /// every core, before the first send. `user_id`: each purchase's buyer.
    pub fn mint(
        signer: Arc<Signer>,
        shard: Shard,
        planned: Option<u64>,
        user_id: &(dyn Fn(u64) -> String + Sync),
    ) -> (Self, Minting) {
        let started = Instant::now();
        let count = planned.map_or(0, |planned| shard.share_of(planned.min(MOST_AHEAD)));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let per_thread = count.div_ceil(threads.max(1)).max(1);
        let signer_ref = &*signer;
        let ahead: Vec<Box<str>> = std::thread::scope(|scope| {
            let parts: Vec<_> = (0..count)
                .step_by(per_thread as usize)
                .map(|first| {
                    scope.spawn(move || {
                        (first..(first + per_thread).min(count))
                            .map(|i| {
                                let number = shard.index + i * shard.count;
                                signer_ref
                                    .sign(&user_id(number), Access::Buyer, MINTED_TTL)
                                    .into_boxed_str()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| part.join().expect("signing does not panic"))
                .collect()
        });
        let minting = Minting {
            tokens: ahead.len() as u64,
            took: started.elapsed(),
        };
        let minted = Minted {
            signer,
            shard,
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
                let index = (number - minted.shard.index) / minted.shard.count;
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
            token_audience: "flashtix".into(),
            token_issuer: "flashtix".into(),
        };
        args.signer().unwrap().unwrap()
    }

    #[test]
    fn a_shards_planned_tokens_are_signed_ahead_and_later_ones_when_sent() {
        let shard = Shard { index: 1, count: 3 };
        let user = |number: u64| format!("buyer-{number}");
        let (tokens, minting) = BuyerTokens::mint(Arc::new(signer()), shard, Some(10), &user);
        // Purchases 1, 4 and 7 are this shard's below 10.
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

//! How a process learns to verify tokens: the flags and `FLASHTIX_TOKEN_*`
//! variables in, an [`Identity`] out. Keys come from files, never from a
//! default or a flag's value.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use jsonwebtoken::Algorithm;

use super::keys::{read_secret, PublicKeys};
use super::limits::Rate;
use super::{Verifier, DEFAULT_AUDIENCE, DEFAULT_ISSUER};

/// The token flags of a server process.
#[derive(Debug, Clone, clap::Args)]
pub struct IdentityArgs {
    /// The public keys tokens are verified with: a JWKS file (`flashtix keys
    /// init` writes one); two keys at once let a new one sign while tokens of
    /// the old one still verify
    #[arg(long, env = "FLASHTIX_TOKEN_KEYS", value_name = "FILE")]
    pub token_keys: Option<PathBuf>,
    /// The one algorithm tokens signed by --token-keys must use
    #[arg(long, env = "FLASHTIX_TOKEN_ALGORITHM", default_value = "EdDSA")]
    pub token_algorithm: String,
    /// A file holding the shared secret (32 bytes or more) tokens are signed
    /// with, HS256, instead of --token-keys
    #[arg(long, env = "FLASHTIX_TOKEN_SECRET_FILE", value_name = "FILE")]
    pub token_secret_file: Option<PathBuf>,
    #[command(flatten)]
    pub scope: TokenScope,
    /// Take no tokens: a buyer is whoever the body's user_id says, orders
    /// are readable by id, organizer calls are refused. For measuring what
    /// tokens cost, never for a sale
    #[arg(long, env = "FLASHTIX_NO_TOKENS")]
    pub no_tokens: bool,
    /// Requests a second one buyer may make, on average (0: no limit)
    #[arg(long, env = "FLASHTIX_BUYER_RATE", default_value_t = 10)]
    pub buyer_rate: u32,
    /// Requests one buyer may make at once before the rate applies
    #[arg(long, env = "FLASHTIX_BUYER_BURST", default_value_t = 20)]
    pub buyer_burst: u32,
}

/// Whom tokens are for and who issues them: what the sale requires of a
/// token, and what `flashtix token` and the storm write into theirs.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenScope {
    /// The audience (aud) of tokens
    #[arg(long, env = "FLASHTIX_TOKEN_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub token_audience: String,
    /// The issuer (iss) of tokens
    #[arg(long, env = "FLASHTIX_TOKEN_ISSUER", default_value = DEFAULT_ISSUER)]
    pub token_issuer: String,
}

impl Default for TokenScope {
    fn default() -> Self {
        Self {
            token_audience: DEFAULT_AUDIENCE.to_owned(),
            token_issuer: DEFAULT_ISSUER.to_owned(),
        }
    }
}

/// Who may ask, once configured.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None`: no tokens (`--no-tokens`, or a process without the API).
    pub tokens: Option<Arc<Verifier>>,
    /// `None`: no per-buyer limit.
    pub buyer_rate: Option<Rate>,
}

impl Identity {
    /// No tokens and no limit: a process that serves no buyers.
    pub fn none() -> Self {
        Self {
            tokens: None,
            buyer_rate: None,
        }
    }
}

impl IdentityArgs {
    /// The identity of a process; `serves_buyers`: it runs the API, which
    /// then needs keys (or an explicit `--no-tokens`). A process without the
    /// API reads none (a worker's pod need not have the keys' file).
    pub fn resolve(&self, serves_buyers: bool) -> anyhow::Result<Identity> {
        if !serves_buyers {
            return Ok(Identity::none());
        }
        let buyer_rate = match (
            NonZeroU32::new(self.buyer_rate),
            NonZeroU32::new(self.buyer_burst),
        ) {
            (None, _) => None,
            (Some(per_second), Some(burst)) => Some(Rate { per_second, burst }),
            (Some(_), None) => bail!("--buyer-burst must be at least 1 (or --buyer-rate 0)"),
        };
        let (audience, issuer) = (&self.scope.token_audience, &self.scope.token_issuer);
        let verifier = match (&self.token_keys, &self.token_secret_file, self.no_tokens) {
            (Some(_), Some(_), _) => {
                bail!("give --token-keys or --token-secret-file, not both")
            }
            (Some(_), _, true) | (_, Some(_), true) => {
                bail!("--no-tokens takes no keys: leave out --token-keys and --token-secret-file")
            }
            (Some(keys), None, false) => {
                let algorithm: Algorithm = self.token_algorithm.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--token-algorithm {:?} is not an algorithm (EdDSA, ES256, RS256, ...)",
                        self.token_algorithm
                    )
                })?;
                if matches!(
                    algorithm,
                    Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
                ) {
                    bail!("a shared secret is read with --token-secret-file, not --token-keys");
                }
                let keys = PublicKeys::read(keys, algorithm)?;
                Some(Verifier::with_keys(keys, algorithm, audience, issuer))
            }
            (None, Some(file), false) => {
                let secret = read_secret(file).context("--token-secret-file")?;
                Some(Verifier::with_secret(&secret, audience, issuer))
            }
            (None, None, true) => None,
            (None, None, false) => bail!(
                "buyers and organizers are known by signed tokens: give --token-keys FILE (a \
                 JWKS; `flashtix keys init` makes a key pair) or --token-secret-file FILE; \
                 --no-tokens runs without them, for benchmarks only"
            ),
        };
        Ok(Identity {
            tokens: verifier.map(Arc::new),
            buyer_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: &[&str], serves_buyers: bool) -> anyhow::Result<Identity> {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            identity: IdentityArgs,
        }
        let flags = std::iter::once("serve").chain(flags.iter().copied());
        <Flags as clap::Parser>::try_parse_from(flags)?
            .identity
            .resolve(serves_buyers)
    }

    #[test]
    fn the_api_needs_keys_or_an_explicit_no_tokens_and_never_both() {
        let error = resolve(&[], true).unwrap_err().to_string();
        assert!(error.contains("give --token-keys FILE"), "{error}");
        assert!(
            resolve(&[], false).unwrap().tokens.is_none(),
            "no API, no keys"
        );
        let open = resolve(&["--no-tokens"], true).unwrap();
        assert!(open.tokens.is_none());
        let dir = std::env::temp_dir().join(format!("flashtix-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "k".repeat(40)).unwrap();
        let secret = secret.to_str().unwrap();
        let with_secret = resolve(&["--token-secret-file", secret], true).unwrap();
        assert_eq!(with_secret.tokens.unwrap().algorithm(), Algorithm::HS256);
        let both = resolve(&["--token-secret-file", secret, "--no-tokens"], true);
        assert!(both.unwrap_err().to_string().contains("takes no keys"));
        let hs_keys = resolve(
            &["--token-keys", secret, "--token-algorithm", "HS256"],
            true,
        );
        assert!(hs_keys
            .unwrap_err()
            .to_string()
            .contains("--token-secret-file"));
        let no_burst = resolve(&["--no-tokens", "--buyer-burst", "0"], true);
        assert!(no_burst.unwrap_err().to_string().contains("--buyer-burst"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! `flashtix keys init|rotate` and `flashtix token`: keys and tokens for a
//! sale that has no identity provider of its own (the demo, the Compose
//! stack, the tests, a script with `curl`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use flashtix_model::input::has_control;
use flashtix_server::identity::config::TokenScope;
use flashtix_server::identity::keys::{self, read_secret, SigningKey};
use flashtix_server::identity::tokens::{Claims, MAX_SUBJECT_CHARS};
use flashtix_server::identity::Access;

use super::Failure;

/// The private key's file in a keys folder.
pub const SIGNING_KEY: &str = "signing-key.pem";
/// The public keys' file in a keys folder.
pub const PUBLIC_KEYS: &str = "jwks.json";

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    action: KeysAction,
}

#[derive(Debug, clap::Subcommand)]
enum KeysAction {
    /// Make an Ed25519 key pair: DIR/signing-key.pem (private, readable by
    /// you alone) and DIR/jwks.json (the public key, for the sale's
    /// --token-keys); a DIR that holds a pair already keeps it
    Init {
        #[arg(long, default_value = "flashtix-keys")]
        dir: PathBuf,
    },
    /// Make a new signing key; jwks.json keeps the old public keys beside
    /// the new one, so tokens the old key signed still verify
    Rotate {
        #[arg(long, default_value = "flashtix-keys")]
        dir: PathBuf,
    },
}

pub fn run(args: KeysArgs) -> Result<ExitCode, Failure> {
    match args.action {
        KeysAction::Init { dir } => {
            let (private, public) = (dir.join(SIGNING_KEY), dir.join(PUBLIC_KEYS));
            match (private.exists(), public.exists()) {
                (true, true) => {
                    let key = SigningKey::read_pem(&private).map_err(Failure::usage)?;
                    println!(
                        "{} already holds a key pair (signing key {}): kept; `flashtix keys \
                         rotate --dir {}` makes a new one",
                        dir.display(),
                        key.kid().unwrap_or_default(),
                        dir.display()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                (true, false) | (false, true) => {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "{} holds half a key pair (one of {SIGNING_KEY} and {PUBLIC_KEYS}): \
                         move it away, or give another --dir",
                        dir.display()
                    )))
                }
                (false, false) => {}
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            write_key(&dir, Vec::new())?;
        }
        KeysAction::Rotate { dir } => {
            let file = dir.join(PUBLIC_KEYS);
            let text = std::fs::read_to_string(&file).with_context(|| {
                format!("reading {} (`flashtix keys init` makes it)", file.display())
            })?;
            let set: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let Some(old) = set["keys"].as_array() else {
                return Err(Failure::usage(anyhow::anyhow!(
                    "{} is not a JWKS document",
                    file.display()
                )));
            };
            write_key(&dir, old.clone())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A new key pair in `dir` (which must exist, and hold none yet): the files
/// of its private key and of its public key set.
pub fn make_pair(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    write_key(dir, Vec::new())?;
    Ok((dir.join(SIGNING_KEY), dir.join(PUBLIC_KEYS)))
}

/// Writes a new key pair into `dir`, its public key after `earlier`.
fn write_key(dir: &Path, mut earlier: Vec<serde_json::Value>) -> anyhow::Result<()> {
    let (pem, public) = keys::generate()?;
    let kid = public["kid"].as_str().unwrap_or_default().to_owned();
    earlier.push(public);
    // The public keys first: a sale started from here on verifies the new
    // key's tokens as soon as anyone can sign one (a running sale reads its
    // keys when it starts: restart it after a rotation).
    replace(
        &dir.join(PUBLIC_KEYS),
        format!("{:#}\n", keys::key_set(earlier)).as_bytes(),
        0o644,
    )?;
    replace(&dir.join(SIGNING_KEY), pem.as_bytes(), 0o600)?;
    println!(
        "signing key {kid}: {} (private) and {} (public keys, for --token-keys)",
        dir.join(SIGNING_KEY).display(),
        dir.join(PUBLIC_KEYS).display()
    );
    Ok(())
}

/// Writes `file` whole or not at all: a new file with `mode`, renamed over it.
fn replace(file: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let fresh = file.with_extension("new");
    let _ = std::fs::remove_file(&fresh);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&fresh)
        .with_context(|| format!("creating {}", fresh.display()))?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::rename(&fresh, file).with_context(|| format!("writing {}", file.display()))
}

/// What signs tokens, from a private key or a shared secret.
#[derive(Debug, Clone, clap::Args)]
pub struct SignerArgs {
    /// The private key tokens are signed with (`flashtix keys init` writes
    /// DIR/signing-key.pem)
    #[arg(long, env = "FLASHTIX_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Or, when no --signing-key is given, a file holding the shared secret
    /// (HS256) the sale verifies with
    #[arg(long, env = "FLASHTIX_TOKEN_SECRET_FILE", value_name = "FILE")]
    pub token_secret_file: Option<PathBuf>,
    #[command(flatten)]
    pub scope: TokenScope,
}

/// Signs tokens for any subject.
pub struct Signer {
    key: SigningKey,
    scope: TokenScope,
}

impl SignerArgs {
    /// The signer, if a key or a secret is given: the private key when both
    /// are (one may come from the environment, the other from a flag).
    pub fn signer(&self) -> anyhow::Result<Option<Signer>> {
        let key = match (&self.signing_key, &self.token_secret_file) {
            (Some(file), _) => SigningKey::read_pem(file)?,
            (None, Some(file)) => SigningKey::secret(&read_secret(file)?),
            (None, None) => return Ok(None),
        };
        Ok(Some(Signer {
            key,
            scope: self.scope.clone(),
        }))
    }
}

impl Signer {
    pub fn sign(&self, subject: &str, access: Access, ttl: Duration) -> String {
        let TokenScope {
            token_audience,
            token_issuer,
        } = &self.scope;
        let claims = Claims::new(subject, access, ttl, token_audience, token_issuer);
        self.key.sign(&claims)
    }

    /// The buyer tokens of `subjects` (in order), signed on every core.
    pub fn sign_all(&self, subjects: &[String], ttl: Duration) -> Vec<String> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_thread = subjects.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let parts: Vec<_> = subjects
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|subject| self.sign(subject, Access::Buyer, ttl))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| part.join().expect("signing does not panic"))
                .collect()
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Whom the token is for (the buyer's user_id, or an organizer's name)
    #[arg(long)]
    sub: String,
    /// What it lets them do: buyer or organizer
    #[arg(long, default_value = "buyer")]
    role: Access,
    /// How long it is valid
    #[arg(long, default_value = "1h", value_parser = flashtix_model::duration::parse)]
    ttl: Duration,
    /// Print this many buyer tokens, one a line, for buyers SUB-0, SUB-1, ...
    /// (a file for `flashtix storm --tokens`, or for a load tool)
    #[arg(long, conflicts_with = "role")]
    count: Option<u64>,
    #[command(flatten)]
    signer: SignerArgs,
}

/// Prints a signed token, for scripts and `curl`.
pub fn token(args: TokenArgs) -> Result<ExitCode, Failure> {
    let Some(signer) = args.signer.signer().map_err(Failure::usage)? else {
        return Err(Failure::usage(anyhow::anyhow!(
            "give the key to sign with: --signing-key FILE (`flashtix keys init` makes one) \
             or --token-secret-file FILE"
        )));
    };
    let chars = args.sub.chars().count();
    if chars == 0 || chars > MAX_SUBJECT_CHARS || has_control(&args.sub) {
        return Err(Failure::usage(anyhow::anyhow!(
            "--sub must be 1 to {MAX_SUBJECT_CHARS} printable characters"
        )));
    }
    let Some(count) = args.count else {
        println!("{}", signer.sign(&args.sub, args.role, args.ttl));
        return Ok(ExitCode::SUCCESS);
    };
    let subjects: Vec<String> = (0..count).map(|n| format!("{}-{n}", args.sub)).collect();
    if subjects
        .last()
        .is_some_and(|last| last.chars().count() > MAX_SUBJECT_CHARS)
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "--sub with --count makes subjects longer than {MAX_SUBJECT_CHARS} characters"
        )));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for token in signer.sign_all(&subjects, args.ttl) {
        writeln!(out, "{token}").context("writing the tokens")?;
    }
    out.flush().context("writing the tokens")?;
    Ok(ExitCode::SUCCESS)
}

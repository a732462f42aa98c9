//! How the notifications role reaches buyers and organizers: the flags and
//! `FLASHTIX_*` variables in, [`NoticeSettings`] out. The webhook secret
//! comes from a file, never from a default or a flag's value.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

/// The shortest webhook secret taken: HMAC-SHA256 wants a key as long as
/// its output.
const MIN_SECRET_BYTES: usize = 32;

/// The notification flags of a server process.
#[derive(Debug, Clone, clap::Args)]
pub struct NoticeArgs {
    /// The mail server buyers' notices go through, `smtp://HOST:PORT`
    /// (plain SMTP on a private network). Without it the notifications role
    /// mails nobody and counts each notice as `off`
    #[arg(long, env = "FLASHTIX_SMTP", value_name = "URL")]
    pub smtp: Option<String>,
    /// The sender of buyers' notices
    #[arg(
        long,
        env = "FLASHTIX_MAIL_FROM",
        default_value = "tickets@flashtix.test"
    )]
    pub mail_from: String,
    /// A buyer is mailed at SUBJECT@DOMAIN, SUBJECT being who their token
    /// says they are
    #[arg(
        long,
        env = "FLASHTIX_BUYER_MAIL_DOMAIN",
        default_value = "buyers.flashtix.test"
    )]
    pub buyer_mail_domain: String,
    /// A file holding the secret (32 bytes or more) webhook deliveries are
    /// signed with; without it, deliveries wait unsent
    #[arg(long, env = "FLASHTIX_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Tries of a webhook delivery before it is dead-lettered
    #[arg(long, env = "FLASHTIX_WEBHOOK_ATTEMPTS", default_value_t = 8)]
    pub webhook_attempts: u32,
    /// The pause after a webhook delivery's first failure, in milliseconds;
    /// it doubles after each, up to 30 s
    #[arg(long, env = "FLASHTIX_WEBHOOK_BACKOFF_MS", default_value_t = 500)]
    pub webhook_backoff_ms: u64,
}

/// Where a mail server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
}

/// Validated notification settings.
#[derive(Clone, Default)]
pub struct NoticeSettings {
    /// `None`: notices are not mailed.
    pub smtp: Option<SmtpServer>,
    pub mail_from: String,
    pub buyer_mail_domain: String,
    /// `None`: webhook deliveries wait.
    pub webhook_secret: Option<Arc<[u8]>>,
    pub webhook_attempts: u32,
    pub webhook_backoff: Duration,
}

impl std::fmt::Debug for NoticeSettings {
    // The secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticeSettings")
            .field("smtp", &self.smtp)
            .field("mail_from", &self.mail_from)
            .field("buyer_mail_domain", &self.buyer_mail_domain)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "…"))
            .field("webhook_attempts", &self.webhook_attempts)
            .field("webhook_backoff", &self.webhook_backoff)
            .finish()
    }
}

impl NoticeArgs {
    pub fn resolve(&self) -> anyhow::Result<NoticeSettings> {
        let smtp = self.smtp.as_deref().map(smtp_server).transpose()?;
        if !self.mail_from.contains('@') || self.buyer_mail_domain.contains('@') {
            bail!("--mail-from must be an address and --buyer-mail-domain a domain");
        }
        if self.webhook_attempts == 0 {
            bail!("--webhook-attempts must be at least 1");
        }
        let webhook_secret = self
            .webhook_secret_file
            .as_deref()
            .map(read_webhook_secret)
            .transpose()?;
        Ok(NoticeSettings {
            smtp,
            mail_from: self.mail_from.clone(),
            buyer_mail_domain: self.buyer_mail_domain.clone(),
            webhook_secret,
            webhook_attempts: self.webhook_attempts,
            webhook_backoff: Duration::from_millis(self.webhook_backoff_ms.max(1)),
        })
    }
}

/// `smtp://HOST:PORT` read into its parts.
pub fn smtp_server(url: &str) -> anyhow::Result<SmtpServer> {
    let refuse = || anyhow::anyhow!("--smtp must be smtp://HOST:PORT, got {url:?}");
    let rest = url.strip_prefix("smtp://").ok_or_else(refuse)?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(refuse)?;
    if host.is_empty() || host.contains(['@', '/']) {
        return Err(refuse());
    }
    let port = port.parse().map_err(|_| refuse())?;
    Ok(SmtpServer {
        host: host.trim_matches(['[', ']']).to_owned(),
        port,
    })
}

/// The webhook secret in `path`, trimmed of a final newline.
pub fn read_webhook_secret(path: &std::path::Path) -> anyhow::Result<Arc<[u8]>> {
    let mut secret = std::fs::read(path)
        .with_context(|| format!("reading the webhook secret from {}", path.display()))?;
    while secret.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        secret.pop();
    }
    if secret.len() < MIN_SECRET_BYTES {
        bail!(
            "the webhook secret in {} is {} bytes; it must be {MIN_SECRET_BYTES} or more",
            path.display(),
            secret.len()
        );
    }
    Ok(secret.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_smtp_url_is_read_into_host_and_port_and_other_forms_are_refused() {
        let server = smtp_server("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((server.host.as_str(), server.port), ("127.0.0.1", 2525));
        assert_eq!(smtp_server("smtp://[::1]:25/").unwrap().host, "::1");
        for bad in [
            "127.0.0.1:25",
            "smtp://host",
            "smtp://u:p@host:25",
            "smtp://:25",
        ] {
            assert!(smtp_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_short_webhook_secret_is_refused_and_a_long_one_read_without_its_newline() {
        let dir = std::env::temp_dir().join(format!("flashtix-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "too short\n").unwrap();
        assert!(read_webhook_secret(&short).is_err());
        let long = dir.join("long");
        std::fs::write(&long, format!("{}\n", "s".repeat(40))).unwrap();
        assert_eq!(read_webhook_secret(&long).unwrap().len(), 40);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The notices' receivers of flashtix's own, for tests, demos and drills: a
//! mail server that delivers to a Maildir (`scripts/mail_sink.py`, on
//! aiosmtpd) and an organizer's webhook receiver that records every POST
//! (`scripts/webhook_receiver.py`). What they hold is what `flashtix check
//! --mail --webhooks` judges. The scripts travel inside the binary and are
//! written beside what they keep, so a drill needs no checkout.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{Ready, Recipe};

const MAIL_SINK: &str = include_str!("../../scripts/mail_sink.py");
const WEBHOOK_RECEIVER: &str = include_str!("../../scripts/webhook_receiver.py");

/// Where one set of receivers keeps what it got, under one directory.
#[derive(Debug, Clone)]
pub struct Receipts {
    pub dir: PathBuf,
}

impl Receipts {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The buyers' Maildir.
    pub fn maildir(&self) -> PathBuf {
        self.dir.join("Maildir")
    }

    /// The webhook receiver's record, a delivery a line.
    pub fn webhook_record(&self) -> PathBuf {
        self.dir.join("webhooks.jsonl")
    }

    /// While this file exists, the receiver answers 500 to the share of
    /// deliveries it holds.
    pub fn webhook_control(&self) -> PathBuf {
        self.dir.join("webhooks.fail")
    }

    /// The secret webhook deliveries are signed with.
    pub fn webhook_secret(&self) -> PathBuf {
        self.dir.join("webhook.secret")
    }

    /// Writes a fresh webhook secret (32 random bytes, in hex), readable by
    /// its owner only, unless one is there.
    pub fn ensure_secret(&self) -> io::Result<PathBuf> {
        let path = self.webhook_secret();
        if path.exists() {
            return Ok(path);
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut random = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let partial = self.dir.join("webhook.secret.partial");
        // A leftover from an interrupted run may have other permissions.
        let _ = std::fs::remove_file(&partial);
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)?;
            std::io::Write::write_all(&mut file, hex.as_bytes())?;
        }
        std::fs::rename(&partial, &path)?;
        Ok(path)
    }

    /// Makes the webhook receiver answer 500 to `share` of deliveries
    /// (`None`: to none again).
    pub fn fail_webhooks(&self, share: Option<f64>) -> io::Result<()> {
        match share {
            Some(share) => std::fs::write(self.webhook_control(), share.to_string()),
            None => match std::fs::remove_file(self.webhook_control()) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            },
        }
    }

    /// How to run the mail server on `port`, holding each message `delay`.
    pub fn mail_sink(&self, port: u16, delay: Duration) -> io::Result<Recipe> {
        let args = [
            "--maildir".into(),
            self.maildir().display().to_string(),
            "--delay-ms".into(),
            delay.as_millis().to_string(),
        ];
        self.recipe(("mail_sink.py", MAIL_SINK), port, &args, "mail.log")
    }

    /// How to run the webhook receiver on `port`.
    pub fn webhook_receiver(&self, port: u16) -> io::Result<Recipe> {
        let args = [
            "--record".into(),
            self.webhook_record().display().to_string(),
            "--control".into(),
            self.webhook_control().display().to_string(),
        ];
        self.recipe(
            ("webhook_receiver.py", WEBHOOK_RECEIVER),
            port,
            &args,
            "webhooks.log",
        )
    }

    /// A receiver's script (written here) run on `port` with `args`, ready
    /// when it says it listens.
    fn recipe(
        &self,
        (name, text): (&str, &str),
        port: u16,
        args: &[String],
        log: &str,
    ) -> io::Result<Recipe> {
        let script = self.script(name, text)?;
        let listen = ["--listen".to_owned(), format!("127.0.0.1:{port}")];
        Ok(Recipe {
            program: python(),
            args: std::iter::once(script.display().to_string())
                .chain(listen)
                .chain(args.iter().cloned())
                .collect(),
            env: vec![],
            log: self.dir.join(log),
            ready: Ready::Line("listening on ".into()),
            ready_within: Duration::from_secs(20),
            user: None,
        })
    }

    fn script(&self, name: &str, text: &str) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// The Python that has aiosmtpd: `FLASHTIX_PYTHON`, else Debian's own (a
/// `python3` earlier on the PATH may be another installation without it).
fn python() -> PathBuf {
    if let Some(given) = std::env::var_os("FLASHTIX_PYTHON") {
        return given.into();
    }
    let debian = Path::new("/usr/bin/python3");
    if debian.exists() {
        debian.to_owned()
    } else {
        "python3".into()
    }
}

//! The notices' receivers of one local drill: a mail server behind a fault
//! proxy of ours (a drill kills it, cuts it or slows it) and a webhook
//! receiver (a drill makes it answer 500 to a share of deliveries). The
//! sale's notifications role sends to them; `check` reads what they got.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::Shared;
use crate::process::Process;
use crate::proxy::Proxy;
use crate::receivers::Receipts;
use crate::services::free_port;
use flashtix_model::Receiver;

use super::STOP_GRACE;

/// How long a failed webhook delivery waits before its next try, at first:
/// short, so a drill's deliveries come through soon after its fault ends.
const WEBHOOK_BACKOFF_MS: &str = "200";

#[derive(Clone)]
pub struct Receivers {
    pub receipts: Receipts,
    mail: Shared,
    /// Between the sale and the mail server.
    mail_proxy: Arc<Proxy>,
    hooks: Shared,
    hook_url: String,
}

impl Receivers {
    /// Starts both under `dir`, the mail server behind a proxy.
    pub async fn start(dir: &Path) -> io::Result<Self> {
        let receipts = Receipts::new(dir.join("receipts"));
        receipts.ensure_secret()?;
        let mail_port = free_port()?;
        let mut mail = Process::new("mail", receipts.mail_sink(mail_port, Duration::ZERO)?);
        mail.start().await?;
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mail_proxy = Proxy::start(any, format!("127.0.0.1:{mail_port}")).await?;
        let mut hooks = Process::new("webhooks", receipts.webhook_receiver(free_port()?)?);
        let hook_url = format!("{}/hooks", hooks.start().await?);
        Ok(Self {
            receipts,
            mail: Arc::new(Mutex::new(mail)),
            mail_proxy: Arc::new(mail_proxy),
            hooks: Arc::new(Mutex::new(hooks)),
            hook_url,
        })
    }

    /// The flags every `flashtix serve` of the sale gets.
    pub fn serve_flags(&self) -> Vec<String> {
        vec![
            "--smtp".into(),
            format!("smtp://{}", self.mail_proxy.address()),
            "--webhook-secret-file".into(),
            self.receipts.webhook_secret().display().to_string(),
            "--webhook-backoff-ms".into(),
            WEBHOOK_BACKOFF_MS.into(),
        ]
    }

    /// What `reset` adds to the drill's sale: the organizer's webhook.
    pub fn reset_flags(&self) -> toml::Table {
        let mut flags = toml::Table::new();
        flags.insert("webhook-url".into(), self.hook_url.clone().into());
        flags
    }

    /// What `check` adds: the receivers to judge the notices by.
    pub fn check_flags(&self) -> toml::Table {
        let path = |p: std::path::PathBuf| toml::Value::from(p.display().to_string());
        let mut flags = toml::Table::new();
        flags.insert("mail".into(), path(self.receipts.maildir()));
        flags.insert("webhooks".into(), path(self.receipts.webhook_record()));
        flags.insert(
            "webhook-secret-file".into(),
            path(self.receipts.webhook_secret()),
        );
        flags
    }

    pub fn process(&self, receiver: Receiver) -> Shared {
        match receiver {
            Receiver::Mail => self.mail.clone(),
            Receiver::Webhooks => self.hooks.clone(),
        }
    }

    /// The proxy in front of the mail server.
    pub fn mail_proxy(&self) -> Arc<Proxy> {
        self.mail_proxy.clone()
    }

    /// Both running, the proxy faithful, every delivery answered 200.
    pub async fn heal(&self) -> io::Result<()> {
        self.mail_proxy.set(None);
        self.receipts.fail_webhooks(None)?;
        for process in [&self.mail, &self.hooks] {
            let mut process = process.lock().await;
            process.resume();
            process.start().await?;
        }
        Ok(())
    }

    pub async fn stop(&self) {
        for process in [&self.mail, &self.hooks] {
            let _ = process.lock().await.stop(STOP_GRACE).await;
        }
    }
}

//! The operator's steps of a drill, each a `flashtix` command as an operator
//! would type it: `reset` the sale, fire the `storm`, wait for it to settle
//! and `check` the result.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use flashtix_model::report::Checked;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// How to run `flashtix` for one drill: the binary, its environment (the
/// dependencies' URLs and the drill's namespace), and where logs go.
pub struct Operator<'a> {
    pub flashtix: &'a Path,
    pub env: Vec<(String, String)>,
    pub dir: &'a Path,
    /// What `check` is given to judge the notices by (the receivers).
    pub notices: toml::Table,
}

impl Operator<'_> {
    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(self.flashtix);
        crate::process::with_env(&mut command, &self.env);
        command.args(args).stdin(Stdio::null());
        command
    }

    /// Runs `flashtix ARGS` with `table` as flags; its output goes to
    /// `NAME.log` in the drill's directory.
    pub async fn run(
        &self,
        name: &str,
        args: &[&str],
        table: &toml::Table,
    ) -> io::Result<ExitStatus> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let args: Vec<String> = args
            .iter()
            .map(|s| s.to_string())
            .chain(flags(table))
            .collect();
        self.command(&args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .await
    }

    /// `flashtix keys init` into `dir`: the drill's sale verifies tokens of
    /// its own key pair. Returns the public keys' file; the operator signs
    /// the storm's tokens with the private key from then on.
    pub async fn make_keys(&mut self, dir: &Path) -> io::Result<PathBuf> {
        let dir_text = dir.to_string_lossy().into_owned();
        let made = self
            .run(
                "keys",
                &["keys", "init", "--dir", &dir_text],
                &toml::Table::new(),
            )
            .await?;
        if !made.success() {
            return Err(io::Error::other(format!(
                "making the drill's keys failed (see {})",
                self.dir.join("keys.log").display()
            )));
        }
        let signing_key = dir.join("signing-key.pem");
        self.env.push((
            "FLASHTIX_SIGNING_KEY".into(),
            signing_key.to_string_lossy().into_owned(),
        ));
        Ok(dir.join("jwks.json"))
    }

    /// `flashtix reset --yes` with the drill's sale.
    pub async fn reset(&self, sale: &toml::Table) -> io::Result<()> {
        if self
            .run("reset", &["reset", "--yes"], sale)
            .await?
            .success()
        {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "reset failed (see {})",
                self.dir.join("reset.log").display()
            )))
        }
    }

    /// Starts `flashtix storm ARGS`; returns it once it says it began sending
    /// (`None`: it ended first). Its stderr is copied to `storm.err`.
    pub async fn storm(&self, args: &[String]) -> io::Result<(Child, bool)> {
        let mut storm = self
            .command(args)
            .stdout(std::fs::File::create(self.dir.join("storm.log"))?)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = storm.stderr.take().expect("piped");
        let begun = started(stderr, self.dir.join("storm.err")).await;
        Ok((storm, begun))
    }

    /// `flashtix check --settle LIMIT --history`: waits for the sale to
    /// settle, then proves it (again while what it cannot judge yet is
    /// still moving). A check that gave no report (it could not reach
    /// Postgres just after a fault healed) is run once more. `None`: neither
    /// gave one (see `check.log`).
    pub async fn check(&self, history: &Path, limit: Duration) -> io::Result<Option<Checked>> {
        for _ in 0..2 {
            if let Some(checked) = self.check_once(history, limit).await? {
                return Ok(Some(checked));
            }
        }
        Ok(None)
    }

    async fn check_once(&self, history: &Path, limit: Duration) -> io::Result<Option<Checked>> {
        let json = self.dir.join("check.json");
        let args = [
            "check",
            "--settle",
            &format!("{}ms", limit.as_millis()),
            "--history",
            &history.display().to_string(),
            "--json",
            &json.display().to_string(),
        ];
        let _ = std::fs::remove_file(&json);
        self.run("check", &args, &self.notices).await?;
        Ok(std::fs::read(&json)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }
}

/// A TOML table as command-line flags: `rate = 300.0` → `--rate 300`,
/// `yes = true` → `--yes`, a list → the flag once per item.
pub fn flags(table: &toml::Table) -> Vec<String> {
    let mut flags = Vec::new();
    for (key, value) in table {
        let values = match value {
            toml::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for value in values {
            match value {
                toml::Value::Boolean(true) => flags.push(format!("--{key}")),
                toml::Value::Boolean(false) => {}
                toml::Value::String(text) => flags.extend([format!("--{key}"), text]),
                toml::Value::Integer(n) => flags.extend([format!("--{key}"), n.to_string()]),
                toml::Value::Float(x) => flags.extend([format!("--{key}"), x.to_string()]),
                // Tables and dates are no flag: passed as written, the command
                // names the mistake.
                other => flags.extend([format!("--{key}"), format!("{other:?}")]),
            }
        }
    }
    flags
}

/// Copies the storm's stderr to `log`; true once it says it began sending.
async fn started(stderr: tokio::process::ChildStderr, log: PathBuf) -> bool {
    let (began, said) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut out = tokio::fs::File::create(&log).await.ok();
        let mut began = Some(began);
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("storm: ") {
                if let Some(began) = began.take() {
                    let _ = began.send(());
                }
            }
            if let Some(out) = &mut out {
                let _ = out.write_all(format!("{line}\n").as_bytes()).await;
            }
        }
    });
    said.await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_becomes_the_flags_a_command_reads() {
        let table: toml::Table = toml::from_str(
            r#"
            rate = 300.0
            buyers = 4500
            quantity = "1:80,2:20"
            yes = true
            no-check = false
            threshold = ["p99<50ms", "error_rate<1%"]
            "#,
        )
        .unwrap();
        let flags = flags(&table);
        let pairs: Vec<String> = flags.chunks(2).map(|pair| pair.join(" ")).collect();
        for expected in [
            "--rate 300",
            "--buyers 4500",
            "--quantity 1:80,2:20",
            "--threshold p99<50ms",
            "--threshold error_rate<1%",
        ] {
            assert!(
                flags.join(" ").contains(expected),
                "{expected} in {pairs:?}"
            );
        }
        assert!(flags.contains(&"--yes".to_owned()));
        assert!(!flags.iter().any(|f| f == "--no-check"), "false is no flag");
    }
}

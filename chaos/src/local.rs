//! The local driver: processes this machine runs for a drill, and what a drill
//! does to them — kill (SIGKILL), stop (SIGTERM, then wait), pause and resume
//! (SIGSTOP / SIGCONT), start, restart. Only processes started here can be
//! touched: a drill never signals anything it did not start.

use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How a process is started, and where its output goes.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// stderr goes here (appended across restarts).
    pub log: PathBuf,
    /// A line the process prints on stdout once it is ready (its prefix), and
    /// how long to wait for it.
    pub ready_line: Option<(String, Duration)>,
}

/// One process of a drill.
pub struct Process {
    pub name: String,
    recipe: Recipe,
    running: Option<Running>,
}

struct Running {
    child: Child,
    /// Kept open: a closed pipe would fail the process's next write.
    _stdout: BufReader<ChildStdout>,
}

impl Process {
    pub fn new(name: impl Into<String>, recipe: Recipe) -> Self {
        Self {
            name: name.into(),
            recipe,
            running: None,
        }
    }

    /// Starts it (if not running) and waits for its ready line; returns the
    /// rest of that line (a server's URL).
    pub async fn start(&mut self) -> io::Result<String> {
        if self.running.is_some() {
            return Ok(String::new());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.recipe.log)?;
        let mut child = Command::new(&self.recipe.program)
            .args(&self.recipe.args)
            .envs(self.recipe.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut said = String::new();
        if let Some((prefix, limit)) = &self.recipe.ready_line {
            let mut line = String::new();
            let read = tokio::time::timeout(*limit, stdout.read_line(&mut line)).await;
            said = match read {
                Ok(Ok(_)) if line.starts_with(prefix.as_str()) => {
                    line[prefix.len()..].trim().to_owned()
                }
                _ => {
                    let _ = child.kill().await;
                    return Err(io::Error::other(format!(
                        "{} did not get ready within {limit:?} (log: {})",
                        self.name,
                        self.recipe.log.display()
                    )));
                }
            };
        }
        self.running = Some(Running {
            child,
            _stdout: stdout,
        });
        Ok(said)
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().and_then(|r| r.child.id())
    }

    /// SIGKILL, and reaps it.
    pub async fn kill(&mut self) -> io::Result<()> {
        if let Some(mut running) = self.running.take() {
            // SIGCONT first: a paused process must die, not stay a stopped zombie.
            signal(&running.child, libc::SIGCONT);
            running.child.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `grace` for it to exit; kills it after that.
    /// Returns its exit code when it exited by itself.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<Option<i32>> {
        let Some(mut running) = self.running.take() else {
            return Ok(None);
        };
        signal(&running.child, libc::SIGCONT);
        signal(&running.child, libc::SIGTERM);
        match tokio::time::timeout(grace, running.child.wait()).await {
            Ok(status) => Ok(status?.code()),
            Err(_) => {
                running.child.kill().await?;
                Ok(None)
            }
        }
    }

    /// SIGSTOP: the process keeps its connections and answers nothing.
    pub fn pause(&self) {
        if let Some(running) = &self.running {
            signal(&running.child, libc::SIGSTOP);
        }
    }

    /// SIGCONT.
    pub fn resume(&self) {
        if let Some(running) = &self.running {
            signal(&running.child, libc::SIGCONT);
        }
    }

    pub async fn restart(&mut self, grace: Duration) -> io::Result<String> {
        self.stop(grace).await?;
        self.start().await
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) only reads its arguments; the pid is our own child,
        // not yet reaped (we hold its handle), so it cannot name another process.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }
}

//! The local driver: processes this machine runs for a drill, and what a drill
//! does to them — kill (SIGKILL), stop (SIGTERM, then wait), pause and resume
//! (SIGSTOP / SIGCONT), start, restart. Only processes started here can be
//! touched: a drill never signals anything it did not start.
//!
//! Each process leads its own process group and every signal goes to the
//! group: RabbitMQ's start script and its Erlang VM, or Postgres's postmaster
//! and its backends, live and die together, as a crash of the machine's
//! service would have them.

use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Pid, User};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How a process is started, and where its output goes.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// stderr goes here (appended across restarts); so does stdout after the
    /// ready line, for a process started detached.
    pub log: PathBuf,
    /// How to tell it is ready.
    pub ready: Ready,
    /// How long it may take to get ready.
    pub ready_within: Duration,
    /// Run as this user (when we are root: Postgres refuses to run as root).
    pub user: Option<String>,
}

/// When a started process counts as ready.
#[derive(Debug, Clone)]
pub enum Ready {
    /// At once.
    Started,
    /// It prints a line on stdout starting with this; the rest of the line is
    /// what [`Process::start`] returns (a server's URL).
    Line(String),
    /// This TCP port on 127.0.0.1 accepts a connection.
    Port(u16),
    /// This command exits 0 (like `pg_isready`); tried every 100 ms.
    Probe(Vec<String>),
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
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Process {
    pub fn new(name: impl Into<String>, recipe: Recipe) -> Self {
        Self {
            name: name.into(),
            recipe,
            running: None,
        }
    }

    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// Changes how it starts next time.
    pub fn recipe_mut(&mut self) -> &mut Recipe {
        &mut self.recipe
    }

    /// Starts it (if not running) and waits until it is ready; returns the
    /// rest of its ready line, if it has one (a server's URL).
    pub async fn start(&mut self) -> io::Result<String> {
        if self.running.is_some() {
            return Ok(String::new());
        }
        let mut child = command(&self.recipe, false)?
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let ready = match &self.recipe.ready {
            Ready::Line(prefix) => {
                let mut line = String::new();
                let limit = self.recipe.ready_within;
                match tokio::time::timeout(limit, stdout.read_line(&mut line)).await {
                    Ok(Ok(_)) if line.starts_with(prefix.as_str()) => {
                        Ok(line[prefix.len()..].trim().to_owned())
                    }
                    _ => Err(()),
                }
            }
            other => wait_ready(other, self.recipe.ready_within, &mut child)
                .await
                .map(|()| String::new()),
        };
        match ready {
            Ok(said) => {
                self.running = Some(Running {
                    child,
                    _stdout: Some(stdout),
                });
                Ok(said)
            }
            Err(()) => {
                signal_group(child.id(), Signal::SIGKILL);
                let _ = child.wait().await;
                Err(self.not_ready())
            }
        }
    }

    fn not_ready(&self) -> io::Error {
        io::Error::other(format!(
            "{} did not get ready within {:?} (log: {})",
            self.name,
            self.recipe.ready_within,
            self.recipe.log.display()
        ))
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Started here and not exited since (by itself or by a signal of
    /// someone else's).
    pub fn is_alive(&mut self) -> bool {
        self.running
            .as_mut()
            .is_some_and(|running| matches!(running.child.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().and_then(|r| r.child.id())
    }

    /// SIGKILL to the whole group, and reaps it.
    pub async fn kill(&mut self) -> io::Result<()> {
        if let Some(mut running) = self.running.take() {
            // SIGCONT first: a paused process must die, not stay a stopped zombie.
            signal_group(running.child.id(), Signal::SIGCONT);
            let pid = running.child.id();
            signal_group(pid, Signal::SIGKILL);
            running.child.wait().await?;
            group_gone(pid).await;
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `grace` for it to exit; kills it after that.
    /// Returns its exit code when it exited by itself.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<Option<i32>> {
        let Some(mut running) = self.running.take() else {
            return Ok(None);
        };
        let pid = running.child.id();
        signal_group(pid, Signal::SIGCONT);
        signal_group(pid, Signal::SIGTERM);
        match tokio::time::timeout(grace, running.child.wait()).await {
            Ok(status) => {
                // What the leader left behind goes too.
                signal_group(pid, Signal::SIGKILL);
                group_gone(pid).await;
                Ok(status?.code())
            }
            Err(_) => {
                signal_group(pid, Signal::SIGKILL);
                running.child.wait().await?;
                group_gone(pid).await;
                Ok(None)
            }
        }
    }

    /// SIGSTOP: the process keeps its connections and answers nothing.
    pub fn pause(&self) {
        if let Some(running) = &self.running {
            signal_group(running.child.id(), Signal::SIGSTOP);
        }
    }

    /// SIGCONT.
    pub fn resume(&self) {
        if let Some(running) = &self.running {
            signal_group(running.child.id(), Signal::SIGCONT);
        }
    }

    pub async fn restart(&mut self, grace: Duration) -> io::Result<String> {
        self.stop(grace).await?;
        self.start().await
    }
}

/// A process started in the background, as its pid file records it: its pid
/// and when it started, so a pid the kernel has since handed to someone
/// else's process is never taken for ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detached {
    pub pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/PID/stat`).
    pub started: u64,
}

impl Detached {
    /// The process running as `pid` now.
    pub fn of(pid: u32) -> Option<Self> {
        Some(Self {
            pid,
            started: start_time(pid)?,
        })
    }

    /// As a pid file holds it: `PID STARTED`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let detached = Self {
            pid: words.next()?.parse().ok()?,
            started: words.next()?.parse().ok()?,
        };
        words.next().is_none().then_some(detached)
    }

    pub fn line(&self) -> String {
        format!("{} {}\n", self.pid, self.started)
    }

    /// It still runs, and is the very process that was started.
    pub fn is_ours(&self) -> bool {
        start_time(self.pid) == Some(self.started) && is_alive(self.pid)
    }
}

/// When process `pid` started (field 22 of `/proc/PID/stat`), if it exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it do not.
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Starts `recipe` in the background, outliving this process (for
/// `flashtix up`): its output goes to the log. Waits until it is ready; its
/// pid is also its process group.
pub async fn start_detached(name: &str, recipe: &Recipe) -> io::Result<Detached> {
    let mut child = command(recipe, true)?.stdout(log_file(recipe)?).spawn()?;
    let pid = child.id().expect("just spawned");
    let detached = Detached::of(pid);
    match (
        wait_ready(&recipe.ready, recipe.ready_within, &mut child).await,
        detached,
    ) {
        (Ok(()), Some(detached)) => Ok(detached),
        _ => {
            signal_group(Some(pid), Signal::SIGKILL);
            let _ = child.wait().await;
            Err(io::Error::other(format!(
                "{name} did not get ready within {:?} (log: {})",
                recipe.ready_within,
                recipe.log.display()
            )))
        }
    }
}

/// Runs `recipe` to its end (a one-off like `initdb`), its output to the log.
pub async fn run_to_end(recipe: &Recipe) -> io::Result<std::process::ExitStatus> {
    command(recipe, false)?
        .stdout(log_file(recipe)?)
        .status()
        .await
}

/// Whether a process still runs (a zombie, dead but not yet reaped, does not).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().chars().next()),
            Some(Some('Z' | 'X'))
        ),
        Err(_) => false,
    }
}

/// Stops a group [`start_detached`] started, if its leader is still the
/// process it started: SIGTERM, up to `grace` to exit, then SIGKILL. False
/// when there was nothing of ours to stop.
pub async fn stop_detached(process: Detached, grace: Duration) -> bool {
    if !process.is_ours() {
        return false;
    }
    let pid = Some(process.pid);
    signal_group(pid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while process.is_ours() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if process.is_ours() {
        signal_group(pid, Signal::SIGKILL);
    }
    true
}

/// Sends `signal` to the process group `pid` leads (one of ours: a child we
/// started with its own group, so it names nothing of anyone else's).
pub fn signal_group(pid: Option<u32>, signal: Signal) {
    if let Some(pid) = pid {
        let _ = killpg(group(pid), signal);
    }
}

fn group(pid: u32) -> Pid {
    Pid::from_raw(pid as i32)
}

/// Waits (up to 10 s) until no process of the group is left: a killed
/// leader is reaped before the rest of its group has died and let go of its
/// ports.
async fn group_gone(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // No signal: only whether any process of the group exists.
    while killpg(group(pid), None).is_ok() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn log_file(recipe: &Recipe) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&recipe.log)
}

/// Whether `name` says who may ask a sale: how tokens are signed or
/// verified, whether there are any, how fast one buyer may ask.
fn is_token_setting(name: &str) -> bool {
    name.starts_with("FLASHTIX_TOKEN_")
        || matches!(
            name,
            "FLASHTIX_SIGNING_KEY"
                | "FLASHTIX_NO_TOKENS"
                | "FLASHTIX_BUYER_RATE"
                | "FLASHTIX_BUYER_BURST"
        )
}

/// `env` set on `command`. If it says how tokens are signed or verified,
/// it alone says who may ask: no such setting of this process's own
/// environment is inherited (a drill's sale has keys of its own, and the
/// defaults, whoever runs the drill).
pub fn with_env(command: &mut Command, env: &[(String, String)]) {
    if env.iter().any(|(name, _)| is_token_setting(name)) {
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(is_token_setting) {
                command.env_remove(name);
            }
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
}

fn command(recipe: &Recipe, detached: bool) -> io::Result<Command> {
    let mut command = Command::new(&recipe.program);
    with_env(&mut command, &recipe.env);
    command
        .args(&recipe.args)
        .stdin(Stdio::null())
        .stderr(log_file(recipe)?)
        .process_group(0);
    if detached {
        command.kill_on_drop(false);
    }
    if let Some(user) = &recipe.user {
        if nix::unistd::geteuid().is_root() {
            let (uid, gid) = user_ids(user)?;
            command.uid(uid).gid(gid);
        }
    }
    Ok(command)
}

/// The uid and gid of a user of this machine.
pub(crate) fn user_ids(user: &str) -> io::Result<(u32, u32)> {
    match User::from_name(user).map_err(io::Error::from)? {
        Some(entry) => Ok((entry.uid.as_raw(), entry.gid.as_raw())),
        None => Err(io::Error::other(format!(
            "no user {user:?} on this machine"
        ))),
    }
}

/// Waits until `ready` holds, the limit passes, or the process exits.
async fn wait_ready(ready: &Ready, limit: Duration, child: &mut Child) -> Result<(), ()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ok = match ready {
            Ready::Started | Ready::Line(_) => true,
            Ready::Port(port) => tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .is_ok(),
            Ready::Probe(argv) => Command::new(&argv[0])
                .args(&argv[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|status| status.success()),
        };
        if ok {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline || !matches!(child.try_wait(), Ok(None)) {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid file names the process by pid and start time: another process
    /// given the same pid later is not ours, and is never signalled.
    #[test]
    fn a_pid_is_ours_only_while_its_start_time_matches() {
        let me = Detached::of(std::process::id()).expect("this process has a stat");
        assert!(me.is_ours());
        assert_eq!(Detached::parse(&me.line()), Some(me));
        let reused = Detached {
            started: me.started + 1,
            ..me
        };
        assert!(!reused.is_ours(), "same pid, another start: someone else's");
        for wrong in ["", "12", "12 x", "12 34 56", "x 12"] {
            assert_eq!(Detached::parse(wrong), None, "{wrong:?}");
        }
    }
}

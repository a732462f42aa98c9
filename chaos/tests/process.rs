//! The local driver against real processes: each action does to the process
//! what it says, as the kernel sees it.

use std::path::PathBuf;
use std::time::Duration;

use flashtix_chaos::process::{Process, Ready, Recipe};

/// A shell that says it is ready, then idles; SIGTERM makes it exit 7.
fn idler(name: &str) -> Process {
    let log =
        std::env::temp_dir().join(format!("flashtix-chaos-{name}-{}.log", std::process::id()));
    Process::new(
        name,
        Recipe {
            program: PathBuf::from("sh"),
            args: vec![
                "-c".into(),
                // One child, forked before the ready line: a group SIGSTOP
                // that caught a shell between vfork and exec would leave it
                // waiting for the stopped child in uninterruptible sleep.
                "trap 'exit 7' TERM; sleep 100000 & echo ready at $$; wait".into(),
            ],
            env: vec![],
            log,
            ready: Ready::Line("ready at ".into()),
            ready_within: Duration::from_secs(5),
            user: None,
        },
    )
}

/// The process's state letter from /proc (R, S, T, Z…), or None when gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// Running, sleeping or waiting on the disk: anything but stopped or dead.
fn alive_and_running(state: Option<char>) -> bool {
    matches!(state, Some(s) if !matches!(s, 'T' | 't' | 'Z' | 'X'))
}

/// Waits (up to 5 s) for the kernel to show the process in a state `wanted`
/// accepts: signals are delivered asynchronously.
async fn becomes(pid: u32, wanted: impl Fn(Option<char>) -> bool) -> Option<char> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = state(pid);
        if wanted(now) || tokio::time::Instant::now() > deadline {
            return now;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn start_pause_resume_kill() {
    let mut process = idler("kill");
    let said = process.start().await.unwrap();
    let pid = process.pid().unwrap();
    assert_eq!(said, pid.to_string(), "the rest of the ready line");
    assert!(alive_and_running(state(pid)), "{:?}", state(pid));

    process.pause();
    assert_eq!(
        becomes(pid, |s| s == Some('T')).await,
        Some('T'),
        "stopped by SIGSTOP"
    );
    process.resume();
    let running = becomes(pid, alive_and_running).await;
    assert!(alive_and_running(running), "{running:?}");

    process.kill().await.unwrap();
    assert_eq!(state(pid), None, "killed and reaped");
    assert!(!process.is_running());
}

#[tokio::test]
async fn stop_sends_sigterm_and_restart_starts_anew() {
    let mut process = idler("stop");
    process.start().await.unwrap();
    let first = process.pid().unwrap();
    process.pause();

    let new = process.restart(Duration::from_secs(5)).await.unwrap();
    let second = process.pid().unwrap();
    assert_ne!(first, second);
    assert_eq!(new, second.to_string());
    assert_eq!(
        state(first),
        None,
        "the paused one was woken, stopped and reaped"
    );

    assert_eq!(process.stop(Duration::from_secs(5)).await.unwrap(), Some(7));
    assert_eq!(state(second), None);
}

#[tokio::test]
async fn a_process_that_never_gets_ready_is_an_error() {
    let log =
        std::env::temp_dir().join(format!("flashtix-chaos-silent-{}.log", std::process::id()));
    let mut silent = Process::new(
        "silent",
        Recipe {
            program: PathBuf::from("sleep"),
            args: vec!["30".into()],
            env: vec![],
            log,
            ready: Ready::Line("ready".into()),
            ready_within: Duration::from_millis(300),
            user: None,
        },
    );
    let error = silent.start().await.unwrap_err();
    assert!(
        error.to_string().contains("silent did not get ready"),
        "{error}"
    );
    assert!(!silent.is_running());
}

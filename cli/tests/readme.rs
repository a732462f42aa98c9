//! The README's commands, run as written: every shell block of README.md
//! carries a marker on the line before it, `<!-- readme: run -->` or
//! `<!-- readme: not run: WHY -->`, and the blocks marked to run are run in
//! order, in one shell, from the checkout, against the test services in a
//! namespace of their own. Each must succeed, and each that ends in a
//! verdict (`flashtix check`, `storm`, `demo`) must say PASS. A documented
//! command that breaks turns this red.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{test_amqp_url, test_database_url, test_redis_url, Sale};

/// The longest a whole run may take: the release build the README asks for
/// comes first, and is minutes on a small machine.
const RUN_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The port the README's commands serve the sale on.
const README_PORT: u16 = 8080;

/// One run at a time: the README serves on a fixed port.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn readme_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the checkout")
}

/// A shell block of the README.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    /// Its opening fence's line in the README (from 1).
    line: usize,
    /// Its text, unindented.
    text: String,
    /// `None` when it is meant to run; else why not.
    not_run: Option<String>,
}

/// The shell blocks of a README, each with its marker; an error names every
/// shell block without one, and every marker that is not before a shell block.
fn blocks(readme: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    let mut pending_marker: Option<(usize, Marker)> = None;
    let mut at = 0;
    while at < lines.len() {
        let line = lines[at];
        let trimmed = line.trim_start();
        if let Some(marker) = Marker::parse(trimmed) {
            match marker {
                Ok(marker) => pending_marker = Some((at + 1, marker)),
                Err(problem) => problems.push(format!("line {}: {problem}", at + 1)),
            }
            at += 1;
            continue;
        }
        let Some(info) = trimmed.strip_prefix("```") else {
            if !trimmed.is_empty() {
                if let Some((marked, _)) = pending_marker.take() {
                    problems.push(format!("line {marked}: a marker not followed by a block"));
                }
            }
            at += 1;
            continue;
        };
        let indent = line.len() - trimmed.len();
        let opening = at;
        let mut text = String::new();
        at += 1;
        while at < lines.len() && lines[at].trim() != "```" {
            let body = lines[at];
            text.push_str(body.get(indent..).unwrap_or(body.trim_start()));
            text.push('\n');
            at += 1;
        }
        at += 1; // the closing fence
        let shell = matches!(info.trim(), "sh" | "bash" | "shell");
        match (shell, pending_marker.take()) {
            (true, Some((_, marker))) => blocks.push(Block {
                line: opening + 1,
                text,
                not_run: match marker {
                    Marker::Run => None,
                    Marker::NotRun(why) => Some(why),
                },
            }),
            (true, None) => problems.push(format!(
                "line {}: a shell block without `<!-- readme: run -->` or \
                 `<!-- readme: not run: WHY -->` on the line before",
                opening + 1
            )),
            (false, Some((marked, _))) => problems.push(format!(
                "line {marked}: a marker before a block that is not shell ({:?})",
                info.trim()
            )),
            (false, None) => {}
        }
    }
    if let Some((marked, _)) = pending_marker {
        problems.push(format!("line {marked}: a marker not followed by a block"));
    }
    if problems.is_empty() {
        Ok(blocks)
    } else {
        Err(problems.join("\n"))
    }
}

enum Marker {
    Run,
    NotRun(String),
}

impl Marker {
    /// The marker on this line, if it is one (an error if it is malformed).
    fn parse(line: &str) -> Option<Result<Self, String>> {
        let inner = line
            .strip_prefix("<!-- readme:")?
            .strip_suffix("-->")?
            .trim();
        Some(match inner {
            "run" => Ok(Self::Run),
            _ => match inner.strip_prefix("not run:").map(str::trim) {
                Some(why) if !why.is_empty() => Ok(Self::NotRun(why.to_owned())),
                _ => Err(format!(
                    "a marker says {inner:?}: write `run`, or `not run: WHY`"
                )),
            },
        })
    }
}

/// The script that runs `blocks` in order in one shell (so variables and the
/// server started in the background carry over), each block's output to a
/// file of its own in `dir`, stopping at the first command that fails.
fn script(blocks: &[&Block], dir: &Path) -> String {
    let mut script = format!(
        "set -eo pipefail\n\
         # Whatever happens, what the blocks started in the background stops.\n\
         stop_jobs() {{ kill $(jobs -p) 2>/dev/null || true; wait || true; }}\n\
         trap stop_jobs EXIT\n\
         # And if the test running this goes away (interrupted, timed out), so\n\
         # does everything in this process group.\n\
         ( while kill -0 {test} 2>/dev/null; do sleep 1; done; kill -KILL 0 ) &\n",
        test = std::process::id()
    );
    for (index, block) in blocks.iter().enumerate() {
        let out = dir.join(format!("block-{index}.out"));
        script.push_str(&format!(
            "echo {index} > '{current}'\n{{\n{text}}} > '{out}' 2>&1\n",
            current = dir.join("current").display(),
            text = block.text,
            out = out.display(),
        ));
    }
    script.push_str(&format!(
        "echo done > '{}'\n",
        dir.join("current").display()
    ));
    script
}

/// The commands whose output ends in a verdict on the sale.
fn judges_the_sale(block: &Block) -> bool {
    ["flashtix check", "flashtix storm", "-- demo"]
        .iter()
        .any(|command| block.text.contains(command))
}

/// Whether a block's output says every invariant held: a `PASS` verdict, and
/// no verdict other than PASS.
fn verdict_problem(output: &str) -> Option<String> {
    let verdicts: Vec<&str> = output
        .lines()
        .filter(|line| {
            ["PASS:", "UNKNOWN:", "FAIL:"]
                .iter()
                .any(|v| line.starts_with(v))
        })
        .collect();
    match verdicts.iter().find(|line| !line.starts_with("PASS:")) {
        Some(other) => Some(format!("it ended {other:?}")),
        None if verdicts.is_empty() => Some("it printed no verdict".into()),
        None => None,
    }
}

/// How a run of the README's blocks went.
#[derive(Debug)]
enum Run {
    /// Every block succeeded; their outputs, in order.
    Succeeded(Vec<String>),
    /// The block at this index (of those run) failed; what it printed.
    Failed {
        index: usize,
        status: ExitStatus,
        output: String,
    },
}

/// The blocks of `readme` marked to run, in order.
fn runnable(readme: &str) -> Vec<Block> {
    blocks(readme)
        .expect("every shell block marked")
        .into_iter()
        .filter(|block| block.not_run.is_none())
        .collect()
}

/// What the README's commands may see of the environment they run in: enough
/// to find cargo and a home, nothing that would point them elsewhere (a
/// target directory, a database, a namespace).
const KEPT_VARIABLES: [&str; 10] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "TERM",
    "TMPDIR",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
];

/// Runs `blocks`, as written, from the checkout, with the test services and
/// `sale`'s namespace in the environment.
fn run_blocks(blocks: &[Block], sale: &Sale) -> Run {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for address in [
        format!("127.0.0.1:{README_PORT}"),
        format!("[::1]:{README_PORT}"),
    ] {
        assert!(
            std::net::TcpStream::connect(&address).is_err(),
            "something already answers at {address}, the port the README's commands \
             serve on: stop it and run the tests again"
        );
    }
    let dir = sale
        .dir
        .join(format!("readme-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("a directory for the run");
    let blocks: Vec<&Block> = blocks.iter().collect();
    let script_path = dir.join("readme.sh");
    std::fs::write(&script_path, script(&blocks, &dir)).expect("the script");

    // The README writes its files where it runs: keep the checkout as it was.
    let written = Written::keep(&checkout().join("storm.jsonl"));
    let keys = MadeDir::watch(&checkout().join("flashtix-keys"));
    let mail = MadeDir::watch(&checkout().join("demo-mail"));
    let mut shell = Command::new("bash");
    shell
        .arg(&script_path)
        .current_dir(checkout())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    shell
        .env_clear()
        .envs(std::env::vars().filter(|(name, _)| KEPT_VARIABLES.contains(&name.as_str())))
        .env("FLASHTIX_DATABASE_URL", test_database_url())
        .env("FLASHTIX_REDIS_URL", test_redis_url())
        .env("FLASHTIX_AMQP_URL", test_amqp_url())
        .env("FLASHTIX_NAMESPACE", &sale.namespace);
    let child = shell.spawn().expect("bash runs");
    let mut group = Group(child);
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = group.0.try_wait().expect("waiting for bash") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the README's blocks did not end within {RUN_LIMIT:?}; the last begun: {}",
            std::fs::read_to_string(dir.join("current")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(group);
    drop(written);
    drop(keys);
    drop(mail);
    let output = |index: usize| {
        std::fs::read_to_string(dir.join(format!("block-{index}.out"))).unwrap_or_default()
    };
    let current = std::fs::read_to_string(dir.join("current")).unwrap_or_default();
    match current.trim().parse::<usize>() {
        Ok(index) => Run::Failed {
            index,
            status,
            output: output(index),
        },
        Err(_) if current.trim() == "done" && status.success() => {
            Run::Succeeded((0..blocks.len()).map(output).collect())
        }
        Err(_) => panic!("the script ended {status} before any block ({current:?})"),
    }
}

/// A process group: the shell and whatever it started, killed when dropped.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

/// A file in the checkout a run may write: put back as it was afterwards
/// (removed if it was not there).
struct Written {
    path: PathBuf,
    before: Option<Vec<u8>>,
}

impl Written {
    fn keep(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            before: std::fs::read(path).ok(),
        }
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        let _ = match &self.before {
            Some(bytes) => std::fs::write(&self.path, bytes),
            None => std::fs::remove_file(&self.path),
        };
    }
}

/// A folder the README makes where it runs (the quick start's keys): gone
/// again afterwards unless it was there before.
struct MadeDir {
    path: PathBuf,
    existed: bool,
}

impl MadeDir {
    fn watch(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            existed: path.exists(),
        }
    }
}

impl Drop for MadeDir {
    fn drop(&mut self) {
        if !self.existed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn describe(block: &Block) -> String {
    format!(
        "the block at README.md line {}:\n{}",
        block.line, block.text
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_runs_as_written_and_ends_in_pass() {
    let sale = Sale::new().await;
    let readme = std::fs::read_to_string(readme_path()).expect("README.md");
    let blocks = runnable(&readme);
    // The quick start's proof is among them: the check after the buy, and the
    // storm with its history.
    assert!(blocks.iter().any(|b| b.text.contains("flashtix check")));
    assert!(blocks
        .iter()
        .any(|b| b.text.contains("flashtix storm") && b.text.contains("--history")));
    let run = tokio::task::block_in_place(|| run_blocks(&blocks, &sale));
    let outputs = match run {
        Run::Succeeded(outputs) => outputs,
        Run::Failed {
            index,
            status,
            output,
        } => panic!(
            "{} failed ({status}); it printed:\n{output}",
            describe(&blocks[index])
        ),
    };
    // The dashboard's one screen shows the quick start's sale as it ended:
    // the storm sold every ticket, and the one process answers.
    let watched = blocks
        .iter()
        .zip(&outputs)
        .find(|(block, _)| block.text.contains("flashtix watch"))
        .map(|(_, output)| output)
        .expect("the README runs `flashtix watch --print -`");
    assert!(watched.contains("left 0/100 SOLD OUT"), "{watched}");
    assert!(watched.contains("127.0.0.1:8080 all up"), "{watched}");
    for (block, output) in blocks.iter().zip(&outputs) {
        if judges_the_sale(block) {
            if let Some(problem) = verdict_problem(output) {
                panic!("{}: {problem}; it printed:\n{output}", describe(block));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_documented_command_that_breaks_fails_the_run() {
    let sale = Sale::new().await;
    let readme = std::fs::read_to_string(readme_path()).expect("README.md");
    // The buy of the quick start, sent with a body the API refuses.
    let buy = "\\\"quantity\\\": 2}";
    assert!(readme.contains(buy), "the README buys with {buy}");
    let broken = readme.replacen(buy, "\\\"quantity\\\": \\\"two\\\"}", 1);
    // The blocks up to the buy, but for the demo (it proves nothing here).
    let mut blocks: Vec<Block> = runnable(&broken)
        .into_iter()
        .filter(|block| !block.text.contains("-- demo"))
        .collect();
    let buy_block = blocks
        .iter()
        .position(|block| block.text.contains("alice-1"))
        .expect("the buy is run");
    blocks.truncate(buy_block + 1);
    let run = tokio::task::block_in_place(|| run_blocks(&blocks, &sale));
    let Run::Failed { index, output, .. } = run else {
        panic!("a refused buy went unnoticed: {run:?}");
    };
    assert!(
        blocks[index].text.contains("-H 'Idempotency-Key: alice-1'"),
        "the run stopped at another block: {}",
        describe(&blocks[index])
    );
    assert!(output.contains("invalid_request"), "{output}");
}

#[test]
fn every_shell_block_is_marked_and_an_unmarked_one_is_named() {
    let readme = std::fs::read_to_string(readme_path()).expect("README.md");
    let all = blocks(&readme).unwrap_or_else(|problems| panic!("README.md:\n{problems}"));
    assert!(all.iter().any(|block| block.not_run.is_none()));
    assert!(all.iter().any(|block| block.not_run.is_some()));

    let unmarked = "Text.\n\n```sh\nflashtix check\n```\n";
    assert!(blocks(unmarked)
        .unwrap_err()
        .contains("line 3: a shell block without"));
    let stray = "<!-- readme: run -->\nText.\n\n```json\n{}\n```\n";
    assert!(blocks(stray)
        .unwrap_err()
        .contains("line 1: a marker not followed by a block"));
    let on_json = "<!-- readme: run -->\n```json\n{}\n```\n";
    assert!(blocks(on_json).unwrap_err().contains("not shell"));
    let no_reason = "<!-- readme: not run: -->\n```sh\nx\n```\n";
    assert!(blocks(no_reason).unwrap_err().contains("not run: WHY"));

    let indented =
        "- item\n  <!-- readme: not run: needs Docker -->\n  ```sh\n  a \\\n    b\n  ```\n";
    assert_eq!(
        blocks(indented).unwrap(),
        [Block {
            line: 3,
            text: "a \\\n  b\n".into(),
            not_run: Some("needs Docker".into()),
        }]
    );
}

#[test]
fn only_pass_is_a_pass() {
    let pass = "┌─┐\nPASS: every invariant held\n";
    assert_eq!(verdict_problem(pass), None);
    for (output, problem) in [
        ("FAIL: an invariant was broken\n", "it ended \"FAIL:"),
        (
            "UNKNOWN: nothing failed, but not everything could be judged\n",
            "it ended \"UNKNOWN:",
        ),
        (
            "PASS: every invariant held\nFAIL: an invariant was broken\n",
            "it ended \"FAIL:",
        ),
        ("settled\n", "it printed no verdict"),
    ] {
        let said = verdict_problem(output).unwrap_or_default();
        assert!(said.starts_with(problem), "{output:?}: {said:?}");
    }
}

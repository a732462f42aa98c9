//! `flashtix watch`: a live terminal dashboard of a running sale. It reads
//! what the sale already exposes — each process's `/health`, `/ready` and
//! `/metrics`, each event's stock stream, the broker's queue depths — and,
//! during a drill, the fault windows its runner writes. `--print` draws one
//! screen into a file instead, as text or an SVG picture.

mod board;
mod feeds;
mod picture;
mod scrape;
mod screen;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use flashtix_chaos::watched::{windows_file, WatchedSale};
use flashtix_model::duration;
use flashtix_server::runtime::config::ConnectionArgs;
use flashtix_server::runtime::db::{self, Purpose};
use flashtix_server::saga::broker::Topology;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{Exit, Failure};
use board::Board;
use feeds::{Feeds, Shared, Sources};
use screen::Context;

/// How often the screen is drawn again (5 a second); data arrives on each
/// source's own pace in between.
const REDRAW: Duration = Duration::from_millis(200);

#[derive(clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    connections: ConnectionArgs,
    /// A process of the sale, by its base URL; repeat (or separate by
    /// commas) for each. What it runs is asked of its /health
    #[arg(
        long = "server",
        value_name = "URL",
        env = "FLASHTIX_WATCH_SERVERS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    servers: Vec<String>,
    /// Show only this event (repeatable); without it, every event of the sale
    #[arg(long)]
    event: Vec<i64>,
    /// How often each process's /metrics and the broker's queues are read
    #[arg(long, value_parser = duration::parse, value_name = "DURATION", default_value = "1s")]
    every: Duration,
    /// A drill's fault windows: the windows.json its runner writes in the
    /// drill's directory
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
    /// Watch a running drill: its processes, namespace, services and fault
    /// windows, from the directory `flashtix chaos` names as it starts it
    #[arg(long, value_name = "DIR", conflicts_with_all = ["servers", "faults"])]
    drill: Option<PathBuf>,
    /// Draw one screen into FILE (`-`: standard output) instead of the
    /// terminal, and exit: text, or an SVG picture when FILE ends in .svg
    #[arg(long, value_name = "FILE")]
    print: Option<PathBuf>,
    /// With --print: how long to watch first (rates need two scrapes)
    #[arg(long, value_parser = duration::parse, value_name = "DURATION", default_value = "3s",
          requires = "print")]
    after: Duration,
    /// With --print: the screen's size, COLUMNSxROWS
    #[arg(long, value_parser = size, default_value = "80x24", requires = "print")]
    size: (u16, u16),
}

fn size(text: &str) -> Result<(u16, u16), String> {
    let read = text
        .split_once('x')
        .and_then(|(columns, rows)| Some((columns.parse().ok()?, rows.parse().ok()?)));
    match read {
        Some((columns, rows))
            if (screen::SMALLEST.0..=1000).contains(&columns)
                && (screen::SMALLEST.1..=500).contains(&rows) =>
        {
            Ok((columns, rows))
        }
        _ => Err(format!(
            "{text:?} is not a screen size: COLUMNSxROWS, like 80x24 (40 to 1000 columns, 10 to 500 rows)"
        )),
    }
}

pub async fn run(mut args: WatchArgs) -> Exit {
    if args.every < Duration::from_millis(100) || args.every > Duration::from_secs(60) {
        return Err(Failure::usage(anyhow!(
            "--every {:?} is out of range: from 100ms to 60s",
            args.every
        )));
    }
    if let Some(dir) = &args.drill {
        let drill = WatchedSale::read(dir).map_err(|error| Failure::usage(error.into()))?;
        args.faults = Some(windows_file(dir));
        args.servers = drill.servers;
        args.connections.namespace = drill.namespace;
        args.connections.database_url = Some(drill.database_url);
        args.connections.amqp_url = drill.amqp_url;
    }
    let servers = args
        .servers
        .iter()
        .map(|url| base_url(url))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(Failure::usage)?;
    let interactive = args.print.is_none();
    if interactive && !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        return Err(Failure::usage(anyhow!(
            "flashtix watch draws a live screen and needs a terminal, and this is not one; \
             --print FILE (or --print -) draws one screen as text instead"
        )));
    }
    let connections = args.connections.resolve().map_err(Failure::usage)?;
    let namespace = connections.namespace.clone();
    let pool = db::pool(&connections.database_url, &namespace, 1, Purpose::General)
        .map_err(Failure::usage)?;
    let sources = Sources {
        processes: servers,
        events: (!args.event.is_empty()).then_some(args.event),
        pool,
        amqp_url: connections.amqp_url,
        topology: Topology::new(namespace.clone()),
        faults: args.faults,
        every: args.every,
    };
    let board: Shared = Arc::new(Mutex::new(Board::default()));
    let feeds = feeds::start(&board, sources);
    let view = View {
        board,
        namespace: namespace.as_str().to_owned(),
        every: args.every,
    };
    match args.print {
        Some(path) => print(&view, feeds, &path, args.after, args.size).await,
        None => live(view, feeds).await,
    }
}

/// `http://host:port`, without a trailing slash.
fn base_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(' ') {
        anyhow::bail!("--server {url:?} is not a process's base URL, like http://127.0.0.1:8080");
    }
    Ok(url.to_owned())
}

/// The board and what the screen says beside it.
struct View {
    board: Shared,
    namespace: String,
    every: Duration,
}

impl View {
    fn context(&self) -> Context<'_> {
        Context {
            namespace: &self.namespace,
            every: self.every,
            now: Instant::now(),
            clock: chrono::Local::now().format("%H:%M:%S").to_string(),
        }
    }
}

/// Watches for `after`, then draws one screen into `path`.
async fn print(
    view: &View,
    feeds: Feeds,
    path: &std::path::Path,
    after: Duration,
    (width, height): (u16, u16),
) -> Exit {
    tokio::time::sleep(after).await;
    drop(feeds);
    let buffer = {
        let board = view.board.lock().expect("no feed panics holding the board");
        picture::render(&board, &view.context(), width, height)
    };
    let svg = path.extension().is_some_and(|extension| extension == "svg");
    let drawn = if svg {
        picture::svg(&buffer)
    } else {
        picture::text(&buffer)
    };
    if path.as_os_str() == "-" {
        print!("{drawn}");
    } else {
        std::fs::write(path, drawn)
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws the screen on the terminal until a key says stop.
async fn live(view: View, feeds: Feeds) -> Exit {
    let drawn = tokio::task::spawn_blocking(move || {
        let mut terminal = ratatui::init();
        let outcome = redraw_until_quit(&mut terminal, &view);
        ratatui::restore();
        outcome
    })
    .await
    .context("the screen's thread failed")?;
    drop(feeds);
    drawn.context("the terminal failed")?;
    Ok(ExitCode::SUCCESS)
}

fn redraw_until_quit(terminal: &mut ratatui::DefaultTerminal, view: &View) -> std::io::Result<()> {
    loop {
        terminal.draw(|frame| {
            let board = view.board.lock().expect("no feed panics holding the board");
            screen::draw(frame, &board, &view.context());
        })?;
        if event::poll(REDRAW)? {
            if let Event::Key(key) = event::read()? {
                if quits(&key) {
                    return Ok(());
                }
            }
        }
    }
}

/// `q`, Esc, or Ctrl-C (the terminal is raw: Ctrl-C arrives as a key).
fn quits(key: &KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

#[cfg(test)]
mod tests;

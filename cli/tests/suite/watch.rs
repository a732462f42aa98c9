//! `flashtix watch` against a running sale: the screen it draws (printed,
//! and live in a real pseudo-terminal) tells the stock, the orders, the
//! backlog and the processes as they are.

use std::process::Command;
use std::time::Duration;

use flashtix_testkit::eventually;

use crate::common::{assert_exit, stderr, stdout, Sale};

/// One screen of `flashtix watch --print -` after watching for `after`.
async fn screen(sale: &Sale, servers: &str, after: &str) -> String {
    let run = sale
        .run_in_background(&[
            "watch", "--server", servers, "--print", "-", "--after", after,
        ])
        .await;
    assert_exit(&run, 0);
    stdout(&run)
}

/// Screens of `flashtix watch --print -`, one after another, until one
/// shows every line of `showing` (each a line containing all its parts):
/// the stream and the scrapes arrive on their own time.
async fn screen_showing(sale: &Sale, servers: &str, showing: &[&[&str]]) -> String {
    eventually(Duration::from_secs(30), || async {
        let screen = screen(sale, servers, "1s").await;
        let shown = showing.iter().all(|parts| {
            screen
                .lines()
                .any(|line| parts.iter().all(|part| line.contains(part)))
        });
        match shown {
            true => Ok(screen),
            false => Err(screen),
        }
    })
    .await
}

fn line<'a>(screen: &'a str, with: &str) -> &'a str {
    screen
        .lines()
        .find(|line| line.contains(with))
        .unwrap_or_else(|| panic!("no line with {with:?} on\n{screen}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_follows_a_sale_through_a_storm_to_its_end() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&["--tickets", "400", "--max-per-user", "2"]);
    let event = events[0]["id"].as_i64().unwrap();
    let api = sale.serve("api");
    let saga = sale.serve("sweeper,relay,payments,orders,notifications");
    let servers = format!("{},{}", api.url, saga.url);

    let stock = format!("#{event} ");
    screen_showing(
        &sale,
        &servers,
        &[
            &[&stock, "sold 0 held 0 left 400/400"],
            &["Orders/s", "none"],
            &["Processes", " api up"],
            &["all but api up"],
            &["Queues", "dead letters 0"],
        ],
    )
    .await;

    // While the storm buys, the screen shows the orders coming in and the
    // stock going.
    let target = format!(
        "--target {} --rate 150 --buyers 3000 --duration 8s",
        api.url
    );
    let storming = {
        let sale = sale.clone();
        tokio::spawn(async move {
            let mut args = vec!["storm"];
            args.extend(target.split_whitespace());
            sale.run_in_background(&args).await
        })
    };
    let during = eventually(Duration::from_secs(30), || async {
        let during = screen(&sale, &servers, "2s").await;
        let rates = line(&during, "Orders/s");
        let stock = line(&during, &format!("#{event} "));
        let selling = rates.contains("accepted") || rates.contains("sold_out");
        match selling && !stock.contains("sold 0 held 0") {
            true => Ok(during),
            false => Err(during),
        }
    })
    .await;
    assert!(line(&during, "Order path").contains("p99 "), "{during}");
    let run = storming.await.unwrap();
    assert_exit(&run, 0);

    // Settled (the storm waited for it): every ticket sold, nothing waits.
    screen_showing(
        &sale,
        &servers,
        &[
            &[&stock, "sold 400 held 0 left 0/400 SOLD OUT"],
            &["Saga", "outbox 0  pending orders 0"],
        ],
    )
    .await;

    // A process that stops answering is down.
    let address = saga.url.trim_start_matches("http://").to_owned();
    drop(saga);
    let down = format!("{address} down: refused");
    screen_showing(&sale, &servers, &[&[&down]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_it_refuses_and_says_what_to_do() {
    let sale = Sale::new().await;
    // The test's pipes are not a terminal.
    let run = sale.run(&["watch", "--server", "http://127.0.0.1:9"]);
    assert_exit(&run, 2);
    let said = stderr(&run);
    assert!(said.contains("needs a terminal"), "{said}");
    assert!(said.contains("--print"), "{said}");
    for (flag, value, says) in [
        ("--every", "10ms", "--every 10ms is out of range"),
        ("--server", "localhost:8080", "is not a process's base URL"),
        ("--size", "10x5", "is not a screen size"),
    ] {
        let run = sale.run(&["watch", "--print", "-", flag, value]);
        assert_exit(&run, 2);
        assert!(
            stderr(&run).contains(says),
            "{flag} {value}: {}",
            stderr(&run)
        );
    }
}

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs (.ci/run installs it)")
    }

    fn screen(&self) -> Result<String, String> {
        let capture = self.run(&["capture-pane", "-p", "-t", "watch"]);
        match capture.status.success() {
            true => Ok(stdout(&capture)),
            false => Err(stderr(&capture)),
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_an_80_by_24_terminal_it_draws_live_and_q_quits() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&["--tickets", "50"]);
    let event = events[0]["id"].as_i64().unwrap();
    let server = sale.serve("all");
    let tmux = Tmux {
        socket: format!("flashtix-{}", sale.namespace),
    };
    let watch = format!(
        "env FLASHTIX_NAMESPACE={} DATABASE_URL={} FLASHTIX_AMQP_URL={} {} watch --server {}",
        sale.namespace,
        crate::common::test_database_url(),
        crate::common::test_amqp_url(),
        env!("CARGO_BIN_EXE_flashtix"),
        server.url,
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "80",
        "-y",
        "24",
        &watch,
    ]);
    assert!(started.status.success(), "{}", stderr(&started));

    let drawn = eventually(Duration::from_secs(20), || async {
        let screen = tmux.screen()?;
        let stock = format!("#{event} ");
        match screen.contains(&stock) && screen.contains("left 50/50") && screen.contains(" up") {
            true => Ok(screen),
            false => Err(screen),
        }
    })
    .await;
    assert!(drawn.contains("q quits"), "{drawn}");
    assert!(
        drawn.lines().all(|line| line.chars().count() <= 80),
        "{drawn}"
    );

    // A buy shows on the live screen without anything pressed.
    let buy = sale.run(&[
        "storm",
        "--target",
        &server.url,
        "--event",
        &event.to_string(),
        "--rate",
        "20",
        "--buyers",
        "5",
        "--duration",
        "1s",
    ]);
    assert_exit(&buy, 0);
    eventually(Duration::from_secs(20), || async {
        let screen = tmux.screen()?;
        match screen.contains("left 50/50") {
            true => Err(screen),
            false => Ok(()),
        }
    })
    .await;

    let quit = tmux.run(&["send-keys", "-t", "watch", "q"]);
    assert!(quit.status.success(), "{}", stderr(&quit));
    eventually(Duration::from_secs(10), || async {
        let alive = tmux.run(&["has-session", "-t", "watch"]);
        match alive.status.success() {
            true => Err("watch still running after q".to_owned()),
            false => Ok(()),
        }
    })
    .await;
}

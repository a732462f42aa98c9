//! The storm's history file (one JSON line per attempt), written as the
//! storm goes and never in a send's way: each lane hands its attempts over
//! in batches, on a channel without a bound, to a thread of the writer's own
//! that serializes and writes them. A slow disk costs memory, not sends.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flashtix_model::history::Attempt;

/// A lane hands its attempts over this many at a time,
const BATCH: usize = 512;
/// or when its oldest has waited this long.
const BATCH_AGE: Duration = Duration::from_millis(200);

/// Where the lanes' attempts go.
#[derive(Clone)]
pub struct Sink(mpsc::Sender<Vec<Attempt>>);

/// The thread writing the file.
pub struct Writer(std::thread::JoinHandle<anyhow::Result<()>>);

/// Creates the file and starts its writer, which ends once every [`Sink`]
/// (and every [`Batch`] made from one) is gone.
pub fn create(path: &Path) -> anyhow::Result<(Sink, Writer)> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let (sink, batches) = mpsc::channel::<Vec<Attempt>>();
    let shown = path.display().to_string();
    let thread = std::thread::Builder::new()
        .name("storm-history".into())
        .spawn(move || {
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let write = || -> anyhow::Result<()> {
                for batch in batches {
                    for attempt in batch {
                        serde_json::to_writer(&mut out, &attempt)?;
                        out.write_all(b"\n")?;
                    }
                }
                Ok(out.flush()?)
            };
            write().with_context(|| format!("writing {shown}"))
        })?;
    Ok((Sink(sink), Writer(thread)))
}

impl Writer {
    /// Waits for every line to be written.
    pub async fn finish(self) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || self.0.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the history writer panicked"))?
    }
}

/// One lane's attempts not yet handed over.
pub struct Batch {
    sink: Sink,
    attempts: Vec<Attempt>,
    /// When the oldest of them was added.
    since: Instant,
}

impl Batch {
    pub fn new(sink: Sink) -> Self {
        Self {
            sink,
            attempts: Vec::with_capacity(BATCH),
            since: Instant::now(),
        }
    }

    pub fn push(&mut self, attempt: Attempt) {
        if self.attempts.is_empty() {
            self.since = Instant::now();
        }
        self.attempts.push(attempt);
        if self.attempts.len() >= BATCH || self.since.elapsed() >= BATCH_AGE {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        if self.attempts.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.attempts, Vec::with_capacity(BATCH));
        // The writer only stops early on an error, which `finish` reports.
        let _ = self.sink.0.send(batch);
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.hand_over();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashtix_model::history::Outcome;

    fn attempt(number: u64) -> Attempt {
        Attempt {
            attempt: number,
            event_id: 1,
            user_id: format!("u{number}"),
            idempotency_key: format!("k{number}"),
            quantity: 1,
            sent_at: chrono::Utc::now(),
            finished_at: chrono::Utc::now(),
            outcome: Outcome::SoldOut,
            status: Some(409),
            order_id: None,
            seats: None,
            asked_seats: None,
            asked_zone: None,
            amount_cents: None,
        }
    }

    #[tokio::test]
    async fn every_lanes_attempts_are_written_whole_once_the_lanes_are_done() {
        let path = std::env::temp_dir().join(format!("journal-{}.jsonl", std::process::id()));
        let (sink, writer) = create(&path).unwrap();
        let lanes: Vec<_> = (0..2u64)
            .map(|lane| {
                let mut batch = Batch::new(sink.clone());
                std::thread::spawn(move || {
                    // More than a batch, and a part of one left at the end.
                    for n in 0..(BATCH as u64 * 2 + 7) {
                        batch.push(attempt(lane * 10_000 + n));
                    }
                })
            })
            .collect();
        drop(sink);
        for lane in lanes {
            lane.join().unwrap();
        }
        writer.finish().await.unwrap();
        let read = flashtix_model::history::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut numbers: Vec<u64> = read.iter().map(|a| a.attempt).collect();
        numbers.sort_unstable();
        let mut expected: Vec<u64> = (0..2u64)
            .flat_map(|lane| (0..(BATCH as u64 * 2 + 7)).map(move |n| lane * 10_000 + n))
            .collect();
        expected.sort_unstable();
        assert_eq!(numbers, expected);
    }
}

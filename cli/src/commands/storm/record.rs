//! What a storm measured. Each lane records into a [`Recorder`] of its own
//! (no lock, no sharing on the hot path); the lanes' recorders are merged at
//! the end. Latencies are kept in HDR histograms, in microseconds: memory is
//! fixed by the range and precision, not by how many requests were sent.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use flashtix_model::history::Outcome;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

const CLASSES: usize = Outcome::ALL.len();
/// The longest latency told apart from "longer": one hour.
const HIGHEST_MICROS: u64 = 3_600_000_000;
/// A send later than this behind its intended time counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(1);
/// A send this late or later is one the storm did not send on time: when
/// more than [`BEHIND_SHARE`] of the sends were, the storm did not keep its
/// schedule, and says so.
pub const BEHIND_AFTER: Duration = Duration::from_millis(10);
pub const BEHIND_SHARE: f64 = 0.01;

fn histogram(significant_figures: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, significant_figures)
        .expect("the bounds are valid")
}

fn micros(duration: Duration) -> u64 {
    (duration.as_micros() as u64).clamp(1, HIGHEST_MICROS)
}

/// One class of outcomes: how many, and their latencies two ways.
#[derive(Clone)]
pub struct ClassStats {
    pub count: u64,
    /// From the intended send time to the answer: what a buyer waited,
    /// queueing in the client included (free of coordinated omission).
    pub from_intended: Histogram<u64>,
    /// From the actual send to the answer: what the server took.
    pub service: Histogram<u64>,
}

impl ClassStats {
    fn new() -> Self {
        Self {
            count: 0,
            from_intended: histogram(3),
            service: histogram(3),
        }
    }

    fn add(&mut self, other: &Self) {
        self.count += other.count;
        self.from_intended
            .add(&other.from_intended)
            .expect("same bounds");
        self.service.add(&other.service).expect("same bounds");
    }
}

/// One second of the storm (by when answers came): outcomes and latency.
#[derive(Clone)]
pub struct Second {
    pub outcomes: [u64; CLASSES],
    pub sent: u64,
    pub from_intended: Histogram<u64>,
}

impl Second {
    fn new() -> Self {
        Self {
            outcomes: [0; CLASSES],
            sent: 0,
            // Two figures: enough for a chart, and small per second.
            from_intended: histogram(2),
        }
    }
}

/// One attempt's measures, as the engine reports it.
pub struct Measured {
    pub outcome: Outcome,
    /// Since the storm's start.
    pub intended: Duration,
    pub sent: Duration,
    pub finished: Duration,
    /// What an accepted order on a seated event bought.
    pub sold: Option<Sold>,
}

/// An accepted order's places on a seated event.
pub struct Sold {
    pub event_id: i64,
    pub zone: String,
    pub tickets: u64,
    pub seats: Vec<String>,
}

/// One zone's sales in the storm.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ZoneSales {
    pub orders: u64,
    pub tickets: u64,
    /// When the last acceptance arrived, since the start.
    pub last: Duration,
}

impl ZoneSales {
    fn add(&mut self, other: &Self) {
        self.orders += other.orders;
        self.tickets += other.tickets;
        self.last = self.last.max(other.last);
    }
}

#[derive(Clone)]
pub struct Recorder {
    pub classes: Vec<ClassStats>,
    /// How far behind its intended time each send went out.
    pub lateness: Histogram<u64>,
    pub late_sends: u64,
    /// Sends [`BEHIND_AFTER`] or more late in a window of lateness, from the
    /// first in it that waited over [`LATE_AFTER`] for one of the
    /// `--max-inflight` open requests to end: the sends queued behind that
    /// one went late for the same slots, though they found one free.
    pub slot_waits: u64,
    /// Whether a send of the lane's current window of lateness (a run of
    /// sends each [`BEHIND_AFTER`] or more late) has waited for a slot yet.
    slots_bound: bool,
    pub sends: u64,
    /// When the first and the last send went out, since the start.
    pub first_send: Option<Duration>,
    pub last_send: Duration,
    pub last_answer: Duration,
    pub seconds: Vec<Second>,
    /// Per (event, zone) of a seated event: what was accepted, and when last.
    pub zones: BTreeMap<(i64, String), ZoneSales>,
    /// Each seat sold, by (event, seat): when its acceptance arrived.
    pub seats_sold: HashMap<(i64, String), Duration>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            classes: (0..CLASSES).map(|_| ClassStats::new()).collect(),
            lateness: histogram(3),
            late_sends: 0,
            slot_waits: 0,
            slots_bound: false,
            sends: 0,
            first_send: None,
            last_send: Duration::ZERO,
            last_answer: Duration::ZERO,
            seconds: Vec::new(),
            zones: BTreeMap::new(),
            seats_sold: HashMap::new(),
        }
    }
}

impl Recorder {
    /// A send going out `late` after it was meant to, at `at`, of which it
    /// spent `slot_wait` waiting for a free slot.
    pub fn sent(&mut self, at: Duration, late: Duration, slot_wait: Duration) {
        self.sends += 1;
        self.first_send = Some(self.first_send.map_or(at, |first| first.min(at)));
        self.last_send = self.last_send.max(at);
        self.lateness.saturating_record(late.as_micros() as u64);
        if late > LATE_AFTER {
            self.late_sends += 1;
        }
        if late < BEHIND_AFTER {
            self.slots_bound = false;
        } else {
            self.slots_bound |= slot_wait > LATE_AFTER;
            self.slot_waits += u64::from(self.slots_bound);
        }
        self.second(at).sent += 1;
    }

    pub fn answered(&mut self, measured: &Measured) {
        let class = &mut self.classes[measured.outcome.index()];
        class.count += 1;
        let waited = measured.finished.saturating_sub(measured.intended);
        let served = measured.finished.saturating_sub(measured.sent);
        class.from_intended.saturating_record(micros(waited));
        class.service.saturating_record(micros(served));
        self.last_answer = self.last_answer.max(measured.finished);
        let second = self.second(measured.finished);
        second.outcomes[measured.outcome.index()] += 1;
        second.from_intended.saturating_record(micros(waited));
        if let Some(sold) = &measured.sold {
            let one = ZoneSales {
                orders: 1,
                tickets: sold.tickets,
                last: measured.finished,
            };
            self.zones
                .entry((sold.event_id, sold.zone.clone()))
                .or_default()
                .add(&one);
            for seat in &sold.seats {
                self.seats_sold
                    .insert((sold.event_id, seat.clone()), measured.finished);
            }
        }
    }

    fn second(&mut self, at: Duration) -> &mut Second {
        let index = at.as_secs() as usize;
        while self.seconds.len() <= index {
            self.seconds.push(Second::new());
        }
        &mut self.seconds[index]
    }

    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.classes.iter_mut().zip(&other.classes) {
            mine.add(theirs);
        }
        self.lateness.add(&other.lateness).expect("same bounds");
        self.late_sends += other.late_sends;
        self.slot_waits += other.slot_waits;
        self.sends += other.sends;
        self.first_send = match (self.first_send, other.first_send) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_send = self.last_send.max(other.last_send);
        self.last_answer = self.last_answer.max(other.last_answer);
        for (index, theirs) in other.seconds.iter().enumerate() {
            let mine = self.second(Duration::from_secs(index as u64));
            for (a, b) in mine.outcomes.iter_mut().zip(theirs.outcomes) {
                *a += b;
            }
            mine.sent += theirs.sent;
            mine.from_intended
                .add(&theirs.from_intended)
                .expect("same bounds");
        }
        for (zone, theirs) in &other.zones {
            self.zones.entry(zone.clone()).or_default().add(theirs);
        }
        self.seats_sold
            .extend(other.seats_sold.iter().map(|(k, v)| (k.clone(), *v)));
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.classes[outcome.index()].count
    }

    /// Every attempt that ended, whatever its outcome.
    pub fn answers(&self) -> u64 {
        self.classes.iter().map(|c| c.count).sum()
    }

    /// Latency from the intended time over every attempt, all classes.
    pub fn all_from_intended(&self) -> Histogram<u64> {
        self.all(|class| &class.from_intended)
    }

    /// Service time over every attempt, all classes.
    pub fn all_service(&self) -> Histogram<u64> {
        self.all(|class| &class.service)
    }

    fn all(&self, measure: impl Fn(&ClassStats) -> &Histogram<u64>) -> Histogram<u64> {
        let mut all = histogram(3);
        for class in &self.classes {
            all.add(measure(class)).expect("same bounds");
        }
        all
    }
}

/// A [`Recorder`]'s measures as the JSON carries them, losslessly: counts,
/// and each histogram in HdrHistogram's compressed V2 encoding (base64), as
/// any HdrHistogram library reads it. Times are microseconds from the
/// storm's start. `flashtix merge` adds recorders read back from these.
///
/// Not carried: which seats and zones sold, which only the storm that sold
/// them draws.
#[derive(Debug, Serialize, Deserialize)]
pub struct Recorded {
    pub sends: u64,
    pub late_sends: u64,
    pub slot_waits: u64,
    pub first_send_us: Option<u64>,
    pub last_send_us: u64,
    pub last_answer_us: u64,
    pub lateness: Hdr,
    /// By outcome name; outcomes that never happened are left out.
    pub classes: BTreeMap<String, RecordedClass>,
    pub seconds: Vec<RecordedSecond>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecordedClass {
    pub from_intended: Hdr,
    pub service: Hdr,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecordedSecond {
    pub sent: u64,
    /// By outcome name; outcomes without an answer that second are left out.
    pub outcomes: BTreeMap<String, u64>,
    pub from_intended: Hdr,
}

/// A histogram that is written as base64 of its compressed V2 encoding.
#[derive(Debug, Clone)]
pub struct Hdr(pub Histogram<u64>);

impl Serialize for Hdr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.0, &mut bytes)
            .map_err(|e| serde::ser::Error::custom(format!("encoding a histogram: {e:?}")))?;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Hdr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("a histogram is not base64: {e}")))?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map(Hdr)
            .map_err(|e| serde::de::Error::custom(format!("not an HdrHistogram encoding: {e:?}")))
    }
}

fn outcome_named(name: &str) -> anyhow::Result<Outcome> {
    Outcome::named(name).with_context(|| format!("{name:?} is not an outcome"))
}

impl From<&Recorder> for Recorded {
    fn from(recorder: &Recorder) -> Self {
        let named = |counts: &[u64; CLASSES]| {
            Outcome::ALL
                .iter()
                .filter(|o| counts[o.index()] > 0)
                .map(|o| (o.name().to_owned(), counts[o.index()]))
                .collect()
        };
        Self {
            sends: recorder.sends,
            late_sends: recorder.late_sends,
            slot_waits: recorder.slot_waits,
            first_send_us: recorder.first_send.map(|d| d.as_micros() as u64),
            last_send_us: recorder.last_send.as_micros() as u64,
            last_answer_us: recorder.last_answer.as_micros() as u64,
            lateness: Hdr(recorder.lateness.clone()),
            classes: Outcome::ALL
                .iter()
                .filter(|o| recorder.count(**o) > 0)
                .map(|o| {
                    let class = &recorder.classes[o.index()];
                    let recorded = RecordedClass {
                        from_intended: Hdr(class.from_intended.clone()),
                        service: Hdr(class.service.clone()),
                    };
                    (o.name().to_owned(), recorded)
                })
                .collect(),
            seconds: recorder
                .seconds
                .iter()
                .map(|s| RecordedSecond {
                    sent: s.sent,
                    outcomes: named(&s.outcomes),
                    from_intended: Hdr(s.from_intended.clone()),
                })
                .collect(),
        }
    }
}

impl Recorder {
    /// The recorder `recorded` describes, its times moved `later` (a storm
    /// that began that long after the one it joins): the seconds by whole
    /// seconds, rounded.
    pub fn from_recorded(recorded: Recorded, later: Duration) -> anyhow::Result<Self> {
        let mut recorder = Recorder {
            sends: recorded.sends,
            late_sends: recorded.late_sends,
            slot_waits: recorded.slot_waits,
            first_send: recorded
                .first_send_us
                .map(|us| Duration::from_micros(us) + later),
            last_send: Duration::from_micros(recorded.last_send_us) + later,
            last_answer: Duration::from_micros(recorded.last_answer_us) + later,
            ..Recorder::default()
        };
        recorder
            .lateness
            .add(&recorded.lateness.0)
            .context("the lateness histogram")?;
        for (name, class) in recorded.classes {
            let stats = &mut recorder.classes[outcome_named(&name)?.index()];
            stats.count = class.from_intended.0.len();
            stats.from_intended.add(&class.from_intended.0)?;
            stats.service.add(&class.service.0)?;
        }
        let skipped = later.as_secs_f64().round() as usize;
        recorder.seconds = (0..skipped).map(|_| Second::new()).collect();
        for recorded in recorded.seconds {
            let mut second = Second::new();
            second.sent = recorded.sent;
            for (name, count) in recorded.outcomes {
                second.outcomes[outcome_named(&name)?.index()] = count;
            }
            second.from_intended.add(&recorded.from_intended.0)?;
            recorder.seconds.push(second);
        }
        Ok(recorder)
    }
}

#[cfg(test)]
impl Recorder {
    /// For tests: one attempt sent on time at `at` (since the start) and
    /// answered `outcome` after `took`.
    pub fn sent_on_time(&mut self, outcome: Outcome, at: Duration, took: Duration) {
        self.sent(at, Duration::ZERO, Duration::ZERO);
        self.answered(&Measured {
            outcome,
            intended: at,
            sent: at,
            finished: at + took,
            sold: None,
        });
    }
}

/// A histogram's value at a percentile, in milliseconds.
pub fn millis_at(histogram: &Histogram<u64>, percentile: f64) -> f64 {
    histogram.value_at_percentile(percentile) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(outcome: Outcome, intended_ms: u64, sent_ms: u64, finished_ms: u64) -> Measured {
        Measured {
            outcome,
            intended: Duration::from_millis(intended_ms),
            sent: Duration::from_millis(sent_ms),
            finished: Duration::from_millis(finished_ms),
            sold: None,
        }
    }

    #[test]
    fn waiting_counts_from_the_intended_time_and_service_from_the_send() {
        let mut recorder = Recorder::default();
        // Meant at 0, sent at 900 (the client was stuck), answered at 1000.
        recorder.answered(&measured(Outcome::Accepted, 0, 900, 1000));
        let accepted = &recorder.classes[Outcome::Accepted.index()];
        assert!((millis_at(&accepted.from_intended, 50.0) - 1000.0).abs() < 1.0);
        assert!((millis_at(&accepted.service, 50.0) - 100.0).abs() < 0.1);
    }

    #[test]
    fn a_window_of_lateness_with_a_slot_wait_is_the_slots_doing_all_through() {
        let ms = Duration::from_millis;
        let mut lane = Recorder::default();
        // A window: late for the machine, then a slot wait, then queued
        // behind it (a free slot found, late all the same).
        lane.sent(ms(100), ms(20), Duration::ZERO);
        lane.sent(ms(101), ms(30), ms(15));
        lane.sent(ms(102), ms(25), Duration::ZERO);
        // Late, but under the behind line: the window closes.
        lane.sent(ms(200), ms(5), Duration::ZERO);
        // A window with no slot wait (1 ms is not a wait): this machine's.
        lane.sent(ms(300), ms(40), Duration::ZERO);
        lane.sent(ms(301), ms(40), ms(1));
        assert_eq!(lane.slot_waits, 2);
        assert_eq!(lane.late_sends, 6);
    }

    #[test]
    fn merged_recorders_add_up_their_lanes() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        a.sent(Duration::from_millis(10), Duration::ZERO, Duration::ZERO);
        a.answered(&measured(Outcome::Accepted, 10, 10, 20));
        b.sent(
            Duration::from_millis(1500),
            Duration::from_millis(50),
            Duration::from_millis(40),
        );
        b.sent(
            Duration::from_millis(1600),
            Duration::from_millis(5),
            Duration::from_millis(4),
        );
        b.answered(&measured(Outcome::SoldOut, 1500, 1500, 2600));
        b.answered(&measured(Outcome::SoldOut, 1500, 1500, 1600));
        a.merge(&b);
        assert_eq!((a.sends, a.late_sends, a.answers()), (3, 2, 3));
        assert_eq!(a.slot_waits, 1, "only the send that fell behind");
        assert_eq!(a.count(Outcome::SoldOut), 2);
        assert_eq!(a.first_send, Some(Duration::from_millis(10)));
        assert_eq!(a.last_answer, Duration::from_millis(2600));
        assert_eq!(a.seconds.len(), 3);
        assert_eq!(a.seconds[1].outcomes[Outcome::SoldOut.index()], 1);
        assert_eq!(a.seconds[2].outcomes[Outcome::SoldOut.index()], 1);
        assert_eq!(a.all_from_intended().len(), 3);
    }
}

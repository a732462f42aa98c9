//! What a storm sends, and when: the schedule of intended send times (open
//! model) and the buyers, each purchase fixed by the seed and its number.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use flashtix_model::rng::{draw, mix};

use super::seats::{SeatedEvent, Want};
use super::tokens::BuyerTokens;

/// When the i-th purchase is meant to be sent, counted from the start. The
/// schedule alone decides, never how fast the server answers: that is what
/// makes latency from the intended time free of coordinated omission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// `rate` sends per second.
    Constant { rate: f64 },
    /// The rate moves linearly from `from` to `to` over `over`, then stays at `to`.
    Ramp { from: f64, to: f64, over: Duration },
    /// Every buyer within `within`, evenly; zero fires them all at once.
    Spike { within: Duration, buyers: u64 },
}

impl Schedule {
    /// The intended send time of purchase `i` (0-based).
    pub fn intended(&self, i: u64) -> Duration {
        let i = i as f64;
        match *self {
            Self::Constant { rate } => Duration::from_secs_f64(i / rate),
            Self::Spike { within, buyers } => within.mul_f64(i / buyers.max(1) as f64),
            Self::Ramp { from, to, over } => {
                // Sends by time t while ramping: n(t) = from·t + (to − from)·t² / 2T.
                let seconds = over.as_secs_f64();
                let during_ramp = (from + to) / 2.0 * seconds;
                if i >= during_ramp {
                    return Duration::from_secs_f64(seconds + (i - during_ramp) / to);
                }
                let slope = (to - from) / seconds;
                let t = if slope.abs() < f64::EPSILON {
                    i / from
                } else {
                    (-from + (from * from + 2.0 * slope * i).sqrt()) / slope
                };
                Duration::from_secs_f64(t)
            }
        }
    }

    /// How many sends are due before `within` has passed.
    pub fn sends_within(&self, within: Duration) -> u64 {
        let (mut below, mut above) = (0u64, 1u64);
        while self.intended(above) < within && above < 1 << 40 {
            (below, above) = (above, above * 2);
        }
        // intended(below) < within (or below = 0) and intended(above) >= within.
        while above - below > 1 {
            let middle = below + (above - below) / 2;
            if self.intended(middle) < within {
                below = middle;
            } else {
                above = middle;
            }
        }
        if self.intended(below) < within {
            below + 1
        } else {
            below
        }
    }

    /// The rate the schedule asks for at its peak, for sizing the client.
    pub fn peak_rate(&self) -> f64 {
        match *self {
            Self::Constant { rate } => rate,
            Self::Ramp { from, to, .. } => from.max(to),
            Self::Spike { within, buyers } if within.is_zero() => buyers as f64,
            Self::Spike { within, buyers } => buyers as f64 / within.as_secs_f64(),
        }
    }

    /// Parses `--ramp FROM:TO:DURATION` (rates per second, duration like `10s`).
    pub fn ramp(text: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = text.split(':').collect();
        let [from, to, over] = parts[..] else {
            bail!("--ramp takes FROM:TO:DURATION, like 100:5000:10s; got {text:?}");
        };
        let rate = |part: &str| -> anyhow::Result<f64> {
            let rate: f64 = part
                .parse()
                .with_context(|| format!("--ramp: {part:?} is not a rate"))?;
            if !(rate > 0.0 && rate.is_finite()) {
                bail!("--ramp: rates must be above 0, got {part:?}");
            }
            Ok(rate)
        };
        let over = flashtix_model::duration::parse(over)
            .map_err(anyhow::Error::msg)
            .context("--ramp")?;
        if over.is_zero() {
            bail!("--ramp: the duration must be above 0");
        }
        Ok(Self::Ramp {
            from: rate(from)?,
            to: rate(to)?,
            over,
        })
    }
}

/// How many tickets each purchase asks for: `1`, or weights like `1:70,2:20,4:10`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantities {
    /// (quantity, cumulative weight), weights summing to `total`.
    steps: Vec<(i64, u64)>,
    total: u64,
}

impl Quantities {
    /// One ticket a purchase.
    pub fn one() -> Self {
        Self {
            steps: vec![(1, 1)],
            total: 1,
        }
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut steps = Vec::new();
        let mut total = 0;
        for part in text.split(',') {
            let (quantity, weight) = part.split_once(':').unwrap_or((part, "1"));
            let quantity: i64 = quantity
                .trim()
                .parse()
                .ok()
                .filter(|q| *q >= 1)
                .with_context(|| {
                    format!("--quantity: {quantity:?} is not a quantity of 1 or more")
                })?;
            let weight: u64 = weight
                .trim()
                .parse()
                .with_context(|| format!("--quantity: {weight:?} is not a whole weight"))?;
            total += weight;
            steps.push((quantity, total));
        }
        if total == 0 {
            bail!("--quantity: the weights add up to 0");
        }
        Ok(Self { steps, total })
    }

    /// The quantity for a draw in [0, 1).
    fn pick(&self, draw: f64) -> i64 {
        let point = (draw * self.total as f64) as u64;
        self.steps
            .iter()
            .find(|(_, upto)| point < *upto)
            .map_or(self.steps[self.steps.len() - 1].0, |(quantity, _)| {
                *quantity
            })
    }
}

/// One logical purchase: a buyer asking once for tickets, under one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchase {
    pub number: u64,
    pub event_id: i64,
    pub user_id: String,
    /// The buyer's bearer token, if the sale takes tokens.
    pub token: Option<Arc<str>>,
    pub idempotency_key: String,
    pub quantity: i64,
    /// Sent twice at once with the same key (a double click).
    pub duplicated: bool,
    /// Its buyer asks again, a moment after a definite answer.
    pub revisits: bool,
    /// What it asks for: a quantity, or on a seated event seats or a zone.
    pub want: Want,
    /// Told its seats were taken, the buyer asks for the zone's best
    /// available instead (under a key of its own).
    pub falls_back: bool,
}

impl Purchase {
    /// The same buyer's second try after losing a seat race: the best
    /// available in the zone of the seats it lost, under a new key.
    pub fn fallback(&self) -> Option<Self> {
        let Want::Seats(_) = &self.want else {
            return None;
        };
        let zone = self.want.zone()?.to_owned();
        Some(Self {
            idempotency_key: format!("{}-best", self.idempotency_key),
            want: Want::Zone(zone),
            falls_back: false,
            duplicated: false,
            revisits: false,
            ..self.clone()
        })
    }
}

/// The buyers of a storm. Purchase `i` depends only on the seed and `i`, so a
/// run can be repeated exactly, and any worker can build any purchase.
#[derive(Debug, Clone)]
pub struct Buyers {
    pub seed: u64,
    pub events: Vec<i64>,
    pub quantities: Quantities,
    pub duplicates: f64,
    pub revisits: f64,
    /// The seated events among `events`, as the buyers see their plans.
    pub seated: HashMap<i64, Arc<SeatedEvent>>,
    /// Share of buyers who, told their seats were taken, ask for the zone's
    /// best available instead of giving up.
    pub seat_retry: f64,
    /// Each buyer's token; `None`: a sale without tokens.
    pub tokens: Option<BuyerTokens>,
}

/// The draw of a purchase's fallback (the seats' draws are 5 to 9).
const FALLS_BACK: u64 = 10;

impl Buyers {
    /// Purchase `number`'s buyer, when the storm names its buyers.
    pub fn user_id(&self, number: u64) -> String {
        format!("buyer-{}-{number}", self.seed)
    }

    pub fn purchase(&self, number: u64) -> Purchase {
        let event_id = self.events[(mix(self.seed, number, 1) % self.events.len() as u64) as usize];
        let quantity = self.quantities.pick(draw(self.seed, number, 2));
        let want = match self.seated.get(&event_id) {
            Some(plan) => plan.choose(self.seed, number, quantity),
            None => Want::Count,
        };
        let (user_id, token) = match &self.tokens {
            None => (self.user_id(number), None),
            Some(tokens) => {
                let (user_id, token) = tokens.of(number, self.user_id(number));
                (user_id, Some(token))
            }
        };
        Purchase {
            number,
            event_id,
            user_id,
            token,
            idempotency_key: format!("storm-{}-{number}", self.seed),
            quantity,
            duplicated: draw(self.seed, number, 3) < self.duplicates,
            revisits: draw(self.seed, number, 4) < self.revisits,
            want,
            falls_back: draw(self.seed, number, FALLS_BACK) < self.seat_retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_rate_spaces_sends_evenly() {
        let schedule = Schedule::Constant { rate: 1000.0 };
        assert_eq!(schedule.intended(0), Duration::ZERO);
        assert_eq!(schedule.intended(1500), Duration::from_millis(1500));
        // Sends 0..=2999 are due before 3 s; send 3000 is due at 3 s.
        assert_eq!(schedule.sends_within(Duration::from_secs(3)), 3000);
        assert_eq!(schedule.sends_within(Duration::ZERO), 0);
    }

    #[test]
    fn a_ramp_sends_what_its_average_rate_says_then_holds_the_top_rate() {
        let schedule = Schedule::Ramp {
            from: 100.0,
            to: 300.0,
            over: Duration::from_secs(10),
        };
        // 2,000 sends in the ramp (average 200/s over 10 s).
        let end = schedule.intended(2000).as_secs_f64();
        assert!((end - 10.0).abs() < 1e-6, "{end}");
        // The first second at about 100/s: send 110 lands near 1.05 s.
        let early = schedule.intended(110).as_secs_f64();
        assert!((1.0..1.1).contains(&early), "{early}");
        // After the ramp, 300/s.
        let later = schedule.intended(2300).as_secs_f64();
        assert!((later - 11.0).abs() < 1e-6, "{later}");
        // A flat ramp is a constant rate.
        let flat = Schedule::Ramp {
            from: 50.0,
            to: 50.0,
            over: Duration::from_secs(2),
        };
        assert!((flat.intended(75).as_secs_f64() - 1.5).abs() < 1e-9);
    }

    #[test]
    fn a_spike_spreads_its_buyers_over_its_window_or_fires_them_together() {
        let spike = Schedule::Spike {
            within: Duration::from_secs(2),
            buyers: 1000,
        };
        assert_eq!(spike.intended(500), Duration::from_secs(1));
        let herd = Schedule::Spike {
            within: Duration::ZERO,
            buyers: 1000,
        };
        assert_eq!(herd.intended(999), Duration::ZERO);
    }

    #[test]
    fn bad_ramps_are_refused_with_a_reason() {
        assert!(Schedule::ramp("100:200").is_err());
        assert!(Schedule::ramp("0:200:5s").is_err());
        assert!(Schedule::ramp("10:200:0s").is_err());
        assert!(Schedule::ramp("10:200:5d").is_err());
        assert_eq!(
            Schedule::ramp("10:200:1m30s").unwrap(),
            Schedule::Ramp {
                from: 10.0,
                to: 200.0,
                over: Duration::from_secs(90)
            }
        );
    }

    #[test]
    fn quantities_follow_their_weights() {
        let quantities = Quantities::parse("1:70,2:20,4:10").unwrap();
        let mut counts = [0u32; 5];
        for number in 0..10_000 {
            counts[quantities.pick(draw(9, number, 2)) as usize] += 1;
        }
        assert!((6_700..7_300).contains(&counts[1]), "{counts:?}");
        assert!((1_700..2_300).contains(&counts[2]), "{counts:?}");
        assert!((800..1_200).contains(&counts[4]), "{counts:?}");
        assert_eq!(Quantities::parse("2").unwrap().pick(0.99), 2);
        assert!(Quantities::parse("0").is_err());
        assert!(Quantities::parse("1:0").is_err());
        assert!(Quantities::parse("1:x").is_err());
    }

    #[test]
    fn a_seed_fixes_every_purchase() {
        let buyers = |seed| Buyers {
            seed,
            events: vec![1, 2],
            quantities: Quantities::parse("1:50,2:50").unwrap(),
            duplicates: 0.3,
            revisits: 0.6,
            seated: HashMap::new(),
            seat_retry: 0.0,
            tokens: None,
        };
        let run = |seed| {
            (0..500)
                .map(|n| buyers(seed).purchase(n))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(4), run(4));
        assert_ne!(run(4), run(5));
        let duplicated = run(4).iter().filter(|p| p.duplicated).count();
        assert!((110..190).contains(&duplicated), "{duplicated} of 500");
        let revisits = run(4).iter().filter(|p| p.revisits).count();
        assert!((250..350).contains(&revisits), "{revisits} of 500");
        let both = run(4).iter().filter(|p| p.revisits && p.duplicated).count();
        assert!(
            (60..120).contains(&both),
            "independent draws: {both} of 500"
        );
        assert!(run(4).iter().any(|p| p.event_id == 2));
    }
}

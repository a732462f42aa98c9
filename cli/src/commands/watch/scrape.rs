//! A process's `/metrics` as numbers: the OpenMetrics text read into
//! samples, and the sums and histograms the dashboard is drawn from.

/// One line of the exposition: a series and its value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn has(&self, wanted: &[(&str, &str)]) -> bool {
        wanted
            .iter()
            .all(|(key, value)| self.label(key) == Some(*value))
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// What one `/metrics` answer said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    samples: Vec<Sample>,
}

/// A histogram's buckets: each upper bound (`le`, the last one infinite)
/// and how many observations fell at or under it.
pub type Buckets = Vec<(f64, f64)>;

impl Scrape {
    /// Reads the text exposition; lines it cannot read (comments, `# EOF`)
    /// are skipped.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(sample)
            .collect();
        Scrape { samples }
    }

    /// The sum of the series named `name` that carry every label in `wanted`;
    /// `None` when there is no such series.
    pub fn sum(&self, name: &str, wanted: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .filter(|sample| sample.name == name && sample.has(wanted))
            .map(|sample| sample.value)
            .reduce(|a, b| a + b)
    }

    /// The series named `name`, summed by the value of their label `label`.
    pub fn by_label(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let mut sums: Vec<(String, f64)> = Vec::new();
        for sample in self.samples.iter().filter(|sample| sample.name == name) {
            let Some(key) = sample.label(label) else {
                continue;
            };
            match sums.iter_mut().find(|(seen, _)| seen == key) {
                Some((_, sum)) => *sum += sample.value,
                None => sums.push((key.to_owned(), sample.value)),
            }
        }
        sums
    }

    /// The buckets of histogram `name` (without `_bucket`) over every series
    /// that carries the labels in `wanted`, added bound by bound.
    pub fn buckets(&self, name: &str, wanted: &[(&str, &str)]) -> Buckets {
        let series = format!("{name}_bucket");
        let mut buckets: Buckets = Vec::new();
        for sample in &self.samples {
            if sample.name != series || !sample.has(wanted) {
                continue;
            }
            let Some(bound) = sample.label("le").and_then(number) else {
                continue;
            };
            match buckets.iter_mut().find(|(le, _)| *le == bound) {
                Some((_, count)) => *count += sample.value,
                None => buckets.push((bound, sample.value)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

/// How much a counter went up from `before` to `after`: a process that
/// started again counts from zero, so a fall means it counted `after` since.
pub fn increase(before: f64, after: f64) -> f64 {
    if after < before {
        after
    } else {
        after - before
    }
}

/// The observations that fell into `after`'s buckets since `before`.
pub fn buckets_since(before: &Buckets, after: &Buckets) -> Buckets {
    after
        .iter()
        .map(|&(le, count)| {
            let was = before
                .iter()
                .find(|(bound, _)| *bound == le)
                .map_or(0.0, |&(_, was)| was);
            (le, increase(was, count))
        })
        .collect()
}

/// The `q` quantile of cumulative `buckets`, read as a straight line within
/// the bucket it falls in (as Prometheus's `histogram_quantile` does).
/// `None` with no observations; one past the last finite bound is that bound.
pub fn quantile(buckets: &Buckets, q: f64) -> Option<Quantile> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank && count > below {
            if le.is_infinite() {
                return Some(Quantile::Over(lower));
            }
            let share = (rank - below) / (count - below);
            return Some(Quantile::At(lower + (le - lower) * share));
        }
        (lower, below) = (le, count);
    }
    Some(Quantile::Over(lower))
}

/// A quantile read off a histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quantile {
    /// About this many seconds.
    At(f64),
    /// Beyond the histogram's last bound, this many seconds.
    Over(f64),
}

/// `name{label="value",…} number`, with the label values unescaped.
fn sample(line: &str) -> Option<Sample> {
    let split = line.find(['{', ' '])?;
    let name = &line[..split];
    let mut rest = &line[split..];
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        let (read, after) = label_set(inside)?;
        labels = read;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value: number(value)?,
    })
}

/// The labels up to the closing `}`, and what follows it.
fn label_set(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches(',');
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, other) => value.push(other),
            }
        };
        labels.push((key.to_owned(), value));
        text = &after[end + 1..];
    }
}

fn number(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP flashtix_orders Buy requests by outcome
# TYPE flashtix_orders counter
flashtix_orders_total{outcome="accepted"} 12
flashtix_orders_total{outcome="sold_out"} 30
flashtix_outbox_depth 7
flashtix_orders_pending_oldest_seconds 1.5
flashtix_http_request_duration_seconds_bucket{le="0.001",route="/orders",method="POST",status="201"} 2
flashtix_http_request_duration_seconds_bucket{le="0.01",route="/orders",method="POST",status="201"} 8
flashtix_http_request_duration_seconds_bucket{le="+Inf",route="/orders",method="POST",status="201"} 10
flashtix_http_request_duration_seconds_bucket{le="0.001",route="/orders",method="POST",status="409"} 5
flashtix_http_request_duration_seconds_bucket{le="0.01",route="/orders",method="POST",status="409"} 5
flashtix_http_request_duration_seconds_bucket{le="+Inf",route="/orders",method="POST",status="409"} 5
flashtix_http_request_duration_seconds_bucket{le="0.001",route="/orders/{id}",method="GET",status="200"} 99
flashtix_build_info{version="0.1.0"} 1
# EOF
"#;

    #[test]
    fn reads_series_by_name_and_labels_even_with_braces_in_a_value() {
        let scrape = Scrape::parse(TEXT);
        assert_eq!(scrape.sum("flashtix_outbox_depth", &[]), Some(7.0));
        assert_eq!(scrape.sum("flashtix_orders_total", &[]), Some(42.0));
        assert_eq!(
            scrape.by_label("flashtix_orders_total", "outcome"),
            [("accepted".into(), 12.0), ("sold_out".into(), 30.0)]
        );
        assert_eq!(scrape.sum("flashtix_missing", &[]), None);
        let route = [("route", "/orders/{id}")];
        let bucket = "flashtix_http_request_duration_seconds_bucket";
        assert_eq!(scrape.sum(bucket, &route), Some(99.0));
    }

    #[test]
    fn buckets_add_up_across_statuses_and_quantiles_read_between_bounds() {
        let scrape = Scrape::parse(TEXT);
        let orders = [("route", "/orders"), ("method", "POST")];
        let buckets = scrape.buckets("flashtix_http_request_duration_seconds", &orders);
        assert_eq!(buckets, [(0.001, 7.0), (0.01, 13.0), (f64::INFINITY, 15.0)]);
        // 15 observations: the median (7.5th) is just past the first bound.
        let Some(Quantile::At(median)) = quantile(&buckets, 0.5) else {
            panic!("a median within the bounds");
        };
        assert!(
            (median - (0.001 + 0.009 * 0.5 / 6.0)).abs() < 1e-9,
            "{median}"
        );
        // The 99th falls among the 2 slower than every bound.
        assert_eq!(quantile(&buckets, 0.99), Some(Quantile::Over(0.01)));
        assert_eq!(quantile(&vec![(f64::INFINITY, 0.0)], 0.5), None);
    }

    #[test]
    fn a_counter_that_fell_was_counted_again_from_zero() {
        assert_eq!(increase(10.0, 25.0), 15.0);
        assert_eq!(increase(10.0, 4.0), 4.0, "the process started again");
        let before = vec![(0.001, 5.0), (f64::INFINITY, 6.0)];
        let after = vec![(0.001, 9.0), (f64::INFINITY, 12.0)];
        assert_eq!(
            buckets_since(&before, &after),
            [(0.001, 4.0), (f64::INFINITY, 6.0)]
        );
    }
}

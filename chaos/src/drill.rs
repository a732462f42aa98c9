//! Drill files (`scenarios/chaos/NAME.toml`): the sale, the storm, and a
//! timeline of faults, each at a fixed time or somewhere in a window that
//! `--seed` picks.
//!
//! ```toml
//! description = "The payment worker is killed mid-storm and comes back"
//! [sale]                 # `flashtix reset` flags
//! tickets = 2000
//! [storm]                # `flashtix storm` flags
//! rate = 1000.0
//! buyers = 8000
//! [[fault]]
//! at = "1s..3s"          # or "2s"
//! target = "payments"
//! action = "kill"
//! duration = "3s"        # then it is started again
//! # until-storm-ends = true  # a lasting fault without a duration, on purpose:
//! #                          # it has no recovery to measure
//! [limits]
//! recover = "15s"
//! ```
//!
//! The `[sale]`, `[storm]` and `[server]` tables are handed to `reset`,
//! `storm` and `serve` as flags. `flashtix chaos` reads them into those
//! commands' own types when it loads a drill (the ones a scenario file is
//! read into), so a mistake is named before any sale starts; this crate
//! does not know those types.

use std::time::Duration;

use flashtix_model::duration::parse as duration;
use flashtix_model::{Dependency, Receiver, Role};
use serde::Deserialize;

use crate::proxy;

flashtix_model::one_of! {
    /// What a drill can break: a role of the sale (for `api`, the first of
    /// its two processes), a service it stands on, or a receiver of its
    /// notices.
    pub enum Target("a drill target") {
        Role(Role),
        Dependency(Dependency),
        Receiver(Receiver),
    }
}

flashtix_model::one_of! {
    /// What a fault does to its target.
    pub enum Action("a fault action") {
        Process(ProcessAction),
        Data(DataAction),
        /// Network faults go through the proxy in front of the target.
        Network(NetworkAction),
        Answer(AnswerAction),
    }
}

flashtix_model::named! {
    /// What a fault makes a receiver answer.
    pub enum AnswerAction("an answer action") {
        /// The webhook receiver answers 500 to a share of deliveries.
        Fail = "fail",
    }
}

flashtix_model::named! {
    /// What a fault does to a process (or its container).
    pub enum ProcessAction("a process action") {
        Kill = "kill",
        Stop = "stop",
        Start = "start",
        Restart = "restart",
        Pause = "pause",
        Resume = "resume",
    }
}

flashtix_model::named! {
    /// What a fault does to a service's data.
    pub enum DataAction("a data action") {
        /// Redis loses its data.
        Flush = "flush",
        /// Every message already published is published again (same id).
        Republish = "republish",
    }
}

flashtix_model::named! {
    /// What a fault does to the network in front of its target.
    pub enum NetworkAction("a network action") {
        Latency = "latency",
        Blackhole = "blackhole",
        Reset = "reset",
        Bandwidth = "bandwidth",
        DropResponses = "drop_responses",
    }
}

/// One fault of a drill file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FaultSpec {
    /// "2s", or a window "1s..3s" that the seed picks a time in.
    pub at: Window,
    pub target: Target,
    pub action: Action,
    /// How long it lasts: a network fault or a pause ends, a killed or stopped
    /// process starts again. Without it, the fault stays.
    #[serde(
        default,
        deserialize_with = "flashtix_model::duration::deserialize_option"
    )]
    pub duration: Option<Duration>,
    #[serde(
        default,
        deserialize_with = "flashtix_model::duration::deserialize_option"
    )]
    pub delay: Option<Duration>,
    #[serde(
        default,
        deserialize_with = "flashtix_model::duration::deserialize_option"
    )]
    pub jitter: Option<Duration>,
    pub bytes_per_second: Option<u64>,
    /// For `fail`: the share of deliveries answered 500 (0 to 1).
    pub share: Option<f64>,
    /// It may last to the storm's end, on purpose (a fault without a
    /// duration, or a process slower to come back than the storm is long):
    /// when no request comes after it, the drill measures no recovery for it
    /// and says that is fine.
    #[serde(default)]
    pub until_storm_ends: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// After a fault ends, the first success must come within this long.
    #[serde(
        default,
        deserialize_with = "flashtix_model::duration::deserialize_option"
    )]
    pub recover: Option<Duration>,
    /// The same under the docker driver, where a dependency restarted in its
    /// container may take longer to come back (default: `recover`).
    #[serde(
        default,
        deserialize_with = "flashtix_model::duration::deserialize_option"
    )]
    pub recover_in_docker: Option<Duration>,
    /// How long the sale may take to settle after the storm.
    #[serde(
        default,
        deserialize_with = "flashtix_model::duration::deserialize_option"
    )]
    pub settle: Option<Duration>,
}

/// When a fault happens: "2s", or a window "1s..3s" that the seed picks a
/// time in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub from: Duration,
    pub to: Duration,
    /// As the drill file wrote it, for messages.
    written: String,
}

impl Window {
    /// "2s" → (2s, 2s); "1s..3s" → (1s, 3s).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (from, to) = match text.split_once("..") {
            Some((from, to)) => (duration(from)?, duration(to)?),
            None => {
                let at = duration(text)?;
                (at, at)
            }
        };
        if to < from {
            return Err(format!("{text:?} ends before it starts"));
        }
        Ok(Self {
            from,
            to,
            written: text.to_owned(),
        })
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.written)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(from: D) -> Result<Self, D::Error> {
        let text = String::deserialize(from)?;
        Window::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A drill file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillFile {
    pub description: String,
    #[serde(default)]
    pub sale: toml::Table,
    #[serde(default)]
    pub storm: toml::Table,
    /// `flashtix serve` flags for every role (like `payment-failure-rate`).
    #[serde(default)]
    pub server: toml::Table,
    /// The command driver: shell commands that do an action to a target
    /// instead of the local driver, keyed `"TARGET.ACTION"` (like
    /// `"postgres.kill" = "docker kill db"`).
    #[serde(default)]
    pub commands: toml::Table,
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultSpec>,
    #[serde(default)]
    pub limits: Limits,
}

/// A fault placed on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub at: Duration,
    pub until: Option<Duration>,
    pub target: Target,
    /// The action as the drill file names it.
    pub action: Action,
    /// What the action does, worked out once from it and its settings.
    pub effect: Effect,
    /// Declared to last to the storm's end (see [`FaultSpec::until_storm_ends`]).
    pub until_storm_ends: bool,
}

impl Fault {
    /// It lasts until it is undone (a process down or paused, a network
    /// fault), as opposed to one that is over once done (a flush, a
    /// restart, a republish).
    pub fn lasts(&self) -> bool {
        use ProcessAction::{Kill, Pause, Stop};
        matches!(
            self.effect,
            Effect::Process(Kill | Stop | Pause) | Effect::Network(_)
        )
    }
}

/// What a fault does, worked out once: to a process, to the network in
/// front of its target (a proxy fault), or to the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    Process(ProcessAction),
    Network(proxy::Toxic),
    /// Redis loses its data.
    Flush,
    /// Every message already published is published again.
    Republish,
    /// The webhook receiver answers 500 to this share of deliveries.
    Fail {
        share: f64,
    },
}

impl Effect {
    /// The effect of `action`, with a network fault's settings.
    fn of(
        action: Action,
        delay: Duration,
        jitter: Duration,
        bytes_per_second: u64,
        share: f64,
    ) -> Self {
        use NetworkAction as N;
        match action {
            Action::Process(process) => Self::Process(process),
            Action::Data(DataAction::Flush) => Self::Flush,
            Action::Data(DataAction::Republish) => Self::Republish,
            Action::Answer(AnswerAction::Fail) => Self::Fail { share },
            Action::Network(network) => Self::Network(match network {
                N::Latency => proxy::Toxic::Latency { delay, jitter },
                N::Blackhole => proxy::Toxic::Blackhole,
                N::Reset => proxy::Toxic::Reset,
                N::Bandwidth => proxy::Toxic::Bandwidth { bytes_per_second },
                N::DropResponses => proxy::Toxic::DropResponses,
            }),
        }
    }
}

impl DrillFile {
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.faults.is_empty() {
            return Err("a drill needs at least one [[fault]]".into());
        }
        for (key, command) in &file.commands {
            if !command.is_str() {
                return Err(format!("commands.{key}: a shell command (a string)"));
            }
        }
        for (i, fault) in file.faults.iter().enumerate() {
            let name = label(i, fault);
            let only = |dependency: Dependency| fault.target != Target::Dependency(dependency);
            if fault.action == DataAction::Flush.into() && only(Dependency::Redis) {
                return Err(format!("{name}: only redis can be flushed"));
            }
            if fault.action == DataAction::Republish.into() && only(Dependency::Rabbitmq) {
                return Err(format!("{name}: only rabbitmq republishes"));
            }
            if matches!(fault.action, Action::Network(_))
                && !matches!(
                    fault.target,
                    Target::Role(Role::Api)
                        | Target::Dependency(_)
                        | Target::Receiver(Receiver::Mail)
                )
            {
                return Err(format!(
                    "{name}: network faults stand in front of api, postgres, redis, rabbitmq \
                     or mail"
                ));
            }
            let webhooks = fault.target == Target::Receiver(Receiver::Webhooks);
            if webhooks != (fault.action == AnswerAction::Fail.into()) {
                return Err(format!(
                    "{name}: the webhook receiver can only fail, and only it"
                ));
            }
            if fault.action == AnswerAction::Fail.into()
                && !fault
                    .share
                    .is_some_and(|share| (0.0..=1.0).contains(&share))
            {
                return Err(format!("{name}: fail needs a share between 0 and 1"));
            }
            if fault.action == NetworkAction::Bandwidth.into() && fault.bytes_per_second.is_none() {
                return Err(format!("{name}: bandwidth needs bytes-per-second"));
            }
            if fault.action == NetworkAction::Latency.into() && fault.delay.is_none() {
                return Err(format!("{name}: latency needs a delay"));
            }
        }
        Ok(file)
    }

    /// No fault may fall after the storm stops sending (`sending` after it
    /// starts, as far as the storm's settings tell): it might never happen.
    pub fn faults_before(&self, sending: Duration) -> Result<(), String> {
        for (i, fault) in self.faults.iter().enumerate() {
            if fault.at.to >= sending {
                return Err(format!(
                    "{}: at {} may fall after the storm stops sending (at {sending:?}): \
                     the fault might never happen; move it earlier or make the storm longer",
                    label(i, fault),
                    fault.at,
                ));
            }
        }
        Ok(())
    }

    /// The shell command the drill gives for `action` on `target`, if any.
    pub fn command(&self, target: Target, action: Action) -> Option<&str> {
        let key = format!("{}.{}", target.name(), action.name());
        self.commands.get(&key).and_then(|c| c.as_str())
    }

    /// The faults in time order, windows resolved by `seed` (the same seed,
    /// the same times).
    pub fn timeline(&self, seed: u64) -> Vec<Fault> {
        let mut pick = seed;
        let mut faults: Vec<Fault> = self
            .faults
            .iter()
            .map(|spec| {
                let Window { from, to, .. } = spec.at;
                pick = flashtix_model::rng::next(pick);
                let share = (pick >> 11) as f64 / (1u64 << 53) as f64;
                let at = from + (to - from).mul_f64(share);
                Fault {
                    at,
                    until: spec.duration.map(|d| at + d),
                    target: spec.target,
                    action: spec.action,
                    effect: Effect::of(
                        spec.action,
                        spec.delay.unwrap_or_default(),
                        spec.jitter.unwrap_or_default(),
                        spec.bytes_per_second.unwrap_or(0),
                        spec.share.unwrap_or(0.0),
                    ),
                    until_storm_ends: spec.until_storm_ends,
                }
            })
            .collect();
        faults.sort_by_key(|f| f.at);
        faults
    }
}

/// A fault as messages name it: `fault 2 (flush redis)`.
fn label(i: usize, fault: &FaultSpec) -> String {
    format!("fault {} ({} {})", i + 1, fault.action, fault.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILL_PAYMENTS: &str = r#"
        description = "kill the payment worker"
        [sale]
        tickets = 2000
        [storm]
        rate = 1000.0
        buyers = 8000
        [[fault]]
        at = "1s..3s"
        target = "payments"
        action = "kill"
        duration = "3s"
        [[fault]]
        at = "500ms"
        target = "postgres"
        action = "latency"
        delay = "200ms"
        [limits]
        recover = "15s"
    "#;

    #[test]
    fn a_seed_places_each_fault_in_its_window_the_same_way_every_time() {
        let drill = DrillFile::parse(KILL_PAYMENTS).unwrap();
        assert_eq!(drill.storm["buyers"].as_integer(), Some(8000));
        let first = drill.timeline(7);
        assert_eq!(first, drill.timeline(7), "reproducible");
        assert_eq!(
            first[0].action,
            NetworkAction::Latency.into(),
            "in time order"
        );
        assert_eq!(
            (first[0].at, first[0].until),
            (Duration::from_millis(500), None)
        );
        let Effect::Network(proxy::Toxic::Latency { delay, .. }) = first[0].effect else {
            panic!("a latency fault: {:?}", first[0].effect);
        };
        assert_eq!(delay, Duration::from_millis(200));
        let kill = &first[1];
        assert!((Duration::from_secs(1)..=Duration::from_secs(3)).contains(&kill.at));
        assert_eq!(kill.until, Some(kill.at + Duration::from_secs(3)));

        let times: std::collections::HashSet<Duration> =
            (0..20).map(|seed| drill.timeline(seed)[1].at).collect();
        assert!(times.len() > 10, "seeds spread the kill over its window");
    }

    #[test]
    fn a_command_is_found_by_the_names_drill_files_use() {
        let drill = DrillFile::parse(
            "description = \"x\"\n[commands]\n\"api.drop_responses\" = \"true\"\n\
             [[fault]]\nat = \"1s\"\ntarget = \"api\"\naction = \"drop_responses\"",
        )
        .unwrap();
        assert_eq!(
            drill.command(Role::Api.into(), NetworkAction::DropResponses.into()),
            Some("true")
        );
        assert_eq!(
            drill.command(Role::Api.into(), ProcessAction::Kill.into()),
            None
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("description = \"x\"", "at least one [[fault]]"),
            (
                "description = \"x\"\n[[fault]]\nat = \"1s\"\ntarget = \"payments\"\naction = \"flush\"",
                "only redis can be flushed",
            ),
            (
                "description = \"x\"\n[[fault]]\nat = \"3s..1s\"\ntarget = \"api\"\naction = \"kill\"",
                "ends before it starts",
            ),
            (
                "description = \"x\"\n[[fault]]\nat = \"1s\"\ntarget = \"mysql\"\naction = \"kill\"",
                "\"mysql\" is not a drill target (one of: api, sweeper",
            ),
            (
                "description = \"x\"\n[[fault]]\nat = \"soon\"\ntarget = \"api\"\naction = \"kill\"",
                "not a duration",
            ),
            (
                "description = \"x\"\n[[fault]]\nat = \"1s\"\ntarget = \"redis\"\naction = \"latency\"",
                "latency needs a delay",
            ),
            (
                "description = \"x\"\n[[fault]]\nat = \"1s\"\ntarget = \"api\"\naction = \"kill\"\nduration = \"a while\"",
                "not a duration",
            ),
        ] {
            let error = DrillFile::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn no_two_targets_or_actions_share_a_name() {
        for names in [
            Target::all().map(Target::name).collect::<Vec<_>>(),
            Action::all().map(Action::name).collect(),
        ] {
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            // A name two enums share would parse as the first one only.
            assert_eq!(unique.len(), names.len(), "{names:?}");
        }
    }

    #[test]
    fn a_fault_the_storm_may_end_before_is_named() {
        let drill = DrillFile::parse(
            "description = \"x\"\n\
             [[fault]]\nat = \"1s\"\ntarget = \"api\"\naction = \"kill\"\n\
             [[fault]]\nat = \"4s..6s\"\ntarget = \"redis\"\naction = \"flush\"",
        )
        .unwrap();
        assert_eq!(drill.faults_before(Duration::from_secs(7)), Ok(()));
        let error = drill.faults_before(Duration::from_secs(5)).unwrap_err();
        assert!(
            error.contains(
                "fault 2 (flush redis): at 4s..6s may fall after the storm stops sending (at 5s)"
            ),
            "{error}"
        );
        let error = drill.faults_before(Duration::from_secs(1)).unwrap_err();
        assert!(error.starts_with("fault 1 (kill api): at 1s"), "{error}");
    }
}

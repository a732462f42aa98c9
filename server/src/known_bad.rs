//! Known-bad variants of the server, for proving that the drills and `check`
//! can fail. They exist only in a build with the test-only `known-bad`
//! feature, and only act when `FLASHTIX_KNOWN_BAD` names them (comma
//! separated). Without the feature [`has`] is a constant `false` and every
//! bad branch is compiled away.
//!
//! Each one is a mistake DESIGN §8 says earlier systems made:
//! - `ack-before-commit`: consumers acknowledge a batch before handling it, so
//!   a worker killed mid-batch loses messages (orders stuck PENDING);
//! - `publish-before-commit`: the relay marks rows published and commits before
//!   the broker has them, so a broker outage loses messages;
//! - `release-stock-twice`: a cancelled order gives its tickets back to
//!   Postgres twice (tickets minted: oversell).

/// A mistake a known-bad server makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    AckBeforeCommit,
    PublishBeforeCommit,
    ReleaseStockTwice,
}

impl Bug {
    pub const ALL: [Self; 3] = [
        Self::AckBeforeCommit,
        Self::PublishBeforeCommit,
        Self::ReleaseStockTwice,
    ];

    /// Its name in `FLASHTIX_KNOWN_BAD`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AckBeforeCommit => "ack-before-commit",
            Self::PublishBeforeCommit => "publish-before-commit",
            Self::ReleaseStockTwice => "release-stock-twice",
        }
    }
}

/// Whether this server makes `bug`.
#[cfg(feature = "known-bad")]
pub fn has(bug: Bug) -> bool {
    static SWITCHED: std::sync::OnceLock<Vec<Bug>> = std::sync::OnceLock::new();
    SWITCHED
        .get_or_init(|| {
            let named = std::env::var("FLASHTIX_KNOWN_BAD").unwrap_or_default();
            let switched: Vec<Bug> = Bug::ALL
                .into_iter()
                .filter(|bug| named.split(',').any(|n| n.trim() == bug.name()))
                .collect();
            if !switched.is_empty() {
                tracing::warn!(?switched, "KNOWN-BAD server: these bugs are switched on");
            }
            switched
        })
        .contains(&bug)
}

/// Whether this server makes `bug`: never, in a build without `known-bad`.
#[cfg(not(feature = "known-bad"))]
pub const fn has(_bug: Bug) -> bool {
    false
}

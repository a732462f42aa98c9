//! Which of a storm's purchases one process sends.

/// Shard `index` of `count` sends the purchases whose number is `index`
/// modulo `count`, at the times the whole storm's schedule gives them: the
/// shards of one seeded storm send, between them, exactly its purchases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "ShardFields")]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// The most shards one storm is sent in.
const MAX_SHARDS: u64 = 10_000;

/// A shard as a document writes it, checked as `--shard` is.
#[derive(serde::Deserialize)]
struct ShardFields {
    index: u64,
    count: u64,
}

impl TryFrom<ShardFields> for Shard {
    type Error = String;

    fn try_from(fields: ShardFields) -> Result<Self, String> {
        Self::parse(&format!("{}/{}", fields.index, fields.count))
    }
}

impl Shard {
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// How many of `purchases` are this shard's.
    pub fn share_of(&self, purchases: u64) -> u64 {
        (purchases + self.count - 1 - self.index) / self.count
    }

    /// Parses `I/N`, 0 ≤ I < N.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            || format!("--shard {text:?}: give I/N with 0 <= I < N <= {MAX_SHARDS}, like 0/2");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = index.trim().parse().map_err(|_| bad())?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        if index >= count || count > MAX_SHARDS {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

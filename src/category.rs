//! Lock categories: what kind of file a lock guards, its default timeout, and
//! its place in the global lock order.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What a lock guards. The order of the variants is the lock order of
/// ARCHITECTURE.md (law 7): Artifact, then Manifest, then Telemetry, then Sqlite,
/// then Summary. `Ord` follows it, so sorting a list of categories sorts it
/// into acquisition order.
///
/// ```
/// use async_filelock::Category;
/// let mut cats = vec![Category::Summary, Category::Artifact, Category::Sqlite];
/// cats.sort();
/// assert_eq!(cats, [Category::Artifact, Category::Sqlite, Category::Summary]);
/// assert_eq!(Category::Sqlite.default_timeout().as_secs(), 10);
/// assert_eq!("manifest".parse::<Category>().unwrap(), Category::Manifest);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Downloaded files streamed to `.part` and renamed into place.
    Artifact,
    /// JSONL manifests and their rotations.
    Manifest,
    /// JSONL telemetry and metrics.
    Telemetry,
    /// SQLite databases: one lock per transaction or batch.
    Sqlite,
    /// Run summaries and other small files replaced whole.
    Summary,
}

impl Category {
    /// Every category, in lock order.
    ///
    /// ```
    /// use async_filelock::Category;
    /// assert_eq!(Category::ALL.first(), Some(&Category::Artifact));
    /// assert!(Category::ALL.windows(2).all(|w| w[0] < w[1]), "in lock order");
    /// ```
    pub const ALL: [Category; 5] = [
        Category::Artifact,
        Category::Manifest,
        Category::Telemetry,
        Category::Sqlite,
        Category::Summary,
    ];

    /// The lower-case name used in lock file names, environment variables and
    /// log lines.
    ///
    /// ```
    /// assert_eq!(async_filelock::Category::Sqlite.name(), "sqlite");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Category::Artifact => "artifact",
            Category::Manifest => "manifest",
            Category::Telemetry => "telemetry",
            Category::Sqlite => "sqlite",
            Category::Summary => "summary",
        }
    }

    /// The default time to wait for this category's lock, from the field:
    /// manifest, telemetry and summary 5 s; sqlite 10 s; artifact 30 s.
    ///
    /// ```
    /// assert_eq!(async_filelock::Category::Artifact.default_timeout().as_secs(), 30);
    /// ```
    pub const fn default_timeout(self) -> Duration {
        match self {
            Category::Artifact => Duration::from_secs(30),
            Category::Sqlite => Duration::from_secs(10),
            Category::Manifest | Category::Telemetry | Category::Summary => Duration::from_secs(5),
        }
    }

    /// Whether the lock file is removed on release by default. On for
    /// artifacts, where a million downloads would otherwise leave a million
    /// lock files; off for the long-lived targets of the other categories.
    ///
    /// ```
    /// use async_filelock::Category;
    /// assert!(Category::Artifact.default_remove_on_release());
    /// assert!(!Category::Manifest.default_remove_on_release());
    /// ```
    pub const fn default_remove_on_release(self) -> bool {
        matches!(self, Category::Artifact)
    }

    /// Index into per-category arrays, in lock order.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`Category`] from a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown lock category {0:?}: expected one of artifact, manifest, telemetry, sqlite, summary"
)]
///
/// ```
/// let err = "bogus".parse::<async_filelock::Category>().unwrap_err();
/// assert!(err.to_string().contains("bogus"));
/// ```
pub struct ParseCategoryError(pub String);

impl FromStr for Category {
    type Err = ParseCategoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ParseCategoryError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_the_lock_order_of_law_7() {
        let mut shuffled = [
            Category::Summary,
            Category::Telemetry,
            Category::Artifact,
            Category::Sqlite,
            Category::Manifest,
        ];
        shuffled.sort();
        assert_eq!(shuffled, Category::ALL);
        for (i, c) in Category::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }

    #[test]
    fn names_round_trip() {
        for c in Category::ALL {
            assert_eq!(c.name().parse::<Category>().unwrap(), c);
            assert_eq!(c.to_string(), c.name());
        }
        assert!("bogus".parse::<Category>().is_err());
    }
}

//! [`LockMode`]: shared or exclusive.

use std::fmt;

/// Whether a lock is held alone or together with other readers.
///
/// ```
/// use async_filelock::LockMode;
/// assert!(LockMode::Shared.is_shared());
/// assert_eq!(LockMode::Exclusive.to_string(), "exclusive");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// Many holders at once, none of them exclusive (readers).
    Shared,
    /// One holder alone (writers).
    Exclusive,
}

impl LockMode {
    /// True for [`LockMode::Shared`].
    ///
    /// ```
    /// assert!(!async_filelock::LockMode::Exclusive.is_shared());
    /// ```
    pub const fn is_shared(self) -> bool {
        matches!(self, LockMode::Shared)
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        })
    }
}

//! [`FencingToken`]: a number that grows with every exclusive holder of a
//! lock, so that a store can reject a write from a superseded holder.

use std::fmt;

/// A fencing token: issued while a lock is held, strictly greater than every
/// token issued for the same lock before it (across holders, processes and
/// restarts; ARCHITECTURE.md, "Fencing tokens", says exactly what each
/// backend guarantees).
///
/// A guard can be lost while its holder still runs (a soft lock whose lease
/// ran out while the process was stopped); writes that carry the token let
/// the store they reach refuse the stale holder's: keep the largest token
/// seen and reject writes with a smaller one.
///
/// ```
/// use async_filelock::FencingToken;
/// let older = FencingToken::new(41);
/// let newer = FencingToken::new(42);
/// assert!(newer > older);
/// assert_eq!(newer.get(), 42);
/// assert_eq!(newer.to_string(), "42");
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct FencingToken(u64);

impl FencingToken {
    /// A token of value `value` (to compare with one a guard gave).
    ///
    /// ```
    /// assert_eq!(async_filelock::FencingToken::new(7).get(), 7);
    /// ```
    pub const fn new(value: u64) -> Self {
        FencingToken(value)
    }

    /// Its value.
    ///
    /// ```
    /// assert_eq!(async_filelock::FencingToken::new(7).get(), 7);
    /// ```
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The token after `stored` (the last one issued for the lock, 0 if
    /// none is known): one more, and at least the wall clock in
    /// microseconds since the Unix epoch, so that a lock whose stored token
    /// was lost (its lock file removed, a host crash before the write
    /// reached the disk) still issues a larger one, unless the clock was
    /// set back past the last token.
    /// `None` once `stored` is the largest token there is: a token may
    /// never repeat.
    pub(crate) fn after(stored: u64) -> Option<Self> {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Some(FencingToken(stored.checked_add(1)?.max(clock)))
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::FencingToken;

    #[test]
    fn after_is_strictly_greater_even_ahead_of_the_clock_and_never_repeats() {
        let now = FencingToken::after(0).unwrap();
        assert!(FencingToken::after(now.get()).unwrap() > now);
        let far = u64::MAX - 1;
        assert_eq!(FencingToken::after(far).unwrap().get(), u64::MAX);
        assert_eq!(FencingToken::after(u64::MAX), None);
        assert!(FencingToken::after(5).unwrap().get() > 1_600_000_000_000_000);
    }
}

//! The environment variables a [`crate::Locks`] handle reads
//! ([`crate::LocksBuilder::env`]): one lock dir, per-category timeouts, the
//! backend.

use std::ffi::{OsStr, OsString};
use std::time::Duration;

use super::policy::{LockDir, Policy};
use crate::backend::{BackendChoice, NetworkFsPolicy};
use crate::category::Category;
use crate::error::LockError;

/// One lock directory for every target.
///
/// ```
/// assert_eq!(async_filelock::ENV_DIR, "ASYNC_FILELOCK_DIR");
/// ```
pub const ENV_DIR: &str = "ASYNC_FILELOCK_DIR";
/// Prefix of the per-category timeout variables (`…_ARTIFACT`, `…_SQLITE`, …).
///
/// ```
/// assert_eq!(async_filelock::ENV_TIMEOUT_PREFIX, "ASYNC_FILELOCK_TIMEOUT_");
/// ```
pub const ENV_TIMEOUT_PREFIX: &str = "ASYNC_FILELOCK_TIMEOUT_";
/// The backend variable.
///
/// ```
/// assert_eq!(async_filelock::ENV_BACKEND, "ASYNC_FILELOCK_BACKEND");
/// ```
pub const ENV_BACKEND: &str = "ASYNC_FILELOCK_BACKEND";
/// The PostgreSQL server of `ASYNC_FILELOCK_BACKEND=postgres` (a libpq
/// connection string or URL).
pub const ENV_PG_URL: &str = "ASYNC_FILELOCK_PG_URL";
/// The advisory-lock namespace of the PostgreSQL backend (a 32-bit integer).
pub const ENV_PG_NAMESPACE: &str = "ASYNC_FILELOCK_PG_NAMESPACE";
/// How many sessions a PostgreSQL-backed handle opens at most.
pub const ENV_PG_CONNECTIONS: &str = "ASYNC_FILELOCK_PG_CONNECTIONS";
/// The lease of soft locks, in seconds (see
/// [`crate::LocksBuilder::soft_lease`]).
///
/// ```
/// assert_eq!(async_filelock::ENV_SOFT_LEASE, "ASYNC_FILELOCK_SOFT_LEASE");
/// ```
pub const ENV_SOFT_LEASE: &str = "ASYNC_FILELOCK_SOFT_LEASE";
/// What to do with a lock dir on a network filesystem: `warn`, `refuse`
/// or `allow` (see [`crate::NetworkFsPolicy`]).
///
/// ```
/// assert_eq!(async_filelock::ENV_NETWORK_FS_POLICY, "ASYNC_FILELOCK_NETWORK_FS_POLICY");
/// ```
pub const ENV_NETWORK_FS_POLICY: &str = "ASYNC_FILELOCK_NETWORK_FS_POLICY";
/// How many threads of the process may block in the kernel waiting for OS
/// locks (see [`crate::set_max_wait_threads`]); process-wide.
///
/// ```
/// assert_eq!(async_filelock::ENV_WAIT_THREADS, "ASYNC_FILELOCK_WAIT_THREADS");
/// ```
pub const ENV_WAIT_THREADS: &str = "ASYNC_FILELOCK_WAIT_THREADS";
/// How many lock-file descriptors the process keeps open between holdings
/// (see [`crate::set_max_hot_lock_files`]); `0` keeps none; process-wide.
///
/// ```
/// assert_eq!(async_filelock::ENV_HOT_FILES, "ASYNC_FILELOCK_HOT_FILES");
/// ```
pub const ENV_HOT_FILES: &str = "ASYNC_FILELOCK_HOT_FILES";
/// Whether a back-to-back taker's waits give up wake-up preemption
/// (`1`/`true`/`on`/`yes`, the default, or `0`/`false`/`off`/`no`; see
/// [`crate::set_batch_wait_threads`]); process-wide.
///
/// ```
/// assert_eq!(async_filelock::ENV_BATCH_WAIT_THREADS, "ASYNC_FILELOCK_BATCH_WAIT_THREADS");
/// ```
pub const ENV_BATCH_WAIT_THREADS: &str = "ASYNC_FILELOCK_BATCH_WAIT_THREADS";

/// Applies the variables `lookup` finds over `policy`.
pub(crate) fn apply(
    policy: &mut Policy,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<(), LockError> {
    if let Some(dir) = lookup(ENV_DIR) {
        if dir.is_empty() {
            return Err(config(ENV_DIR, "is empty; unset it or give a directory"));
        }
        policy.lock_dir = LockDir::Fixed(dir.into());
    }
    for category in Category::ALL {
        let key = format!(
            "{ENV_TIMEOUT_PREFIX}{}",
            category.name().to_ascii_uppercase()
        );
        if let Some(value) = lookup(&key) {
            policy.timeouts[category.index()] = parse_timeout(&key, &value)?;
        }
    }
    if let Some(value) = lookup(ENV_WAIT_THREADS) {
        let n = parse_count(ENV_WAIT_THREADS, &value, "threads", 1)?;
        crate::backend::os::waits::set_max_kernel_waits(n);
    }
    if let Some(value) = lookup(ENV_HOT_FILES) {
        let n = parse_count(ENV_HOT_FILES, &value, "descriptors", 0)?;
        crate::backend::os::set_max_hot_files(n);
    }
    if let Some(value) = lookup(ENV_BATCH_WAIT_THREADS) {
        let on = parse_switch(ENV_BATCH_WAIT_THREADS, &value)?;
        crate::backend::os::waits::set_batch_kernel_threads(on);
    }
    if let Some(backend) = lookup(ENV_BACKEND) {
        policy.backend = match backend.to_str().map(str::trim) {
            Some("os") | Some("") => BackendChoice::Os,
            Some("soft") => BackendChoice::Soft,
            Some("auto") => BackendChoice::Auto,
            Some("postgres") => BackendChoice::Postgres,
            _ => {
                return Err(config(
                    ENV_BACKEND,
                    &format!("{backend:?} is not one of os, soft, auto, postgres"),
                ));
            }
        };
    }
    if let Some(url) = lookup(ENV_PG_URL) {
        let url = url
            .into_string()
            .map_err(|v| config(ENV_PG_URL, &format!("{v:?} is not UTF-8")))?;
        policy.postgres.url = Some(url);
    }
    if let Some(value) = lookup(ENV_PG_NAMESPACE) {
        let namespace = value
            .to_str()
            .and_then(|v| v.trim().parse::<i32>().ok())
            .ok_or_else(|| {
                config(
                    ENV_PG_NAMESPACE,
                    &format!("{value:?} is not a 32-bit integer"),
                )
            })?;
        policy.postgres.namespace = namespace;
    }
    if let Some(value) = lookup(ENV_PG_CONNECTIONS) {
        policy.postgres.connections = parse_count(ENV_PG_CONNECTIONS, &value, "connections", 1)?;
    }
    if let Some(value) = lookup(ENV_SOFT_LEASE) {
        match parse_timeout(ENV_SOFT_LEASE, &value)? {
            Some(lease) if lease >= Duration::from_millis(50) => policy.soft.lease = lease,
            _ => {
                return Err(config(
                    ENV_SOFT_LEASE,
                    &format!("{value:?} is not a lease in seconds of at least 0.05"),
                ));
            }
        }
    }
    if let Some(value) = lookup(ENV_NETWORK_FS_POLICY) {
        policy.network_fs = match value.to_str().map(str::trim) {
            Some("warn") => NetworkFsPolicy::Warn,
            Some("refuse") => NetworkFsPolicy::Refuse,
            Some("allow") => NetworkFsPolicy::Allow,
            _ => {
                return Err(config(
                    ENV_NETWORK_FS_POLICY,
                    &format!("{value:?} is not one of warn, refuse, allow"),
                ));
            }
        };
    }
    Ok(())
}

fn config(key: &str, reason: &str) -> LockError {
    LockError::Config {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A whole number of `what`, `min` or more.
fn parse_count(key: &str, value: &OsStr, what: &str, min: usize) -> Result<usize, LockError> {
    value
        .to_str()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n >= min)
        .ok_or_else(|| {
            config(
                key,
                &format!("{value:?} is not a whole number of {what}, {min} or more"),
            )
        })
}

/// `1`/`true`/`on`/`yes` or `0`/`false`/`off`/`no`, in any case.
fn parse_switch(key: &str, value: &OsStr) -> Result<bool, LockError> {
    let text = value.to_str().map(str::trim).unwrap_or("");
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(config(
            key,
            &format!("{value:?} is not 1 or 0 (true, false, on, off, yes, no)"),
        )),
    }
}

/// Seconds (`2.5`) or `inf`/`infinity`/`none` for no limit.
fn parse_timeout(key: &str, value: &OsStr) -> Result<Option<Duration>, LockError> {
    let text = value.to_str().map(str::trim).unwrap_or("");
    if matches!(
        text.to_ascii_lowercase().as_str(),
        "inf" | "infinity" | "none"
    ) {
        return Ok(None);
    }
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .map(Some)
        .ok_or_else(|| {
            config(
                key,
                &format!("{value:?} is not a number of seconds (such as 2.5) or inf"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(key: &'static str, value: &'static str) -> Result<Policy, LockError> {
        let mut policy = Policy::default();
        apply(&mut policy, |k| (k == key).then(|| value.into()))?;
        Ok(policy)
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let err = applied("ASYNC_FILELOCK_TIMEOUT_ARTIFACT", "-1").unwrap_err();
        assert!(
            err.to_string().contains("ASYNC_FILELOCK_TIMEOUT_ARTIFACT"),
            "{err}"
        );
        let err = applied(ENV_BACKEND, "carrier-pigeon").unwrap_err();
        assert!(err.to_string().contains(ENV_BACKEND), "{err}");
        // Counts: threads need one at least; kept descriptors may be none.
        let err = applied(ENV_WAIT_THREADS, "0").unwrap_err();
        assert!(err.to_string().contains("1 or more"), "{err}");
        let err = applied(ENV_HOT_FILES, "-3").unwrap_err();
        assert!(
            err.to_string().contains(ENV_HOT_FILES) && err.to_string().contains("0 or more"),
            "{err}"
        );
        let ok = applied("ASYNC_FILELOCK_TIMEOUT_MANIFEST", " 0 ").unwrap();
        assert_eq!(ok.timeout(Category::Manifest), Some(Duration::ZERO));
    }

    #[test]
    fn switches_read_the_usual_spellings_and_name_the_variable_otherwise() {
        for on in ["1", "true", " ON ", "yes"] {
            assert!(
                parse_switch(ENV_BATCH_WAIT_THREADS, OsStr::new(on)).unwrap(),
                "{on}"
            );
        }
        for off in ["0", "False", "off", "no"] {
            assert!(
                !parse_switch(ENV_BATCH_WAIT_THREADS, OsStr::new(off)).unwrap(),
                "{off}"
            );
        }
        // Refused before anything is applied: the process-wide setting
        // stays as it was.
        let err = applied(ENV_BATCH_WAIT_THREADS, "sometimes").unwrap_err();
        assert!(
            err.to_string().contains(ENV_BATCH_WAIT_THREADS)
                && err.to_string().contains("\"sometimes\""),
            "{err}"
        );
    }

    #[test]
    fn huge_timeouts_are_accepted_and_inf_means_none() {
        let huge = applied("ASYNC_FILELOCK_TIMEOUT_SQLITE", "1e19").unwrap();
        assert!(huge.timeout(Category::Sqlite).is_some());
        let inf = applied("ASYNC_FILELOCK_TIMEOUT_SQLITE", "inf").unwrap();
        assert_eq!(inf.timeout(Category::Sqlite), None);
    }
}

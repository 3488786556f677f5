//! `lock-doctor list --backend postgres`: the advisory locks of one
//! namespace on a PostgreSQL server, with who holds each (the client's pid
//! and command from the application name the crate gives its sessions,
//! the client address, the server process) and how many sessions wait for
//! it on the server.

use std::fmt::Write as _;

use crate::error::LockError;

/// One held advisory lock of the namespace, from `pg_locks`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct AdvisoryLock {
    /// The lock's key within the namespace (the hash of its name).
    pub key: i32,
    /// `WRITE` (exclusive) or `READ` (shared).
    pub mode: &'static str,
    /// The holding client's pid, where its session names it (this
    /// crate's sessions do); else `None`.
    pub pid: Option<u32>,
    /// The holding client's command, where its session names it.
    pub command: Option<String>,
    /// The client's address (`None` over a Unix socket).
    pub host: Option<String>,
    /// The server process of the holding session.
    pub server_pid: i32,
    /// Sessions waiting for it on the server.
    pub waiters: usize,
}

/// The held advisory locks of `namespace` on the server at `url`.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), async_filelock::LockError> {
/// let locks = async_filelock::doctor::list_postgres("host=localhost user=postgres", 0x6166).await?;
/// for lock in &locks {
///     println!("{} {} {:?}", lock.key, lock.mode, lock.pid);
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`LockError::Config`] for a bad connection string; [`LockError::Io`]
/// when the server cannot be reached or queried.
///
/// # Cancel safety
///
/// Cancel safe: it only reads.
pub async fn list_postgres(url: &str, namespace: i32) -> Result<Vec<AdvisoryLock>, LockError> {
    let failed = |e: tokio_postgres::Error| {
        LockError::io(
            "list advisory locks on",
            url,
            std::io::Error::other(e.to_string()),
        )
    };
    let config: tokio_postgres::Config = url.parse().map_err(|e| LockError::Config {
        key: "postgres url".into(),
        reason: format!("{e}"),
    })?;
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(failed)?;
    let driver = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT l.objid::text, l.mode, l.granted, l.pid, a.application_name, host(a.client_addr) \
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.classid = $1::integer::oid AND l.objsubid = 2 \
             ORDER BY l.objid, l.granted DESC, l.pid",
            &[&namespace],
        )
        .await
        .map_err(failed)?;
    drop(client);
    let _ = driver.await;
    let mut held: Vec<AdvisoryLock> = Vec::new();
    let mut waiting: std::collections::HashMap<i32, usize> = Default::default();
    for row in rows {
        let objid: String = row.try_get(0).map_err(failed)?;
        // The key went in as an `i32` cast to `oid` (unsigned).
        let key = objid.parse::<u32>().map_or(0, |k| k as i32);
        let mode: String = row.try_get(1).map_err(failed)?;
        if !row.try_get::<_, bool>(2).map_err(failed)? {
            *waiting.entry(key).or_default() += 1;
            continue;
        }
        let server_pid: i32 = row.try_get(3).map_err(failed)?;
        let name: Option<String> = row.try_get(4).map_err(failed)?;
        let (pid, command) = name
            .as_deref()
            .and_then(crate::backend::postgres::parse_application_name)
            .map_or((None, name.clone()), |(pid, command)| (Some(pid), command));
        held.push(AdvisoryLock {
            key,
            mode: if mode == "ExclusiveLock" {
                "WRITE"
            } else {
                "READ"
            },
            pid,
            command,
            host: row.try_get(5).map_err(failed)?,
            server_pid,
            waiters: 0,
        });
    }
    for lock in &mut held {
        lock.waiters = waiting.get(&lock.key).copied().unwrap_or(0);
    }
    Ok(held)
}

/// The locks as an aligned table (KEY MODE PID COMMAND HOST SERVER_PID
/// WAITERS), `-` for unknown values.
///
/// ```
/// let text = async_filelock::doctor::postgres_table(&[], true);
/// assert!(text.starts_with("KEY"));
/// ```
pub fn postgres_table(locks: &[AdvisoryLock], headings: bool) -> String {
    // A handful of columns of short values: aligned by hand, as `table`
    // does for lock files (no table crate in the library's dependencies).
    let mut rows: Vec<[String; 7]> = Vec::new();
    if headings {
        rows.push(
            [
                "KEY",
                "MODE",
                "PID",
                "COMMAND",
                "HOST",
                "SERVER_PID",
                "WAITERS",
            ]
            .map(String::from),
        );
    }
    for l in locks {
        let unknown = || "-".to_owned();
        rows.push([
            l.key.to_string(),
            l.mode.to_owned(),
            l.pid.map_or_else(unknown, |p| p.to_string()),
            l.command.clone().unwrap_or_else(unknown),
            l.host.clone().unwrap_or_else(unknown),
            l.server_pid.to_string(),
            l.waiters.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join(" ").trim_end());
    }
    out
}

/// The locks as `{"locks":[…]}` with lowercase keys and `null` for unknown
/// values.
///
/// ```
/// assert_eq!(async_filelock::doctor::postgres_json(&[]), "{\"locks\":[]}");
/// ```
pub fn postgres_json(locks: &[AdvisoryLock]) -> String {
    serde_json::json!({ "locks": locks }).to_string()
}

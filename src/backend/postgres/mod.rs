//! The PostgreSQL advisory-lock backend, for hosts that share files but not
//! a kernel (ARCHITECTURE.md, "PostgreSQL").
//!
//! * [`keys`]: a lock's two-int key `(namespace, hash)`, pinned by a test.
//! * [`session`]: one session: its statements, its driver, its loss.
//! * [`error`]: why a session could not be had.
//! * [`service`]: the bounded set of sessions, their runtime thread, the
//!   heartbeat, and the waits woken by release notifications.
//!
//! An attempt is `pg_try_advisory_lock` on the lock's session, never
//! waiting on the server. A wait is such attempts woken by `NOTIFY`
//! (holders notify on release) with a backoff poll as the backstop, so
//! waits hold no connection and a thousand waits cost no more connections
//! than one; and, where the connection bound leaves room for it (two or
//! more), one session is kept for the head wait, which waits on the server
//! in `pg_advisory_lock` under a `lock_timeout` of its remaining time, so
//! that it is granted the moment the holder lets go. A dropped wait there
//! cancels its statement and lets go of a lock granted in the race.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendMetrics, HeldLock, LockRequest, PostgresMetrics, PostgresSettings};
use crate::error::{Holder, LockError};

mod error;
mod held;
pub(crate) mod keys;
mod service;
mod session;

use error::ServiceError;
use keys::Key;
use service::Service;
use session::Session;

/// The longest pause between two attempts of a wait (notifications
/// usually end it sooner).
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// A wait with less time left than this does not wait on the server.
const MIN_SERVER_WAIT: Duration = Duration::from_millis(5);

/// The longest one wait on the server lasts (`lock_timeout`); a longer
/// wait waits again.
const MAX_SERVER_WAIT: Duration = Duration::from_secs(60);

/// The PostgreSQL backend.
#[derive(Debug)]
pub(crate) struct PostgresBackend {
    service: Arc<Service>,
}

impl PostgresBackend {
    /// Parses the connection string and starts the sessions' runtime
    /// thread; nothing connects until the first lock.
    pub(crate) fn new(settings: &PostgresSettings) -> Result<Self, LockError> {
        let url = settings.url.as_deref().unwrap_or("");
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| LockError::Config {
            key: "ASYNC_FILELOCK_PG_URL".into(),
            reason: format!("{} is not a connection string: {e}", settings.server_name()),
        })?;
        let me = std::process::id();
        let command = crate::sys::command_name(me).unwrap_or_default();
        // Who holds a lock is told by its session's application name.
        config
            .application_name(format!("async-filelock pid {me} ({command})"))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .connect_timeout(Duration::from_secs(10));
        let service = Service::start(
            config,
            settings.namespace,
            settings.connections,
            settings.heartbeat,
        )
        .map_err(|e| {
            LockError::io(
                "start the PostgreSQL backend for",
                settings.server_name(),
                e,
            )
        })?;
        Ok(PostgresBackend { service })
    }

    fn key(&self, req: &LockRequest) -> Key {
        Key::of(self.service.namespace, &req.lock_path)
    }

    async fn attempt(&self, req: &LockRequest) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        // The lock dir holds no lock here, but writers keep their `.part`
        // markers in it: it exists and is trusted as with the file
        // backends (checked once a second, by descriptor).
        if let Some(dir) = req.lock_path.parent() {
            crate::backend::dirs::lock_dir(dir, req)?;
        }
        let key = self.key(req);
        let got = self
            .service
            .attempt(key, req.mode)
            .await
            .map_err(|e| db_error("lock", &req.lock_path, &e))?;
        Ok(got.map(|held| Box::new(held) as Box<dyn HeldLock>))
    }
}

fn db_error(op: &'static str, lock_path: &Path, e: &ServiceError) -> LockError {
    LockError::io(op, lock_path, std::io::Error::other(e.to_string()))
}

#[async_trait]
impl Backend for PostgresBackend {
    fn try_lock(&self, req: &LockRequest) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        // The lock layer asks `try_lock_async` of a backend whose attempts
        // are round trips; this is never reached from it.
        Err(LockError::io(
            "lock",
            &*req.lock_path,
            std::io::Error::other("a PostgreSQL lock is taken asynchronously"),
        ))
    }

    fn attempts_are_async(&self) -> bool {
        true
    }

    async fn try_lock_async(
        &self,
        req: &LockRequest,
    ) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        self.attempt(req).await
    }

    async fn wait(
        &self,
        req: &LockRequest,
        deadline: Option<Instant>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Option<Box<dyn HeldLock>>, LockError> {
        let key = self.key(req);
        let mut pause = Duration::from_millis(1);
        loop {
            // Registered before the attempt: a release between a busy
            // attempt and the sleep still wakes it.
            let notify = self.service.watch(key);
            let released = notify.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let expired = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let cancelled = async {
                match cancel {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(expired, cancelled);
            // The attempt is a round trip: bounded by the deadline and the
            // token too (dropped, a lock it got is let go by the service).
            tokio::select! {
                got = self.attempt(req) => {
                    if let Some(held) = got? {
                        return Ok(Some(held));
                    }
                }
                () = &mut expired => return Ok(None),
                () = &mut cancelled => return Ok(None),
            }
            // The head wait waits on the server, on the session kept for
            // it (granted the moment the holder lets go); the others, and
            // this one if that session is busy, poll and hear releases.
            let remaining = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            if remaining.is_none_or(|r| r >= MIN_SERVER_WAIT) {
                let limit = remaining.unwrap_or(MAX_SERVER_WAIT).min(MAX_SERVER_WAIT);
                tokio::select! {
                    got = self.service.wait_on_server(key, req.mode, limit) => {
                        match got.map_err(|e| db_error("wait for", &req.lock_path, &e))? {
                            Some(Some(held)) => return Ok(Some(Box::new(held))),
                            // Timed out or cancelled on the server: the
                            // deadline above decides what comes next.
                            Some(None) => continue,
                            None => {}
                        }
                    }
                    () = &mut expired => return Ok(None),
                    () = &mut cancelled => return Ok(None),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = released => {}
                () = expired => return Ok(None),
                () = cancelled => return Ok(None),
            }
            pause = pause.saturating_mul(2).min(MAX_PAUSE);
        }
    }

    fn wait_here(&self, _req: &LockRequest) -> Option<Result<Box<dyn HeldLock>, LockError>> {
        None
    }

    async fn holder(&self, lock_path: &Path, _since: Instant) -> Option<Holder> {
        let key = Key::of(self.service.namespace, lock_path);
        let lookup = self.service.query(move |session: Arc<Session>| async move {
            let row = session
                .client
                .query_opt(
                    "SELECT a.application_name, host(a.client_addr), l.pid \
                     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                     WHERE l.locktype = 'advisory' AND l.classid = $1::integer::oid \
                       AND l.objid = $2::integer::oid AND l.objsubid = 2 AND l.granted \
                     LIMIT 1",
                    &[&key.namespace, &key.hash],
                )
                .await?;
            Ok(row.map(|row| {
                let name: Option<String> = row.try_get(0).ok().flatten();
                let host: Option<String> = row.try_get(1).ok().flatten();
                let server_pid: i32 = row.try_get(2).unwrap_or(0);
                (name, host, server_pid)
            }))
        });
        let (name, host, server_pid) = tokio::time::timeout(Duration::from_millis(100), lookup)
            .await
            .ok()?
            .ok()??;
        // `async-filelock pid <pid> (<command>)`, as this crate names its
        // sessions; another client is named by its server process.
        let (pid, command) = name
            .as_deref()
            .and_then(parse_application_name)
            .unwrap_or((u32::try_from(server_pid).unwrap_or(0), name.clone()));
        Some(Holder::Process {
            pid,
            command: command.map(String::into_boxed_str),
            held_for: None,
            host: host.map(String::into_boxed_str),
        })
    }

    fn names_holders_off_runtime(&self) -> bool {
        true
    }

    fn metrics(&self) -> BackendMetrics {
        BackendMetrics::Postgres(PostgresMetrics {
            connections_now: self.service.connections() as u64,
            connects: self.service.counters.connects.load(Ordering::Relaxed),
            sessions_lost: self.service.counters.sessions_lost.load(Ordering::Relaxed),
            held_now: u64::try_from(self.service.counters.held.load(Ordering::Relaxed))
                .unwrap_or(0),
        })
    }
}

/// The client pid and command in an application name this crate set.
pub(crate) fn parse_application_name(name: &str) -> Option<(u32, Option<String>)> {
    let rest = name.strip_prefix("async-filelock pid ")?;
    let (pid, command) = rest.split_once(' ').unwrap_or((rest, ""));
    let command = command
        .strip_prefix('(')
        .and_then(|c| c.strip_suffix(')'))
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    Some((pid.parse().ok()?, command))
}

#[cfg(test)]
mod tests {
    use super::parse_application_name;

    #[test]
    fn application_names_give_back_pid_and_command() {
        assert_eq!(
            parse_application_name("async-filelock pid 4121 (worker)"),
            Some((4121, Some("worker".to_owned())))
        );
        assert_eq!(parse_application_name("psql"), None);
    }
}

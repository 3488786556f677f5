//! One database session: a connection, its prepared statements, the task
//! that drives it, and the loss signal every lock held on it shares.
//!
//! Advisory locks belong to a session and stack in it (locked twice,
//! unlocked twice), and the server lets go of them when the session ends:
//! so the session's end (its connection task finishing, or a heartbeat
//! that does not come back) is the loss of every lock on it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Statement};

use super::error::ServiceError;
use super::keys::Key;
use crate::backend::LostSignal;
use crate::mode::LockMode;

/// The table of fencing tokens (one row per lock).
pub(crate) const TOKENS_TABLE: &str = "async_filelock_tokens";

/// A live session.
#[derive(Debug)]
pub(crate) struct Session {
    pub client: Client,
    /// Told to every guard of a lock taken on this session.
    pub lost: LostSignal,
    /// The task driving the connection: aborted when the session is given
    /// up (a missed heartbeat), so that the server ends the session and
    /// lets go of its locks, as the guards were told.
    driver: tokio::task::AbortHandle,
    /// The server process met at connect: a heartbeat meeting another one
    /// means a pooler hands the connection around.
    backend_pid: i32,
    lock_exclusive: Statement,
    lock_shared: Statement,
    unlock_exclusive: Statement,
    unlock_shared: Statement,
    token_exclusive: Statement,
    token_shared: Statement,
}

/// What a lock attempt got.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attempt {
    Granted { token: u64 },
    Busy,
}

/// The channel that holders notify on release and waiters listen to.
pub(crate) fn channel(namespace: i32) -> String {
    format!("async_filelock_{namespace}")
}

impl Session {
    /// Connects, prepares, creates the token table if missing, and starts
    /// the task that drives the connection (and passes notifications to
    /// `notified`). `listen`: whether this session listens to the
    /// namespace's release channel.
    pub(crate) async fn connect(
        config: &Config,
        namespace: i32,
        listen: bool,
        notified: Arc<dyn Fn(i32) + Send + Sync>,
    ) -> Result<Arc<Session>, ServiceError> {
        let (client, mut connection) = config.connect(NoTls).await?;
        let lost = LostSignal::with_lease(None);
        let driver_lost = lost.clone();
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        let driver = tokio::spawn(async move {
            let why = loop {
                match messages.next().await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if let Ok(hash) = n.payload().parse::<i32>() {
                            notified(hash);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("the database session failed: {e}"),
                    None => break "the database session ended".to_owned(),
                }
            };
            driver_lost.mark(why);
        })
        .abort_handle();
        // Settings of this session, each on its own (one implicit
        // transaction for all would roll them back with a failed CREATE).
        // A token write is not waited for on disk (the clock floor covers
        // one lost in a server crash: ARCHITECTURE.md, "Fencing tokens");
        // no statement is cut by a timeout but the waits' own; the server
        // notices a vanished client within about 25 s instead of hours;
        // an idle session holding locks is never ended for idleness.
        for setting in [
            "SET synchronous_commit TO off",
            "SET statement_timeout TO 0",
            "SET idle_session_timeout TO 0",
            "SET idle_in_transaction_session_timeout TO 0",
            "SET tcp_keepalives_idle TO 10",
            "SET tcp_keepalives_interval TO 5",
            "SET tcp_keepalives_count TO 3",
        ] {
            // Best effort: a server that does not know one (over a Unix
            // socket, an older version) still locks.
            let _ = client.batch_execute(setting).await;
        }
        // The table is made only where missing: creating needs a right on
        // the schema that a role using an existing table may not have.
        let exists = client
            .query_one(
                &format!("SELECT to_regclass('{TOKENS_TABLE}') IS NOT NULL"),
                &[],
            )
            .await?
            .try_get::<_, bool>(0)?;
        if !exists {
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {TOKENS_TABLE} (\
                       namespace integer NOT NULL, key integer NOT NULL, token bigint NOT NULL, \
                       PRIMARY KEY (namespace, key))"
                ))
                .await
                .or_else(ignore_concurrent_create)?;
        }
        let backend_pid = refuse_transaction_pooling(&client).await?;
        if listen {
            client
                .batch_execute(&format!("LISTEN {}", channel(namespace)))
                .await?;
        }
        let clock = "(extract(epoch from clock_timestamp()) * 1000000)::bigint";
        let lock_exclusive = client
            .prepare(&format!(
                "WITH l AS MATERIALIZED (SELECT pg_try_advisory_lock($1, $2) AS got) \
                 INSERT INTO {TOKENS_TABLE} AS t (namespace, key, token) \
                 SELECT $1, $2, GREATEST(1, {clock}) FROM l WHERE l.got \
                 ON CONFLICT (namespace, key) DO UPDATE SET token = GREATEST(t.token + 1, {clock}) \
                 RETURNING token"
            ))
            .await?;
        let lock_shared = client
            .prepare(&format!(
                "WITH l AS MATERIALIZED (SELECT pg_try_advisory_lock_shared($1, $2) AS got) \
                 SELECT l.got, COALESCE((SELECT token FROM {TOKENS_TABLE} \
                   WHERE namespace = $1 AND key = $2), 0) FROM l"
            ))
            .await?;
        let token_exclusive = client
            .prepare(&format!(
                "INSERT INTO {TOKENS_TABLE} AS t (namespace, key, token) \
                 VALUES ($1, $2, GREATEST(1, {clock})) \
                 ON CONFLICT (namespace, key) DO UPDATE SET token = GREATEST(t.token + 1, {clock}) \
                 RETURNING token"
            ))
            .await?;
        let token_shared = client
            .prepare(&format!(
                "SELECT COALESCE((SELECT token FROM {TOKENS_TABLE} \
                   WHERE namespace = $1 AND key = $2), 0)"
            ))
            .await?;
        let unlock_exclusive = client
            .prepare("SELECT pg_advisory_unlock($1, $2), pg_notify($3, $4)")
            .await?;
        let unlock_shared = client
            .prepare("SELECT pg_advisory_unlock_shared($1, $2), pg_notify($3, $4)")
            .await?;
        Ok(Arc::new(Session {
            client,
            lost,
            driver,
            backend_pid,
            lock_exclusive,
            lock_shared,
            unlock_exclusive,
            unlock_shared,
            token_exclusive,
            token_shared,
        }))
    }

    /// One attempt at `key` in `mode`, never waiting on the server: with
    /// the fencing token of an exclusive grant (issued in the same
    /// statement, so only to a holder) or the last one for a shared grant.
    pub(crate) async fn attempt(
        &self,
        key: Key,
        mode: LockMode,
    ) -> Result<Attempt, tokio_postgres::Error> {
        match mode {
            LockMode::Exclusive => {
                let rows = match self
                    .client
                    .query(&self.lock_exclusive, &[&key.namespace, &key.hash])
                    .await
                {
                    Ok(rows) => rows,
                    // The token write failed after the lock may have been
                    // taken: a session-level advisory lock outlives the
                    // statement's rollback, so it is let go here.
                    Err(e) => {
                        self.let_go_after_failure(key, mode).await;
                        return Err(e);
                    }
                };
                Ok(match rows.first() {
                    Some(row) => Attempt::Granted {
                        token: u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
                    },
                    None => Attempt::Busy,
                })
            }
            LockMode::Shared => {
                let row = match self
                    .client
                    .query_one(&self.lock_shared, &[&key.namespace, &key.hash])
                    .await
                {
                    Ok(row) => row,
                    Err(e) => {
                        self.let_go_after_failure(key, mode).await;
                        return Err(e);
                    }
                };
                Ok(if row.try_get::<_, bool>(0)? {
                    Attempt::Granted {
                        token: u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
                    }
                } else {
                    Attempt::Busy
                })
            }
        }
    }

    /// Waits on the server for `key` in `mode`, up to `limit` (the
    /// session's `lock_timeout`; `statement_timeout` is off), then issues
    /// the token. A lock-timeout error is checked against `pg_locks`: the
    /// grant can race the timeout, and a lock granted so is kept, not
    /// stranded. Only on a session kept for waiting, which it blocks.
    pub(crate) async fn wait(
        &self,
        key: Key,
        mode: LockMode,
        limit: Duration,
    ) -> Result<Attempt, tokio_postgres::Error> {
        let ms = limit.as_millis().clamp(1, i32::MAX as u128);
        self.client
            .batch_execute(&format!("SET lock_timeout TO {ms}"))
            .await?;
        let statement = match mode {
            LockMode::Exclusive => "SELECT pg_advisory_lock($1, $2)",
            LockMode::Shared => "SELECT pg_advisory_lock_shared($1, $2)",
        };
        let waited = self
            .client
            .query_one(statement, &[&key.namespace, &key.hash])
            .await;
        // Not left set: the token write and an unlock's NOTIFY must not
        // time out on it.
        let reset = self.client.batch_execute("RESET lock_timeout").await;
        match waited {
            Ok(_) => {}
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                if !self.holds(key).await? {
                    return Ok(Attempt::Busy);
                }
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = reset {
            self.let_go_after_failure(key, mode).await;
            return Err(e);
        }
        match self.token(key, mode).await {
            Ok(granted) => Ok(granted),
            Err(e) => {
                self.let_go_after_failure(key, mode).await;
                Err(e)
            }
        }
    }

    /// After a statement that may have taken `key` failed: lets go of it if
    /// this session holds it, so that no lock is stranded on the server.
    async fn let_go_after_failure(&self, key: Key, mode: LockMode) {
        if self.holds(key).await.unwrap_or(false) {
            let _ = self.unlock(key, mode).await;
        }
    }

    /// Whether this session holds `key` (granted), by `pg_locks`.
    pub(crate) async fn holds(&self, key: Key) -> Result<bool, tokio_postgres::Error> {
        let row = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() \
                   AND locktype = 'advisory' AND classid = $1::integer::oid \
                   AND objid = $2::integer::oid AND objsubid = 2 AND granted)",
                &[&key.namespace, &key.hash],
            )
            .await?;
        row.try_get(0)
    }

    /// The token of a holding just granted on this session.
    async fn token(&self, key: Key, mode: LockMode) -> Result<Attempt, tokio_postgres::Error> {
        let statement = match mode {
            LockMode::Exclusive => &self.token_exclusive,
            LockMode::Shared => &self.token_shared,
        };
        let row = self
            .client
            .query_one(statement, &[&key.namespace, &key.hash])
            .await?;
        Ok(Attempt::Granted {
            token: u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
        })
    }

    /// Lets go of one holding of `key` and tells the namespace's waiters.
    pub(crate) async fn unlock(
        &self,
        key: Key,
        mode: LockMode,
    ) -> Result<(), tokio_postgres::Error> {
        let statement = match mode {
            LockMode::Exclusive => &self.unlock_exclusive,
            LockMode::Shared => &self.unlock_shared,
        };
        let payload = key.hash.to_string();
        self.client
            .query_one(
                statement,
                &[&key.namespace, &key.hash, &channel(key.namespace), &payload],
            )
            .await?;
        Ok(())
    }

    /// A round trip within `limit` that meets the server process met at
    /// connect: the heartbeat. `Err` says what is wrong.
    pub(crate) async fn alive(&self, limit: Duration) -> Result<(), String> {
        let pid =
            tokio::time::timeout(limit, self.client.query_one("SELECT pg_backend_pid()", &[]))
                .await
                .map_err(|_| format!("the database session missed its heartbeat ({limit:?})"))?
                .and_then(|row| row.try_get::<_, i32>(0))
                .map_err(|e| format!("the database session failed its heartbeat: {e}"))?;
        if pid != self.backend_pid {
            return Err(format!(
                "the connection now reaches server process {pid}, not {}: a pooler in transaction mode breaks advisory locks; connect to the server directly",
                self.backend_pid
            ));
        }
        Ok(())
    }

    /// Gives the session up: every guard on it is told `why`, and the
    /// connection is closed so that the server lets go of its locks too.
    pub(crate) fn give_up(&self, why: String) {
        self.lost.mark(why);
        self.driver.abort();
    }
}

/// Advisory locks belong to a server session: behind a pooler that hands
/// each transaction to another server session (PgBouncer in transaction
/// mode), a lock would be taken on one and "released" on another. Three
/// statements in a row on one connection must meet one server process.
async fn refuse_transaction_pooling(client: &Client) -> Result<i32, ServiceError> {
    let mut pids = Vec::with_capacity(3);
    for _ in 0..3 {
        let row = client.query_one("SELECT pg_backend_pid()", &[]).await?;
        pids.push(row.try_get::<_, i32>(0)?);
    }
    if pids.windows(2).any(|w| w[0] != w[1]) {
        return Err(ServiceError::Refused(format!(
            "the connection reached server processes {pids:?} in three statements: a pooler in transaction mode (PgBouncer pool_mode=transaction) breaks advisory locks; connect to the server directly or use session pooling"
        )));
    }
    Ok(pids[0])
}

/// Two sessions creating the token table at once: the one that loses the
/// race meets the table (duplicate table), its row type (duplicate object:
/// `type "async_filelock_tokens" already exists`) or a catalog row (unique
/// violation) made by the other; the table exists either way.
fn ignore_concurrent_create(e: tokio_postgres::Error) -> Result<(), tokio_postgres::Error> {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(code)
            if *code == SqlState::UNIQUE_VIOLATION
                || *code == SqlState::DUPLICATE_TABLE
                || *code == SqlState::DUPLICATE_OBJECT =>
        {
            Ok(())
        }
        _ => Err(e),
    }
}

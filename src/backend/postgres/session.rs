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
        tokio::spawn(async move {
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
        });
        // Each statement commits on its own; a token write is not waited
        // for on disk (the clock floor covers one lost in a server crash:
        // see ARCHITECTURE.md, "Fencing tokens").
        client
            .batch_execute(&format!(
                "SET synchronous_commit TO off; SET statement_timeout TO 0; \
                 CREATE TABLE IF NOT EXISTS {TOKENS_TABLE} (\
                   namespace integer NOT NULL, key integer NOT NULL, token bigint NOT NULL, \
                   PRIMARY KEY (namespace, key))"
            ))
            .await
            .or_else(ignore_concurrent_create)?;
        refuse_transaction_pooling(&client).await?;
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
                let rows = self
                    .client
                    .query(&self.lock_exclusive, &[&key.namespace, &key.hash])
                    .await?;
                Ok(match rows.first() {
                    Some(row) => Attempt::Granted {
                        token: u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
                    },
                    None => Attempt::Busy,
                })
            }
            LockMode::Shared => {
                let row = self
                    .client
                    .query_one(&self.lock_shared, &[&key.namespace, &key.hash])
                    .await?;
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
        match self
            .client
            .query_one(statement, &[&key.namespace, &key.hash])
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                if !self.holds(key).await? {
                    return Ok(Attempt::Busy);
                }
            }
            Err(e) => return Err(e),
        }
        self.token(key, mode).await
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

    /// A round trip within `limit`: the heartbeat.
    pub(crate) async fn alive(&self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.client.simple_query("SELECT 1")).await,
            Ok(Ok(_))
        )
    }
}

/// Advisory locks belong to a server session: behind a pooler that hands
/// each transaction to another server session (PgBouncer in transaction
/// mode), a lock would be taken on one and "released" on another. Three
/// statements in a row on one connection must meet one server process.
async fn refuse_transaction_pooling(client: &Client) -> Result<(), ServiceError> {
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
    Ok(())
}

/// Two sessions creating the token table at once: one of them meets a
/// unique violation on the catalog; the table exists either way.
fn ignore_concurrent_create(e: tokio_postgres::Error) -> Result<(), tokio_postgres::Error> {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::DUPLICATE_TABLE => {
            Ok(())
        }
        _ => Err(e),
    }
}

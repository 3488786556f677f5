//! The sessions of one PostgreSQL backend: at most `connections` of them,
//! driven by a runtime on a thread of the crate's own (so that they live
//! whatever runtime the callers use, and a caller's runtime shutting down
//! ends none of them), with a heartbeat, and the registry of waits woken
//! by release notifications.
//!
//! Every lock maps to one session by its key: a lock is always taken and
//! let go on the same session, and two holders of one lock in this process
//! (one letting go as the next takes it) stack on the server instead of
//! excluding each other.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use tokio_postgres::Config;

use super::error::ServiceError;
use super::held::PgHeld;
use super::keys::Key;
use super::session::{Attempt, Session};
use crate::mode::LockMode;

/// Counters of one backend's sessions.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connects: std::sync::atomic::AtomicU64,
    pub sessions_lost: std::sync::atomic::AtomicU64,
    /// Locks held through this backend now.
    pub held: Arc<std::sync::atomic::AtomicI64>,
}

/// The sessions and their runtime.
#[derive(Debug)]
pub(crate) struct Service {
    runtime: tokio::runtime::Handle,
    config: Config,
    pub namespace: i32,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Session>>>>,
    /// Sessions kept for waits on the server (one, when two or more
    /// connections are allowed): the head wait of a busy lock waits there,
    /// so that it is granted the moment the holder lets go, as a bare
    /// `pg_advisory_lock` is; every other wait costs no connection.
    waiting: Vec<tokio::sync::Mutex<Option<Arc<Session>>>>,
    waiting_free: Arc<tokio::sync::Semaphore>,
    /// Dropped with the service: ends its runtime thread.
    _stop: tokio::sync::oneshot::Sender<()>,
    waits: Arc<Mutex<FxHashMap<i32, Weak<Notify>>>>,
    pub counters: Counters,
}

impl Service {
    /// Starts the runtime thread. Nothing connects until first used.
    pub(crate) fn start(
        config: Config,
        namespace: i32,
        connections: usize,
        heartbeat: Duration,
    ) -> std::io::Result<Arc<Service>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let waiting = usize::from(connections >= 2);
        // The thread lives as long as the service (the handles that share
        // it): then its runtime, with every session, is dropped.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("async-filelock-postgres".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
        let service = Arc::new(Service {
            runtime: handle,
            config,
            namespace,
            slots: (0..connections.max(1) - waiting)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            waiting: (0..waiting)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            waiting_free: Arc::new(tokio::sync::Semaphore::new(waiting)),
            _stop: stop,
            waits: Arc::default(),
            counters: Counters::default(),
        });
        let beating = Arc::downgrade(&service);
        service.runtime.spawn(heartbeats(beating, heartbeat));
        Ok(service)
    }

    /// Sessions open now.
    pub(crate) fn connections(&self) -> usize {
        self.slots
            .iter()
            .chain(&self.waiting)
            .filter(|s| {
                s.try_lock()
                    .map_or(true, |s| s.as_ref().is_some_and(|s| !s.lost.is_lost()))
            })
            .count()
    }

    /// The session of `key` (connecting if it has none or it was lost).
    async fn session(self: &Arc<Self>, index: usize) -> Result<Arc<Session>, ServiceError> {
        self.session_in(&self.slots[index], index == 0).await
    }

    /// The session in `slot`, connecting if it has none or it was lost.
    async fn session_in(
        self: &Arc<Self>,
        slot: &tokio::sync::Mutex<Option<Arc<Session>>>,
        listen: bool,
    ) -> Result<Arc<Session>, ServiceError> {
        let mut slot = slot.lock().await;
        if let Some(session) = slot.as_ref()
            && !session.lost.is_lost()
        {
            return Ok(Arc::clone(session));
        }
        if slot.take().is_some() {
            self.counters
                .sessions_lost
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let waits = Arc::clone(&self.waits);
        let notified: Arc<dyn Fn(i32) + Send + Sync> = Arc::new(move |hash| {
            let waits = waits.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(notify) = waits.get(&hash).and_then(Weak::upgrade) {
                notify.notify_waiters();
            }
        });
        let (config, namespace) = (self.config.clone(), self.namespace);
        // Connected on the service's runtime, which drives the connection.
        let connect = self
            .runtime
            .spawn(async move { Session::connect(&config, namespace, listen, notified).await });
        let session = connect.await.map_err(|_| ServiceError::Gone)??;
        self.counters
            .connects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    fn index(&self, key: Key) -> usize {
        (key.hash as u32 as usize) % self.slots.len()
    }

    /// One attempt at `key`, never waiting on the server. Run as a task of
    /// the service, the holding made there: if the caller gives up (drops
    /// this future, or the answer unread), a lock it got is let go, never
    /// stranded.
    pub(crate) async fn attempt(
        self: &Arc<Self>,
        key: Key,
        mode: LockMode,
    ) -> Result<Option<PgHeld>, ServiceError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let service = Arc::clone(self);
        self.runtime.spawn(async move {
            let result = async {
                let session = service.session(service.index(key)).await?;
                match session.attempt(key, mode).await? {
                    Attempt::Granted { token } => {
                        Ok(Some(service.holding(session, key, mode, token, false)))
                    }
                    Attempt::Busy => Ok(None),
                }
            }
            .await;
            // Unsent or unread, the holding is dropped, which lets go.
            let _ = reply.send(result);
        });
        answer.await.map_err(|_| ServiceError::Gone)?
    }

    fn holding(
        &self,
        session: Arc<Session>,
        key: Key,
        mode: LockMode,
        token: u64,
        waiting: bool,
    ) -> PgHeld {
        PgHeld::new(
            self.runtime.clone(),
            session,
            key,
            mode,
            token,
            Arc::clone(&self.counters.held),
            waiting.then(|| Arc::clone(&self.waiting_free)),
        )
    }

    /// Waits on the server for `key` on a waiting session, up to `limit`,
    /// if one is free now (`Ok(None)` if not: the caller polls). Run as a
    /// task of the service: if the caller gives up, the statement is
    /// cancelled on the server (again and again until it ends: a cancel
    /// that arrives between statements is ignored by the server), and a
    /// lock granted in the race let go.
    pub(crate) async fn wait_on_server(
        self: &Arc<Self>,
        key: Key,
        mode: LockMode,
        limit: Duration,
    ) -> Result<Option<Option<PgHeld>>, ServiceError> {
        let Ok(permit) = Arc::clone(&self.waiting_free).try_acquire_owned() else {
            return Ok(None);
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let service = Arc::clone(self);
        self.runtime.spawn(async move {
            let mut reply = reply;
            let result = async {
                if reply.is_closed() {
                    return Ok(None);
                }
                let session = service.session_in(&service.waiting[0], false).await?;
                if reply.is_closed() {
                    return Ok(None);
                }
                let cancel = session.client.cancel_token();
                let wait = session.wait(key, mode, limit);
                tokio::pin!(wait);
                let outcome = tokio::select! {
                    outcome = &mut wait => outcome,
                    () = reply.closed() => loop {
                        let _ = cancel.cancel_query(tokio_postgres::NoTls).await;
                        tokio::select! {
                            outcome = &mut wait => break outcome,
                            () = tokio::time::sleep(Duration::from_millis(20)) => {}
                        }
                    },
                };
                match outcome {
                    Ok(Attempt::Granted { token }) => {
                        // The permit goes with the holding: given back once
                        // it is let go (`PgHeld`), also if nobody takes it.
                        permit.forget();
                        Ok(Some(service.holding(
                            Arc::clone(&session),
                            key,
                            mode,
                            token,
                            true,
                        )))
                    }
                    Ok(Attempt::Busy) => Ok(None),
                    // Cancelled by the server or the session ended: busy
                    // this time, and the session is looked at next use.
                    Err(e) if e.code().is_some() => Ok(None),
                    Err(e) => Err(ServiceError::Database(e)),
                }
            }
            .await;
            let _ = reply.send(result);
        });
        answer.await.map_err(|_| ServiceError::Gone)?.map(Some)
    }

    /// The notify a wait on `key` is woken by when a holder lets go.
    pub(crate) fn watch(&self, key: Key) -> Arc<Notify> {
        let mut waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = waits.get(&key.hash).and_then(Weak::upgrade) {
            return notify;
        }
        waits.retain(|_, w| w.strong_count() > 0);
        let notify = Arc::new(Notify::new());
        waits.insert(key.hash, Arc::downgrade(&notify));
        notify
    }

    /// Runs `work` with a session (the first one), on the service runtime.
    pub(crate) async fn query<R, F, Fut>(self: &Arc<Self>, work: F) -> Result<R, ServiceError>
    where
        F: FnOnce(Arc<Session>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<R, ServiceError>> + Send,
        R: Send + 'static,
    {
        let service = Arc::clone(self);
        self.runtime
            .spawn(async move {
                let session = service.session(0).await?;
                work(session).await
            })
            .await
            .map_err(|_| ServiceError::Gone)?
    }
}

/// Every `every`: a round trip on each open session (the waiting one too,
/// when it is neither in a wait nor holding a lock granted there), given
/// twice `every` to come back. A session that fails it is given up: its
/// guards are told, and the connection is closed so that the server lets
/// go of its locks. The listening session is kept open so that waits hear
/// releases.
async fn heartbeats(service: Weak<Service>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        let limit = every.saturating_mul(2);
        let mut sessions = Vec::new();
        for slot in &service.slots {
            sessions.extend(slot.lock().await.clone());
        }
        // The waiting session only when idle: in a wait it cannot answer.
        let idle_waiting = Arc::clone(&service.waiting_free).try_acquire_owned().ok();
        if idle_waiting.is_some() {
            for slot in &service.waiting {
                sessions.extend(slot.lock().await.clone());
            }
        }
        let checks = sessions
            .into_iter()
            .filter(|s| !s.lost.is_lost())
            .map(|session| async move {
                if let Err(why) = session.alive(limit).await {
                    session.give_up(why);
                }
            });
        futures::future::join_all(checks).await;
        drop(idle_waiting);
        if service.waits.lock().is_ok_and(|w| !w.is_empty()) {
            let _ = service.session(0).await;
        }
    }
}

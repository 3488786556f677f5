//! [`SharedHeld`]: the one OS shared lock that all shared holders of a lock
//! path in this process use (law 5). The last holder to let go releases it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::backend::{HeldLock, LostSignal};
use crate::error::LockError;
use crate::fencing::FencingToken;

#[derive(Debug)]
pub(crate) struct SharedHeld {
    os: Mutex<Option<Box<dyn HeldLock>>>,
    remove_on_release: bool,
    lock_path: Arc<Path>,
}

impl SharedHeld {
    pub fn new(os: Box<dyn HeldLock>, remove_on_release: bool, lock_path: Arc<Path>) -> Self {
        SharedHeld {
            os: Mutex::new(Some(os)),
            remove_on_release,
            lock_path,
        }
    }
}

impl SharedHeld {
    /// The fencing token of the one backend lock all shared holders use.
    pub fn token(&self) -> Result<FencingToken, LockError> {
        match self.os.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(os) => os.token(),
            None => Err(LockError::Lost {
                category: crate::category::Category::Artifact,
                target: Default::default(),
                lock_path: self.lock_path.to_path_buf(),
                why: "it was released".into(),
            }),
        }
    }

    /// How the backend lock tells its loss, if it can be lost.
    pub fn lost(&self) -> Option<LostSignal> {
        self.os
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|os| os.lost().cloned())
    }
}

impl Drop for SharedHeld {
    fn drop(&mut self) {
        // Reached only from a guard's release, which runs where blocking is
        // allowed whenever `remove_on_release` may make this block.
        let os = self.os.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        // How long this process's shared holders kept the OS lock between
        // them is not known here: `None`, a release told to every waiter.
        if let Some(Err(e)) = os.map(|os| os.release(self.remove_on_release, None)) {
            tracing::warn!(lock_path = %self.lock_path.display(), error = %e, "releasing shared lock");
        }
    }
}

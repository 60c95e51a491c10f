//! Graceful shutdown as a value passed to every task (the mini-redis pattern): tasks hold a
//! [`Shutdown`] and stop taking new work once it fires; the server waits for in-flight work
//! through [`InFlight`], bounded by the drain timeout.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Fires once, when the server starts to drain.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when shutdown begins (at once if it already has).
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which only happens as the server itself ends.
        let _ = self.rx.wait_for(|&fired| fired).await;
    }
}

/// Whether the server should get traffic: `/readyz` answers 200 only while it is serving (not
/// draining) and its store answers.
#[derive(Clone, Default)]
pub struct Readiness(Arc<(AtomicBool, AtomicBool)>);

impl Readiness {
    pub fn set(&self, serving: bool) {
        self.0 .0.store(serving, Ordering::Release);
    }
    pub fn set_store(&self, reachable: bool) {
        self.0 .1.store(reachable, Ordering::Release);
    }
    pub fn get(&self) -> bool {
        self.0 .0.load(Ordering::Acquire) && self.store_ok()
    }
    pub fn store_ok(&self) -> bool {
        self.0 .1.load(Ordering::Acquire)
    }
}

/// Counts work that must finish before the process exits (server transactions being answered,
/// client transactions waiting for a response).
#[derive(Clone, Default)]
pub struct InFlight(Arc<(AtomicUsize, Notify)>);

pub struct InFlightGuard(InFlight);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard {
        self.0 .0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.0 .0.load(Ordering::Acquire)
    }

    /// Completes when nothing is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.0 .1.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0 .0 .0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0 .0 .1.notify_waiters();
        }
    }
}

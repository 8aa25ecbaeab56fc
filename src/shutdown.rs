//! [`Shutdown`]: the one stop signal of a process, in the style of
//! mini-redis. Triggered by the first SIGINT/SIGTERM (a second one exits at
//! once) or by the code itself; read by the blocking consume loop and the
//! generator threads as a cheap flag, awaited by async tasks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    triggered: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything holding a clone to stop. Returns whether it had been
    /// asked before.
    pub fn trigger(&self) -> bool {
        let before = self.inner.triggered.swap(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
        before
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Relaxed)
    }

    /// Completes once [`trigger`](Self::trigger) was called.
    pub async fn triggered(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }

    /// Triggers on the first SIGINT/SIGTERM; a second one exits the process
    /// at once (code 130). Call from within a tokio runtime.
    pub fn on_signals(&self) {
        let s = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                else {
                    return;
                };
                for _ in 0..2 {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    if s.trigger() {
                        eprintln!("second signal: exiting now");
                        std::process::exit(130);
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
                s.trigger();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_see_the_trigger_and_waiters_wake() {
        let s = Shutdown::new();
        let c = s.clone();
        let waiter = tokio::spawn(async move { c.triggered().await });
        tokio::task::yield_now().await;
        assert!(!s.is_triggered());
        assert!(!s.trigger(), "first trigger");
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("woken").expect("joined");
        assert!(s.trigger(), "second trigger reports the first");
        s.triggered().await; // already triggered: returns at once
    }
}

//! A node's departure: the one signal, raised once when the node starts leaving (SIGTERM), that
//! every part which must act before the node stops listening watches: the Raft network refuses
//! to ask for votes, and every watch stream ends with `ShuttingDown`. The sequence it starts is
//! written, and enforced, in `lib.rs` (`serve_incoming`).

use std::sync::Arc;

use tokio::sync::watch;

/// Cloned into whatever must notice the departure; raised once, never lowered.
#[derive(Debug, Clone)]
pub struct Leaving {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Leaving {
    fn default() -> Self {
        Leaving { tx: Arc::new(watch::Sender::new(false)) }
    }
}

impl Leaving {
    /// Raises the signal (again is a no-op).
    pub fn begin(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the node has started leaving.
    pub fn has_begun(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the node has started leaving (at once if it has).
    pub async fn begun(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while this future runs.
        let _ = rx.wait_for(|leaving| *leaving).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_departure_including_waiters_that_came_before_it() {
        let leaving = Leaving::default();
        let waiter = tokio::spawn({
            let l = leaving.clone();
            async move { l.begun().await }
        });
        assert!(!leaving.has_begun());
        leaving.clone().begin();
        assert!(leaving.has_begun());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("woken").expect("task");
        // Late waiters resolve at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), leaving.begun()).await.expect("at once");
    }
}

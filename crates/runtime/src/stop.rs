//! Stopping long-running loops (the runner, the outbox relay) on a future the caller chooses.
//!
//! The future runs on its own task and flips a watch channel: a future suspended mid-way (holding a pooled database
//! connection, say) must never sit inside a loop's `select!` while the loop's own work needs that connection.

use std::future::Future;

use tokio::sync::watch;

/// Turns true once the stop future has resolved (or its task died). Aborts that task when dropped.
#[derive(Debug)]
pub struct StopSignal {
    stopped: watch::Receiver<bool>,
    watcher: tokio::task::JoinHandle<()>,
}

impl StopSignal {
    pub fn new(stop: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, stopped) = watch::channel(false);
        let watcher = tokio::spawn(async move {
            stop.await;
            let _ = tx.send(true);
        });
        StopSignal { stopped, watcher }
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Resolves once stopped; safe to use in `select!` again and again.
    pub async fn wait(&mut self) {
        let _ = self.stopped.wait_for(|s| *s).await;
    }

    /// Another receiver of the same signal, for a future that must outlive a borrow of this one.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.stopped.clone()
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

//! The background flusher behind `fsync=interval`: one thread that fsyncs each registered log every `fsync.interval.ms`,
//! or at once when an appender reports `fsync.interval.bytes` of unsynced data.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::log::Log;

/// How often the flusher looks at its logs; interval deadlines are met to within this.
const TICK: Duration = Duration::from_millis(5);

#[derive(Debug, Default)]
pub(crate) struct FlushSignal {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl FlushSignal {
    pub(crate) fn wake(&self) {
        *self.woken.lock() = true;
        self.cv.notify_one();
    }
}

#[derive(Debug, Default)]
struct Shared {
    logs: Mutex<Vec<Weak<Log>>>,
    signal: Arc<FlushSignal>,
    stop: AtomicBool,
}

/// Owns the flusher thread; stops it when dropped.
#[derive(Debug)]
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub fn start() -> std::io::Result<Flusher> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("weir-flusher".into()).spawn(move || run(s))?;
        Ok(Flusher { shared, thread: Some(thread) })
    }

    /// Puts a log under the flusher's care until the log is dropped.
    pub fn register(&self, log: &Arc<Log>) {
        log.set_flush_signal(self.shared.signal.clone());
        self.shared.logs.lock().push(Arc::downgrade(log));
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.signal.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Acquire) {
        {
            let mut woken = shared.signal.woken.lock();
            if !*woken {
                shared.signal.cv.wait_for(&mut woken, TICK);
            }
            *woken = false;
        }
        let logs: Vec<Arc<Log>> = {
            let mut logs = shared.logs.lock();
            logs.retain(|w| w.strong_count() > 0);
            logs.iter().filter_map(Weak::upgrade).collect()
        };
        for log in logs {
            if let Err(e) = log.flush_if_due() {
                tracing::error!(log = %log.dir().display(), "background fsync failed: {e}");
            }
        }
    }
}

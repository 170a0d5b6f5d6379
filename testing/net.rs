//! Test helpers shared by more than one crate's integration tests, included with `#[path]` (they are a few lines,
//! not worth a crate): log lines captured for assertions, and telling whether a server closed a connection.
// Each including file uses its own subset.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

/// Log lines, captured for the assertions.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Installs the process's log subscriber (once per test process: nextest runs each test in its own).
    pub fn install() -> CapturedLogs {
        let captured = CapturedLogs::default();
        let writer = captured.clone();
        tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).init();
        captured
    }

    pub fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap()).matches(needle).count()
    }
}

/// True if the server closes `s` within its read timeout (end of file or a reset); false if it stays open.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

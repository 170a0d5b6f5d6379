//! One process owns a data directory at a time: an exclusive advisory lock on `<data-dir>/.lock`, holding the owner's
//! pid and start time so a second process can say who is in the way. The kernel drops the lock when the owner dies,
//! so a `kill -9` never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::BrokerError;

#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, BrokerError> {
        let dir_err = |source| BrokerError::DataDir { path: data_dir.to_owned(), source };
        std::fs::create_dir_all(data_dir).map_err(dir_err)?;
        let path = data_dir.join(".lock");
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(dir_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                return Err(BrokerError::Locked {
                    path: data_dir.to_owned(),
                    owner: if owner.is_empty() { "owner unknown".into() } else { owner.to_string() },
                });
            }
            Err(TryLockError::Error(e)) => return Err(dir_err(e)),
        }
        let cmd = std::env::args().next().unwrap_or_default();
        let started = weir_log::now_ms();
        let note = format!("pid {} ({cmd}), started at {started} ms since the epoch", std::process::id());
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(note.as_bytes()))
            .map_err(dir_err)?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

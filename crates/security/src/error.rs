//! The security crate's one error type: what a CLI prints and what stops `weir up` when a store is bad.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of a store file that does not parse or holds something invalid.
    #[error("{path}:{line}: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    #[error("invalid ACL: {0}")]
    InvalidAcl(String),
    #[error("invalid principal {0:?}: expected TYPE:NAME, such as User:alice")]
    InvalidPrincipal(String),
    #[error("invalid user name {0:?}: it must be 1 to 255 characters, without control characters")]
    InvalidUser(String),
    #[error("no user {0:?}")]
    UnknownUser(String),
    #[error("{0}")]
    InvalidCredential(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

//! The store's typed error.
//!
//! Every message carries its cause (the way the earlier `Error::Other` strings did), so it
//! reads the same whether the printer walks the error chain (`{:#}`) or not; the causes are
//! therefore fields, not `#[source]`s.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the durable history.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {}: {error}", dir.display())]
    CreateDir { dir: PathBuf, error: std::io::Error },
    #[error("cannot write in data directory {}: {error}", dir.display())]
    LockFile { dir: PathBuf, error: std::io::Error },
    #[error(
        "data directory {} is in use by another server (give each its own --data-dir)",
        dir.display()
    )]
    InUse { dir: PathBuf },
    /// Opening, upgrading, repairing or reading back the database failed.
    #[error("database {}: {error}", path.display())]
    Open {
        path: PathBuf,
        error: rusqlite::Error,
    },
    /// The database's schema version is not one this server knows (a newer lanmon wrote it).
    #[error(
        "database {}: schema version {found} is newer than this server's ({known}); run a newer lanmon or use another --data-dir",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: String,
        known: i64,
    },
    /// A statement failed (a commit, a read): SQLite's own words, e.g. "database or disk is
    /// full".
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A hello or sample could not be encoded as JSON for its column.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl StoreError {
    /// The same error, said to be about the database at `path` (while opening it).
    pub(super) fn at(self, path: &Path) -> Self {
        match self {
            StoreError::Sqlite(error) => StoreError::Open {
                path: path.to_path_buf(),
                error,
            },
            other => other,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

//! The library's error type: every message names the file (when there is one) and what was wrong.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder that could not be used, with the reason.
    #[error("{}: {problem}", path.display())]
    BadInput { path: PathBuf, problem: String },

    /// An operating-system error while reading or writing a path.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Arguments that do not fit together (no file involved).
    #[error("{0}")]
    Invalid(String),

    /// The user cancelled the work.
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_input(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::BadInput { path: path.as_ref().to_path_buf(), problem: problem.into() }
    }

    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }
}

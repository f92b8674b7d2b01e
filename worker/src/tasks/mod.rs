//! The built-in tasks of the `jobgate-worker` binary.
//!
//! - [`thumbnail`]: resizes uploaded images into thumbnails.
//! - [`exec`]: runs any command and turns its stdout lines into progress,
//!   outputs and a summary.

pub mod exec;
pub mod thumbnail;

use crate::signal::StopSignal;

/// How a task ended, which decides the worker's exit code.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The task wrote `result.json`; the worker exits 0.
    Succeeded,
    /// The task failed without writing `result.json`.
    Failed {
        /// Exit code of the worker: 1 for failed work, 2 for invalid parameters,
        /// or the exit code of the command that `exec` ran.
        exit_code: u8,
        /// Description of the failure, for stderr and the last progress message.
        message: String,
    },
    /// A stop signal ended the task; the worker exits 128 plus the signal number.
    Stopped(StopSignal),
}

/// Exit code for invalid parameters or configuration, as for command-line usage errors.
pub const EXIT_INVALID: u8 = 2;
/// Exit code for work that failed.
pub const EXIT_FAILED: u8 = 1;

impl Outcome {
    /// Builds the outcome of parameters or configuration that the task rejects.
    pub fn invalid(message: impl Into<String>) -> Outcome {
        Outcome::Failed {
            exit_code: EXIT_INVALID,
            message: message.into(),
        }
    }

    /// Builds the outcome of work that failed.
    pub fn failed(message: impl Into<String>) -> Outcome {
        Outcome::Failed {
            exit_code: EXIT_FAILED,
            message: message.into(),
        }
    }
}

/// Returns the file name part of a store key, such as `DSC_001.jpg` for
/// `uploads/<id>/DSC_001.jpg`.
pub(crate) fn key_file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Returns `base` if unused, otherwise the first free `base-2`, `base-3`, ...,
/// and records the result as used.
pub(crate) fn unique_name(base: &str, used: &mut std::collections::HashSet<String>) -> String {
    let mut candidate = base.to_owned();
    let mut suffix = 2;
    while used.contains(&candidate) {
        candidate = format!("{base}-{suffix}");
        suffix += 1;
    }
    used.insert(candidate.clone());
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_name_adds_suffixes() {
        let mut used = std::collections::HashSet::new();
        assert_eq!(unique_name("photo", &mut used), "photo");
        assert_eq!(unique_name("photo", &mut used), "photo-2");
        assert_eq!(unique_name("photo", &mut used), "photo-3");
        assert_eq!(unique_name("photo-2", &mut used), "photo-2-2");
    }

    #[test]
    fn key_file_name_takes_last_segment() {
        assert_eq!(key_file_name("uploads/abc/DSC_001.jpg"), "DSC_001.jpg");
        assert_eq!(key_file_name("plain"), "plain");
    }
}

//! The documents that workers and the gateway exchange through the object store.
//!
//! Every job owns the keys under `jobs/<id>/` (below the store's prefix):
//!
//! | key | written by | type |
//! | --- | --- | --- |
//! | `request.json` | gateway, at submit | [`RequestDoc`] |
//! | `progress.json` | worker, throttled | [`ProgressDoc`] |
//! | `result.json` | worker, last of all | [`ResultDoc`] |
//! | `outputs/<name>` | worker | the output files |
//! | `status.json` | gateway, once terminal | the gateway's final job view |
//!
//! Uploaded inputs live under `uploads/<upload-id>/<file name>`.
//!
//! A worker written in another language only has to PUT `progress.json` and
//! `result.json` in these shapes. Unknown fields are ignored on read, so both
//! sides can add optional fields without breaking older peers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Environment variable that carries the job id into every container.
pub const ENV_JOB_ID: &str = "JOBGATE_JOB_ID";
/// Environment variable that carries the store URL (`s3://bucket/prefix` or `file:///path`).
pub const ENV_STORE: &str = "JOBGATE_STORE";

/// File name of the request record under `jobs/<id>/`.
pub const REQUEST_FILE: &str = "request.json";
/// File name of the progress document under `jobs/<id>/`.
pub const PROGRESS_FILE: &str = "progress.json";
/// File name of the result document under `jobs/<id>/`.
pub const RESULT_FILE: &str = "result.json";
/// File name of the gateway's final job record under `jobs/<id>/`.
pub const STATUS_FILE: &str = "status.json";

/// Maximum length of an output name, in bytes.
pub const MAX_OUTPUT_NAME_LEN: usize = 255;

/// Returns the key of a job's document, for example `jobs/<id>/progress.json`.
pub fn job_key(id: &str, file: &str) -> String {
    format!("jobs/{id}/{file}")
}

/// Returns the key of a job's output file.
pub fn output_key(id: &str, name: &str) -> String {
    format!("jobs/{id}/outputs/{name}")
}

/// Checks that an output name is a single safe path segment.
///
/// Output names become object keys and file names, so they may not be empty,
/// contain `/` or `\`, be `.` or `..`, start with a dot, or contain control
/// characters.
pub fn validate_output_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("output name is empty".into());
    }
    if name.len() > MAX_OUTPUT_NAME_LEN {
        return Err(format!(
            "output name is {} bytes long; the maximum is {MAX_OUTPUT_NAME_LEN}",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err(format!("output name {name:?} starts with a dot"));
    }
    if name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return Err(format!(
            "output name {name:?} contains a slash, backslash or control character"
        ));
    }
    Ok(())
}

/// The request record that the gateway writes at submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestDoc {
    /// Job id: a lowercase hyphenated UUIDv7.
    pub id: String,
    /// Template name.
    pub template: String,
    /// Parameters after validation, with defaults applied.
    pub parameters: serde_json::Value,
    /// Caller's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Time the gateway accepted the job.
    pub created_at: DateTime<Utc>,
}

/// A worker's latest progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressDoc {
    /// Completion in percent, from 0 to 100.
    pub percent: f64,
    /// Human-readable description of the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Machine-readable name of the current stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Items done so far, when the work is counted in items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
    /// Total items, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Time the worker wrote this document.
    pub updated_at: DateTime<Utc>,
}

/// One output file of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputDoc {
    /// Name under `jobs/<id>/outputs/`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// MIME type.
    pub content_type: String,
}

/// The worker's final document, written after every output, so its presence
/// means the outputs are complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultDoc {
    /// Task-specific summary.
    #[serde(default)]
    pub summary: serde_json::Value,
    /// Every output the job produced.
    #[serde(default)]
    pub outputs: Vec<OutputDoc>,
    /// Time the worker finished.
    pub finished_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_name_rules() {
        assert!(validate_output_name("photo-256.webp").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "a\nb"] {
            assert!(validate_output_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(validate_output_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn progress_ignores_unknown_fields() {
        let doc: ProgressDoc = serde_json::from_str(
            r#"{"percent": 42.5, "updated_at": "2026-01-01T00:00:00Z", "future": 1}"#,
        )
        .unwrap();
        assert_eq!(doc.percent, 42.5);
        assert_eq!(doc.message, None);
    }
}

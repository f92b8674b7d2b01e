//! The job view: what `GET /v1/jobs/{id}` returns and `status.json` keeps.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use jobgate_worker::protocol::{OutputDoc, ProgressDoc};
use poem_openapi::Object;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::{JobState, Reason};

/// A job's state, progress and results.
///
/// Fields without a value are left out of API responses, as the OpenAPI
/// document declares them optional but not nullable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct JobView {
    /// Job id, a UUIDv7.
    pub id: Uuid,
    /// Template the job was created from.
    pub template: String,
    /// Parameters after validation, with defaults applied.
    pub parameters: serde_json::Value,
    /// Labels the caller attached at submit.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    // The two enum fields have plain comments, not doc comments: poem-openapi
    // would wrap a documented enum reference in `allOf`, which
    // openapi-python-client 0.29 cannot generate. The enums' own docs describe
    // them in the OpenAPI document.
    // Lifecycle state.
    pub state: JobState,
    // Machine-readable reason of a failure, or of a job that cannot make progress.
    #[serde(default)]
    pub reason: Option<Reason>,
    /// Human-readable detail for the state or reason.
    #[serde(default)]
    pub message: Option<String>,
    /// The worker's latest progress report.
    #[serde(default)]
    pub progress: Option<Progress>,
    /// Estimated seconds until the job finishes, from the progress rate so
    /// far; absent until it can be estimated.
    #[serde(default)]
    pub eta_seconds: Option<u64>,
    /// Time the gateway accepted the job.
    pub created_at: DateTime<Utc>,
    /// Start of the first attempt.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// Time the job reached a terminal state.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Attempts started so far, retries included.
    #[serde(default)]
    pub attempts: u32,
    /// Files the job produced; complete once the job succeeded.
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// True when the storage could not be read for this view, so progress
    /// and results are the last ones the gateway had and may be out of date.
    #[serde(default)]
    pub stale: bool,
    /// The worker's task-specific summary, once the job succeeded.
    #[serde(default)]
    pub summary: Option<serde_json::Value>,
}

/// A worker's progress report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Progress {
    /// Completion in percent, from 0 to 100.
    pub percent: f64,
    /// Description of the current step.
    #[serde(default)]
    pub message: Option<String>,
    /// Machine-readable name of the current stage.
    #[serde(default)]
    pub stage: Option<String>,
    /// Items done so far.
    #[serde(default)]
    pub done: Option<u64>,
    /// Total items, when known.
    #[serde(default)]
    pub total: Option<u64>,
    /// Time the worker wrote this report.
    pub updated_at: DateTime<Utc>,
}

impl From<ProgressDoc> for Progress {
    fn from(doc: ProgressDoc) -> Self {
        Self {
            percent: doc.percent.clamp(0.0, 100.0),
            message: doc.message,
            stage: doc.stage,
            done: doc.done,
            total: doc.total,
            updated_at: doc.updated_at,
        }
    }
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Object)]
pub struct Output {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// MIME type.
    pub content_type: String,
    /// Where to download it: a presigned storage URL, valid for a limited
    /// time, when the store supports them, otherwise `gateway_url`.
    pub url: String,
    /// Download through the gateway, for clients that cannot reach the storage.
    #[serde(default)]
    pub gateway_url: String,
}

impl Output {
    /// Builds the view of an output; the URLs are filled in later.
    pub fn from_doc(doc: OutputDoc) -> Self {
        Self {
            name: doc.name,
            size: doc.size,
            content_type: doc.content_type,
            url: String::new(),
            gateway_url: String::new(),
        }
    }
}

/// Estimates the seconds left from the progress rate since the job started:
/// `None` before 1 % or in the first second, when the rate says nothing yet.
pub fn estimate_eta(
    started_at: Option<DateTime<Utc>>,
    progress: Option<&Progress>,
    now: DateTime<Utc>,
) -> Option<u64> {
    let started_at = started_at?;
    let progress = progress?;
    if progress.percent < 1.0 || progress.percent >= 100.0 {
        return None;
    }
    let elapsed = (progress.updated_at - started_at).num_milliseconds() as f64 / 1000.0;
    if elapsed < 1.0 {
        return None;
    }
    let total = elapsed * 100.0 / progress.percent;
    let since_update = ((now - progress.updated_at).num_milliseconds() as f64 / 1000.0).max(0.0);
    Some((total - elapsed - since_update).max(0.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn progress(percent: f64, updated_at: DateTime<Utc>) -> Progress {
        Progress {
            percent,
            message: None,
            stage: None,
            done: None,
            total: None,
            updated_at,
        }
    }

    #[test]
    fn eta_follows_the_rate() {
        let start = Utc::now() - Duration::seconds(100);
        let at_25 = progress(25.0, start + Duration::seconds(10));
        // 25 % in 10 s: 30 s left at the update, 20 s of them gone since.
        let eta = estimate_eta(Some(start), Some(&at_25), start + Duration::seconds(20));
        assert_eq!(eta, Some(20));
    }

    #[test]
    fn eta_is_unknown_without_a_rate() {
        let start = Utc::now();
        let early = progress(50.0, start + Duration::milliseconds(200));
        assert_eq!(estimate_eta(Some(start), Some(&early), start), None);
        let zero = progress(0.0, start + Duration::seconds(5));
        assert_eq!(estimate_eta(Some(start), Some(&zero), start), None);
        assert_eq!(estimate_eta(None, Some(&zero), start), None);
        let done = progress(100.0, start + Duration::seconds(5));
        assert_eq!(estimate_eta(Some(start), Some(&done), start), None);
    }

    #[test]
    fn eta_never_goes_negative() {
        let start = Utc::now();
        let half = progress(50.0, start + Duration::seconds(10));
        assert_eq!(estimate_eta(Some(start), Some(&half), start + Duration::seconds(60)), Some(0));
    }
}

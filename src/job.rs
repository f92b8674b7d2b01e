//! Job identity and the states and failure reasons every part agrees on.

use std::fmt;
use std::str::FromStr;

use poem_openapi::Enum;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Job id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// Creates an id for a job accepted now.
    ///
    /// NB: `Uuid::now_v7` keeps ids from one process strictly increasing, even
    /// within one millisecond; list pagination relies on that order.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps a UUID that is known to be a job id.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// Returns the inner UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// Returns the name of the Kubernetes Job that runs this job.
    pub fn k8s_name(&self) -> String {
        format!("jobgate-{self}")
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Error for a string that is not a job id.
#[derive(Debug, thiserror::Error)]
#[error("invalid job id {value:?}: expected a UUIDv7 such as 0190f5c4-8a8e-7c3b-9a4e-2f1d6b8c9e01")]
pub struct InvalidJobId {
    /// The rejected input, cut to 64 characters.
    pub value: String,
}

impl FromStr for JobId {
    type Err = InvalidJobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidJobId {
            value: s.chars().take(64).collect(),
        };
        // Only the canonical lowercase hyphenated form names a job, so that one
        // job never has two spellings in keys and URLs.
        if s.len() != 36 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid());
        }
        let uuid = Uuid::parse_str(s).map_err(|_| invalid())?;
        if uuid.get_version_num() != 7 {
            return Err(invalid());
        }
        Ok(Self(uuid))
    }
}

/// Lifecycle state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Enum)]
#[serde(rename_all = "lowercase")]
#[oai(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted, not running yet: waiting for a slot, suspended, or pods pending.
    Queued,
    /// At least one attempt is running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished unsuccessfully; `reason` says why.
    Failed,
    /// Stopped by a cancel request.
    Cancelled,
}

impl JobState {
    /// Returns true for states that never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Returns the lowercase name used in the API and in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Machine-readable reason why a job failed or cannot make progress.
///
/// The names follow the reasons Kubernetes itself reports, so that operators
/// can search for them in Kubernetes' documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Enum)]
pub enum Reason {
    /// A container exited with a non-zero code.
    Error,
    /// The job ran longer than its `activeDeadlineSeconds`.
    DeadlineExceeded,
    /// Every attempt allowed by `backoffLimit` failed.
    BackoffLimitExceeded,
    /// The container image could not be pulled.
    ErrImagePull,
    /// The container image could not be pulled, and Kubernetes is backing off.
    ImagePullBackOff,
    /// No node can run the pod, for example because it requests too much CPU or memory.
    Unschedulable,
    /// A container used more memory than its limit and was killed.
    #[oai(rename = "OOMKilled")]
    #[serde(rename = "OOMKilled")]
    OomKilled,
    /// A container keeps crashing after restarts.
    CrashLoopBackOff,
    /// The pod was evicted from its node.
    Evicted,
    /// A container could not be started, for example because its command does not exist.
    StartError,
    /// The cluster created no pod for the job, for example because a
    /// ResourceQuota is exceeded or an admission policy rejects the pod.
    FailedCreate,
    /// A container's environment names a ConfigMap or Secret, or a key in
    /// one, that does not exist, such as a missing worker Secret.
    CreateContainerConfigError,
    /// The gateway stopped while the job was queued or running, so the job was lost.
    GatewayRestarted,
    /// The Job was deleted from the cluster before the gateway recorded its result.
    JobDeleted,
}

impl Reason {
    /// Returns the reason's name as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "Error",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::BackoffLimitExceeded => "BackoffLimitExceeded",
            Self::ErrImagePull => "ErrImagePull",
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::Unschedulable => "Unschedulable",
            Self::OomKilled => "OOMKilled",
            Self::CrashLoopBackOff => "CrashLoopBackOff",
            Self::Evicted => "Evicted",
            Self::StartError => "StartError",
            Self::FailedCreate => "FailedCreate",
            Self::CreateContainerConfigError => "CreateContainerConfigError",
            Self::GatewayRestarted => "GatewayRestarted",
            Self::JobDeleted => "JobDeleted",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_round_trips() {
        let id = JobId::new();
        let parsed: JobId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
    }

    #[test]
    fn job_id_rejects_other_forms() {
        let id = JobId::new().to_string();
        for bad in [
            id.to_uppercase(),
            id.replace('-', ""),
            "../etc/passwd".to_string(),
            Uuid::new_v4().to_string(),
            String::new(),
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn job_ids_increase() {
        let ids: Vec<JobId> = (0..1000).map(|_| JobId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn reason_serializes_kubernetes_names() {
        assert_eq!(serde_json::to_string(&Reason::OomKilled).unwrap(), "\"OOMKilled\"");
        assert_eq!(Reason::OomKilled.as_str(), "OOMKilled");
    }
}

//! The rules that turn a Job and its pods, as Kubernetes reports them, into
//! jobgate's state, reason and message. Every other part of the Kubernetes
//! executor asks here.

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use crate::job::{JobState, Reason};

/// A Job's state as jobgate reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Lifecycle state.
    pub state: JobState,
    /// Why the job failed, or why it cannot make progress.
    pub reason: Option<Reason>,
    /// Kubernetes' message for the reason.
    pub message: Option<String>,
    /// The reason the job cannot start and since when, if it cannot.
    pub stuck: Option<Stuck>,
}

/// A job that cannot start, and what to fail it with once it has been stuck
/// for too long.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    /// Since when.
    pub since: DateTime<Utc>,
    /// The failure reason.
    pub reason: Reason,
    /// The cluster's message, or what to check.
    pub message: String,
}

impl Observed {
    fn new(state: JobState) -> Self {
        Self {
            state,
            reason: None,
            message: None,
            stuck: None,
        }
    }

    fn stuck(reason: Reason, message: Option<String>, since: Option<DateTime<Utc>>) -> Self {
        let message = message.unwrap_or_else(|| "no message from the cluster".into());
        Self {
            state: JobState::Queued,
            reason: Some(reason),
            message: Some(message.clone()),
            stuck: since.map(|since| Stuck { since, reason, message }),
        }
    }
}

/// Converts a Kubernetes timestamp (jiff, in k8s-openapi 0.29) to chrono.
pub fn to_chrono(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> DateTime<Utc> {
    DateTime::from_timestamp(time.0.as_second(), time.0.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// Returns when the job's work started: the earliest start of any of its
/// containers. The Job's own `startTime` is earlier, set while its first pod
/// may still wait for a node or an image.
pub fn first_container_start(pods: &[&Pod]) -> Option<DateTime<Utc>> {
    pods.iter()
        .filter_map(|pod| pod.status.as_ref())
        .flat_map(|status| {
            status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten())
        })
        .filter_map(|container| {
            let state = container.state.as_ref()?;
            let running = state.running.as_ref().and_then(|r| r.started_at.as_ref());
            let terminated = state.terminated.as_ref().and_then(|t| t.started_at.as_ref());
            running.or(terminated).map(to_chrono)
        })
        .min()
}

fn condition_true<'a>(job: &'a Job, kind: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

/// Maps a Job and its pods to jobgate's view of it.
pub fn observe(job: &Job, pods: &[&Pod]) -> Observed {
    if condition_true(job, "Complete").is_some() || condition_true(job, "SuccessCriteriaMet").is_some() {
        return Observed::new(JobState::Succeeded);
    }
    if let Some(failed) = condition_true(job, "Failed").or_else(|| condition_true(job, "FailureTarget")) {
        let mut observed = Observed::new(JobState::Failed);
        let (reason, detail) = failure_reason(failed.reason.as_deref(), pods);
        observed.reason = Some(reason);
        observed.message = Some(match (failed.message.as_deref(), detail) {
            (Some(message), Some(detail)) => format!("{message}; {detail}"),
            (Some(message), None) => message.to_owned(),
            (None, Some(detail)) => detail,
            (None, None) => "the Job failed".to_owned(),
        });
        return observed;
    }
    if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        let mut observed = Observed::new(JobState::Queued);
        observed.message = Some("the Job is suspended".into());
        return observed;
    }
    if let Some(stuck) = pods.iter().find_map(|pod| stuck_reason(pod)) {
        return stuck;
    }
    if pods.is_empty() {
        // The Job controller creates a pod within moments, unless the
        // cluster refuses it (an exceeded ResourceQuota, an admission
        // policy). The refusal is only an Event, which the gateway does not
        // read, so the job stays plainly queued until the stuck timeout.
        let mut observed = Observed::new(JobState::Queued);
        observed.stuck = job.metadata.creation_timestamp.as_ref().map(|created| Stuck {
            since: to_chrono(created),
            reason: Reason::FailedCreate,
            message: format!(
                "the cluster created no pod for the Job, for example because a ResourceQuota is exceeded \
                 or an admission policy rejects it; `kubectl describe job {}` shows the cluster's events",
                job.metadata.name.as_deref().unwrap_or_default()
            ),
        });
        return observed;
    }
    let running = pods
        .iter()
        .any(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
    let mut observed = Observed::new(if running { JobState::Running } else { JobState::Queued });
    if let Some((reason, message)) = pods.iter().find_map(|pod| crash_loop(pod)) {
        observed.reason = Some(reason);
        observed.message = Some(message);
    }
    observed
}

/// Picks the reason for a failed Job: the Job condition's reason, made more
/// precise by what happened to the last failed pod.
fn failure_reason(condition_reason: Option<&str>, pods: &[&Pod]) -> (Reason, Option<String>) {
    if condition_reason == Some("DeadlineExceeded") {
        return (Reason::DeadlineExceeded, None);
    }
    let mut failed: Vec<&&Pod> = pods
        .iter()
        .filter(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        .collect();
    failed.sort_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
    if let Some(pod) = failed.last() {
        let status = pod.status.as_ref();
        if status.and_then(|s| s.reason.as_deref()) == Some("Evicted") {
            let message = status.and_then(|s| s.message.clone());
            return (Reason::Evicted, message);
        }
        for container in status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten() {
            let Some(terminated) = container.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                continue;
            };
            if terminated.exit_code == 0 {
                continue;
            }
            let detail = format!(
                "container {:?} exited with code {}{}",
                container.name,
                terminated.exit_code,
                terminated.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
            );
            if terminated.reason.as_deref() == Some("OOMKilled") {
                return (Reason::OomKilled, Some(detail));
            }
            return (Reason::BackoffLimitExceeded, Some(detail));
        }
    }
    match condition_reason {
        Some("BackoffLimitExceeded") => (Reason::BackoffLimitExceeded, None),
        _ => (Reason::Error, None),
    }
}

/// Returns the state of a pod that cannot start: its image cannot be pulled,
/// its environment names a missing ConfigMap or Secret, or no node can take
/// it.
fn stuck_reason(pod: &Pod) -> Option<Observed> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Pending") {
        return None;
    }
    for container in status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
    {
        let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = match waiting.reason.as_deref() {
            Some("ErrImagePull") => Reason::ErrImagePull,
            Some("ImagePullBackOff") => Reason::ImagePullBackOff,
            Some("InvalidImageName") => Reason::ErrImagePull,
            Some("CreateContainerConfigError") => Reason::CreateContainerConfigError,
            _ => continue,
        };
        return Some(Observed::stuck(
            reason,
            waiting.message.clone(),
            pod.metadata.creation_timestamp.as_ref().map(to_chrono),
        ));
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
    })?;
    Some(Observed::stuck(
        Reason::Unschedulable,
        unschedulable.message.clone(),
        unschedulable
            .last_transition_time
            .as_ref()
            .map(to_chrono)
            .or_else(|| pod.metadata.creation_timestamp.as_ref().map(to_chrono)),
    ))
}

/// Returns CrashLoopBackOff for a pod whose container keeps restarting.
fn crash_loop(pod: &Pod) -> Option<(Reason, String)> {
    let status = pod.status.as_ref()?;
    status.container_statuses.iter().flatten().find_map(|container| {
        let waiting = container.state.as_ref()?.waiting.as_ref()?;
        (waiting.reason.as_deref() == Some("CrashLoopBackOff")).then(|| {
            (
                Reason::CrashLoopBackOff,
                waiting
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("container {:?} keeps crashing", container.name)),
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(status: serde_json::Value, suspend: bool) -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "jobgate-x"},
            "spec": {"suspend": suspend, "template": {"spec": {"containers": [{"name": "main", "image": "w"}], "restartPolicy": "Never"}}},
            "status": status
        }))
        .unwrap()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "jobgate-x-abcde", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": status
        }))
        .unwrap()
    }

    /// Status shapes as Kubernetes 1.33 writes them.
    #[test]
    fn observe_maps_status_shapes() {
        let cases: Vec<(&str, Job, Vec<Pod>, JobState, Option<Reason>)> = vec![
            ("new job without pods", job(json!({}), false), vec![], JobState::Queued, None),
            ("suspended", job(json!({}), true), vec![], JobState::Queued, None),
            (
                "pod pending, scheduled",
                job(json!({"active": 1, "startTime": "2026-01-01T00:00:00Z"}), false),
                vec![pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}))],
                JobState::Queued,
                None,
            ),
            (
                "running",
                job(json!({"active": 1, "ready": 1, "startTime": "2026-01-01T00:00:00Z"}), false),
                vec![pod(json!({"phase": "Running", "containerStatuses": [{"name": "main", "image": "w", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}}]}))],
                JobState::Running,
                None,
            ),
            (
                "image cannot be pulled",
                job(json!({"active": 1}), false),
                vec![pod(json!({"phase": "Pending", "containerStatuses": [{"name": "main", "image": "nope:1", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope:1\""}}}]}))],
                JobState::Queued,
                Some(Reason::ImagePullBackOff),
            ),
            (
                "first pull error",
                job(json!({"active": 1}), false),
                vec![pod(json!({"phase": "Pending", "containerStatuses": [{"name": "main", "image": "nope:1", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull", "message": "rpc error: not found"}}}]}))],
                JobState::Queued,
                Some(Reason::ErrImagePull),
            ),
            (
                "missing Secret in envFrom",
                job(json!({"active": 1}), false),
                vec![pod(json!({"phase": "Pending", "containerStatuses": [{"name": "main", "image": "w", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"jobgate-s3\" not found"}}}]}))],
                JobState::Queued,
                Some(Reason::CreateContainerConfigError),
            ),
            (
                "unschedulable",
                job(json!({"active": 1}), false),
                vec![pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu.", "lastTransitionTime": "2026-01-01T00:00:02Z"}]}))],
                JobState::Queued,
                Some(Reason::Unschedulable),
            ),
            (
                "crash loop",
                job(json!({"active": 1}), false),
                vec![pod(json!({"phase": "Running", "containerStatuses": [{"name": "main", "image": "w", "imageID": "", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}}]}))],
                JobState::Running,
                Some(Reason::CrashLoopBackOff),
            ),
            (
                "complete",
                job(json!({"succeeded": 1, "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True", "reason": "CompletionsReached"}], "completionTime": "2026-01-01T00:01:00Z"}), false),
                vec![pod(json!({"phase": "Succeeded"}))],
                JobState::Succeeded,
                None,
            ),
            (
                "deadline exceeded",
                job(json!({"failed": 1, "conditions": [{"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"}, {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}), false),
                vec![pod(json!({"phase": "Failed"}))],
                JobState::Failed,
                Some(Reason::DeadlineExceeded),
            ),
            (
                "backoff limit after errors",
                job(json!({"failed": 3, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}), false),
                vec![pod(json!({"phase": "Failed", "containerStatuses": [{"name": "main", "image": "w", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}))],
                JobState::Failed,
                Some(Reason::BackoffLimitExceeded),
            ),
            (
                "out of memory",
                job(json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}), false),
                vec![pod(json!({"phase": "Failed", "containerStatuses": [{"name": "main", "image": "w", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}))],
                JobState::Failed,
                Some(Reason::OomKilled),
            ),
            (
                "evicted",
                job(json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}), false),
                vec![pod(json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}))],
                JobState::Failed,
                Some(Reason::Evicted),
            ),
        ];
        for (name, job, pods, state, reason) in cases {
            let pods: Vec<&Pod> = pods.iter().collect();
            let observed = observe(&job, &pods);
            assert_eq!(observed.state, state, "{name}");
            assert_eq!(observed.reason, reason, "{name}");
        }
    }

    #[test]
    fn work_starts_with_the_first_container() {
        let pending = pod(json!({"phase": "Pending", "containerStatuses": [{"name": "main", "image": "w", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
        assert_eq!(first_container_start(&[&pending]), None);
        let failed = pod(json!({"phase": "Failed", "containerStatuses": [{"name": "main", "image": "w", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 1, "startedAt": "2026-01-01T00:00:03Z", "finishedAt": "2026-01-01T00:00:04Z"}}}]}));
        let running = pod(json!({"phase": "Running", "containerStatuses": [{"name": "main", "image": "w", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:07Z"}}}]}));
        let start = first_container_start(&[&running, &pending, &failed]).unwrap();
        assert_eq!(start.to_rfc3339(), "2026-01-01T00:00:03+00:00");
    }

    #[test]
    fn job_without_pods_is_stuck_since_its_creation() {
        let mut without_pods = job(json!({}), false);
        without_pods.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:05Z".parse().unwrap(),
        ));
        let observed = observe(&without_pods, &[]);
        assert_eq!(observed.state, JobState::Queued);
        assert_eq!(observed.reason, None, "the refusal is not shown before the timeout");
        let stuck = observed.stuck.unwrap();
        assert_eq!(stuck.reason, Reason::FailedCreate);
        assert_eq!(stuck.since.to_rfc3339(), "2026-01-01T00:00:05+00:00");
        assert!(stuck.message.contains("kubectl describe job jobgate-x"), "{}", stuck.message);
        assert_eq!(observe(&job(json!({}), true), &[]).stuck, None, "a suspended Job is not stuck");
    }

    #[test]
    fn stuck_pods_carry_their_start() {
        let pending = pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available", "lastTransitionTime": "2026-01-01T00:00:02Z"}]}));
        let observed = observe(&job(json!({"active": 1}), false), &[&pending]);
        assert_eq!(observed.stuck.unwrap().since.to_rfc3339(), "2026-01-01T00:00:02+00:00");
        assert_eq!(observed.message.as_deref(), Some("0/1 nodes are available"));
    }

    #[test]
    fn failure_message_names_the_exit_code() {
        let failed = pod(json!({"phase": "Failed", "containerStatuses": [{"name": "main", "image": "w", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3, "reason": "Error", "message": "disk full"}}}]}));
        let job = job(json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}), false);
        let observed = observe(&job, &[&failed]);
        let message = observed.message.unwrap();
        assert!(message.contains("code 3"), "{message}");
        assert!(message.contains("disk full"), "{message}");
    }
}

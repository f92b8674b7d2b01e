//! The job controller, the TTL-after-finished controller and the garbage
//! collector for pods whose Job is gone.
//!
//! Job status follows the batch/v1 controller of Kubernetes 1.33: counts of
//! active, ready, terminating, succeeded and failed pods; `startTime`;
//! `completionTime` on success only; and the terminal conditions written in
//! two steps, `SuccessCriteriaMet` or `FailureTarget` first, then `Complete`
//! or `Failed` once no pod is left running.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::DeleteOptions;
use crate::cluster::Shared;
use crate::error::ApiError;
use crate::events::{self, Source};
use crate::objects::{self, name_of, now, uid_of};
use crate::resource::Resource;
use crate::store::Key;

/// How often the controllers look at every Job even without a change.
const RESYNC: Duration = Duration::from_millis(200);

const BACKOFF_MESSAGE: &str = "Job has reached the specified backoff limit";
const DEADLINE_MESSAGE: &str = "Job was active longer than specified deadline";
const COMPLETIONS_MESSAGE: &str = "Reached expected number of succeeded pods";

/// What the controller remembers about a Job between passes.
#[derive(Debug, Default)]
struct JobMemory {
    /// Pods the controller deleted while they were active; they count as failed.
    killed: HashSet<String>,
    /// Failed pods seen so far, to notice new failures.
    failed_seen: i64,
    /// When the last new failure was seen, for the retry delay.
    last_failure: Option<Instant>,
}

/// Runs the controllers until shutdown.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut changes = shared.store.changes();
    let mut memory: HashMap<String, JobMemory> = HashMap::new();
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(RESYNC) => {}
        }
        let (jobs, _) = shared.store.list(Resource::Jobs, None);
        let live: HashSet<String> = jobs.iter().map(|job| uid_of(job).to_string()).collect();
        memory.retain(|uid, _| live.contains(uid));
        for job in &jobs {
            let entry = memory.entry(uid_of(job).to_string()).or_default();
            sync_job(&shared, job, entry);
        }
        collect_garbage(&shared, &live);
    }
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    let time = now();
    json!({
        "type": kind,
        "status": "True",
        "lastProbeTime": time,
        "lastTransitionTime": time,
        "reason": reason,
        "message": message,
    })
}

fn find_condition<'a>(conditions: &'a [Value], kind: &str) -> Option<&'a Value> {
    conditions.iter().find(|c| c["type"] == kind && c["status"] == "True")
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending")
}

fn is_deleting(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn restarts(pod: &Value) -> i64 {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|status| status["restartCount"].as_i64())
        .sum()
}

fn owned_pods(shared: &Shared, namespace: &str, uid: &str) -> Vec<Value> {
    let (pods, _) = shared.store.list(Resource::Pods, Some(namespace));
    pods.into_iter()
        .filter(|pod| {
            pod.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid && r["controller"] == true))
        })
        .collect()
}

fn delete_pod(shared: &Shared, namespace: &str, pod: &Value) {
    let key = Key::new(Resource::Pods, namespace, name_of(pod));
    if let Err(error) = shared.delete(&key, &DeleteOptions::default()) {
        tracing::debug!(%error, pod = name_of(pod), "deleting a pod failed");
    }
}

fn seconds_since(timestamp: &str) -> Option<i64> {
    let time = chrono::DateTime::parse_from_rfc3339(timestamp).ok()?;
    Some((chrono::Utc::now() - time.with_timezone(&chrono::Utc)).num_seconds())
}

fn sync_job(shared: &Shared, job: &Value, memory: &mut JobMemory) {
    let namespace = job.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let name = name_of(job);
    let uid = uid_of(job);
    let key = Key::new(Resource::Jobs, namespace, name);
    let pods = owned_pods(shared, namespace, uid);

    if is_deleting(job) {
        // Foreground deletion: the Job goes once its pods are gone.
        for pod in pods.iter().filter(|pod| !is_deleting(pod)) {
            delete_pod(shared, namespace, pod);
        }
        if pods.is_empty() {
            let _ = shared.store.update(&key, |object| {
                if let Some(list) = object["metadata"]["finalizers"].as_array_mut() {
                    list.retain(|f| f != "foregroundDeletion");
                }
                Ok(())
            });
        }
        return;
    }

    let status = job.get("status").cloned().unwrap_or(json!({}));
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    if let Some(done) = find_condition(&conditions, "Complete").or_else(|| find_condition(&conditions, "Failed")) {
        expire_finished(shared, job, done);
        return;
    }

    let spec = &job["spec"];
    let active: Vec<&Value> = pods
        .iter()
        .filter(|pod| !matches!(phase(pod), "Succeeded" | "Failed") && !is_deleting(pod))
        .collect();
    let terminating = pods
        .iter()
        .filter(|pod| is_deleting(pod) && !matches!(phase(pod), "Succeeded" | "Failed"))
        .count() as i64;
    let succeeded_pods = pods.iter().filter(|pod| phase(pod) == "Succeeded").count() as i64;
    let failed_pods = pods
        .iter()
        .filter(|pod| phase(pod) == "Failed" && !memory.killed.contains(uid_of(pod)))
        .count() as i64;
    let succeeded = succeeded_pods.max(status["succeeded"].as_i64().unwrap_or(0));
    let failed = (failed_pods + memory.killed.len() as i64).max(status["failed"].as_i64().unwrap_or(0));
    if failed > memory.failed_seen {
        memory.failed_seen = failed;
        memory.last_failure = Some(Instant::now());
    }
    let ready = active.iter().filter(|pod| is_ready(pod)).count() as i64;
    let restart_count: i64 = active.iter().map(|pod| restarts(pod)).sum();

    let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
    let parallelism = spec["parallelism"].as_i64().unwrap_or(1);
    let completions = spec["completions"].as_i64();
    let suspended = spec["suspend"].as_bool().unwrap_or(false);
    let mut start_time = status["startTime"].as_str().map(str::to_string);
    let mut completion_time = None;
    let mut kill_active = false;

    let failure_target = find_condition(&conditions, "FailureTarget").cloned();
    let success_met = find_condition(&conditions, "SuccessCriteriaMet").is_some();
    if let Some(target) = failure_target {
        kill_active = true;
        if active.is_empty() && terminating == 0 {
            let reason = target["reason"].as_str().unwrap_or("BackoffLimitExceeded");
            let message = target["message"].as_str().unwrap_or(BACKOFF_MESSAGE);
            conditions.push(condition("Failed", reason, message));
            events::record(&shared.store, job, true, reason, message, Source::JobController, None);
        }
    } else if success_met {
        kill_active = true;
        if active.is_empty() && terminating == 0 {
            conditions.push(condition("Complete", "CompletionsReached", COMPLETIONS_MESSAGE));
            completion_time = Some(now());
            events::record(&shared.store, job, false, "Completed", "Job completed", Source::JobController, None);
        }
    } else if suspended {
        kill_active = true;
        if find_condition(&conditions, "Suspended").is_none() {
            conditions.retain(|c| c["type"] != "Suspended");
            conditions.push(condition("Suspended", "JobSuspended", "Job suspended"));
            events::record(&shared.store, job, false, "Suspended", "Job suspended", Source::JobController, None);
        }
    } else {
        if let Some(index) = conditions.iter().position(|c| c["type"] == "Suspended" && c["status"] == "True") {
            let time = now();
            conditions[index] = json!({
                "type": "Suspended",
                "status": "False",
                "lastProbeTime": time,
                "lastTransitionTime": time,
                "reason": "JobResumed",
                "message": "Job resumed",
            });
            // A resumed Job's deadline counts from the resume.
            start_time = Some(now());
            events::record(&shared.store, job, false, "Resumed", "Job resumed", Source::JobController, None);
        }
        let started = start_time.get_or_insert_with(now).clone();
        let deadline = spec["activeDeadlineSeconds"].as_i64();
        let past_deadline = deadline.is_some_and(|limit| seconds_since(&started).is_some_and(|elapsed| elapsed >= limit));
        let completed = match completions {
            Some(wanted) => succeeded >= wanted,
            None => succeeded > 0 && active.is_empty(),
        };
        if past_deadline {
            conditions.push(condition("FailureTarget", "DeadlineExceeded", DEADLINE_MESSAGE));
            kill_active = true;
        } else if failed + restart_count > backoff_limit {
            conditions.push(condition("FailureTarget", "BackoffLimitExceeded", BACKOFF_MESSAGE));
            kill_active = true;
        } else if completed {
            conditions.push(condition("SuccessCriteriaMet", "CompletionsReached", COMPLETIONS_MESSAGE));
            kill_active = true;
        } else {
            let wanted = match completions {
                Some(total) => parallelism.min(total - succeeded),
                None if succeeded > 0 => 0,
                None => parallelism,
            };
            let missing = wanted - active.len() as i64;
            let waiting = memory
                .last_failure
                .is_some_and(|at| at.elapsed() < shared.pod_retry_delay);
            if missing > 0 && !waiting {
                for _ in 0..missing {
                    create_pod(shared, job);
                }
            }
        }
    }

    let mut killed_now = 0;
    if kill_active {
        for pod in &active {
            // Pods stopped for a failure count as failed; pods stopped
            // for a suspension or after success do not.
            if has_failure_target(&conditions) && memory.killed.insert(uid_of(pod).to_string()) {
                killed_now += 1;
            }
            delete_pod(shared, namespace, pod);
        }
    }
    let failed = failed + killed_now;
    let active_count = if kill_active { 0 } else { active.len() as i64 };

    let mut next = status.clone();
    let set = |next: &mut Value, key: &str, count: i64| {
        if count > 0 {
            next[key] = json!(count);
        } else if let Some(map) = next.as_object_mut() {
            map.remove(key);
        }
    };
    set(&mut next, "active", active_count);
    set(&mut next, "succeeded", succeeded);
    set(&mut next, "failed", failed);
    next["ready"] = json!(if kill_active { 0 } else { ready });
    next["terminating"] = json!(terminating + if kill_active { active.len() as i64 } else { 0 });
    next["uncountedTerminatedPods"] = json!({});
    if let Some(start) = start_time {
        next["startTime"] = json!(start);
    }
    if let Some(time) = completion_time {
        next["completionTime"] = json!(time);
    }
    if !conditions.is_empty() {
        next["conditions"] = json!(conditions);
    }
    if next != status {
        let result = shared.store.update(&key, |object| {
            object["status"] = next;
            Ok(())
        });
        if let Err(error) = result {
            tracing::debug!(%error, job = name, "updating the Job status failed");
        }
    }
}

fn has_failure_target(conditions: &[Value]) -> bool {
    find_condition(conditions, "FailureTarget").is_some()
}

/// Deletes a finished Job once its `ttlSecondsAfterFinished` has passed,
/// with Foreground propagation as the TTL-after-finished controller does.
fn expire_finished(shared: &Shared, job: &Value, done: &Value) {
    let Some(ttl) = job.pointer("/spec/ttlSecondsAfterFinished").and_then(Value::as_i64) else {
        return;
    };
    let finished = done["lastTransitionTime"].as_str().unwrap_or_default();
    if seconds_since(finished).is_none_or(|elapsed| elapsed < ttl) {
        return;
    }
    let namespace = job.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let key = Key::new(Resource::Jobs, namespace, name_of(job));
    let options = DeleteOptions {
        propagation_policy: Some("Foreground".into()),
        ..Default::default()
    };
    match shared.delete(&key, &options) {
        Ok(_) => tracing::debug!(job = name_of(job), "deleted a finished Job after its TTL"),
        Err(error) => tracing::debug!(%error, job = name_of(job), "deleting a finished Job after its TTL failed"),
    }
}

fn create_pod(shared: &Shared, job: &Value) {
    let namespace = job.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let name = name_of(job);
    let template = &job["spec"]["template"];
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{name}-"),
            "namespace": namespace,
            "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": name,
                "uid": uid_of(job),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": template["spec"].clone(),
    });
    if let Some(annotations) = template.pointer("/metadata/annotations") {
        pod["metadata"]["annotations"] = annotations.clone();
    }
    let created = objects::prepare_create(Resource::Pods, namespace, &mut pod)
        .and_then(|()| check_quota(shared, &pod))
        .and_then(|()| {
            let key = Key::new(Resource::Pods, namespace, name_of(&pod));
            shared.store.create(key, pod)
        });
    match created {
        Ok(pod) => {
            let message = format!("Created pod: {}", name_of(&pod));
            events::record(&shared.store, job, false, "SuccessfulCreate", &message, Source::JobController, None);
        }
        Err(error) => {
            let message = format!("Error creating: {}", error.message);
            tracing::warn!(job = name, %error, "creating a pod for a Job failed");
            events::record(&shared.store, job, true, "FailedCreate", &message, Source::JobController, None);
        }
    }
}

/// Refuses a pod that requests more CPU than the quota, with the message of
/// the ResourceQuota admission plugin.
fn check_quota(shared: &Shared, pod: &Value) -> Result<(), ApiError> {
    let Some(quota) = shared.faults.cpu_quota() else { return Ok(()) };
    let (cpu, _) = crate::quantity::pod_requests(&pod["spec"]);
    if cpu <= quota {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        "Forbidden",
        format!(
            "pods {:?} is forbidden: exceeded quota: compute, requested: requests.cpu={cpu}m, \
             used: requests.cpu=0, limited: requests.cpu={quota}m",
            name_of(pod)
        ),
    ))
}

/// Deletes pods whose owning Jobs are gone (Background propagation).
fn collect_garbage(shared: &Shared, live_jobs: &HashSet<String>) {
    let (pods, _) = shared.store.list(Resource::Pods, None);
    for pod in pods.iter().filter(|pod| !is_deleting(pod)) {
        let Some(refs) = pod.pointer("/metadata/ownerReferences").and_then(Value::as_array) else {
            continue;
        };
        let owned_by_job = refs.iter().any(|r| r["kind"] == "Job");
        let orphaned = refs
            .iter()
            .filter(|r| r["kind"] == "Job")
            .all(|r| !r["uid"].as_str().is_some_and(|uid| live_jobs.contains(uid)));
        if owned_by_job && orphaned {
            let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
            delete_pod(shared, namespace, pod);
        }
    }
}

//! The job controller and kubelet simulator: Job status, pod states, logs,
//! retries, deadlines, suspension, faults, deletion and TTL.

mod common;

use std::time::Duration;

use common::{client, condition_reason, condition_types, is_finished, shell_job, start, wait_for};
use futures::AsyncBufReadExt;
use jobgate_fake_kube::{FakeCluster, User};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use serde_json::json;

struct Fixture {
    cluster: FakeCluster,
    jobs: Api<Job>,
    pods: Api<Pod>,
    events: Api<Event>,
}

async fn fixture() -> Fixture {
    let cluster = start().await;
    let client = client(&cluster, User::Admin).await;
    let namespace = cluster.namespace().to_string();
    Fixture {
        jobs: Api::namespaced(client.clone(), &namespace),
        pods: Api::namespaced(client.clone(), &namespace),
        events: Api::namespaced(client, &namespace),
        cluster,
    }
}

impl Fixture {
    async fn finished(&self, name: &str) -> Job {
        let jobs = self.jobs.clone();
        let name = name.to_string();
        wait_for("the Job to finish", move || {
            let jobs = jobs.clone();
            let name = name.clone();
            async move { jobs.get(&name).await.ok().filter(is_finished) }
        })
        .await
    }

    async fn pods_of(&self, job: &str) -> Vec<Pod> {
        let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
        self.pods.list(&params).await.unwrap().items
    }

    async fn first_pod(&self, job: &str) -> Pod {
        let pods = self.pods.clone();
        let job = job.to_string();
        wait_for("a pod of the Job", move || {
            let pods = pods.clone();
            let job = job.clone();
            async move {
                let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
                pods.list(&params).await.unwrap().items.into_iter().next()
            }
        })
        .await
    }

    async fn event_reasons(&self, name: &str) -> Vec<String> {
        let params = ListParams::default().fields(&format!("involvedObject.name={name}"));
        self.events.list(&params).await.unwrap().items.into_iter().filter_map(|e| e.reason).collect()
    }
}

fn waiting_reason(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.container_statuses.as_ref()?[0].state.as_ref()?.waiting.as_ref()?.reason.clone()
}

fn terminated_reason(pod: &Pod) -> Option<(i32, String)> {
    let terminated = pod.status.as_ref()?.container_statuses.as_ref()?[0].state.as_ref()?.terminated.clone()?;
    Some((terminated.exit_code, terminated.reason.unwrap_or_default()))
}

#[tokio::test]
async fn echo_job_completes_with_status() {
    let fixture = fixture().await;
    fixture.jobs.create(&PostParams::default(), &shell_job("hello", "echo hi", json!({}))).await.unwrap();

    let job = fixture.finished("hello").await;

    let status = job.status.clone().unwrap();
    assert_eq!(condition_types(&job), ["SuccessCriteriaMet", "Complete"]);
    assert_eq!(condition_reason(&job, "Complete").as_deref(), Some("CompletionsReached"));
    assert_eq!(status.succeeded, Some(1));
    assert_eq!(status.active, None);
    assert_eq!(status.ready, Some(0));
    assert!(status.start_time.is_some());
    assert!(status.completion_time.is_some());
}

#[tokio::test]
async fn echo_job_pod_and_logs() {
    let fixture = fixture().await;
    fixture.jobs.create(&PostParams::default(), &shell_job("logged", "echo hi", json!({}))).await.unwrap();
    let job = fixture.finished("logged").await;

    let pods = fixture.pods_of("logged").await;
    let pod = &pods[0];
    let name = pod.metadata.name.clone().unwrap();
    let logs = fixture.pods.logs(&name, &LogParams::default()).await.unwrap();

    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(pods.len(), 1);
    assert!(name.starts_with("logged-"), "{name}");
    assert_eq!(name.len(), "logged-".len() + 5, "{name}");
    assert_eq!(owner.uid, job.metadata.uid.unwrap());
    assert_eq!(owner.controller, Some(true));
    assert_eq!(pod.status.as_ref().unwrap().phase.as_deref(), Some("Succeeded"));
    assert_eq!(terminated_reason(pod), Some((0, "Completed".into())));
    assert_eq!(logs, "hi\n");
    assert!(fixture.event_reasons("logged").await.contains(&"SuccessfulCreate".to_string()));
}

#[tokio::test]
async fn followed_log_streams_until_exit() {
    let fixture = fixture().await;
    let script = "echo one; sleep 1; echo two";
    fixture.jobs.create(&PostParams::default(), &shell_job("follow", script, json!({}))).await.unwrap();
    let pod = fixture.first_pod("follow").await;
    let name = pod.metadata.name.unwrap();
    let pods = fixture.pods.clone();
    let waited_name = name.clone();
    wait_for("the container to start", move || {
        let pods = pods.clone();
        let name = waited_name.clone();
        async move { pods.logs(&name, &LogParams::default()).await.ok() }
    })
    .await;

    let params = LogParams { follow: true, ..Default::default() };
    let mut lines = fixture.pods.log_stream(&name, &params).await.unwrap().lines();
    let mut seen = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut lines)).await.unwrap() {
        seen.push(line.unwrap());
    }

    assert_eq!(seen, ["one", "two"]);
}

#[tokio::test]
async fn env_resolves_config_maps_and_secrets() {
    let fixture = fixture().await;
    let client = client(&fixture.cluster, User::Admin).await;
    let namespace = fixture.cluster.namespace().to_string();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let settings = json!({ "metadata": { "name": "settings" }, "data": { "MODE": "fast", "LEVEL": "3" } });
    let creds = json!({ "metadata": { "name": "creds" }, "stringData": { "token": "s3cret" } });
    config_maps.create(&PostParams::default(), &serde_json::from_value(settings).unwrap()).await.unwrap();
    secrets.create(&PostParams::default(), &serde_json::from_value(creds).unwrap()).await.unwrap();
    let container = json!({ "template": { "spec": { "containers": [{
        "name": "main",
        "image": "busybox:1.36",
        "command": ["sh", "-c", "echo \"$CFG_MODE $CFG_LEVEL $TOKEN $POD $GREETING\""],
        "envFrom": [{ "configMapRef": { "name": "settings" }, "prefix": "CFG_" }],
        "env": [
            { "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "token" } } },
            { "name": "POD", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
            { "name": "GREETING", "value": "mode=$(CFG_MODE)" },
        ],
    }] } } });
    fixture.jobs.create(&PostParams::default(), &shell_job("envs", "", container)).await.unwrap();

    fixture.finished("envs").await;
    let pod = &fixture.pods_of("envs").await[0];
    let logs = fixture.pods.logs(pod.metadata.name.as_ref().unwrap(), &LogParams::default()).await.unwrap();

    assert_eq!(logs, format!("fast 3 s3cret {namespace} mode=fast\n"));
}

#[tokio::test]
async fn missing_config_map_blocks_container() {
    let fixture = fixture().await;
    let container = json!({ "template": { "spec": { "containers": [{
        "name": "main",
        "image": "busybox:1.36",
        "command": ["true"],
        "env": [{ "name": "X", "valueFrom": { "configMapKeyRef": { "name": "absent", "key": "x" } } }],
    }] } } });
    fixture.jobs.create(&PostParams::default(), &shell_job("blocked", "", container)).await.unwrap();

    let pods = fixture.pods.clone();
    let pod = wait_for("the config error", move || {
        let pods = pods.clone();
        async move {
            let params = ListParams::default().labels("batch.kubernetes.io/job-name=blocked");
            pods.list(&params).await.unwrap().items.into_iter().find(|pod| waiting_reason(pod).as_deref() == Some("CreateContainerConfigError"))
        }
    })
    .await;

    let message = pod.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap().message;
    assert_eq!(message.as_deref(), Some("configmap \"absent\" not found"));
}

#[tokio::test]
async fn failing_job_exceeds_backoff_limit() {
    let fixture = fixture().await;
    let job = shell_job("failing", "echo broken >&2; exit 3", json!({ "backoffLimit": 1 }));
    fixture.jobs.create(&PostParams::default(), &job).await.unwrap();

    let job = fixture.finished("failing").await;
    let pods = fixture.pods_of("failing").await;

    let status = job.status.clone().unwrap();
    assert_eq!(condition_types(&job), ["FailureTarget", "Failed"]);
    assert_eq!(condition_reason(&job, "Failed").as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(status.failed, Some(2));
    assert_eq!(status.completion_time, None);
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|pod| terminated_reason(pod) == Some((3, "Error".into()))));
    assert!(fixture.event_reasons("failing").await.contains(&"BackoffLimitExceeded".to_string()));
}

#[tokio::test]
async fn deadline_fails_running_job() {
    let fixture = fixture().await;
    let job = shell_job("slow", "sleep 60", json!({ "activeDeadlineSeconds": 1 }));
    fixture.jobs.create(&PostParams::default(), &job).await.unwrap();

    let job = fixture.finished("slow").await;

    assert_eq!(condition_reason(&job, "Failed").as_deref(), Some("DeadlineExceeded"));
    assert_eq!(job.status.as_ref().unwrap().failed, Some(1));
    assert_eq!(job.status.as_ref().unwrap().active, None);
}

#[tokio::test]
async fn suspended_job_runs_after_resume() {
    let fixture = fixture().await;
    let job = shell_job("paused", "echo resumed", json!({ "suspend": true }));
    fixture.jobs.create(&PostParams::default(), &job).await.unwrap();
    let jobs = fixture.jobs.clone();
    let suspended = wait_for("the Suspended condition", move || {
        let jobs = jobs.clone();
        async move { jobs.get("paused").await.ok().filter(|job| condition_types(job).contains(&"Suspended".to_string())) }
    })
    .await;
    let pods_while_suspended = fixture.pods_of("paused").await.len();

    let patch = json!({ "spec": { "suspend": false } });
    fixture.jobs.patch("paused", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let job = fixture.finished("paused").await;

    assert_eq!(condition_reason(&suspended, "Suspended").as_deref(), Some("JobSuspended"));
    assert_eq!(pods_while_suspended, 0);
    assert_eq!(condition_reason(&job, "Suspended").as_deref(), Some("JobResumed"));
    assert!(condition_types(&job).contains(&"Complete".to_string()));
}

#[tokio::test]
async fn parallel_job_runs_all_completions() {
    let fixture = fixture().await;
    let job = shell_job("batch", "sleep 0.3", json!({ "completions": 3, "parallelism": 2 }));
    fixture.jobs.create(&PostParams::default(), &job).await.unwrap();
    let jobs = fixture.jobs.clone();
    let busiest = wait_for("two active pods", move || {
        let jobs = jobs.clone();
        async move { jobs.get("batch").await.ok().and_then(|job| job.status?.active).filter(|active| *active == 2) }
    })
    .await;

    let job = fixture.finished("batch").await;

    assert_eq!(busiest, 2);
    assert_eq!(job.status.unwrap().succeeded, Some(3));
    assert_eq!(fixture.pods_of("batch").await.len(), 3);
}

#[tokio::test]
async fn oversized_pod_is_unschedulable() {
    let fixture = fixture().await;
    fixture.cluster.faults().set_node_capacity(1000, 1 << 30);
    let resources = json!({ "template": { "spec": { "containers": [{
        "name": "main", "image": "busybox:1.36", "command": ["true"],
        "resources": { "requests": { "cpu": "2" } },
    }] } } });
    fixture.jobs.create(&PostParams::default(), &shell_job("huge", "", resources)).await.unwrap();

    let pods = fixture.pods.clone();
    let condition = wait_for("the Unschedulable condition", move || {
        let pods = pods.clone();
        async move {
            let params = ListParams::default().labels("batch.kubernetes.io/job-name=huge");
            let pod = pods.list(&params).await.unwrap().items.into_iter().next()?;
            pod.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"))
        }
    })
    .await;
    let pod = fixture.first_pod("huge").await;

    assert_eq!(condition.status, "False");
    assert_eq!(condition.message.as_deref().map(|m| m.starts_with("0/1 nodes are available: 1 Insufficient cpu.")), Some(true));
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    assert!(fixture.event_reasons(pod.metadata.name.as_ref().unwrap()).await.contains(&"FailedScheduling".to_string()));
}

#[tokio::test]
async fn pod_over_quota_is_never_created() {
    let fixture = fixture().await;
    fixture.cluster.faults().set_cpu_quota(Some(1000));
    let resources = json!({ "template": { "spec": { "containers": [{
        "name": "main", "image": "busybox:1.36", "command": ["true"],
        "resources": { "requests": { "cpu": "2" } },
    }] } } });
    fixture.jobs.create(&PostParams::default(), &shell_job("greedy", "", resources)).await.unwrap();

    let events = fixture.events.clone();
    let message = wait_for("a FailedCreate event", move || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.unwrap();
            list.items.into_iter().find(|e| e.reason.as_deref() == Some("FailedCreate")).and_then(|e| e.message)
        }
    })
    .await;

    assert!(message.contains("exceeded quota: compute, requested: requests.cpu=2000m"), "{message}");
    assert!(fixture.pods_of("greedy").await.is_empty());
}

#[tokio::test]
async fn failed_pull_reports_backoff() {
    let fixture = fixture().await;
    fixture.cluster.faults().fail_image_pulls("registry.invalid/*");
    let container = json!({ "template": { "spec": { "containers": [{
        "name": "main", "image": "registry.invalid/tool:1", "command": ["true"],
    }] } } });
    fixture.jobs.create(&PostParams::default(), &shell_job("pull", "", container)).await.unwrap();

    let pods = fixture.pods.clone();
    let pod = wait_for("ImagePullBackOff", move || {
        let pods = pods.clone();
        async move {
            let params = ListParams::default().labels("batch.kubernetes.io/job-name=pull");
            pods.list(&params).await.unwrap().items.into_iter().find(|pod| waiting_reason(pod).as_deref() == Some("ImagePullBackOff"))
        }
    })
    .await;

    let name = pod.metadata.name.clone().unwrap();
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    assert!(fixture.event_reasons(&name).await.contains(&"Failed".to_string()));
    assert!(fixture.event_reasons(&name).await.contains(&"BackOff".to_string()));
}

#[tokio::test]
async fn oom_fault_kills_container() {
    let fixture = fixture().await;
    fixture.cluster.faults().oom_kill("hungry*");
    let container = json!({ "template": { "spec": { "containers": [{
        "name": "main", "image": "hungry:2", "command": ["sleep", "30"],
    }] } } });
    fixture.jobs.create(&PostParams::default(), &shell_job("oom", "", container)).await.unwrap();

    let job = fixture.finished("oom").await;
    let pod = &fixture.pods_of("oom").await[0];

    assert_eq!(condition_reason(&job, "Failed").as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(terminated_reason(pod), Some((137, "OOMKilled".into())));
}

#[tokio::test]
async fn background_delete_removes_pods() {
    let fixture = fixture().await;
    fixture.jobs.create(&PostParams::default(), &shell_job("doomed", "sleep 30", json!({}))).await.unwrap();
    fixture.first_pod("doomed").await;

    fixture.jobs.delete("doomed", &DeleteParams::background()).await.unwrap();

    let pods = fixture.pods.clone();
    wait_for("the pods to go", move || {
        let pods = pods.clone();
        async move {
            let params = ListParams::default().labels("batch.kubernetes.io/job-name=doomed");
            pods.list(&params).await.unwrap().items.is_empty().then_some(())
        }
    })
    .await;
    assert!(fixture.jobs.get_opt("doomed").await.unwrap().is_none());
}

#[tokio::test]
async fn deleted_pod_terminates_gracefully() {
    let fixture = fixture().await;
    let marker = tempfile::tempdir().unwrap();
    let path = marker.path().join("term");
    // The shell writes the marker when SIGTERM reaches it, then exits.
    let script = format!("trap 'echo term > {}; exit 0' TERM; sleep 30 & wait", path.display());
    let spec = json!({ "template": { "spec": { "terminationGracePeriodSeconds": 5 } } });
    fixture.jobs.create(&PostParams::default(), &shell_job("graceful", &script, spec)).await.unwrap();
    let pods = fixture.pods.clone();
    let name = wait_for("the pod to run", move || {
        let pods = pods.clone();
        async move {
            let params = ListParams::default().labels("batch.kubernetes.io/job-name=graceful");
            let pod = pods.list(&params).await.unwrap().items.into_iter().next()?;
            (pod.status?.phase.as_deref() == Some("Running")).then(|| pod.metadata.name.unwrap())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let deleted = fixture.pods.delete(&name, &DeleteParams::default()).await.unwrap();

    let pod = deleted.left().expect("a graceful delete returns the pod");
    assert!(pod.metadata.deletion_timestamp.is_some());
    assert_eq!(pod.metadata.deletion_grace_period_seconds, Some(5));
    let path_seen = path.clone();
    wait_for("the container to get SIGTERM", move || {
        let path = path_seen.clone();
        async move { path.exists().then_some(()) }
    })
    .await;
    let pods = fixture.pods.clone();
    wait_for("the pod to go", move || {
        let pods = pods.clone();
        let name = name.clone();
        async move { pods.get_opt(&name).await.unwrap().is_none().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn default_delete_orphans_pods() {
    let fixture = fixture().await;
    fixture.jobs.create(&PostParams::default(), &shell_job("parent", "sleep 2", json!({}))).await.unwrap();
    fixture.first_pod("parent").await;

    fixture.jobs.delete("parent", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pods = fixture.pods_of("parent").await;
    assert_eq!(pods.len(), 1);
    assert!(pods[0].metadata.owner_references.is_none());
}

#[tokio::test]
async fn finished_job_expires_after_ttl() {
    let fixture = fixture().await;
    let job = shell_job("short-lived", "true", json!({ "ttlSecondsAfterFinished": 1 }));
    fixture.jobs.create(&PostParams::default(), &job).await.unwrap();
    fixture.finished("short-lived").await;

    let jobs = fixture.jobs.clone();
    wait_for("the TTL to delete the Job", move || {
        let jobs = jobs.clone();
        async move { jobs.get_opt("short-lived").await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert!(fixture.pods_of("short-lived").await.is_empty());
}

//! The scheduler and kubelet of the fake's single node: binds pods that fit
//! the node's capacity, "pulls" images (failing on the fault patterns),
//! resolves the environment, runs each container's command as a local
//! process through the local executor's process runner, and writes pod
//! status as the kubelet does.
//!
//! NOTE: images are never pulled or run. A container runs its `command`
//! and `args` on this machine; without a `command` it ends with StartError,
//! because the image's entrypoint is unknown here. `workingDir`, volumes,
//! probes, ports and security contexts are ignored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobgate::executor::local::pod::resolve_program;
use jobgate::executor::local::process::{run_container, ContainerCommand, LogSink};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::cluster::Shared;
use crate::events::{self, Source};
use crate::objects::{name_of, now, uid_of};
use crate::quantity;
use crate::resource::Resource;
use crate::store::Key;

/// Name of the fake's only node.
pub const NODE_NAME: &str = "fake-node";
/// Host and pod IP of every pod: the containers run on this machine.
pub const NODE_IP: &str = "127.0.0.1";
/// How often the kubelet looks at every pod even without a change.
const RESYNC: Duration = Duration::from_millis(200);
/// Wait between attempts to schedule, pull or build the environment again.
const RETRY: Duration = Duration::from_secs(1);

/// Runs the scheduler and kubelet until shutdown.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut changes = shared.store.changes();
    let mut started: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(RESYNC) => {}
        }
        let (pods, _) = shared.store.list(Resource::Pods, None);
        let present: HashSet<String> = pods.iter().map(|pod| uid_of(pod).to_string()).collect();
        started.retain(|uid| present.contains(uid));
        // A pod removed from the API without a grace period (a forced
        // delete) may still have running containers. The kubelet stops the
        // containers of a pod it no longer finds, and so does this loop.
        for (uid, token) in shared.running_pods.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            if !present.contains(uid) {
                token.cancel();
            }
        }
        for pod in pods {
            let uid = uid_of(&pod).to_string();
            let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string();
            let key = Key::new(Resource::Pods, &namespace, name_of(&pod));
            let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
            let running = shared
                .running_pods
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(&uid)
                .cloned();
            if let Some(token) = running {
                if deleting {
                    token.cancel();
                }
                continue;
            }
            if deleting {
                remove_pod(&shared, &key);
                continue;
            }
            let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
            if started.contains(&uid) || matches!(phase, "Succeeded" | "Failed") {
                continue;
            }
            started.insert(uid.clone());
            let token = CancellationToken::new();
            shared
                .running_pods
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(uid.clone(), token.clone());
            let shared = shared.clone();
            tokio::spawn(async move {
                let run = Arc::new(PodRun::new(shared.clone(), pod, key.clone()));
                run.run(&token).await;
                shared
                    .running_pods
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(&uid);
                let deleting = shared
                    .store
                    .get(&key)
                    .is_some_and(|pod| pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()));
                if deleting {
                    remove_pod(&shared, &key);
                }
            });
        }
    }
}

fn remove_pod(shared: &Shared, key: &Key) {
    shared.store.remove(key);
    shared.logs.forget_pod(&key.namespace, &key.name);
}

/// How one container run ended.
enum Outcome {
    /// The pod is being stopped; do not restart.
    Stopped,
    /// The container exited by itself or could not start.
    Exited { success: bool },
}

#[derive(Debug, Default)]
struct StatusModel {
    phase: String,
    conditions: BTreeMap<&'static str, Value>,
    init_statuses: Vec<Value>,
    statuses: Vec<Value>,
    start_time: Option<String>,
}

/// One pod being run.
struct PodRun {
    shared: Arc<Shared>,
    pod: Value,
    key: Key,
    status: Mutex<StatusModel>,
    dir: PathBuf,
}

fn containers(pod: &Value, list: &str) -> Vec<Value> {
    pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).cloned().unwrap_or_default()
}

fn waiting(container: &Value, reason: &str, message: Option<&str>) -> Value {
    let mut state = json!({ "reason": reason });
    if let Some(message) = message {
        state["message"] = json!(message);
    }
    json!({
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": false,
        "restartCount": 0,
        "started": false,
        "state": { "waiting": state },
        "lastState": {},
    })
}

impl PodRun {
    fn new(shared: Arc<Shared>, pod: Value, key: Key) -> Self {
        let dir = shared.work_dir.join(&key.namespace).join(format!("{}-{}", key.name, &uid_of(&pod)[..8.min(uid_of(&pod).len())]));
        let model = StatusModel {
            phase: "Pending".into(),
            init_statuses: containers(&pod, "initContainers").iter().map(|c| waiting(c, "PodInitializing", None)).collect(),
            statuses: containers(&pod, "containers").iter().map(|c| waiting(c, "ContainerCreating", None)).collect(),
            ..Default::default()
        };
        PodRun {
            shared,
            pod,
            key,
            status: Mutex::new(model),
            dir,
        }
    }

    fn model(&self) -> std::sync::MutexGuard<'_, StatusModel> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_condition(&self, kind: &'static str, status: bool, reason: Option<&str>, message: Option<&str>) {
        let mut model = self.model();
        let unchanged = model.conditions.get(kind).is_some_and(|c| {
            c["status"] == if status { "True" } else { "False" } && c.get("reason").and_then(Value::as_str) == reason
        });
        if unchanged {
            return;
        }
        let mut condition = json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": now(),
        });
        if let Some(reason) = reason {
            condition["reason"] = json!(reason);
        }
        if let Some(message) = message {
            condition["message"] = json!(message);
        }
        model.conditions.insert(kind, condition);
    }

    /// Writes the status model to the stored pod.
    fn publish(&self) {
        let status = {
            let model = self.model();
            let order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"];
            let conditions: Vec<Value> = order.iter().filter_map(|kind| model.conditions.get(kind).cloned()).collect();
            let mut status = json!({
                "phase": model.phase,
                "conditions": conditions,
                "qosClass": crate::objects::qos_class(&self.pod["spec"]),
            });
            if let Some(start) = &model.start_time {
                status["startTime"] = json!(start);
                status["hostIP"] = json!(NODE_IP);
                status["hostIPs"] = json!([{ "ip": NODE_IP }]);
                status["podIP"] = json!(NODE_IP);
                status["podIPs"] = json!([{ "ip": NODE_IP }]);
                status["containerStatuses"] = json!(model.statuses);
                if !model.init_statuses.is_empty() {
                    status["initContainerStatuses"] = json!(model.init_statuses);
                }
            }
            status
        };
        let result = self.shared.store.update(&self.key, |pod| {
            pod["status"] = status;
            Ok(())
        });
        if let Err(error) = result {
            tracing::debug!(%error, pod = %self.key.name, "updating the pod status failed");
        }
    }

    fn event(&self, warning: bool, reason: &str, message: &str, source: Source, container: Option<&str>) {
        let pod = self.shared.store.get(&self.key).unwrap_or_else(|| self.pod.clone());
        let field_path = container.map(|name| format!("spec.containers{{{name}}}"));
        events::record(&self.shared.store, &pod, warning, reason, message, source, field_path.as_deref());
    }

    fn set_container(&self, init: bool, index: usize, change: impl FnOnce(&mut Value)) {
        let mut model = self.model();
        let list = if init { &mut model.init_statuses } else { &mut model.statuses };
        if let Some(status) = list.get_mut(index) {
            change(status);
        }
    }

    async fn run(self: &Arc<Self>, stop: &CancellationToken) {
        if !self.schedule(stop).await {
            return;
        }
        {
            let mut model = self.model();
            model.start_time = Some(now());
        }
        self.set_condition("PodReadyToStartContainers", true, None, None);
        let init_containers = containers(&self.pod, "initContainers");
        self.set_condition("Initialized", init_containers.is_empty(), (!init_containers.is_empty()).then_some("ContainersNotInitialized"), None);
        self.set_condition("Ready", false, Some("ContainersNotReady"), None);
        self.set_condition("ContainersReady", false, Some("ContainersNotReady"), None);
        self.publish();
        if let Err(error) = std::fs::create_dir_all(self.dir.join("work")).and_then(|()| std::fs::create_dir_all(self.dir.join("logs"))) {
            tracing::error!(%error, pod = %self.key.name, "creating the pod's working folder failed");
        }
        let restart_policy = self.pod.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always").to_string();

        for index in 0..init_containers.len() {
            let mut restarts = 0;
            loop {
                match self.run_container(true, index, restarts, stop).await {
                    Outcome::Stopped => return self.finish(),
                    Outcome::Exited { success: true } => break,
                    Outcome::Exited { success: false } if restart_policy == "Never" => return self.finish(),
                    Outcome::Exited { success: false } => {
                        if !self.wait(stop, self.shared.container_restart_delay).await {
                            return self.finish();
                        }
                        restarts += 1;
                    }
                }
            }
        }
        if !init_containers.is_empty() {
            self.set_condition("Initialized", true, None, None);
        }
        let count = containers(&self.pod, "containers").len();
        let loops = (0..count).map(|index| {
            let run = self.clone();
            let policy = restart_policy.clone();
            async move {
                let mut restarts = 0;
                loop {
                    let success = match run.run_container(false, index, restarts, stop).await {
                        Outcome::Stopped => return,
                        Outcome::Exited { success } => success,
                    };
                    let restart = match policy.as_str() {
                        "Always" => true,
                        "OnFailure" => !success,
                        _ => false,
                    };
                    if !restart || !run.wait(stop, run.shared.container_restart_delay).await {
                        return;
                    }
                    restarts += 1;
                }
            }
        });
        futures::future::join_all(loops).await;
        self.finish();
    }

    /// Sleeps, returning false when the pod is stopped first.
    async fn wait(&self, stop: &CancellationToken, delay: Duration) -> bool {
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// Binds the pod to the node once its requests fit; returns false when
    /// it was stopped while unschedulable.
    async fn schedule(&self, stop: &CancellationToken) -> bool {
        let mut reported = false;
        loop {
            let capacity = self.shared.faults.node_capacity();
            let (cpu, memory) = quantity::pod_requests(&self.pod["spec"]);
            let mut short = Vec::new();
            if cpu > capacity.cpu_millis {
                short.push("1 Insufficient cpu");
            }
            if memory > capacity.memory_bytes {
                short.push("1 Insufficient memory");
            }
            if short.is_empty() {
                break;
            }
            if !reported {
                let message = format!(
                    "0/1 nodes are available: {}. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
                    short.join(", ")
                );
                self.set_condition("PodScheduled", false, Some("Unschedulable"), Some(&message));
                self.publish();
                self.event(true, "FailedScheduling", &message, Source::Scheduler, None);
                reported = true;
            }
            if !self.wait(stop, RETRY).await {
                return false;
            }
        }
        let bound = self.shared.store.update(&self.key, |pod| {
            pod["spec"]["nodeName"] = json!(NODE_NAME);
            Ok(())
        });
        if bound.is_err() {
            return false;
        }
        self.set_condition("PodScheduled", true, None, None);
        let message = format!("Successfully assigned {}/{} to {NODE_NAME}", self.key.namespace, self.key.name);
        self.event(false, "Scheduled", &message, Source::Scheduler, None);
        true
    }

    /// Pulls the image, resolving the pull faults; returns false when
    /// the pod was stopped first.
    async fn pull(&self, init: bool, index: usize, container: &Value, stop: &CancellationToken) -> bool {
        let name = container["name"].as_str().unwrap_or_default();
        let image = container["image"].as_str().unwrap_or_default();
        let mut reported = false;
        while self.shared.faults.image_pull_fails(image) {
            let error = format!(
                "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"
            );
            if !reported {
                self.event(false, "Pulling", &format!("Pulling image \"{image}\""), Source::Kubelet, Some(name));
                self.event(true, "Failed", &format!("Failed to pull image \"{image}\": {error}"), Source::Kubelet, Some(name));
                self.event(true, "Failed", "Error: ErrImagePull", Source::Kubelet, Some(name));
                self.set_container(init, index, |status| {
                    status["state"] = json!({ "waiting": { "reason": "ErrImagePull", "message": error } });
                });
                self.publish();
                if !self.wait(stop, RETRY).await {
                    return false;
                }
                reported = true;
            }
            let message = format!("Back-off pulling image \"{image}\": ErrImagePull: {error}");
            self.set_container(init, index, |status| {
                status["state"] = json!({ "waiting": { "reason": "ImagePullBackOff", "message": message } });
            });
            self.publish();
            self.event(false, "BackOff", &format!("Back-off pulling image \"{image}\""), Source::Kubelet, Some(name));
            self.event(true, "Failed", "Error: ImagePullBackOff", Source::Kubelet, Some(name));
            if !self.wait(stop, RETRY).await {
                return false;
            }
        }
        let message = format!("Container image \"{image}\" already present on machine");
        self.event(false, "Pulled", &message, Source::Kubelet, Some(name));
        true
    }

    /// Runs one container once: pull, environment, process. Records every
    /// state change in the pod status.
    async fn run_container(&self, init: bool, index: usize, restarts: i64, stop: &CancellationToken) -> Outcome {
        let list = if init { "initContainers" } else { "containers" };
        let container = containers(&self.pod, list)[index].clone();
        let name = container["name"].as_str().unwrap_or_default().to_string();
        let image = container["image"].as_str().unwrap_or_default().to_string();
        if !self.pull(init, index, &container, stop).await {
            return Outcome::Stopped;
        }

        let node = self.shared.faults.node_capacity();
        let env = loop {
            let pod = self.shared.store.get(&self.key).unwrap_or_else(|| self.pod.clone());
            match crate::env::resolve(&self.shared.store, &pod, &container, (node.cpu_millis, node.memory_bytes)) {
                Ok(env) => break env,
                Err(message) => {
                    self.set_container(init, index, |status| {
                        status["state"] = json!({ "waiting": { "reason": "CreateContainerConfigError", "message": message } });
                    });
                    self.publish();
                    self.event(true, "Failed", &format!("Error: {message}"), Source::Kubelet, Some(&name));
                    if !self.wait(stop, RETRY).await {
                        return Outcome::Stopped;
                    }
                }
            }
        };
        let mut env = env;
        env.push(("HOSTNAME".into(), self.key.name.clone()));
        env.push(("KUBERNETES_SERVICE_HOST".into(), NODE_IP.into()));
        env.push(("KUBERNETES_SERVICE_PORT".into(), self.shared.address.rsplit(':').next().unwrap_or_default().into()));
        let values: HashMap<String, String> = env.iter().cloned().collect();
        let mut words: Vec<String> = Vec::new();
        for field in ["command", "args"] {
            for word in container.get(field).and_then(Value::as_array).into_iter().flatten() {
                words.push(crate::env::expand(word.as_str().unwrap_or_default(), &values));
            }
        }
        let has_command = container.get("command").and_then(Value::as_array).is_some_and(|c| !c.is_empty());
        let container_id = format!("fake://{}/{name}/{restarts}", uid_of(&self.pod));
        let program = if has_command { resolve_program(&words[0], &self.shared.bin_dirs) } else { None };
        let Some(program) = program else {
            let message = if has_command {
                format!("failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{}\": executable file not found in $PATH: unknown", words[0])
            } else {
                format!("the fake kubelet runs only containers that set command: the entrypoint of image \"{image}\" is unknown here")
            };
            let time = now();
            self.set_container(init, index, |status| {
                status["state"] = json!({ "terminated": {
                    "exitCode": 128, "reason": "StartError", "message": message,
                    "startedAt": "1970-01-01T00:00:00Z", "finishedAt": time, "containerID": container_id,
                } });
                status["restartCount"] = json!(restarts);
            });
            self.publish();
            self.event(true, "Failed", &format!("Error: {message}"), Source::Kubelet, Some(&name));
            return Outcome::Exited { success: false };
        };

        let log_path = self.dir.join("logs").join(format!("{name}.{restarts}.log"));
        let log_run = self.shared.logs.start_run(&self.key.namespace, &self.key.name, &name, log_path.clone());
        let sink = match LogSink::open(log_path).await {
            Ok(sink) => sink,
            Err(error) => {
                tracing::error!(%error, pod = %self.key.name, container = %name, "opening the container log failed");
                log_run.finished.cancel();
                return Outcome::Exited { success: false };
            }
        };
        let command = ContainerCommand {
            name: name.clone(),
            program,
            args: words[1..].to_vec(),
            env,
            cwd: self.dir.join("work"),
        };
        let memory_limit = container.pointer("/resources/limits/memory").and_then(quantity::memory_bytes);
        let oom_after = self.shared.faults.oom_kill_after(&name, &image, memory_limit);
        let grace = if oom_after.is_some() {
            Duration::ZERO
        } else {
            Duration::from_secs(self.pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30))
        };
        let container_stop = stop.child_token();
        let oom_killed = Arc::new(AtomicBool::new(false));
        if let Some(delay) = oom_after {
            let token = container_stop.clone();
            let flag = oom_killed.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = token.cancelled() => {}
                    () = tokio::time::sleep(delay) => {
                        flag.store(true, Ordering::SeqCst);
                        token.cancel();
                    }
                }
            });
        }

        self.event(false, "Created", &format!("Created container: {name}"), Source::Kubelet, Some(&name));
        self.event(false, "Started", &format!("Started container {name}"), Source::Kubelet, Some(&name));
        let started_at = now();
        self.set_container(init, index, |status| {
            let previous = status["state"].clone();
            if previous.get("terminated").is_some() {
                status["lastState"] = previous;
            }
            status["state"] = json!({ "running": { "startedAt": started_at } });
            status["ready"] = json!(!init);
            status["started"] = json!(true);
            status["restartCount"] = json!(restarts);
            status["containerID"] = json!(container_id);
            status["imageID"] = json!(format!("fake://{image}"));
        });
        if !init {
            let mut model = self.model();
            model.phase = "Running".into();
        }
        self.update_readiness();
        self.publish();

        let result = run_container(&command, &sink, &container_stop, grace).await;
        log_run.finished.cancel();
        let stopped = stop.is_cancelled();
        if stopped {
            self.event(false, "Killing", &format!("Stopping container {name}"), Source::Kubelet, Some(&name));
        }
        let (exit_code, reason, message) = match &result {
            _ if oom_killed.load(Ordering::SeqCst) => (137, "OOMKilled", None),
            Ok(exit) => match (exit.code, exit.signal) {
                (Some(0), _) => (0, "Completed", None),
                (Some(code), _) => (code, "Error", None),
                (None, Some(signal)) => (128 + signal, "Error", None),
                (None, None) => (128, "Error", None),
            },
            Err(error) => (128, "StartError", Some(format!("starting the process failed: {error}"))),
        };
        let finished_at = now();
        self.set_container(init, index, |status| {
            let started_at = status.pointer("/state/running/startedAt").cloned().unwrap_or(json!(finished_at));
            let mut terminated = json!({
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": started_at,
                "finishedAt": finished_at,
                "containerID": container_id,
            });
            if let Some(message) = &message {
                terminated["message"] = json!(message);
            }
            status["state"] = json!({ "terminated": terminated });
            status["ready"] = json!(false);
            status["started"] = json!(false);
        });
        self.update_readiness();
        self.publish();
        if reason == "OOMKilled" {
            tracing::debug!(pod = %self.key.name, container = %name, "killed a container as OOMKilled by fault injection");
        }
        if stopped {
            Outcome::Stopped
        } else {
            Outcome::Exited { success: exit_code == 0 }
        }
    }

    fn update_readiness(&self) {
        let unready: Vec<String> = {
            let model = self.model();
            model
                .statuses
                .iter()
                .filter(|status| status["ready"] != true)
                .filter_map(|status| status["name"].as_str().map(str::to_string))
                .collect()
        };
        if unready.is_empty() {
            self.set_condition("Ready", true, None, None);
            self.set_condition("ContainersReady", true, None, None);
        } else {
            let message = format!("containers with unready status: [{}]", unready.join(" "));
            self.set_condition("Ready", false, Some("ContainersNotReady"), Some(&message));
            self.set_condition("ContainersReady", false, Some("ContainersNotReady"), Some(&message));
        }
    }

    /// Sets the terminal phase from the containers' exit codes.
    fn finish(&self) {
        let terminated_ok = |status: &Value| status.pointer("/state/terminated/exitCode").and_then(Value::as_i64) == Some(0);
        {
            let mut model = self.model();
            let init_ok = model.init_statuses.iter().all(terminated_ok);
            let main_ok = model.statuses.iter().all(terminated_ok);
            let started = model.start_time.is_some();
            model.phase = if !started {
                "Pending".into()
            } else if init_ok && main_ok {
                "Succeeded".into()
            } else {
                "Failed".into()
            };
            // Containers that never ran are reported as not started.
            let model = &mut *model;
            for status in model.init_statuses.iter_mut().chain(model.statuses.iter_mut()) {
                if status.pointer("/state/waiting").is_some() && started {
                    status["state"] = json!({ "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was terminated",
                        "startedAt": null,
                        "finishedAt": now(),
                    } });
                }
            }
        }
        let started = self.model().start_time.is_some();
        if started {
            self.set_condition("PodReadyToStartContainers", false, None, None);
            self.set_condition("Ready", false, Some("PodCompleted"), None);
            self.set_condition("ContainersReady", false, Some("PodCompleted"), None);
        }
        self.publish();
    }
}

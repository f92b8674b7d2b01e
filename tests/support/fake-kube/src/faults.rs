//! Fault injection: what tests switch on to see how the gateway copes with
//! failed pulls, unschedulable pods, OOM kills, slow API calls and 429 or
//! 5xx responses.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use wildmatch::WildMatch;

/// Default node capacity: 4 CPUs, as millicores.
pub const DEFAULT_NODE_CPU_MILLIS: u64 = 4_000;
/// Default node capacity: 8 GiB of memory, in bytes.
pub const DEFAULT_NODE_MEMORY_BYTES: u64 = 8 << 30;
/// Default `Retry-After` of an injected 429, in seconds.
pub const DEFAULT_RETRY_AFTER_SECONDS: u64 = 1;
/// Default run time of an OOM-faulted container before it is killed, so that
/// it is seen running first.
pub const DEFAULT_OOM_DELAY: Duration = Duration::from_millis(300);

/// Allocatable resources of the fake's single node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCapacity {
    /// CPU, in millicores.
    pub cpu_millis: u64,
    /// Memory, in bytes.
    pub memory_bytes: u64,
}

/// A queued response that replaces the next matching API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedStatus {
    /// HTTP status to send: 429 gets `Retry-After`, 500 InternalError,
    /// 503 ServiceUnavailable.
    pub code: u16,
    /// RBAC verb the request must have (`get`, `list`, `watch`, `create`,
    /// `update`, `patch`, `delete`), or any.
    pub verb: Option<String>,
    /// Plural resource the request must name (`jobs`, `pods`), or any.
    pub resource: Option<String>,
}

#[derive(Debug)]
struct FaultState {
    pull_failures: Vec<String>,
    oom_patterns: Vec<String>,
    oom_memory_limit_below: Option<u64>,
    oom_delay: Duration,
    capacity: NodeCapacity,
    cpu_quota: Option<u64>,
    latency: Duration,
    injected: VecDeque<InjectedStatus>,
    injected_served: usize,
    retry_after: u64,
}

/// Handle to switch faults on and off while the fake runs; clones share state.
#[derive(Debug, Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    watch_generation: Arc<watch::Sender<u64>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            state: Arc::new(Mutex::new(FaultState {
                pull_failures: Vec::new(),
                oom_patterns: Vec::new(),
                oom_memory_limit_below: None,
                oom_delay: DEFAULT_OOM_DELAY,
                capacity: NodeCapacity {
                    cpu_millis: DEFAULT_NODE_CPU_MILLIS,
                    memory_bytes: DEFAULT_NODE_MEMORY_BYTES,
                },
                cpu_quota: None,
                latency: Duration::ZERO,
                injected: VecDeque::new(),
                injected_served: 0,
                retry_after: DEFAULT_RETRY_AFTER_SECONDS,
            })),
            watch_generation: Arc::new(watch::channel(0).0),
        }
    }
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes pulls of images matching `pattern` fail (`*` and `?` are
    /// wildcards, matched against the image as written in the pod spec).
    pub fn fail_image_pulls(&self, pattern: &str) {
        self.lock().pull_failures.push(pattern.to_string());
    }

    /// Lets every image pull succeed again.
    pub fn clear_image_pull_failures(&self) {
        self.lock().pull_failures.clear();
    }

    /// Returns true when pulling `image` is set to fail.
    pub fn image_pull_fails(&self, image: &str) -> bool {
        self.lock()
            .pull_failures
            .iter()
            .any(|pattern| WildMatch::new(pattern).matches(image))
    }

    /// Sets the node's allocatable CPU (millicores) and memory (bytes); a pod
    /// whose requests exceed either stays Pending as Unschedulable.
    pub fn set_node_capacity(&self, cpu_millis: u64, memory_bytes: u64) {
        self.lock().capacity = NodeCapacity {
            cpu_millis,
            memory_bytes,
        };
    }

    /// Returns the node's allocatable resources.
    pub fn node_capacity(&self) -> NodeCapacity {
        self.lock().capacity
    }

    /// Sets a ResourceQuota on `requests.cpu` (millicores) for every
    /// namespace: the job controller cannot create a pod that asks for more,
    /// and records FailedCreate events instead. Pods are checked one by
    /// one, without counting the requests of pods already running.
    pub fn set_cpu_quota(&self, millis: Option<u64>) {
        self.lock().cpu_quota = millis;
    }

    /// Returns the CPU quota, in millicores.
    pub fn cpu_quota(&self) -> Option<u64> {
        self.lock().cpu_quota
    }

    /// Makes containers whose name or image matches `pattern` (wildcards as in
    /// [`Faults::fail_image_pulls`]) get killed as OOMKilled shortly after
    /// they start.
    pub fn oom_kill(&self, pattern: &str) {
        self.lock().oom_patterns.push(pattern.to_string());
    }

    /// Makes containers with a memory limit below `bytes` get killed as
    /// OOMKilled shortly after they start.
    pub fn oom_kill_below_memory_limit(&self, bytes: u64) {
        self.lock().oom_memory_limit_below = Some(bytes);
    }

    /// Sets how long an OOM-faulted container runs before it is killed.
    pub fn set_oom_delay(&self, delay: Duration) {
        self.lock().oom_delay = delay;
    }

    /// Returns the OOM delay when the container is set to be OOM-killed.
    pub fn oom_kill_after(&self, name: &str, image: &str, memory_limit: Option<u64>) -> Option<Duration> {
        let state = self.lock();
        let by_pattern = state.oom_patterns.iter().any(|pattern| {
            let pattern = WildMatch::new(pattern);
            pattern.matches(name) || pattern.matches(image)
        });
        let by_limit = matches!(
            (state.oom_memory_limit_below, memory_limit),
            (Some(threshold), Some(limit)) if limit < threshold
        );
        (by_pattern || by_limit).then_some(state.oom_delay)
    }

    /// Delays every API request by `latency` before it is served.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Returns the injected API latency.
    pub fn latency(&self) -> Duration {
        self.lock().latency
    }

    /// Queues `times` responses with status `code` for requests matching
    /// `verb` and `resource` (`None` matches any). Queued responses are used
    /// in order, each once.
    pub fn inject_status(&self, code: u16, verb: Option<&str>, resource: Option<&str>, times: usize) {
        let mut state = self.lock();
        for _ in 0..times {
            state.injected.push_back(InjectedStatus {
                code,
                verb: verb.map(str::to_string),
                resource: resource.map(str::to_string),
            });
        }
    }

    /// Sets the `Retry-After` seconds of injected 429 responses.
    pub fn set_retry_after(&self, seconds: u64) {
        self.lock().retry_after = seconds;
    }

    /// Takes the first queued response that matches the request, with the
    /// `Retry-After` to send.
    pub fn take_injected(&self, verb: &str, resource: Option<&str>) -> Option<(u16, u64)> {
        let mut state = self.lock();
        let position = state.injected.iter().position(|injected| {
            injected.verb.as_deref().is_none_or(|v| v == verb)
                && injected.resource.as_deref().is_none_or(|r| Some(r) == resource)
        })?;
        let injected = state.injected.remove(position)?;
        state.injected_served += 1;
        Some((injected.code, state.retry_after))
    }

    /// Returns how many injected responses were sent.
    pub fn injected_served(&self) -> usize {
        self.lock().injected_served
    }

    /// Returns how many injected responses are still queued.
    pub fn injected_pending(&self) -> usize {
        self.lock().injected.len()
    }

    /// Ends every open watch stream, as an API server restart or a load
    /// balancer timeout would; clients then watch again from their last
    /// version.
    pub fn close_watches(&self) {
        self.watch_generation.send_modify(|generation| *generation += 1);
    }

    /// Returns a receiver that changes when watches are to be closed.
    pub(crate) fn watch_closes(&self) -> watch::Receiver<u64> {
        self.watch_generation.subscribe()
    }
}

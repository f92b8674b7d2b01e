//! Turning a rendered Job into what the local executor runs: its containers'
//! commands and the Job's retry, deadline and grace settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Container;

use super::process::ContainerCommand;
use crate::executor::ExecutorError;

/// Kubernetes' default `backoffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: u32 = 6;
/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// A container before its working folder is known.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    /// Container name.
    pub name: String,
    /// Resolved program, or `None` when it was not found; the attempt then
    /// fails with `StartError`, as a missing binary does in a cluster.
    pub program: Option<PathBuf>,
    /// Program name as the manifest gives it.
    pub program_name: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment from the manifest.
    pub env: Vec<(String, String)>,
}

impl ContainerPlan {
    /// Returns the command to run in `cwd`, or `None` when the program is missing.
    pub fn command(&self, cwd: &Path) -> Option<ContainerCommand> {
        Some(ContainerCommand {
            name: self.name.clone(),
            program: self.program.clone()?,
            args: self.args.clone(),
            env: self.env.clone(),
            cwd: cwd.to_owned(),
        })
    }
}

/// Containers and Job settings that the local executor runs for one job.
#[derive(Debug, Clone)]
pub struct PodPlan {
    /// Init containers, run one after another before the others.
    pub init_containers: Vec<ContainerPlan>,
    /// Containers, run side by side.
    pub containers: Vec<ContainerPlan>,
    /// Failed attempts allowed before the job fails.
    pub backoff_limit: u32,
    /// Longest time the job may run, counted from the start of its first attempt.
    pub active_deadline: Option<Duration>,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
}

impl PodPlan {
    /// Builds the plan, rejecting manifest features the local executor cannot honour.
    pub fn from_job(job: &Job, bin_dirs: &[PathBuf]) -> Result<Self, ExecutorError> {
        let unrunnable = |why: String| ExecutorError::Unrunnable {
            executor: "local",
            why,
        };
        let spec = job
            .spec
            .as_ref()
            .ok_or_else(|| unrunnable("the Job has no spec".into()))?;
        let pod = spec
            .template
            .spec
            .as_ref()
            .ok_or_else(|| unrunnable("the Job has no pod spec".into()))?;
        if spec.parallelism.is_some_and(|p| p > 1) || spec.completions.is_some_and(|c| c > 1) {
            return Err(unrunnable(
                "parallelism and completions above 1 need the kubernetes executor".into(),
            ));
        }
        let plan = |container: &Container| container_plan(container, bin_dirs).map_err(unrunnable);
        Ok(Self {
            init_containers: pod
                .init_containers
                .iter()
                .flatten()
                .map(plan)
                .collect::<Result<_, _>>()?,
            containers: pod.containers.iter().map(plan).collect::<Result<_, _>>()?,
            backoff_limit: spec
                .backoff_limit
                .map_or(DEFAULT_BACKOFF_LIMIT, |limit| limit.max(0) as u32),
            active_deadline: spec
                .active_deadline_seconds
                .map(|seconds| Duration::from_secs(seconds.max(0) as u64)),
            grace: pod
                .termination_grace_period_seconds
                .map_or(DEFAULT_GRACE, |seconds| Duration::from_secs(seconds.max(0) as u64)),
        })
    }
}

fn container_plan(container: &Container, bin_dirs: &[PathBuf]) -> Result<ContainerPlan, String> {
    let name = &container.name;
    let mut words = container.command.clone().unwrap_or_default();
    if words.is_empty() {
        return Err(format!(
            "container {name:?} has no command; the local executor runs commands, not image \
             entrypoints, so add `command:` to the template"
        ));
    }
    words.extend(container.args.clone().unwrap_or_default());
    let program_name = words.remove(0);
    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(format!(
            "container {name:?} uses envFrom, which needs the kubernetes executor"
        ));
    }
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        if var.value_from.is_some() {
            return Err(format!(
                "variable {:?} of container {name:?} uses valueFrom, which needs the kubernetes executor",
                var.name
            ));
        }
        env.push((var.name.clone(), var.value.clone().unwrap_or_default()));
    }
    Ok(ContainerPlan {
        name: name.clone(),
        program: resolve_program(&program_name, bin_dirs),
        program_name,
        args: words,
        env,
    })
}

/// Finds a program: a path as it is, a bare name in `bin_dirs` first (where
/// the gateway's own binaries are) and then on `PATH`.
pub fn resolve_program(name: &str, bin_dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_absolute().then_some(path).filter(|p| is_executable(p));
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    bin_dirs
        .iter()
        .chain(path_dirs.iter())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::render::parse_job;

    fn job(body: &str) -> Job {
        parse_job(&format!(
            "apiVersion: batch/v1\nkind: Job\nspec:\n{body}"
        ))
        .unwrap()
    }

    #[test]
    fn plan_reads_retry_deadline_and_grace() {
        let plan = PodPlan::from_job(
            &job("  backoffLimit: 2\n  activeDeadlineSeconds: 5\n  template:\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: a\n          image: x\n          command: [sh]\n          args: [-c, 'exit 0']\n"),
            &[],
        )
        .unwrap();
        assert_eq!(plan.backoff_limit, 2);
        assert_eq!(plan.active_deadline, Some(Duration::from_secs(5)));
        assert_eq!(plan.grace, Duration::from_secs(1));
        assert!(plan.containers[0].program.is_some(), "sh was not found on PATH");
        assert_eq!(plan.containers[0].args, vec!["-c", "exit 0"]);
    }

    #[test]
    fn plan_defaults_follow_kubernetes() {
        let plan = PodPlan::from_job(
            &job("  template:\n    spec:\n      containers:\n        - name: a\n          command: [sh]\n"),
            &[],
        )
        .unwrap();
        assert_eq!(plan.backoff_limit, DEFAULT_BACKOFF_LIMIT);
        assert_eq!(plan.grace, DEFAULT_GRACE);
        assert_eq!(plan.active_deadline, None);
    }

    #[test]
    fn plan_rejects_what_needs_a_cluster() {
        for body in [
            "  template:\n    spec:\n      containers:\n        - name: a\n          image: x\n",
            "  template:\n    spec:\n      containers:\n        - name: a\n          command: [sh]\n          env:\n            - name: K\n              valueFrom:\n                secretKeyRef: {name: s, key: k}\n",
            "  parallelism: 3\n  template:\n    spec:\n      containers:\n        - name: a\n          command: [sh]\n",
        ] {
            let err = PodPlan::from_job(&job(body), &[]).unwrap_err();
            assert!(matches!(err, ExecutorError::Unrunnable { .. }), "{err}");
        }
    }

    #[test]
    fn missing_program_resolves_to_none() {
        assert_eq!(resolve_program("jobgate-no-such-program", &[]), None);
        assert_eq!(resolve_program("relative/path", &[]), None);
    }
}

//! What the gateway itself sets on every rendered Job, whatever the template
//! says: name, labels, and the worker environment.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar};
use jobgate_worker::protocol::{ENV_JOB_ID, ENV_STORE};

use crate::job::JobId;

/// Label holding the job id.
pub const ID_LABEL: &str = "jobgate.dev/id";
/// Label holding the template name.
pub const TEMPLATE_LABEL: &str = "jobgate.dev/template";

/// Sets the Job's name, labels (on the Job and its pods) and the worker
/// variables of every container. Values the template set for these are
/// replaced, so a template cannot point a job at another job's records.
pub fn decorate(job: &mut Job, id: JobId, template: &str, store_url: &str, store_env: &[(String, String)]) {
    let labels = BTreeMap::from([
        (ID_LABEL.to_owned(), id.to_string()),
        (TEMPLATE_LABEL.to_owned(), template.to_owned()),
    ]);
    job.metadata.name = Some(id.k8s_name());
    job.metadata.generate_name = None;
    job.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels.clone());
    let Some(spec) = job.spec.as_mut() else { return };
    spec.template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels);
    let Some(pod) = spec.template.spec.as_mut() else { return };
    let mut injected = vec![
        (ENV_JOB_ID.to_owned(), id.to_string()),
        (ENV_STORE.to_owned(), store_url.to_owned()),
    ];
    injected.extend(store_env.iter().cloned());
    for container in pod
        .containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten())
    {
        inject_env(container, &injected);
    }
}

fn inject_env(container: &mut Container, injected: &[(String, String)]) {
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|var| !injected.iter().any(|(name, _)| var.name == *name));
    env.extend(injected.iter().map(|(name, value)| EnvVar {
        name: name.clone(),
        value: Some(value.clone()),
        value_from: None,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::render::parse_job;

    #[test]
    fn decorate_overrides_template_values() {
        let mut job = parse_job(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: chosen-by-template\n  labels:\n    jobgate.dev/id: forged\n    team: a\nspec:\n  template:\n    spec:\n      containers:\n        - name: main\n          command: [x]\n          env:\n            - name: JOBGATE_JOB_ID\n              value: forged\n            - name: KEEP\n              value: kept\n",
        )
        .unwrap();
        let id = JobId::new();
        decorate(&mut job, id, "echo", "file:///data", &[("AWS_REGION".into(), "garage".into())]);
        assert_eq!(job.metadata.name, Some(format!("jobgate-{id}")));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[ID_LABEL], id.to_string());
        assert_eq!(labels["team"], "a");
        let pod_labels = job.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(pod_labels[TEMPLATE_LABEL], "echo");
        let env = job.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
        let job_ids: Vec<_> = env.iter().filter(|v| v.name == ENV_JOB_ID).collect();
        assert_eq!(job_ids.len(), 1);
        assert_eq!(job_ids[0].value.as_deref(), Some(id.to_string().as_str()));
        assert!(env.iter().any(|v| v.name == "KEEP"));
        assert!(env.iter().any(|v| v.name == ENV_STORE && v.value.as_deref() == Some("file:///data")));
        assert!(env.iter().any(|v| v.name == "AWS_REGION" && v.value.as_deref() == Some("garage")));
    }
}

//! Checks of the kustomize deployment in `kustomize/`: every overlay renders
//! with `kubectl kustomize`, its templates load and render into Jobs through
//! jobgate's own catalog, the environments differ where they should, and the
//! Dockerfiles agree with the manifests.
//!
//! Schema validation of every rendered object is in
//! `scripts/check-kustomize.sh`. Tests that need kubectl print a note and
//! pass when it is missing. Where kubernetes-validate is installed
//! (`scripts/install-kustomize-tools.sh`), the rendered Jobs are validated
//! strictly against the Kubernetes schemas too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use jobgate::catalog::folder::FolderSource;
use jobgate::catalog::Snapshot;
use jobgate::job::JobId;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PodSpec;
use serde::Deserialize;
use serde_json::{json, Value};

/// Templates shipped in `kustomize/base/templates`.
const TEMPLATES: [&str; 2] = ["compress", "thumbnail"];

/// Kubernetes version of the strict schema check, the same as in
/// `scripts/check-kustomize.sh`.
const KUBERNETES_VERSION: &str = "1.33.0";

/// Store URL that rendered Jobs are decorated with.
const SAMPLE_STORE: &str = "s3://jobgate/samples";

/// What each overlay sets, by design.
struct Expected {
    overlay: &'static str,
    namespace: &'static str,
    gateway_replicas: i64,
    gateway_cpu_request: &'static str,
    gateway_memory_request: &'static str,
    gateway_memory_limit: &'static str,
    thumbnail_cpu: &'static str,
    thumbnail_memory: &'static str,
    thumbnail_deadline_seconds: i64,
    compress_cpu: &'static str,
    compress_memory: &'static str,
    compress_deadline_seconds: i64,
}

const EXPECTED: [Expected; 3] = [
    Expected {
        overlay: "dev",
        namespace: "jobgate-dev",
        gateway_replicas: 1,
        gateway_cpu_request: "50m",
        gateway_memory_request: "64Mi",
        gateway_memory_limit: "256Mi",
        thumbnail_cpu: "500m",
        thumbnail_memory: "512Mi",
        thumbnail_deadline_seconds: 1800,
        compress_cpu: "250m",
        compress_memory: "128Mi",
        compress_deadline_seconds: 1200,
    },
    Expected {
        overlay: "staging",
        namespace: "jobgate-staging",
        gateway_replicas: 2,
        gateway_cpu_request: "250m",
        gateway_memory_request: "256Mi",
        gateway_memory_limit: "768Mi",
        thumbnail_cpu: "1",
        thumbnail_memory: "1Gi",
        thumbnail_deadline_seconds: 900,
        compress_cpu: "500m",
        compress_memory: "256Mi",
        compress_deadline_seconds: 600,
    },
    Expected {
        overlay: "prod",
        namespace: "jobgate-prod",
        gateway_replicas: 3,
        gateway_cpu_request: "500m",
        gateway_memory_request: "512Mi",
        gateway_memory_limit: "1Gi",
        thumbnail_cpu: "4",
        thumbnail_memory: "4Gi",
        thumbnail_deadline_seconds: 300,
        compress_cpu: "2",
        compress_memory: "1Gi",
        compress_deadline_seconds: 300,
    },
];

// ---------------------------------------------------------------------------
// Helpers: rendering overlays, finding objects, rendering templates.
// ---------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One overlay rendered by `kubectl kustomize`.
struct Rendered {
    /// Overlay name, such as `dev`.
    overlay: &'static str,
    /// The output: one multi-document YAML file.
    text: String,
    /// Every object of the output.
    objects: Vec<Value>,
}

impl Rendered {
    /// Returns the object of this kind and name, if the overlay has one.
    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
    }

    /// Returns the object of this kind and name, or fails the test.
    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("overlay {} renders no {kind} {name}", self.overlay))
    }

    /// Loads the output with the gateway's folder source, as
    /// `jobgate serve --templates <file>` would.
    fn load(&self) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{}.yaml", self.overlay));
        std::fs::write(&file, &self.text).unwrap();
        FolderSource::new(file).load()
    }
}

/// Renders every overlay once per test run, or returns None when kubectl is
/// missing. A failing render fails the test with kubectl's message.
fn overlays() -> Option<&'static [Rendered]> {
    static RENDERED: OnceLock<Option<Vec<Rendered>>> = OnceLock::new();
    RENDERED
        .get_or_init(|| {
            let mut rendered = Vec::new();
            for expected in &EXPECTED {
                rendered.push(render_overlay(expected.overlay)?);
            }
            Some(rendered)
        })
        .as_deref()
}

fn render_overlay(overlay: &'static str) -> Option<Rendered> {
    let dir = repo_root().join("kustomize/overlays").join(overlay);
    let output = match Command::new("kubectl").arg("kustomize").arg(&dir).output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            println!("NOTE: kubectl is not on PATH, so the overlay checks are skipped; install kubectl 1.27 or later");
            return None;
        }
        Err(error) => panic!("running kubectl failed: {error}"),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kubectl kustomize output is UTF-8");
    let objects = parse_documents(&text);
    Some(Rendered {
        overlay,
        text,
        objects,
    })
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

/// Reads a YAML file of the repository, which may hold several documents.
fn read_manifests(relative: &str) -> Vec<Value> {
    let path = repo_root().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {} failed: {error}", path.display()));
    parse_documents(&text)
}

fn expected(overlay: &str) -> &'static Expected {
    EXPECTED.iter().find(|e| e.overlay == overlay).unwrap()
}

fn samples() -> BTreeMap<String, Value> {
    let path = repo_root().join("tests/fixtures/template-samples.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// Validates the sample parameters of `template` and renders its Job, then
/// decorates it as the gateway does before creating it.
fn render_sample(snapshot: &Snapshot, template: &str, where_from: &str) -> Job {
    let found = snapshot
        .templates
        .get(template)
        .unwrap_or_else(|| panic!("{where_from}: template {template} is not loaded"));
    let sample = samples().remove(template).unwrap_or_else(|| {
        panic!("tests/fixtures/template-samples.yaml has no entry for {template}")
    });
    let parameters = found.validate(sample).unwrap_or_else(|errors| {
        panic!("{where_from}: sample parameters of {template} are invalid: {errors:?}")
    });
    let id = JobId::new();
    let mut job = found
        .render(id, &parameters, &snapshot.env)
        .unwrap_or_else(|error| panic!("{where_from}: rendering {template} failed: {error}"));
    jobgate::decorate::decorate(&mut job, id, template, SAMPLE_STORE, &[]);
    job
}

fn pod_spec(job: &Job) -> &PodSpec {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn quantity(resources: &Value, section: &str, name: &str) -> String {
    resources[section][name]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| resources[section][name].to_string())
}

fn gateway_container(deployment: &Value) -> &Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "gateway")
        .expect("the Deployment has a container named gateway")
}

/// Returns the kubernetes-validate program, if scripts/install-kustomize-tools.sh installed it.
fn kubernetes_validate() -> Option<PathBuf> {
    let venv = std::env::var_os("KUSTOMIZE_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/kustomize-tools/venv"));
    let program = venv.join("bin/kubernetes-validate");
    program.exists().then_some(program)
}

// ---------------------------------------------------------------------------
// The base folder, without kubectl.
// ---------------------------------------------------------------------------

#[test]
fn base_folder_loads_as_local_catalog() {
    let snapshot = FolderSource::new(repo_root().join("kustomize/base")).load();

    let names: Vec<&str> = snapshot.templates.keys().map(String::as_str).collect();
    assert_eq!(names, TEMPLATES);
    assert!(snapshot.invalid.is_empty(), "{:?}", snapshot.invalid);
    assert!(
        snapshot.source_errors.is_empty(),
        "{:?}",
        snapshot.source_errors
    );
    assert!(
        snapshot.env.contains_key("worker_image"),
        "{:?}",
        snapshot.env
    );
}

#[test]
fn samples_cover_every_template() {
    let names: Vec<String> = samples().into_keys().collect();
    assert_eq!(names, TEMPLATES);
}

#[test]
fn base_templates_keep_pod_hardening() {
    let snapshot = FolderSource::new(repo_root().join("kustomize/base/templates")).load();
    for template in TEMPLATES {
        let job = render_sample(&snapshot, template, "kustomize/base");
        let pod = pod_spec(&job);
        let pod_security = pod.security_context.as_ref().expect("pod securityContext");
        assert_eq!(pod_security.run_as_non_root, Some(true), "{template}");
        assert_eq!(
            pod_security
                .seccomp_profile
                .as_ref()
                .map(|p| p.type_.as_str()),
            Some("RuntimeDefault"),
            "{template}"
        );
        for container in &pod.containers {
            let security = container
                .security_context
                .as_ref()
                .expect("container securityContext");
            assert_eq!(
                security.allow_privilege_escalation,
                Some(false),
                "{template}/{}",
                container.name
            );
            assert_eq!(
                security.read_only_root_filesystem,
                Some(true),
                "{template}/{}",
                container.name
            );
            let dropped = security.capabilities.as_ref().and_then(|c| c.drop.clone());
            assert_eq!(
                dropped,
                Some(vec!["ALL".to_owned()]),
                "{template}/{}",
                container.name
            );
        }
    }
}

/// Collects the key paths of a manifest, with `[]` for any array index. A
/// placeholder such as `{env.cpu | string}`, which YAML reads as a mapping
/// with one key and no value, ends a path.
fn key_paths(value: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            let is_placeholder = map.len() == 1
                && map.iter().all(|(key, item)| {
                    item.is_null()
                        && (key.starts_with("env.") || key.starts_with("params.") || key == "id")
                });
            if is_placeholder {
                return;
            }
            for (key, item) in map {
                let path = format!("{prefix}.{key}");
                paths.insert(path.clone());
                key_paths(item, &path, paths);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), paths);
            }
        }
        _ => {}
    }
}

// The renderer parses job.yaml into k8s-openapi's typed Job, which drops
// fields it does not know, so a misspelt field would vanish without an
// error. This finds such fields in the shipped templates.
#[test]
fn template_fields_survive_job_parsing() {
    let snapshot = FolderSource::new(repo_root().join("kustomize/base/templates")).load();
    for template in TEMPLATES {
        let manifest = &read_manifests(&format!("kustomize/base/templates/{template}.yaml"))[0];
        let text = manifest["data"]["job.yaml"].as_str().unwrap();
        let written: Value = serde_yaml_ng::from_str(text).unwrap_or_else(|error| {
            panic!("{template}: job.yaml does not parse as YAML before rendering: {error}")
        });
        let job = render_sample(&snapshot, template, "kustomize/base");

        let mut written_paths = BTreeSet::new();
        key_paths(&written, "", &mut written_paths);
        let mut parsed_paths = BTreeSet::new();
        key_paths(&serde_json::to_value(&job).unwrap(), "", &mut parsed_paths);
        let dropped: Vec<&String> = written_paths.difference(&parsed_paths).collect();
        assert!(
            dropped.is_empty(),
            "{template}: job.yaml fields unknown to batch/v1 Job: {dropped:?}"
        );
    }
}

#[test]
fn gateway_pod_is_hardened() {
    let manifests = read_manifests("kustomize/base/deployment.yaml");
    let deployment = &manifests[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = gateway_container(deployment);

    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["serviceAccountName"], "jobgate");
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        container["envFrom"][0]["configMapRef"]["name"],
        "jobgate-config"
    );
    assert!(
        container["resources"]["requests"].is_object(),
        "{container}"
    );
    assert!(container["resources"]["limits"].is_object(), "{container}");
}

#[test]
fn gateway_grace_exceeds_shutdown_grace() {
    let deployment = &read_manifests("kustomize/base/deployment.yaml")[0];
    let config = &read_manifests("kustomize/base/config.yaml")[0];
    let pod_grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    let drain_grace: i64 = config["data"]["JOBGATE_SHUTDOWN_GRACE_SECONDS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        pod_grace > drain_grace,
        "terminationGracePeriodSeconds {pod_grace} <= {drain_grace}"
    );
}

#[test]
fn role_grants_only_gateway_needs() {
    let manifests = read_manifests("kustomize/base/rbac.yaml");
    let role = manifests.iter().find(|m| m["kind"] == "Role").unwrap();
    let binding = manifests
        .iter()
        .find(|m| m["kind"] == "RoleBinding")
        .unwrap();

    let mut granted: BTreeSet<(String, String, String)> = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none(), "{rule}");
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    granted.insert((
                        group.as_str().unwrap().to_owned(),
                        resource.as_str().unwrap().to_owned(),
                        verb.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    let needed: BTreeSet<(String, String, String)> = [
        ("", "configmaps", &["list", "watch"][..]),
        ("batch", "jobs", &["create", "list", "watch", "delete"][..]),
        ("", "pods", &["list", "watch"][..]),
        ("", "pods/log", &["get"][..]),
    ]
    .iter()
    .flat_map(|(group, resource, verbs)| {
        verbs
            .iter()
            .map(move |verb| (group.to_string(), resource.to_string(), verb.to_string()))
    })
    .collect();

    assert_eq!(granted, needed);
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], "jobgate");
}

#[test]
fn service_targets_gateway_http_port() {
    let service = &read_manifests("kustomize/base/service.yaml")[0];
    let deployment = &read_manifests("kustomize/base/deployment.yaml")[0];
    let port = &service["spec"]["ports"][0];
    let container_port = &gateway_container(deployment)["ports"][0];

    assert_eq!(port["name"], "http");
    assert_eq!(port["port"], 80);
    assert_eq!(port["targetPort"], "http");
    assert_eq!(container_port["name"], "http");
    assert_eq!(container_port["containerPort"], 8080);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

// ---------------------------------------------------------------------------
// The overlays, rendered with kubectl kustomize.
// ---------------------------------------------------------------------------

#[test]
fn overlays_load_every_base_template() {
    let Some(overlays) = overlays() else { return };
    for rendered in overlays {
        let snapshot = rendered.load();
        let names: Vec<&str> = snapshot.templates.keys().map(String::as_str).collect();
        assert_eq!(names, TEMPLATES, "overlay {}", rendered.overlay);
        assert!(
            snapshot.invalid.is_empty(),
            "overlay {}: {:?}",
            rendered.overlay,
            snapshot.invalid
        );
        assert!(
            snapshot.source_errors.is_empty(),
            "overlay {}: {:?}",
            rendered.overlay,
            snapshot.source_errors
        );
    }
}

#[test]
fn overlays_keep_template_names_stable() {
    let Some(overlays) = overlays() else { return };
    for rendered in overlays {
        for template in TEMPLATES {
            let config_map = rendered.get("ConfigMap", &format!("jobgate-template-{template}"));
            assert_eq!(
                config_map["metadata"]["labels"]["jobgate.dev/template"],
                template
            );
        }
        let env = rendered.get("ConfigMap", "jobgate-template-env");
        assert_eq!(
            env["metadata"]["labels"]["jobgate.dev/template-env"],
            "true"
        );
        assert!(
            rendered.find("ConfigMap", "jobgate-config").is_some(),
            "overlay {}",
            rendered.overlay
        );
    }
}

#[test]
fn overlay_templates_render_valid_jobs() {
    let Some(overlays) = overlays() else { return };
    let jobs_dir = tempfile::tempdir().unwrap();
    let mut job_files = Vec::new();
    for rendered in overlays {
        let snapshot = rendered.load();
        let worker_image = snapshot.env["worker_image"].as_str().unwrap().to_owned();
        for template in TEMPLATES {
            let where_from = format!("overlay {}", rendered.overlay);
            let job = render_sample(&snapshot, template, &where_from);
            let pod = pod_spec(&job);
            assert_eq!(
                pod.containers[0].image.as_deref(),
                Some(worker_image.as_str()),
                "{where_from}/{template}"
            );
            assert_eq!(
                pod.restart_policy.as_deref(),
                Some("Never"),
                "{where_from}/{template}"
            );

            let file = jobs_dir
                .path()
                .join(format!("{}-{template}.json", rendered.overlay));
            std::fs::write(&file, serde_json::to_vec_pretty(&job).unwrap()).unwrap();
            job_files.push(file);
        }
    }

    let Some(validate) = kubernetes_validate() else {
        println!("NOTE: kubernetes-validate is not installed, so rendered Jobs are not checked against the schemas; run scripts/install-kustomize-tools.sh");
        return;
    };
    let output = Command::new(&validate)
        .args([
            "--strict",
            "--quiet",
            "--kubernetes-version",
            KUBERNETES_VERSION,
        ])
        .args(&job_files)
        .output()
        .expect("running kubernetes-validate failed");
    assert!(
        output.status.success(),
        "rendered Jobs are invalid against Kubernetes {KUBERNETES_VERSION}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn overlays_set_their_namespace() {
    let Some(overlays) = overlays() else { return };
    for rendered in overlays {
        let namespace = expected(rendered.overlay).namespace;
        assert!(
            rendered.find("Namespace", namespace).is_some(),
            "overlay {}",
            rendered.overlay
        );
        for object in &rendered.objects {
            if object["kind"] == "Namespace" {
                continue;
            }
            assert_eq!(
                object["metadata"]["namespace"], namespace,
                "{}",
                object["metadata"]["name"]
            );
        }
        let binding = rendered.get("RoleBinding", "jobgate");
        assert_eq!(binding["subjects"][0]["namespace"], namespace);
    }
}

#[test]
fn gateway_replicas_differ_per_overlay() {
    let Some(overlays) = overlays() else { return };
    for rendered in overlays {
        let deployment = rendered.get("Deployment", "jobgate");
        let replicas = deployment["spec"]["replicas"].as_i64();
        assert_eq!(
            replicas,
            Some(expected(rendered.overlay).gateway_replicas),
            "overlay {}",
            rendered.overlay
        );
    }
}

#[test]
fn gateway_resources_differ_per_overlay() {
    let Some(overlays) = overlays() else { return };
    for rendered in overlays {
        let want = expected(rendered.overlay);
        let resources = &gateway_container(rendered.get("Deployment", "jobgate"))["resources"];
        assert_eq!(
            quantity(resources, "requests", "cpu"),
            want.gateway_cpu_request,
            "overlay {}",
            want.overlay
        );
        assert_eq!(
            quantity(resources, "requests", "memory"),
            want.gateway_memory_request,
            "overlay {}",
            want.overlay
        );
        assert_eq!(
            quantity(resources, "limits", "memory"),
            want.gateway_memory_limit,
            "overlay {}",
            want.overlay
        );
    }
}

#[test]
fn thumbnail_resources_differ_per_overlay() {
    let Some(overlays) = overlays() else { return };
    for rendered in overlays {
        let want = expected(rendered.overlay);
        let job = render_sample(&rendered.load(), "thumbnail", rendered.overlay);
        let resources =
            serde_json::to_value(pod_spec(&job).containers[0].resources.as_ref().unwrap()).unwrap();
        for section in ["requests", "limits"] {
            assert_eq!(
                quantity(&resources, section, "cpu"),
                want.thumbnail_cpu,
                "overlay {} {section}",
                want.overlay
            );
            assert_eq!(
                quantity(&resources, section, "memory"),
                want.thumbnail_memory,
                "overlay {} {section}",
                want.overlay
            );
        }
    }
}

#[test]
fn compress_resources_differ_per_overlay() {
    let Some(overlays) = overlays() else { return };
    for rendered in overlays {
        let want = expected(rendered.overlay);
        let job = render_sample(&rendered.load(), "compress", rendered.overlay);
        let resources =
            serde_json::to_value(pod_spec(&job).containers[0].resources.as_ref().unwrap()).unwrap();
        for section in ["requests", "limits"] {
            assert_eq!(
                quantity(&resources, section, "cpu"),
                want.compress_cpu,
                "overlay {} {section}",
                want.overlay
            );
            assert_eq!(
                quantity(&resources, section, "memory"),
                want.compress_memory,
                "overlay {} {section}",
                want.overlay
            );
        }
    }
}

#[test]
fn job_deadlines_differ_per_overlay() {
    let Some(overlays) = overlays() else { return };
    let mut deadlines: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for rendered in overlays {
        let want = expected(rendered.overlay);
        let snapshot = rendered.load();
        for (template, expected_deadline) in [
            ("thumbnail", want.thumbnail_deadline_seconds),
            ("compress", want.compress_deadline_seconds),
        ] {
            let job = render_sample(&snapshot, template, rendered.overlay);
            let deadline = job.spec.as_ref().unwrap().active_deadline_seconds;
            assert_eq!(
                deadline,
                Some(expected_deadline),
                "overlay {} template {template}",
                want.overlay
            );
            deadlines.insert((rendered.overlay, template), expected_deadline);
        }
    }

    // Production fails a stuck job soonest.
    for template in TEMPLATES {
        assert!(
            deadlines[&("prod", template)] < deadlines[&("staging", template)],
            "{template}"
        );
        assert!(
            deadlines[&("prod", template)] < deadlines[&("dev", template)],
            "{template}"
        );
    }
}

#[test]
fn disruption_budget_only_in_prod() {
    let Some(overlays) = overlays() else { return };
    for rendered in overlays {
        let budgets: Vec<&Value> = rendered
            .objects
            .iter()
            .filter(|object| object["kind"] == "PodDisruptionBudget")
            .collect();
        if rendered.overlay != "prod" {
            assert!(
                budgets.is_empty(),
                "overlay {} has a PodDisruptionBudget",
                rendered.overlay
            );
            continue;
        }
        assert_eq!(budgets.len(), 1);
        let deployment = rendered.get("Deployment", "jobgate");
        assert_eq!(
            budgets[0]["spec"]["selector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap();
        let max_unavailable = budgets[0]["spec"]["maxUnavailable"].as_i64().unwrap();
        assert!(
            max_unavailable < replicas,
            "maxUnavailable {max_unavailable} of {replicas} replicas"
        );
    }
}

#[test]
fn minio_only_in_dev() {
    let Some(overlays) = overlays() else { return };
    for rendered in overlays {
        let mentions_minio = rendered.text.contains("minio");
        if rendered.overlay != "dev" {
            assert!(
                !mentions_minio,
                "overlay {} mentions minio",
                rendered.overlay
            );
            continue;
        }
        let deployment = rendered.get("Deployment", "jobgate-minio");
        let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap();
        assert!(
            image.contains(":RELEASE."),
            "MinIO image {image} is not pinned to a release"
        );

        let bucket_job = rendered.get("Job", "jobgate-minio-bucket");
        let script = bucket_job["spec"]["template"]["spec"]["containers"][0]["args"][0]
            .as_str()
            .unwrap();
        assert!(
            script.contains("mc mb --ignore-existing dev/jobgate"),
            "{script}"
        );

        let secret = rendered.get("Secret", "jobgate-s3");
        assert!(secret["data"]["AWS_ACCESS_KEY_ID"].is_string(), "{secret}");
        assert!(
            secret["data"]["AWS_SECRET_ACCESS_KEY"].is_string(),
            "{secret}"
        );

        let service = rendered.get("Service", "jobgate-minio");
        let config = &rendered.get("ConfigMap", "jobgate-config")["data"];
        let endpoint = format!(
            "http://{}:{}",
            service["metadata"]["name"].as_str().unwrap(),
            service["spec"]["ports"][0]["port"]
        );
        assert_eq!(config["AWS_ENDPOINT_URL"], endpoint);
        assert_eq!(config["JOBGATE_STORE"], "s3://jobgate");
        assert_eq!(config["JOBGATE_S3_PATH_STYLE"], "true");
    }
}

#[test]
fn non_dev_overlays_use_external_s3() {
    let Some(overlays) = overlays() else { return };
    for rendered in overlays.iter().filter(|r| r.overlay != "dev") {
        let config = &rendered.get("ConfigMap", "jobgate-config")["data"];
        let endpoint = config["AWS_ENDPOINT_URL"].as_str().unwrap_or_default();
        assert!(
            endpoint.starts_with("https://"),
            "overlay {}: {endpoint:?}",
            rendered.overlay
        );
        // The Secret is created in the cluster, never kept in the repository.
        assert!(
            rendered.find("Secret", "jobgate-s3").is_none(),
            "overlay {}",
            rendered.overlay
        );
    }
}

#[test]
fn dev_logs_at_debug_level() {
    let Some(overlays) = overlays() else { return };
    for rendered in overlays {
        let config = &rendered.get("ConfigMap", "jobgate-config")["data"];
        let filter = config["RUST_LOG"].as_str().unwrap();
        let default_level = filter.split(',').next().unwrap();
        if rendered.overlay == "dev" {
            assert_eq!(default_level, "debug", "{filter}");
        } else {
            assert_eq!(
                default_level, "info",
                "overlay {}: {filter}",
                rendered.overlay
            );
        }
        assert_eq!(
            config["JOBGATE_LOG_JSON"], "true",
            "overlay {}",
            rendered.overlay
        );
    }
}

// ---------------------------------------------------------------------------
// The Dockerfiles, read as text: no Docker engine is needed.
// ---------------------------------------------------------------------------

/// One instruction of a Dockerfile, with continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    arguments: String,
}

fn read_dockerfile(relative: &str) -> Vec<Instruction> {
    let text = std::fs::read_to_string(repo_root().join(relative)).unwrap();
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (keyword, arguments) =
                    pending.split_once(' ').unwrap_or((pending.as_str(), ""));
                instructions.push(Instruction {
                    keyword: keyword.to_uppercase(),
                    arguments: arguments.trim().to_owned(),
                });
                pending.clear();
            }
        }
    }
    instructions
}

/// What a Dockerfile builds and where it puts it.
#[derive(Debug)]
struct ImageRecipe {
    /// Package of `cargo build -p`.
    package: String,
    /// Binary of `cargo build --bin`.
    binary: String,
    /// Destination of the binary copied from the builder stage.
    installed_at: String,
    /// Image of the last stage.
    runtime_base: String,
    /// `USER`, as uid and gid.
    user: (u32, u32),
    /// Ports of `EXPOSE`.
    exposed: Vec<u16>,
    /// First element of `ENTRYPOINT`.
    entrypoint: String,
}

fn word_after<'a>(words: &[&'a str], flag: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| *w == flag)
        .and_then(|i| words.get(i + 1).copied())
}

fn read_recipe(relative: &str) -> ImageRecipe {
    let instructions = read_dockerfile(relative);
    let mut package = None;
    let mut binary = None;
    let mut installed_at = None;
    let mut runtime_base = None;
    let mut user = None;
    let mut exposed = Vec::new();
    let mut entrypoint = None;
    for instruction in &instructions {
        let words: Vec<&str> = instruction.arguments.split_whitespace().collect();
        match instruction.keyword.as_str() {
            "FROM" => runtime_base = Some(words[0].to_owned()),
            "RUN" if words.contains(&"cargo") => {
                package = word_after(&words, "-p").map(str::to_owned);
                binary = word_after(&words, "--bin").map(str::to_owned);
            }
            "COPY" if words[0].starts_with("--from=") => {
                let source = words[1];
                let destination = words[2];
                let copied = source.rsplit('/').next().unwrap();
                assert_eq!(
                    Some(copied),
                    binary.as_deref(),
                    "{relative}: COPY {source} is not the built binary"
                );
                installed_at = Some(destination.to_owned());
            }
            "USER" => {
                let (uid, gid) = words[0].split_once(':').unwrap_or((words[0], words[0]));
                user = Some((
                    uid.parse()
                        .unwrap_or_else(|_| panic!("{relative}: USER {uid} is not numeric")),
                    gid.parse()
                        .unwrap_or_else(|_| panic!("{relative}: USER group {gid} is not numeric")),
                ));
            }
            "EXPOSE" => exposed.extend(
                words
                    .iter()
                    .map(|w| w.trim_end_matches("/tcp").parse::<u16>().unwrap()),
            ),
            "ENTRYPOINT" => {
                let parsed: Vec<String> = serde_json::from_str(&instruction.arguments)
                    .unwrap_or_else(|_| {
                        panic!("{relative}: ENTRYPOINT is not in exec (JSON) form")
                    });
                entrypoint = Some(parsed[0].clone());
            }
            _ => {}
        }
    }
    ImageRecipe {
        package: package.unwrap_or_else(|| panic!("{relative}: no `cargo build -p PACKAGE`")),
        binary: binary.unwrap_or_else(|| panic!("{relative}: no `cargo build --bin NAME`")),
        installed_at: installed_at
            .unwrap_or_else(|| panic!("{relative}: no COPY --from of the binary")),
        runtime_base: runtime_base.unwrap(),
        user: user.unwrap_or_else(|| panic!("{relative}: no USER, so the image runs as root")),
        exposed,
        entrypoint: entrypoint.unwrap_or_else(|| panic!("{relative}: no ENTRYPOINT")),
    }
}

/// Returns the workspace's binary targets by package, from `cargo metadata`.
fn workspace_binaries() -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(repo_root())
        .output()
        .expect("running cargo metadata failed");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut binaries = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let names: BTreeSet<String> = package["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|target| target["kind"].as_array().unwrap().contains(&json!("bin")))
            .map(|target| target["name"].as_str().unwrap().to_owned())
            .collect();
        binaries.insert(package["name"].as_str().unwrap().to_owned(), names);
    }
    binaries
}

fn listen_port(address: &str) -> u16 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn dockerfiles_build_workspace_binaries() {
    let binaries = workspace_binaries();
    for (dockerfile, package, binary) in [
        ("Dockerfile", "jobgate", "jobgate"),
        ("worker/Dockerfile", "jobgate-worker", "jobgate-worker"),
    ] {
        let recipe = read_recipe(dockerfile);
        assert_eq!(recipe.package, package, "{dockerfile}");
        assert_eq!(recipe.binary, binary, "{dockerfile}");
        let targets = binaries
            .get(package)
            .unwrap_or_else(|| panic!("{package} is not a workspace package"));
        assert!(
            targets.contains(binary),
            "{dockerfile}: {package} has no bin target {binary}, only {targets:?}"
        );
        assert_eq!(recipe.entrypoint, recipe.installed_at, "{dockerfile}");
        assert_ne!(recipe.user.0, 0, "{dockerfile} runs as root");
    }
}

#[test]
fn gateway_image_matches_deployment() {
    let recipe = read_recipe("Dockerfile");
    let deployment = &read_manifests("kustomize/base/deployment.yaml")[0];
    let config = &read_manifests("kustomize/base/config.yaml")[0];
    let pod_security = &deployment["spec"]["template"]["spec"]["securityContext"];
    let container_port = gateway_container(deployment)["ports"][0]["containerPort"]
        .as_u64()
        .unwrap();
    let listen = listen_port(config["data"]["JOBGATE_LISTEN"].as_str().unwrap());

    assert_eq!(recipe.exposed, [container_port as u16]);
    assert_eq!(listen, container_port as u16);
    assert_eq!(pod_security["runAsUser"], recipe.user.0);
    assert_eq!(pod_security["runAsGroup"], recipe.user.1);
}

#[test]
fn worker_image_matches_templates() {
    let recipe = read_recipe("worker/Dockerfile");
    let snapshot = FolderSource::new(repo_root().join("kustomize/base/templates")).load();
    let binary_dir = Path::new(&recipe.installed_at).parent().unwrap();

    // debian:bookworm-slim puts /usr/local/bin on PATH, where templates find
    // the worker by name.
    assert!(
        recipe.runtime_base.starts_with("debian:"),
        "{}",
        recipe.runtime_base
    );
    assert_eq!(binary_dir, Path::new("/usr/local/bin"));
    for template in TEMPLATES {
        let job = render_sample(&snapshot, template, "kustomize/base");
        let pod = pod_spec(&job);
        let security = pod.security_context.as_ref().unwrap();
        let command = pod.containers[0].command.clone().unwrap_or_default();
        assert_eq!(
            command.first().map(String::as_str),
            Some(recipe.binary.as_str()),
            "{template}"
        );
        assert_eq!(
            security.run_as_user,
            Some(i64::from(recipe.user.0)),
            "{template}"
        );
        assert_eq!(
            security.run_as_group,
            Some(i64::from(recipe.user.1)),
            "{template}"
        );
    }
}

//! The cluster that the Kubernetes-mode tests run against.
//!
//! By default it is the fake API server of `tests/support/fake-kube`,
//! started in the test's own process so that tests can switch its faults on
//! and read its record of the gateway's requests. With
//! `JOBGATE_TEST_KUBECONFIG` set, the same tests run against that real
//! cluster instead (kind or k3d, set up as in docs/deploy.md), each in a
//! namespace of its own. The tests that need the fake's fault knobs then
//! print a note and skip.
//!
//! Either way the gateway runs as its own process with the Role of
//! `kustomize/base/rbac.yaml`: in the fake through the fake's gateway user,
//! in a real cluster through a ServiceAccount token.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jobgate_fake_kube::{FakeCluster, Options, User};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{gateway_binary, repo_root, TestGateway};

/// Image every fixture template names; a real cluster gets the worker image
/// in its place.
const FIXTURE_IMAGE: &str = "debian:bookworm-slim";
/// Containers with a memory limit below this are OOM-killed by the fake,
/// standing in for the kernel that kills the test's allocating script in a
/// real cluster.
pub const OOM_BELOW_BYTES: u64 = 32 << 20;
/// Images under this registry never pull: `.invalid` never resolves
/// (RFC 2606), and the fake is set to fail their pulls too.
pub const UNPULLABLE_REGISTRY: &str = "registry.invalid";
/// Seconds a pod may stay unpullable or unschedulable in these tests.
pub const STUCK_SECONDS: u64 = 3;

/// Settings of a run against a real cluster, from the environment.
///
/// NOTE: this path compiles against the Kubernetes API but has not been run
/// against a real cluster yet; the fake is what the test command uses.
struct RealCluster {
    kubeconfig: PathBuf,
    worker_image: String,
    store: Vec<String>,
}

impl RealCluster {
    fn from_env() -> Option<Self> {
        let kubeconfig = std::env::var_os("JOBGATE_TEST_KUBECONFIG")?;
        let worker_image = std::env::var("JOBGATE_TEST_WORKER_IMAGE").expect(
            "JOBGATE_TEST_KUBECONFIG is set, so JOBGATE_TEST_WORKER_IMAGE must name the worker image the cluster can pull",
        );
        let bucket = std::env::var("JOBGATE_TEST_STORE").expect(
            "JOBGATE_TEST_KUBECONFIG is set, so JOBGATE_TEST_STORE must name an s3:// store that this machine and the pods both reach",
        );
        let mut store = vec!["--store".to_owned(), bucket, "--s3-path-style".to_owned(), "true".to_owned()];
        if let Ok(endpoint) = std::env::var("JOBGATE_TEST_S3_ENDPOINT") {
            store.extend(["--s3-endpoint".to_owned(), endpoint]);
        }
        Some(RealCluster {
            kubeconfig: PathBuf::from(kubeconfig),
            worker_image,
            store,
        })
    }
}

/// A cluster with the fixture templates, ready for a gateway.
pub struct TestCluster {
    fake: Option<FakeCluster>,
    real: Option<RealCluster>,
    /// Client with full access, for what an operator does by hand.
    pub admin: kube::Client,
    /// Namespace of the gateway, its templates and its Jobs.
    pub namespace: String,
    /// Kubeconfig the gateway runs with, limited to its Role.
    pub gateway_kubeconfig: PathBuf,
    /// Holds the kubeconfigs and the gateway's data folder.
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts the fake, or prepares a namespace in the real cluster, and
    /// creates the fixture templates in it.
    pub async fn start() -> Self {
        Self::start_with_role(&repo_root().join("kustomize/base/rbac.yaml")).await
    }

    /// Starts a cluster as [`TestCluster::start`] does, with the gateway's
    /// Role read from `role`.
    pub async fn start_with_role(role: &Path) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let cluster = match RealCluster::from_env() {
            Some(real) => Self::prepare_real(real, role, dir).await,
            None => Self::start_fake(role, dir).await,
        };
        for name in ["shell.yaml", "echo.yaml", "sized.yaml"] {
            cluster.apply_fixture(name).await;
        }
        cluster
    }

    async fn start_fake(role: &Path, dir: tempfile::TempDir) -> Self {
        let options = Options {
            role_path: role.to_owned(),
            // Pods run jobgate-worker from the build, as the local executor does.
            bin_dirs: vec![gateway_binary().parent().unwrap().to_owned()],
            work_dir: Some(dir.path().join("pods")),
            ..Options::default()
        };
        let fake = FakeCluster::start(options).await.expect("the fake API server starts");
        fake.faults().fail_image_pulls(&format!("{UNPULLABLE_REGISTRY}/*"));
        fake.faults().oom_kill_below_memory_limit(OOM_BELOW_BYTES);
        let admin_path = dir.path().join("admin.kubeconfig");
        let gateway_kubeconfig = dir.path().join("gateway.kubeconfig");
        fake.write_kubeconfig(&admin_path, User::Admin).unwrap();
        fake.write_kubeconfig(&gateway_kubeconfig, User::Gateway).unwrap();
        TestCluster {
            admin: client_from(&admin_path).await,
            namespace: fake.namespace().to_owned(),
            fake: Some(fake),
            real: None,
            gateway_kubeconfig,
            dir,
        }
    }

    /// Creates a namespace for this test with the gateway's ServiceAccount,
    /// Role and RoleBinding, and a kubeconfig with that account's token.
    async fn prepare_real(real: RealCluster, role_path: &Path, dir: tempfile::TempDir) -> Self {
        let admin = client_from(&real.kubeconfig).await;
        let namespace = format!("jobgate-test-{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let object: Namespace =
            serde_json::from_value(json!({"metadata": {"name": namespace, "labels": {"jobgate.dev/test": "true"}}})).unwrap();
        namespaces.create(&PostParams::default(), &object).await.unwrap();

        let create = PostParams::default();
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &namespace);
        let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "jobgate"}})).unwrap();
        accounts.create(&create, &account).await.unwrap();
        for document in yaml_documents(role_path) {
            match document["kind"].as_str() {
                Some("Role") => {
                    let role: Role = serde_json::from_value(document).unwrap();
                    Api::<Role>::namespaced(admin.clone(), &namespace).create(&create, &role).await.unwrap();
                }
                Some("RoleBinding") => {
                    let mut binding: RoleBinding = serde_json::from_value(document).unwrap();
                    for subject in binding.subjects.iter_mut().flatten() {
                        subject.namespace = Some(namespace.clone());
                    }
                    Api::<RoleBinding>::namespaced(admin.clone(), &namespace).create(&create, &binding).await.unwrap();
                }
                _ => {}
            }
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = accounts
            .create_token_request("jobgate", &create, &request)
            .await
            .unwrap()
            .status
            .expect("the token request has a status")
            .token;
        let gateway_kubeconfig = dir.path().join("gateway.kubeconfig");
        write_token_kubeconfig(&real.kubeconfig, &gateway_kubeconfig, &token, &namespace);

        // The workers' S3 credentials, as the deployment's Secret provides them.
        let mut credentials = serde_json::Map::new();
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
            if let Ok(value) = std::env::var(key) {
                credentials.insert(key.to_owned(), Value::String(value));
            }
        }
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": "jobgate-worker"}, "stringData": credentials})).unwrap();
        Api::<Secret>::namespaced(admin.clone(), &namespace).create(&create, &secret).await.unwrap();

        TestCluster {
            admin,
            namespace,
            fake: None,
            real: Some(real),
            gateway_kubeconfig,
            dir,
        }
    }

    /// Returns the fake, when the tests run against it.
    pub fn fake(&self) -> Option<&FakeCluster> {
        self.fake.as_ref()
    }

    /// Creates or replaces the ConfigMaps of a fixture template file.
    pub async fn apply_fixture(&self, file: &str) {
        let text = std::fs::read_to_string(repo_root().join("tests/fixtures/templates").join(file)).unwrap();
        let text = match &self.real {
            Some(real) => text.replace(FIXTURE_IMAGE, &real.worker_image),
            None => text,
        };
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            self.apply_config_map(ConfigMap::deserialize(document).unwrap()).await;
        }
    }

    /// Creates a ConfigMap, or merges it into the existing one.
    pub async fn apply_config_map(&self, config_map: ConfigMap) {
        let api: Api<ConfigMap> = Api::namespaced(self.admin.clone(), &self.namespace);
        let name = config_map.metadata.name.clone().unwrap();
        match api.create(&PostParams::default(), &config_map).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&config_map)).await.unwrap();
            }
            Err(error) => panic!("creating ConfigMap {name} failed: {error}"),
        }
    }

    /// Limits the CPU a pod may request in the namespace, as a ResourceQuota
    /// does: the Job controller cannot create a pod that requests more.
    pub async fn limit_pod_cpu(&self, millis: u64) {
        match &self.fake {
            Some(fake) => fake.faults().set_cpu_quota(Some(millis)),
            None => {
                let quota: ResourceQuota = serde_json::from_value(json!({
                    "metadata": {"name": "compute"},
                    "spec": {"hard": {"requests.cpu": format!("{millis}m")}}
                }))
                .unwrap();
                Api::<ResourceQuota>::namespaced(self.admin.clone(), &self.namespace)
                    .create(&PostParams::default(), &quota)
                    .await
                    .unwrap();
            }
        }
    }

    /// Returns the names of the Jobs in the namespace.
    pub async fn job_names(&self) -> Vec<String> {
        let api: Api<Job> = Api::namespaced(self.admin.clone(), &self.namespace);
        let list = api.list(&ListParams::default()).await.unwrap();
        list.items.into_iter().filter_map(|job| job.metadata.name).collect()
    }

    /// Returns the `status` of a gateway job's Job as stored in the cluster,
    /// or null when there is no such Job.
    pub async fn job_status(&self, id: &str) -> Value {
        let api: Api<Job> = Api::namespaced(self.admin.clone(), &self.namespace);
        let job = api.get_opt(&format!("jobgate-{id}")).await.unwrap();
        job.and_then(|job| job.status).map_or(Value::Null, |status| serde_json::to_value(status).unwrap())
    }

    /// Waits until the Job of a gateway job is gone from the cluster.
    pub async fn wait_job_deleted(&self, id: &str) {
        let name = format!("jobgate-{id}");
        let started = Instant::now();
        while self.job_names().await.contains(&name) {
            assert!(started.elapsed() < super::JOB_TIMEOUT, "Job {name} was not deleted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Gateway flags for Kubernetes mode in this cluster, and its store.
    pub fn gateway_args(&self) -> Vec<String> {
        let stuck = STUCK_SECONDS.to_string();
        let mut args: Vec<String> = [
            "--executor",
            "kubernetes",
            "--namespace",
            &self.namespace,
            "--kubeconfig",
            self.gateway_kubeconfig.to_str().unwrap(),
            "--stuck-seconds",
            &stuck,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(real) = &self.real {
            args.extend(real.store.iter().cloned());
            args.extend(["--worker-secret".to_owned(), "jobgate-worker".to_owned()]);
        }
        args
    }

    /// Starts a gateway in Kubernetes mode with its data below this
    /// cluster's folder; a second start is a restart with the same data.
    pub fn start_gateway(&self) -> TestGateway {
        self.start_gateway_with(&[])
    }

    /// Starts a gateway as [`TestCluster::start_gateway`] does, with extra
    /// flags (`--flag value` pairs) that replace the defaults they name.
    pub fn start_gateway_with(&self, extra: &[&str]) -> TestGateway {
        let defaults = self.gateway_args();
        let mut args: Vec<&str> = Vec::new();
        for pair in defaults.chunks(2) {
            if !extra.contains(&pair[0].as_str()) {
                args.extend(pair.iter().map(String::as_str));
            }
        }
        args.extend_from_slice(extra);
        let data = self.dir.path().join("data");
        TestGateway::start(self.dir.path(), &data, &args)
    }

    /// Prints why a test is skipped and returns true when it needs the fake.
    pub fn skip_unless_fake(&self, test: &str) -> bool {
        if self.fake.is_none() {
            eprintln!("note: {test} needs the fake API server's fault injection; skipped against a real cluster");
            return true;
        }
        false
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let Some(real) = &self.real else { return };
        // Deleting the namespace removes everything the test created in it.
        // A client of its own: the test's runtime may be shutting down.
        let kubeconfig = real.kubeconfig.clone();
        let namespace = self.namespace.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let api: Api<Namespace> = Api::all(client_from(&kubeconfig).await);
                if let Err(error) = api.delete(&namespace, &DeleteParams::background()).await {
                    eprintln!("note: deleting test namespace {namespace} failed: {error}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Builds a client from a kubeconfig file.
pub async fn client_from(path: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .collect()
}

/// Writes a kubeconfig for the admin's current cluster that authenticates
/// with `token`.
fn write_token_kubeconfig(admin: &Path, path: &Path, token: &str, namespace: &str) {
    let config = yaml_documents(admin).remove(0);
    let current = config["current-context"].as_str().expect("the kubeconfig has a current context");
    let context = config["contexts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == current)
        .expect("the current context is defined");
    let cluster_name = &context["context"]["cluster"];
    let cluster = config["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| &c["name"] == cluster_name)
        .expect("the current context's cluster is defined");
    let gateway = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "jobgate", "user": {"token": token}}],
        "contexts": [{"name": "jobgate", "context": {"cluster": cluster_name, "user": "jobgate", "namespace": namespace}}],
        "current-context": "jobgate",
    });
    std::fs::write(path, serde_yaml_ng::to_string(&gateway).unwrap()).unwrap();
}

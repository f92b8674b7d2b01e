//! Starting and stopping a fake cluster: the API server, the job
//! controller and the kubelet simulator, sharing one store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::ApiEndpoint;
use crate::faults::Faults;
use crate::logs::LogRegistry;
use crate::rbac::{load_role_rules, Access, Authorizer, RoleError};
use crate::resource::Resource;
use crate::store::{Key, Store};

/// Default namespace of the gateway's service account and Role.
pub const DEFAULT_NAMESPACE: &str = "jobgate";
/// Default watch history per resource; enough for a test's whole run, so
/// only [`FakeCluster::compact`] makes watches expire.
pub const DEFAULT_WATCH_HISTORY: usize = 10_000;
/// Default time between BOOKMARK events on watches that allow them. The real
/// API server sends one about every minute; tests want them sooner.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);
/// Default wait before the job controller replaces a failed pod. The real
/// controller starts at 10 seconds and doubles; tests cannot wait that long.
pub const DEFAULT_POD_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Default wait before a failed container of an `OnFailure` or `Always` pod
/// restarts, in place of the kubelet's 10-second CrashLoopBackOff.
pub const DEFAULT_CONTAINER_RESTART_DELAY: Duration = Duration::from_millis(200);

/// Settings of a fake cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespace of the gateway's identity and Role.
    pub namespace: String,
    /// Other namespaces that exist (the admin may use them).
    pub extra_namespaces: Vec<String>,
    /// YAML file whose first `kind: Role` document contains the gateway's rules.
    pub role_path: PathBuf,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Watch events kept per resource for watches from an older version.
    pub watch_history: usize,
    /// Time between BOOKMARK events.
    pub bookmark_interval: Duration,
    /// Wait before a failed Job pod is replaced.
    pub pod_retry_delay: Duration,
    /// Wait before a container of an `OnFailure` or `Always` pod restarts.
    pub container_restart_delay: Duration,
    /// Folders searched for container programs before `PATH`.
    pub bin_dirs: Vec<PathBuf>,
    /// Folder for pod working folders and logs; a temporary folder when unset.
    pub work_dir: Option<PathBuf>,
    /// Identity given to requests without a bearer token; with `None` they
    /// get 401. kubectl (client-go) sends no credentials to a plain-HTTP
    /// server, so kubectl works against the fake only with `Some(User::Admin)`,
    /// like the insecure port of old API servers.
    pub unauthenticated_user: Option<User>,
}

/// Returns the path of the gateway's RBAC file in this repository.
pub fn repository_role_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../kustomize/base/rbac.yaml")
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespace: DEFAULT_NAMESPACE.into(),
            extra_namespaces: vec!["default".into()],
            role_path: repository_role_path(),
            port: 0,
            watch_history: DEFAULT_WATCH_HISTORY,
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            pod_retry_delay: DEFAULT_POD_RETRY_DELAY,
            container_restart_delay: DEFAULT_CONTAINER_RESTART_DELAY,
            bin_dirs: Vec::new(),
            work_dir: None,
            unauthenticated_user: None,
        }
    }
}

/// Which identity a kubeconfig uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// Full access (`kubernetes-admin`).
    Admin,
    /// The gateway's service account, limited by its Role.
    Gateway,
}

fn identity_of(user: User) -> crate::rbac::Identity {
    match user {
        User::Admin => crate::rbac::Identity::Admin,
        User::Gateway => crate::rbac::Identity::Gateway,
    }
}

/// Error starting a fake cluster.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Role could not be read.
    #[error("loading the gateway's Role failed")]
    Role(#[from] RoleError),
    /// The listener could not be bound.
    #[error("binding 127.0.0.1:{port} failed")]
    Bind {
        /// Requested port.
        port: u16,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The work folder could not be created.
    #[error("creating the work folder failed")]
    WorkDir(#[source] std::io::Error),
}

/// State shared by the API server, the controllers and the handle.
pub(crate) struct Shared {
    pub store: Store,
    pub faults: Faults,
    pub authorizer: Authorizer,
    pub namespaces: Vec<String>,
    pub gateway_namespace: String,
    pub unauthenticated: Option<crate::rbac::Identity>,
    pub logs: LogRegistry,
    pub shutdown: CancellationToken,
    pub bookmark_interval: Duration,
    pub address: String,
    pub pod_retry_delay: Duration,
    pub container_restart_delay: Duration,
    pub bin_dirs: Vec<PathBuf>,
    pub work_dir: PathBuf,
    /// Pods the kubelet simulator runs, by uid, with the token that stops them.
    pub running_pods: Mutex<HashMap<String, CancellationToken>>,
}

impl Shared {
    /// Returns true while the kubelet simulator runs the pod with this uid.
    pub(crate) fn kubelet_runs(&self, uid: &str) -> bool {
        self.running_pods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains_key(uid)
    }
}

/// A running fake cluster. Dropping it stops the server and the pods; call
/// [`FakeCluster::shutdown`] to wait for that.
pub struct FakeCluster {
    shared: Arc<Shared>,
    url: String,
    admin_token: String,
    gateway_token: String,
    tasks: Vec<JoinHandle<()>>,
    _temp_dir: Option<tempfile::TempDir>,
}

impl FakeCluster {
    /// Starts the API server on 127.0.0.1 and the controllers.
    pub async fn start(options: Options) -> Result<FakeCluster, StartError> {
        let rules = load_role_rules(&options.role_path)?;
        let admin_token = format!("admin-{}", uuid::Uuid::new_v4().simple());
        let gateway_token = format!("jobgate-{}", uuid::Uuid::new_v4().simple());
        let authorizer = Authorizer::new(
            admin_token.clone(),
            gateway_token.clone(),
            options.namespace.clone(),
            rules,
        );
        let (temp_dir, work_dir) = match &options.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(StartError::WorkDir)?;
                (None, dir.clone())
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("fake-kube-")
                    .tempdir()
                    .map_err(StartError::WorkDir)?;
                let path = dir.path().to_owned();
                (Some(dir), path)
            }
        };
        let acceptor = TcpListener::bind(format!("127.0.0.1:{}", options.port))
            .into_acceptor()
            .await
            .map_err(|source| StartError::Bind {
                port: options.port,
                source,
            })?;
        let address = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().copied())
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| format!("127.0.0.1:{}", options.port));
        let mut namespaces = vec![options.namespace.clone()];
        namespaces.extend(options.extra_namespaces.iter().cloned());
        namespaces.push("kube-system".into());
        namespaces.dedup();

        let shared = Arc::new(Shared {
            store: Store::new(options.watch_history),
            faults: Faults::default(),
            authorizer,
            namespaces,
            gateway_namespace: options.namespace.clone(),
            unauthenticated: options.unauthenticated_user.map(identity_of),
            logs: LogRegistry::default(),
            shutdown: CancellationToken::new(),
            bookmark_interval: options.bookmark_interval,
            address: address.clone(),
            pod_retry_delay: options.pod_retry_delay,
            container_restart_delay: options.container_restart_delay,
            bin_dirs: options.bin_dirs.clone(),
            work_dir,
            running_pods: Mutex::default(),
        });

        let server = poem::Server::new_with_acceptor(acceptor);
        let endpoint = ApiEndpoint { shared: shared.clone() };
        let stop = shared.shutdown.clone();
        let server_task = tokio::spawn(async move {
            let result = server
                .run_with_graceful_shutdown(endpoint, stop.cancelled_owned(), Some(Duration::from_secs(2)))
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "the fake API server stopped with an error");
            }
        });
        let controller_task = tokio::spawn(crate::controller::run(shared.clone()));
        let kubelet_task = tokio::spawn(crate::kubelet::run(shared.clone()));
        tracing::info!(%address, namespace = %options.namespace, "fake Kubernetes API server started");
        Ok(FakeCluster {
            shared,
            url: format!("http://{address}"),
            admin_token,
            gateway_token,
            tasks: vec![server_task, controller_task, kubelet_task],
            _temp_dir: temp_dir,
        })
    }

    /// Base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Namespace of the gateway's identity.
    pub fn namespace(&self) -> &str {
        &self.shared.gateway_namespace
    }

    /// Bearer token of a user.
    pub fn token(&self, user: User) -> &str {
        match user {
            User::Admin => &self.admin_token,
            User::Gateway => &self.gateway_token,
        }
    }

    /// User name the API server reports for a user, such as
    /// `system:serviceaccount:jobgate:jobgate`.
    pub fn user_name(&self, user: User) -> String {
        self.shared.authorizer.user_name(&identity_of(user))
    }

    /// Returns the kubeconfig YAML for a user, with one cluster, one user and
    /// one context (named `fake-admin` or `fake-jobgate`) whose namespace is
    /// the gateway's.
    pub fn kubeconfig(&self, user: User) -> String {
        let context = match user {
            User::Admin => "fake-admin",
            User::Gateway => "fake-jobgate",
        };
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: {context}\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: {context}\n  context:\n    cluster: fake\n    user: {context}\n    namespace: {namespace}\n\
             current-context: {context}\n\
             preferences: {{}}\n",
            url = self.url,
            token = self.token(user),
            namespace = self.namespace(),
        )
    }

    /// Writes the kubeconfig for a user to `path`, readable by its owner only
    /// because it contains a token.
    pub fn write_kubeconfig(&self, path: &Path, user: User) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::io::Write;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(self.kubeconfig(user).as_bytes())
    }

    /// Handle to the fault injection knobs.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Returns every (verb, group, resource) the gateway's identity requested, with
    /// whether its Role allowed it. Discovery and SelfSubjectAccessReview,
    /// which every authenticated user may use, are not recorded.
    pub fn gateway_accesses(&self) -> Vec<Access> {
        self.shared.authorizer.gateway_accesses()
    }

    /// Returns every (verb, group, resource) the gateway's Role grants.
    pub fn role_grants(&self) -> Vec<(String, String, String)> {
        self.shared.authorizer.role_grants()
    }

    /// Drops the watch history, so that watches from any earlier version get
    /// 410 Expired; together with [`Faults::close_watches`] this makes
    /// watching clients relist.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// Returns an object as stored, bypassing HTTP and RBAC.
    pub fn object(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store.get(&Key::new(resource, namespace, name))
    }

    /// Returns all objects of a resource in a namespace, bypassing HTTP and RBAC.
    pub fn objects(&self, resource: Resource, namespace: &str) -> Vec<Value> {
        self.shared.store.list(resource, Some(namespace)).0
    }

    /// Stops the server and the controllers and kills running pods.
    pub async fn shutdown(mut self) {
        self.stop();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        tracing::info!(url = %self.url, "fake Kubernetes API server stopped");
    }

    fn stop(&self) {
        self.shared.shutdown.cancel();
        for token in self
            .shared
            .running_pods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
        {
            token.cancel();
        }
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

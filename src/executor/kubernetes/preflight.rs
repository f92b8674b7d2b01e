//! The start-up check that the gateway may do what it needs in the cluster.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

/// One permission the gateway uses: API group, resource, subresource, verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// Resource, such as `jobs`.
    pub resource: &'static str,
    /// Subresource, such as `log`; empty for none.
    pub subresource: &'static str,
    /// Verb, such as `create`.
    pub verb: &'static str,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource = if self.subresource.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        let group = if self.group.is_empty() { "core" } else { self.group };
        write!(f, "{} {resource} ({group})", self.verb)
    }
}

const fn permission(group: &'static str, resource: &'static str, subresource: &'static str, verb: &'static str) -> Permission {
    Permission {
        group,
        resource,
        subresource,
        verb,
    }
}

/// Everything the Kubernetes executor and catalog do in their namespace;
/// `kustomize/base/rbac.yaml` grants exactly these.
pub const REQUIRED: &[Permission] = &[
    permission("", "configmaps", "", "list"),
    permission("", "configmaps", "", "watch"),
    permission("batch", "jobs", "", "create"),
    permission("batch", "jobs", "", "list"),
    permission("batch", "jobs", "", "watch"),
    permission("batch", "jobs", "", "delete"),
    permission("", "pods", "", "list"),
    permission("", "pods", "", "watch"),
    permission("", "pods", "log", "get"),
];

/// Asks the API server, one SelfSubjectAccessReview per permission, which
/// of [`REQUIRED`] the gateway lacks in `namespace`.
pub async fn missing_permissions(client: &Client, namespace: &str) -> Result<Vec<Permission>, kube::Error> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for wanted in REQUIRED {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_owned()),
                    group: Some(wanted.group.to_owned()),
                    resource: Some(wanted.resource.to_owned()),
                    subresource: (!wanted.subresource.is_empty()).then(|| wanted.subresource.to_owned()),
                    verb: Some(wanted.verb.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews.create(&PostParams::default(), &review).await?;
        if !answer.status.is_some_and(|status| status.allowed) {
            missing.push(*wanted);
        }
    }
    Ok(missing)
}

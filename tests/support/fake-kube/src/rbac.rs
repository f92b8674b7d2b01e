//! Authentication by bearer token and authorization of the gateway's
//! identity by the rules of its RBAC Role.
//!
//! The admin may do anything. The gateway's service account may do what
//! its Role grants in its own namespace, plus what every authenticated user
//! may do through the default ClusterRoles: discovery and
//! SelfSubjectAccessReview.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use serde::Deserialize;

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The cluster admin (`kubernetes-admin`, group `system:masters`).
    Admin,
    /// The gateway's service account.
    Gateway,
}

/// One kind of request the gateway made, for comparing with its Role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    /// RBAC verb.
    pub verb: String,
    /// API group, empty for core.
    pub group: String,
    /// Resource, with `/subresource` when there is one (`pods/log`).
    pub resource: String,
    /// Whether the Role allowed it.
    pub allowed: bool,
}

/// Error reading the Role file.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The file could not be read.
    #[error("reading the RBAC file {path} failed")]
    Read {
        /// Path of the file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A YAML document was not valid.
    #[error("parsing the RBAC file {path} failed")]
    Parse {
        /// Path of the file.
        path: String,
        /// Cause.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// The file has no `kind: Role` document.
    #[error("the RBAC file {path} contains no Role")]
    NoRole {
        /// Path of the file.
        path: String,
    },
}

/// Reads the rules of the first `kind: Role` document in a YAML file.
pub fn load_role_rules(path: &Path) -> Result<Vec<PolicyRule>, RoleError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| RoleError::Read {
        path: shown.clone(),
        source,
    })?;
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_yaml_ng::Value::deserialize(document).map_err(|source| RoleError::Parse {
            path: shown.clone(),
            source,
        })?;
        if value.get("kind").and_then(|kind| kind.as_str()) != Some("Role") {
            continue;
        }
        let role: Role = serde_yaml_ng::from_value(value).map_err(|source| RoleError::Parse {
            path: shown.clone(),
            source,
        })?;
        return Ok(role.rules.unwrap_or_default());
    }
    Err(RoleError::NoRole { path: shown })
}

/// The action a request performs, in RBAC's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Verb.
    pub verb: String,
    /// API group.
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource, when any.
    pub subresource: Option<String>,
    /// Namespace, when the request is namespaced.
    pub namespace: Option<String>,
    /// Object name, when the request names one.
    pub name: Option<String>,
}

fn rule_matches(rule: &PolicyRule, attributes: &Attributes) -> bool {
    let listed = |list: &Option<Vec<String>>, wanted: &str| {
        list.iter().flatten().any(|entry| entry == "*" || entry == wanted)
    };
    let resource = match &attributes.subresource {
        Some(sub) => format!("{}/{sub}", attributes.resource),
        None => attributes.resource.clone(),
    };
    let resource_ok = rule.resources.iter().flatten().any(|entry| {
        entry == "*"
            || *entry == resource
            || (attributes.subresource.is_some()
                && entry.strip_prefix("*/") == attributes.subresource.as_deref())
    });
    let names_ok = match (&rule.resource_names, &attributes.name) {
        (None, _) => true,
        (Some(names), _) if names.is_empty() => true,
        (Some(names), Some(name)) => names.contains(name),
        (Some(_), None) => false,
    };
    rule.verbs.iter().any(|verb| verb == "*" || *verb == attributes.verb)
        && listed(&rule.api_groups, &attributes.group)
        && resource_ok
        && names_ok
}

/// Authenticates tokens and authorizes requests, recording what the gateway used.
#[derive(Debug, Clone)]
pub struct Authorizer {
    admin_token: String,
    gateway_token: String,
    namespace: String,
    rules: Arc<Vec<PolicyRule>>,
    used: Arc<Mutex<BTreeSet<Access>>>,
}

impl Authorizer {
    /// Creates an authorizer for the gateway's Role `rules` in `namespace`.
    pub fn new(admin_token: String, gateway_token: String, namespace: String, rules: Vec<PolicyRule>) -> Self {
        Authorizer {
            admin_token,
            gateway_token,
            namespace,
            rules: Arc::new(rules),
            used: Arc::default(),
        }
    }

    /// Finds the identity that owns a bearer token.
    pub fn authenticate(&self, token: &str) -> Option<Identity> {
        if token == self.admin_token {
            Some(Identity::Admin)
        } else if token == self.gateway_token {
            Some(Identity::Gateway)
        } else {
            None
        }
    }

    /// Returns the user name the API server reports for an identity.
    pub fn user_name(&self, identity: &Identity) -> String {
        match identity {
            Identity::Admin => "kubernetes-admin".into(),
            Identity::Gateway => format!("system:serviceaccount:{}:jobgate", self.namespace),
        }
    }

    /// Returns true when the Role allows the request for the gateway: only
    /// in the Role's namespace, because a Role grants nothing elsewhere.
    pub fn role_allows(&self, attributes: &Attributes) -> bool {
        attributes.namespace.as_deref() == Some(self.namespace.as_str())
            && self.rules.iter().any(|rule| rule_matches(rule, attributes))
    }

    /// Decides a request and, for the gateway, records it.
    pub fn authorize(&self, identity: &Identity, attributes: &Attributes) -> bool {
        match identity {
            Identity::Admin => true,
            Identity::Gateway => {
                let allowed = self.role_allows(attributes);
                let resource = match &attributes.subresource {
                    Some(sub) => format!("{}/{sub}", attributes.resource),
                    None => attributes.resource.clone(),
                };
                self.used
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(Access {
                        verb: attributes.verb.clone(),
                        group: attributes.group.clone(),
                        resource,
                        allowed,
                    });
                allowed
            }
        }
    }

    /// Returns every kind of request the gateway made, allowed or not.
    pub fn gateway_accesses(&self) -> Vec<Access> {
        self.used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Returns every (verb, group, resource) the Role grants, with
    /// subresources written `pods/log`, expanding no wildcards.
    pub fn role_grants(&self) -> Vec<(String, String, String)> {
        let mut grants = BTreeSet::new();
        for rule in self.rules.iter() {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        grants.insert((verb.clone(), group.clone(), resource.clone()));
                    }
                }
            }
        }
        grants.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(verb: &str, group: &str, resource: &str, sub: Option<&str>) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.map(str::to_string),
            namespace: Some("apps".into()),
            name: None,
        }
    }

    fn authorizer() -> Authorizer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../kustomize/base/rbac.yaml");
        let rules = load_role_rules(&path).unwrap();
        Authorizer::new("admin".into(), "gateway".into(), "apps".into(), rules)
    }

    #[test]
    fn role_allows_granted_verbs() {
        let authorizer = authorizer();
        assert!(authorizer.role_allows(&attributes("create", "batch", "jobs", None)));
        assert!(authorizer.role_allows(&attributes("get", "", "pods", Some("log"))));
        assert!(authorizer.role_allows(&attributes("watch", "", "configmaps", None)));
    }

    #[test]
    fn role_rejects_other_verbs() {
        let authorizer = authorizer();
        assert!(!authorizer.role_allows(&attributes("patch", "batch", "jobs", None)));
        assert!(!authorizer.role_allows(&attributes("get", "", "secrets", None)));
        assert!(!authorizer.role_allows(&attributes("get", "", "pods", Some("exec"))));
    }

    #[test]
    fn role_rejects_other_namespace() {
        let authorizer = authorizer();
        let mut request = attributes("get", "", "pods", None);
        request.namespace = Some("default".into());
        assert!(!authorizer.role_allows(&request));
    }
}

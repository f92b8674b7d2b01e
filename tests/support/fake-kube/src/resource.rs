//! The resources the fake serves, with the names and verbs that discovery
//! documents, URLs, Status bodies and RBAC checks use.

/// A resource type the fake stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Core `configmaps`.
    ConfigMaps,
    /// Core `secrets`.
    Secrets,
    /// Core `pods`, with the `log` and `status` subresources.
    Pods,
    /// Core `events`.
    Events,
    /// `batch/v1` `jobs`, with the `status` subresource.
    Jobs,
}

/// Verbs of every stored resource, as the real API server lists them.
pub const OBJECT_VERBS: &[&str] = &[
    "create", "delete", "deletecollection", "get", "list", "patch", "update", "watch",
];

impl Resource {
    /// Every stored resource.
    pub const ALL: [Resource; 5] = [
        Resource::ConfigMaps,
        Resource::Secrets,
        Resource::Pods,
        Resource::Events,
        Resource::Jobs,
    ];

    /// Plural lower-case name used in URLs and RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::ConfigMaps => "configmaps",
            Resource::Secrets => "secrets",
            Resource::Pods => "pods",
            Resource::Events => "events",
            Resource::Jobs => "jobs",
        }
    }

    /// API group: empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Resource::Jobs => "batch",
            _ => "",
        }
    }

    /// `apiVersion` of the objects.
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::Jobs => "batch/v1",
            _ => "v1",
        }
    }

    /// `kind` of the objects.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::ConfigMaps => "ConfigMap",
            Resource::Secrets => "Secret",
            Resource::Pods => "Pod",
            Resource::Events => "Event",
            Resource::Jobs => "Job",
        }
    }

    /// `kind` of a list of the objects, such as `JobList`.
    pub fn list_kind(self) -> String {
        format!("{}List", self.kind())
    }

    /// Singular lower-case name, as discovery lists it.
    pub fn singular(self) -> &'static str {
        match self {
            Resource::ConfigMaps => "configmap",
            Resource::Secrets => "secret",
            Resource::Pods => "pod",
            Resource::Events => "event",
            Resource::Jobs => "job",
        }
    }

    /// Short names that kubectl accepts, such as `cm`.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::ConfigMaps => &["cm"],
            Resource::Secrets => &[],
            Resource::Pods => &["po"],
            Resource::Events => &["ev"],
            Resource::Jobs => &[],
        }
    }

    /// Subresources the fake serves, with their kind and verbs.
    pub fn subresources(self) -> &'static [(&'static str, &'static str, &'static [&'static str])] {
        match self {
            Resource::Pods => &[
                ("log", "Pod", &["get"]),
                ("status", "Pod", &["get", "patch", "update"]),
            ],
            Resource::Jobs => &[("status", "Job", &["get", "patch", "update"])],
            _ => &[],
        }
    }

    /// Name used in API error messages: `jobs.batch` or `configmaps`.
    pub fn qualified_plural(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// Kind used in 422 messages: `Job.batch` or `ConfigMap`.
    pub fn qualified_kind(self) -> String {
        match self.group() {
            "" => self.kind().to_string(),
            group => format!("{}.{group}", self.kind()),
        }
    }

    /// Finds a resource by group and plural name.
    pub fn from_group_plural(group: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|resource| resource.group() == group && resource.plural() == plural)
    }
}

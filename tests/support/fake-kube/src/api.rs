//! The HTTP front: routing, authentication, authorization, injected faults
//! and the create, read, update, patch and delete handlers.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use poem::http::{header, Method, StatusCode};
use poem::{Endpoint, Request, Response};
use serde_json::{json, Value};

use crate::cluster::Shared;
use crate::discovery;
use crate::error::{success_status, ApiError};
use crate::objects::{self, name_of, uid_of};
use crate::rbac::{Attributes, Identity};
use crate::resource::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Key;

/// A parsed URL.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    GroupResources(String),
    OpenApi,
    Health,
    Namespaces(Option<String>),
    Objects(ObjectPath),
    AccessReview,
}

/// A URL that names a resource, and maybe a namespace, an object and a subresource.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ObjectPath {
    pub resource: Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

fn parse_route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "readyz" | "livez", ..] => return Some(Route::Health),
        ["openapi", ..] => return Some(Route::OpenApi),
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", group] => return Some(Route::Group(group.to_string())),
        ["api", "v1"] => return Some(Route::GroupResources(String::new())),
        ["apis", group, "v1"] => return Some(Route::GroupResources(group.to_string())),
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return None,
    };
    let object = |namespace: Option<&str>, plural: &str, name: Option<&str>, sub: Option<&str>| {
        Resource::from_group_plural(group, plural).map(|resource| {
            Route::Objects(ObjectPath {
                resource,
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                subresource: sub.map(str::to_string),
            })
        })
    };
    match (group, rest) {
        ("authorization.k8s.io", ["selfsubjectaccessreviews"]) => Some(Route::AccessReview),
        ("", ["namespaces"]) => Some(Route::Namespaces(None)),
        ("", ["namespaces", namespace]) => Some(Route::Namespaces(Some(namespace.to_string()))),
        (_, ["namespaces", namespace, plural]) => object(Some(namespace), plural, None, None),
        (_, ["namespaces", namespace, plural, name]) => object(Some(namespace), plural, Some(name), None),
        (_, ["namespaces", namespace, plural, name, sub]) => object(Some(namespace), plural, Some(name), Some(sub)),
        (_, [plural]) => object(None, plural, None, None),
        _ => None,
    }
}

/// Decodes a URL query into a map; later repeats of a key win.
fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    let decode = |text: &str| {
        let text = text.replace('+', " ");
        percent_encoding::percent_decode_str(&text).decode_utf8_lossy().into_owned()
    };
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (decode(key), decode(value)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

pub(crate) fn flag_set(query: &HashMap<String, String>, key: &str) -> bool {
    matches!(query.get(key).map(String::as_str), Some("true" | "1"))
}

/// Sends a JSON body.
pub(crate) fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(body.to_string())
}

/// Sends a `Status` body for an error.
pub(crate) fn error_response(error: &ApiError) -> Response {
    let mut response = json_response(error.code, &error.to_status());
    if let Some(seconds) = error.retry_after {
        if let Ok(value) = seconds.to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// The poem endpoint serving the API.
pub(crate) struct ApiEndpoint {
    pub shared: Arc<Shared>,
}

impl Endpoint for ApiEndpoint {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        let body = request.take_body().into_bytes().await.unwrap_or_default();
        let shared = self.shared.clone();
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let response = match shared.serve(&request, body).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%method, %path, code = error.code, reason = %error.reason, "answering with an API error");
                error_response(&error)
            }
        };
        Ok(response)
    }
}

/// Returns the RBAC verb of a request.
fn verb_of(method: &Method, path: &ObjectPath, query: &HashMap<String, String>) -> Result<&'static str, ApiError> {
    let verb = match (method.as_str(), path.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if flag_set(query, "watch") => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => return Err(ApiError::method_not_allowed(other)),
    };
    Ok(verb)
}

impl Shared {
    async fn serve(self: &Arc<Self>, request: &Request, body: Bytes) -> Result<Response, ApiError> {
        let latency = self.faults.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        let identity = match (token, &self.unauthenticated) {
            ("", Some(identity)) => identity.clone(),
            _ => self.authorizer.authenticate(token).ok_or_else(ApiError::unauthorized)?,
        };
        let route = parse_route(request.uri().path()).ok_or_else(ApiError::path_not_found)?;
        let query = parse_query(request.uri().query());
        let method = request.method().clone();
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if content_type.contains("protobuf") || content_type.contains("yaml") {
            return Err(ApiError::unsupported_media_type(content_type));
        }

        let (verb, resource_name) = match &route {
            Route::Objects(path) => (verb_of(&method, path, &query)?, Some(path.resource.plural())),
            Route::AccessReview => ("create", Some("selfsubjectaccessreviews")),
            Route::Namespaces(Some(_)) => ("get", Some("namespaces")),
            Route::Namespaces(None) => ("list", Some("namespaces")),
            _ => ("get", None),
        };
        if let Route::Objects(path) = &route {
            let attributes = Attributes {
                verb: verb.to_string(),
                group: path.resource.group().to_string(),
                resource: path.resource.plural().to_string(),
                subresource: path.subresource.clone(),
                namespace: path.namespace.clone(),
                name: path.name.clone(),
            };
            if !self.authorizer.authorize(&identity, &attributes) {
                let user = self.authorizer.user_name(&identity);
                tracing::warn!(%user, verb, resource = path.resource.plural(), "rejecting a request that the gateway's Role does not allow");
                return Err(ApiError::forbidden(
                    &user,
                    verb,
                    path.resource,
                    path.subresource.as_deref(),
                    path.namespace.as_deref(),
                    path.name.as_deref(),
                ));
            }
        } else if let (Route::Namespaces(name), Identity::Gateway) = (&route, &identity) {
            // Namespaces are cluster-scoped and the gateway's Role grants none of them.
            let user = self.authorizer.user_name(&identity);
            let message = match name {
                Some(name) => format!("namespaces {name:?} is forbidden: User {user:?} cannot get resource \"namespaces\" in API group \"\" in the namespace {name:?}"),
                None => format!("namespaces is forbidden: User {user:?} cannot list resource \"namespaces\" in API group \"\" at the cluster scope"),
            };
            let mut error = ApiError::bad_request(message);
            error.code = 403;
            error.reason = "Forbidden".into();
            error.details = Some(json!({ "name": name.clone().unwrap_or_default(), "kind": "namespaces" }));
            return Err(error);
        }
        if let Some((code, retry_after)) = self.faults.take_injected(verb, resource_name) {
            tracing::debug!(code, verb, resource = resource_name, "answering with an injected status");
            return Err(ApiError::injected(code, retry_after));
        }

        match route {
            Route::Version => Ok(json_response(200, &discovery::version())),
            Route::CoreVersions => Ok(json_response(200, &discovery::core_versions(&self.address))),
            Route::Groups => Ok(json_response(200, &discovery::groups())),
            Route::Group(group) => discovery::group_document(&group)
                .map(|document| json_response(200, &document))
                .ok_or_else(ApiError::path_not_found),
            Route::GroupResources(group) => discovery::resources(&group)
                .map(|document| json_response(200, &document))
                .ok_or_else(ApiError::path_not_found),
            // NOTE: no OpenAPI documents are served, so `kubectl apply` needs
            // `--validate=false` and `kubectl explain` does not work.
            Route::OpenApi => Err(ApiError::path_not_found()),
            Route::Health => Ok(Response::builder().content_type("text/plain").body("ok")),
            Route::Namespaces(name) => self.namespaces_response(name.as_deref()),
            Route::AccessReview => {
                if method != Method::POST {
                    return Err(ApiError::method_not_allowed(method.as_str()));
                }
                self.access_review(&identity, &body)
            }
            Route::Objects(path) => self.serve_objects(request, verb, path, &query, body).await,
        }
    }

    fn namespaces_response(&self, name: Option<&str>) -> Result<Response, ApiError> {
        let namespace = |name: &str| {
            json!({
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": { "name": name, "uid": format!("00000000-0000-0000-0000-{:012x}", name.len()), "resourceVersion": "1", "labels": { "kubernetes.io/metadata.name": name } },
                "spec": { "finalizers": ["kubernetes"] },
                "status": { "phase": "Active" },
            })
        };
        match name {
            Some(name) if self.namespaces.iter().any(|ns| ns == name) => Ok(json_response(200, &namespace(name))),
            Some(name) => Err(ApiError::namespace_not_found(name)),
            None => Ok(json_response(
                200,
                &json!({
                    "kind": "NamespaceList",
                    "apiVersion": "v1",
                    "metadata": { "resourceVersion": self.store.current_version().to_string() },
                    "items": self.namespaces.iter().map(|ns| namespace(ns)).collect::<Vec<_>>(),
                }),
            )),
        }
    }

    /// Decides a SelfSubjectAccessReview with the same rules that guard requests.
    fn access_review(&self, identity: &Identity, body: &[u8]) -> Result<Response, ApiError> {
        let mut review: SelfSubjectAccessReview = serde_json::from_slice(body)
            .map_err(|error| ApiError::bad_request(format!("decoding the SelfSubjectAccessReview failed: {error}")))?;
        let (allowed, reason) = match (&review.spec.resource_attributes, identity) {
            (_, Identity::Admin) => (true, "allowed by ClusterRoleBinding \"cluster-admin\"".to_string()),
            (None, Identity::Gateway) => (true, "non-resource URLs are allowed by ClusterRole \"system:discovery\"".to_string()),
            (Some(attributes), Identity::Gateway) => {
                let attributes = Attributes {
                    verb: attributes.verb.clone().unwrap_or_default(),
                    group: attributes.group.clone().unwrap_or_default(),
                    resource: attributes.resource.clone().unwrap_or_default(),
                    subresource: attributes.subresource.clone().filter(|s| !s.is_empty()),
                    namespace: attributes.namespace.clone().filter(|s| !s.is_empty()),
                    name: attributes.name.clone().filter(|s| !s.is_empty()),
                };
                let allowed = self.authorizer.role_allows(&attributes);
                let reason = if allowed {
                    format!(
                        "RBAC: allowed by RoleBinding \"jobgate/{ns}\" of Role \"jobgate\" to ServiceAccount \"jobgate/{ns}\"",
                        ns = self.gateway_namespace
                    )
                } else {
                    String::new()
                };
                (allowed, reason)
            }
        };
        review.status = Some(k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus {
            allowed,
            reason: (!reason.is_empty()).then_some(reason),
            ..Default::default()
        });
        let mut body = serde_json::to_value(&review).map_err(|error| ApiError::internal(&error.to_string()))?;
        body["kind"] = json!("SelfSubjectAccessReview");
        body["apiVersion"] = json!("authorization.k8s.io/v1");
        body["metadata"] = json!({ "creationTimestamp": null });
        Ok(json_response(201, &body))
    }

    fn check_namespace(&self, namespace: &str) -> Result<(), ApiError> {
        if self.namespaces.iter().any(|ns| ns == namespace) {
            Ok(())
        } else {
            Err(ApiError::namespace_not_found(namespace))
        }
    }

    async fn serve_objects(
        self: &Arc<Self>,
        request: &Request,
        verb: &str,
        path: ObjectPath,
        query: &HashMap<String, String>,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let resource = path.resource;
        match (&path.subresource, resource) {
            (None, _) => {}
            (Some(sub), Resource::Pods) if sub == "log" && verb == "get" => {}
            (Some(sub), Resource::Pods | Resource::Jobs) if sub == "status" && ["get", "update", "patch"].contains(&verb) => {}
            _ => return Err(ApiError::path_not_found()),
        }
        if let Some(namespace) = &path.namespace {
            self.check_namespace(namespace)?;
        }
        let namespace = path.namespace.clone().unwrap_or_default();
        let name = path.name.clone().unwrap_or_default();
        let key = Key::new(resource, &namespace, &name);
        match verb {
            "list" => self.list(resource, path.namespace.as_deref(), query),
            "watch" => self.watch(resource, path.namespace.clone(), query),
            "get" if path.subresource.as_deref() == Some("log") => self.pod_log(&namespace, &name, query).await,
            "get" => {
                let object = self.store.get(&key).ok_or_else(|| ApiError::not_found(resource, &name))?;
                Ok(json_response(200, &object))
            }
            "create" => {
                if path.namespace.is_none() {
                    return Err(ApiError::method_not_allowed("POST"));
                }
                let mut object: Value = parse_body(&body)?;
                objects::prepare_create(resource, &namespace, &mut object)?;
                if matches!(query.get("dryRun").map(String::as_str), Some("All")) {
                    return Ok(json_response(201, &object));
                }
                let key = Key::new(resource, &namespace, name_of(&object));
                let created = self.store.create(key, object)?;
                Ok(json_response(201, &created))
            }
            "update" => {
                let object: Value = parse_body(&body)?;
                let updated = self.write(&key, path.subresource.as_deref(), |_| Ok(object))?;
                Ok(json_response(200, &updated))
            }
            "patch" => {
                let content_type = request
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                let patch: Value = parse_body(&body)?;
                let updated = self.write(&key, path.subresource.as_deref(), |current| apply_patch(current, &content_type, &patch))?;
                Ok(json_response(200, &updated))
            }
            "delete" => {
                let options = delete_options(&body, query)?;
                let (code, answer) = self.delete(&key, &options)?;
                Ok(json_response(code, &answer))
            }
            "deletecollection" => {
                if path.namespace.is_none() {
                    return Err(ApiError::method_not_allowed("DELETE"));
                }
                let options = delete_options(&body, query)?;
                let (items, _) = self.store.list(resource, Some(&namespace));
                let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
                let fields = FieldSelector::parse(resource, query.get("fieldSelector").map_or("", String::as_str))?;
                let mut deleted = Vec::new();
                for item in items.iter().filter(|item| labels.matches_object(item) && fields.matches(item)) {
                    let key = Key::new(resource, &namespace, name_of(item));
                    if self.delete(&key, &options).is_ok() {
                        deleted.push(item.clone());
                    }
                }
                Ok(json_response(200, &list_body(resource, deleted, self.store.current_version())))
            }
            other => Err(ApiError::method_not_allowed(other)),
        }
    }

    fn list(&self, resource: Resource, namespace: Option<&str>, query: &HashMap<String, String>) -> Result<Response, ApiError> {
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
        let fields = FieldSelector::parse(resource, query.get("fieldSelector").map_or("", String::as_str))?;
        let (items, version) = self.store.list(resource, namespace);
        let items: Vec<Value> = items
            .into_iter()
            .filter(|item| labels.matches_object(item) && fields.matches(item))
            .collect();
        // NOTE: `limit` and `continue` are ignored: every list comes in one
        // page without a continue token, which clients accept.
        Ok(json_response(200, &list_body(resource, items, version)))
    }

    /// Replaces an object through `change`, keeping the fields the server
    /// owns. A write to the main resource keeps the old status, and a write
    /// to `/status` changes only the status, as for the real Job and Pod
    /// registries.
    fn write(
        &self,
        key: &Key,
        subresource: Option<&str>,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let resource = key.resource;
        self.store.update(key, |current| {
            let mut next = change(current)?;
            if !next.is_object() {
                return Err(ApiError::bad_request("the request body must be a JSON object"));
            }
            let expected = next.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
            let actual = current.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
            if expected.as_deref().is_some_and(|expected| !expected.is_empty() && expected != actual) {
                return Err(ApiError::conflict(resource, &key.name));
            }
            if subresource == Some("status") {
                let status = next.get("status").cloned().unwrap_or(json!({}));
                next = current.clone();
                next["status"] = status;
            } else if matches!(resource, Resource::Jobs | Resource::Pods) {
                next["status"] = current.get("status").cloned().unwrap_or(json!({}));
            }
            next["kind"] = json!(resource.kind());
            next["apiVersion"] = json!(resource.api_version());
            if !next.get("metadata").is_some_and(Value::is_object) {
                next["metadata"] = json!({});
            }
            for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "generation", "resourceVersion"] {
                match current["metadata"].get(field) {
                    Some(value) => next["metadata"][field] = value.clone(),
                    None => {
                        next["metadata"].as_object_mut().map(|map| map.remove(field));
                    }
                }
            }
            if next["metadata"].get("name").is_none_or(Value::is_null) {
                next["metadata"]["name"] = json!(key.name);
            }
            objects::check_update(resource, current, &mut next)?;
            *current = next;
            Ok(())
        })
    }

    /// Deletes an object with the given options, returning the HTTP status
    /// and the body: the object for pods and for deletions that wait on
    /// finalizers or dependents, a success Status otherwise.
    pub(crate) fn delete(&self, key: &Key, options: &DeleteOptions) -> Result<(u16, Value), ApiError> {
        let current = self.store.get(key).ok_or_else(|| ApiError::not_found(key.resource, &key.name))?;
        if let Some(uid) = &options.precondition_uid {
            if uid != uid_of(&current) {
                let mut error = ApiError::conflict(key.resource, &key.name);
                error.message = format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    uid_of(&current)
                );
                return Err(error);
            }
        }
        if current.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
            return Ok((200, current));
        }
        let uid = uid_of(&current).to_string();
        let has_finalizers = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|list| !list.is_empty());
        match key.resource {
            Resource::Pods => {
                let grace = options.grace_period_seconds.unwrap_or_else(|| {
                    current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30)
                });
                let phase = current.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
                let bound = current.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
                let running = bound && !matches!(phase, "Succeeded" | "Failed") && self.kubelet_runs(&uid);
                if running && grace > 0 {
                    // The kubelet notices the deletion timestamp, stops the
                    // containers with this grace and then removes the pod.
                    let deadline = chrono::Utc::now() + chrono::Duration::seconds(grace);
                    let updated = self.store.update(key, |object| {
                        object["metadata"]["deletionTimestamp"] =
                            json!(deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                        object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                        Ok(())
                    })?;
                    return Ok((200, updated));
                }
                if has_finalizers {
                    let updated = self.mark_deleting(key)?;
                    return Ok((200, updated));
                }
                let removed = self.store.remove(key).ok_or_else(|| ApiError::not_found(key.resource, &key.name))?;
                Ok((200, removed))
            }
            Resource::Jobs => {
                // The batch/v1 Job registry's default policy is to orphan
                // the pods; kubectl and most clients ask for Background.
                let policy = options.propagation_policy.clone().unwrap_or_else(|| "Orphan".into());
                match policy.as_str() {
                    "Foreground" => {
                        let updated = self.store.update(key, |object| {
                            object["metadata"]["deletionTimestamp"] = json!(objects::now());
                            object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                            let finalizers = object["metadata"]
                                .as_object_mut()
                                .expect("stored objects have metadata")
                                .entry("finalizers")
                                .or_insert_with(|| json!([]));
                            if let Some(list) = finalizers.as_array_mut() {
                                list.push(json!("foregroundDeletion"));
                            }
                            Ok(())
                        })?;
                        Ok((200, updated))
                    }
                    "Orphan" | "Background" => {
                        if policy == "Orphan" {
                            self.orphan_pods(&key.namespace, &uid);
                        }
                        if has_finalizers {
                            let updated = self.mark_deleting(key)?;
                            return Ok((200, updated));
                        }
                        // Background: the garbage collector in the job
                        // controller deletes the pods whose owner is gone.
                        self.store.remove(key);
                        Ok((200, success_status(key.resource, &key.name, &uid)))
                    }
                    other => Err(ApiError::bad_request(format!(
                        "DeleteOptions.propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ))),
                }
            }
            _ => {
                if has_finalizers {
                    let updated = self.mark_deleting(key)?;
                    return Ok((200, updated));
                }
                self.store.remove(key);
                Ok((200, success_status(key.resource, &key.name, &uid)))
            }
        }
    }

    fn mark_deleting(&self, key: &Key) -> Result<Value, ApiError> {
        self.store.update(key, |object| {
            object["metadata"]["deletionTimestamp"] = json!(objects::now());
            object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            Ok(())
        })
    }

    /// Removes the owner reference to `owner_uid` from the pods of a namespace.
    fn orphan_pods(&self, namespace: &str, owner_uid: &str) {
        let (pods, _) = self.store.list(Resource::Pods, Some(namespace));
        for pod in pods {
            let owned = pod
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner_uid));
            if !owned {
                continue;
            }
            let key = Key::new(Resource::Pods, namespace, name_of(&pod));
            let _ = self.store.update(&key, |object| {
                if let Some(refs) = object["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != owner_uid);
                }
                if object["metadata"]["ownerReferences"].as_array().is_some_and(Vec::is_empty) {
                    object["metadata"].as_object_mut().map(|map| map.remove("ownerReferences"));
                }
                Ok(())
            });
        }
    }
}

/// Builds a list body with each item's kind and apiVersion.
pub(crate) fn list_body(resource: Resource, items: Vec<Value>, version: u64) -> Value {
    json!({
        "kind": resource.list_kind(),
        "apiVersion": resource.api_version(),
        "metadata": { "resourceVersion": version.to_string() },
        "items": items,
    })
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        // NOTE: only JSON bodies are read; YAML and protobuf are not.
        ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
    })
}

/// Applies a patch by its media type.
fn apply_patch(current: &Value, content_type: &str, patch: &Value) -> Result<Value, ApiError> {
    let mut next = current.clone();
    match content_type {
        // NOTE: a strategic merge patch is applied as a JSON merge patch, so
        // lists are replaced whole instead of merged by key, and `$patch`
        // directives are not understood.
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            json_patch::merge(&mut next, patch);
        }
        "application/json-patch+json" => {
            let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|error| ApiError::bad_request(format!("the JSON patch is not valid: {error}")))?;
            json_patch::patch(&mut next, &operations).map_err(|error| {
                let mut failure = ApiError::bad_request(format!("the JSON patch could not be applied: {error}"));
                failure.code = 422;
                failure.reason = "Invalid".into();
                failure
            })?;
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    Ok(next)
}

/// The parts of `DeleteOptions` the fake honours.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOptions {
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
}

fn delete_options(body: &[u8], query: &HashMap<String, String>) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(body)?
    };
    let orphan = body.get("orphanDependents").and_then(Value::as_bool).or_else(|| {
        query.get("orphanDependents").map(|value| value == "true")
    });
    let propagation_policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| query.get("propagationPolicy").cloned())
        .or_else(|| orphan.map(|orphan| if orphan { "Orphan".into() } else { "Background".into() }));
    let grace_period_seconds = body
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| query.get("gracePeriodSeconds").and_then(|value| value.parse().ok()));
    Ok(DeleteOptions {
        propagation_policy,
        grace_period_seconds,
        precondition_uid: body.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_parses_namespaced_subresource() {
        let route = parse_route("/api/v1/namespaces/apps/pods/web-1/log").unwrap();
        let expected = Route::Objects(ObjectPath {
            resource: Resource::Pods,
            namespace: Some("apps".into()),
            name: Some("web-1".into()),
            subresource: Some("log".into()),
        });
        assert_eq!(route, expected);
    }

    #[test]
    fn route_parses_cluster_wide_jobs() {
        let route = parse_route("/apis/batch/v1/jobs").unwrap();
        let Route::Objects(path) = route else { panic!("not an object route") };
        assert_eq!(path.resource, Resource::Jobs);
        assert_eq!(path.namespace, None);
    }

    #[test]
    fn route_rejects_unknown_group() {
        assert_eq!(parse_route("/apis/apps/v1/namespaces/a/deployments"), None);
    }

    #[test]
    fn query_decodes_selectors() {
        let query = parse_query(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1"));
        assert_eq!(query["labelSelector"], "app=web,tier in (a)");
        assert!(flag_set(&query, "watch"));
    }
}

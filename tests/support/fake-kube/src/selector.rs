//! Label selectors and field selectors, as the `labelSelector` and
//! `fieldSelector` query parameters write them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ApiError;
use crate::resource::Resource;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; an empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms.into_iter().map(str::trim).filter(|term| !term.is_empty()).collect()
}

fn parse_set(key: &str, rest: &str, original: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: {original:?}: expected a parenthesised set of values for {key:?}")))?;
    Ok(inner
        .split(',')
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_string())
            } else if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = term.split_once("==") {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = term.split_once('=') {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, rest)) = term.split_once(" notin ") {
                Requirement::NotIn(key.trim().into(), parse_set(key, rest, term)?)
            } else if let Some((key, rest)) = term.split_once(" in ") {
                Requirement::In(key.trim().into(), parse_set(key, rest, term)?)
            } else if term.contains(' ') || term.contains('(') {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: {term:?}: found unexpected characters"
                )));
            } else {
                Requirement::Exists(term.to_string())
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    /// Builds a selector from `matchLabels`.
    pub fn from_match_labels(labels: &BTreeMap<String, String>) -> Self {
        LabelSelector {
            requirements: labels
                .iter()
                .map(|(key, value)| Requirement::Equals(key.clone(), value.clone()))
                .collect(),
        }
    }

    /// Returns true when the labels satisfy every requirement.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let label = |key: &str| labels.and_then(|labels| labels.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => label(key) == Some(value.as_str()),
            Requirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
            Requirement::In(key, values) => label(key).is_some_and(|v| values.iter().any(|x| x == v)),
            Requirement::NotIn(key, values) => !label(key).is_some_and(|v| values.iter().any(|x| x == v)),
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::NotExists(key) => label(key).is_none(),
        })
    }

    /// Returns true when the object's `metadata.labels` satisfy the selector.
    pub fn matches_object(&self, object: &Value) -> bool {
        self.matches(object.pointer("/metadata/labels").and_then(Value::as_object))
    }
}

/// Field paths each resource accepts in a field selector, besides
/// `metadata.name` and `metadata.namespace`; these are the API server's
/// field label conversions for the v1 and batch/v1 types (Kubernetes 1.33).
fn extra_fields(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Pods => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        Resource::Events => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        Resource::Secrets => &["type"],
        Resource::Jobs => &["status.successful"],
        Resource::ConfigMaps => &[],
    }
}

/// A parsed field selector: equality and inequality on supported fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses `metadata.name=x,status.phase!=Running`, rejecting fields the
    /// real API server does not index for the resource.
    pub fn parse(resource: Resource, text: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in split_terms(text) {
            let (field, equal, value) = if let Some((field, value)) = term.split_once("!=") {
                (field, false, value)
            } else if let Some((field, value)) = term.split_once("==") {
                (field, true, value)
            } else if let Some((field, value)) = term.split_once('=') {
                (field, true, value)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: {text:?}; can't understand {term:?}"
                )));
            };
            let field = field.trim();
            let supported = ["metadata.name", "metadata.namespace"].contains(&field)
                || extra_fields(resource).contains(&field);
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    /// Returns true when every term holds for the object.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, expected)| {
            let actual = field_value(object, field);
            (actual == *expected) == *equal
        })
    }
}

/// Reads a field as the API server's field sets do: missing fields are empty
/// strings and `source` is the event's `source.component`.
fn field_value(object: &Value, field: &str) -> String {
    let path = match field {
        "source" => "/source/component".to_string(),
        "status.successful" => "/status/succeeded".to_string(),
        other => format!("/{}", other.replace('.', "/")),
    };
    match object.pointer(&path) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_equality_and_sets() {
        let object = json!({ "metadata": { "labels": { "app": "web", "tier": "db" } } });
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=front", false),
            ("", true),
        ];
        for (text, expected) in cases {
            let selector = LabelSelector::parse(text).unwrap();
            assert_eq!(selector.matches_object(&object), expected, "{text}");
        }
    }

    #[test]
    fn field_selector_rejects_unknown_field() {
        let error = FieldSelector::parse(Resource::ConfigMaps, "data.x=1").unwrap_err();
        assert_eq!(error.code, 400);
        assert_eq!(error.message, "field label not supported: data.x");
    }

    #[test]
    fn field_selector_name_and_missing_field() {
        let pod = json!({ "metadata": { "name": "a" }, "status": {} });
        let by_name = FieldSelector::parse(Resource::Pods, "metadata.name=a").unwrap();
        let by_node = FieldSelector::parse(Resource::Pods, "spec.nodeName=").unwrap();
        let not_running = FieldSelector::parse(Resource::Pods, "status.phase!=Running").unwrap();
        assert!(by_name.matches(&pod));
        assert!(by_node.matches(&pod));
        assert!(not_running.matches(&pod));
    }
}

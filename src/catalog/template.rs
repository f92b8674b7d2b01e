//! One template: a ConfigMap's `job.yaml`, `parameters.yaml` and `description`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use serde_json::{json, Map, Value};

use super::params::{FieldError, ParameterSchema};
use super::render::{self, RenderError};
use crate::job::JobId;

/// ConfigMap key of the Job manifest template.
pub const JOB_KEY: &str = "job.yaml";
/// ConfigMap key of the parameter schema.
pub const PARAMETERS_KEY: &str = "parameters.yaml";
/// ConfigMap key of the one-line description.
pub const DESCRIPTION_KEY: &str = "description";

/// A loaded, checked template.
#[derive(Debug)]
pub struct Template {
    /// Name from the `jobgate.dev/template` label.
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// Where the template came from: a file path or `configmap/<namespace>/<name>`.
    pub source: String,
    job_yaml: String,
    parameters: ParameterSchema,
}

impl Template {
    /// Builds a template from a ConfigMap's data, checking the schema and the
    /// manifest's placeholders.
    pub fn from_data(
        name: &str,
        data: &BTreeMap<String, String>,
        source: String,
    ) -> Result<Self, String> {
        if !super::is_valid_template_name(name) {
            return Err(format!(
                "template name {name:?} is invalid: use lowercase letters, digits and '-', at most 63 characters"
            ));
        }
        let job_yaml = data
            .get(JOB_KEY)
            .ok_or_else(|| format!("the ConfigMap has no {JOB_KEY} key"))?
            .clone();
        render::check_template(&job_yaml).map_err(|e| e.to_string())?;
        let schema: Value = match data.get(PARAMETERS_KEY) {
            Some(text) => serde_yaml_ng::from_str(text)
                .map_err(|e| format!("{PARAMETERS_KEY} is not valid YAML: {e}"))?,
            None => json!({"type": "object", "properties": {}}),
        };
        let parameters =
            ParameterSchema::compile(schema).map_err(|e| format!("{PARAMETERS_KEY}: {e}"))?;
        let description = data
            .get(DESCRIPTION_KEY)
            .map(|d| d.trim().to_owned())
            .unwrap_or_default();
        Ok(Self {
            name: name.to_owned(),
            description,
            source,
            job_yaml,
            parameters,
        })
    }

    /// Returns the parameter schema.
    pub fn schema(&self) -> &Value {
        self.parameters.schema()
    }

    /// Applies defaults and validates parameters.
    pub fn validate(&self, parameters: Value) -> Result<Value, Vec<FieldError>> {
        self.parameters.validate(parameters)
    }

    /// Renders the Job for validated parameters.
    pub fn render(
        &self,
        id: JobId,
        parameters: &Value,
        env: &Map<String, Value>,
    ) -> Result<Job, RenderError> {
        let context = json!({
            "id": id.to_string(),
            "params": parameters,
            "env": env,
        });
        render::render_job(&self.job_yaml, &context)
    }
}

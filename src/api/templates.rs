//! `/v1/templates`: which jobs can be submitted, with their parameter schemas.

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::problem::ErrorResponse;
use super::ApiTags;
use crate::catalog::Catalog;
use crate::service::GatewayError;
use std::sync::Arc;

/// A template in the catalog.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct TemplateSummary {
    /// Template name, used in `POST /v1/jobs`.
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// False when the template failed to load; `error` says why.
    pub valid: bool,
    /// Why the template is invalid.
    pub error: Option<String>,
}

/// A template with its parameter schema.
#[derive(Debug, Object)]
#[oai(example)]
pub struct TemplateDetail {
    /// Template name.
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// JSON Schema of the parameters, with defaults.
    pub parameters: serde_json::Value,
}

/// The template catalog.
#[derive(Debug, Object)]
#[oai(example)]
pub struct TemplateList {
    /// Templates by name, valid or not.
    pub templates: Vec<TemplateSummary>,
}

impl Example for TemplateDetail {
    fn example() -> Self {
        Self {
            name: "compress".into(),
            description: "Compress uploaded files with gzip, one .gz output per file".into(),
            parameters: serde_json::json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["files"],
                "additionalProperties": false,
                "properties": {
                    "files": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 100,
                        "items": {"type": "string", "pattern": "^uploads/[0-9a-f-]{36}/[^/]+$"}
                    },
                    "level": {"type": "integer", "minimum": 1, "maximum": 9, "default": 9}
                }
            }),
        }
    }
}

impl Example for TemplateList {
    fn example() -> Self {
        Self {
            templates: vec![
                TemplateSummary {
                    name: "compress".into(),
                    description: "Compress uploaded files with gzip, one .gz output per file".into(),
                    valid: true,
                    error: None,
                },
                TemplateSummary {
                    name: "report".into(),
                    description: String::new(),
                    valid: false,
                    error: Some("parameters.yaml: missing field `type`".into()),
                },
            ],
        }
    }
}

#[derive(ApiResponse)]
enum ListResponse {
    /// Every template, sorted by name.
    #[oai(status = 200)]
    Ok(Json<TemplateList>),
}

#[derive(ApiResponse)]
enum DetailResponse {
    /// The template and the JSON Schema of its parameters.
    #[oai(status = 200)]
    Ok(Json<TemplateDetail>),
}

/// Operations on templates.
pub struct TemplatesApi {
    /// The catalog.
    pub catalog: Arc<Catalog>,
}

#[OpenApi(prefix_path = "/v1/templates", tag = "ApiTags::Templates")]
impl TemplatesApi {
    /// List templates
    ///
    /// Lists every template, including invalid ones with their load error,
    /// so operators see a broken template instead of a missing one.
    #[oai(path = "/", method = "get", operation_id = "listTemplates")]
    async fn list(&self) -> Result<ListResponse, ErrorResponse> {
        let snapshot = self.catalog.snapshot();
        let mut templates: Vec<TemplateSummary> = snapshot
            .templates
            .values()
            .map(|t| TemplateSummary {
                name: t.name.clone(),
                description: t.description.clone(),
                valid: true,
                error: None,
            })
            .chain(snapshot.invalid.values().map(|t| TemplateSummary {
                name: t.name.clone(),
                description: String::new(),
                valid: false,
                error: Some(t.error.clone()),
            }))
            .collect();
        templates.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ListResponse::Ok(Json(TemplateList { templates })))
    }

    /// Get a template
    ///
    /// Returns a template's description and the JSON Schema of its parameters.
    #[oai(path = "/:name", method = "get", operation_id = "getTemplate")]
    async fn get(
        &self,
        /// Template name.
        name: Path<String>,
    ) -> Result<DetailResponse, ErrorResponse> {
        let (template, _) = self.catalog.get(&name.0).map_err(|error| match error {
            crate::catalog::CatalogError::NotFound { name } => GatewayError::TemplateNotFound { name },
            crate::catalog::CatalogError::Invalid { name, error } => GatewayError::TemplateInvalid { name, error },
        })?;
        Ok(DetailResponse::Ok(Json(TemplateDetail {
            name: template.name.clone(),
            description: template.description.clone(),
            parameters: template.schema().clone(),
        })))
    }
}

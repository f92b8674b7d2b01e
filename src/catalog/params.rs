//! Parameter schemas: defaults, validation, and the errors callers see.

use serde_json::{Map, Value};

/// Maximum nesting depth of a parameter object; deeper input is rejected
/// before schema validation so that hostile input cannot exhaust the stack.
pub const MAX_PARAMETER_DEPTH: usize = 16;

/// One parameter that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// JSON Pointer to the failing value inside `parameters`, for example `/sizes/0`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A template's compiled parameter schema.
pub struct ParameterSchema {
    schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for ParameterSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParameterSchema").field("schema", &self.schema).finish()
    }
}

impl ParameterSchema {
    /// Compiles a schema. The top level must describe an object; unless the
    /// schema says otherwise, properties it does not list are rejected.
    pub fn compile(mut schema: Value) -> Result<Self, String> {
        let Some(root) = schema.as_object_mut() else {
            return Err("parameters.yaml must be a JSON Schema object".into());
        };
        match root.get("type") {
            Some(Value::String(t)) if t == "object" => {}
            None => {
                root.insert("type".into(), "object".into());
            }
            Some(other) => {
                return Err(format!(
                    "parameters.yaml must have `type: object` at the top level, found {other}"
                ))
            }
        }
        root.entry("additionalProperties").or_insert(Value::Bool(false));
        let validator =
            jsonschema::validator_for(&schema).map_err(|e| format!("invalid JSON Schema: {e}"))?;
        Ok(Self { schema, validator })
    }

    /// Returns the schema as served by `GET /v1/templates/{name}`.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Applies defaults, then validates. Returns the completed parameters, or
    /// every failing field.
    pub fn validate(&self, parameters: Value) -> Result<Value, Vec<FieldError>> {
        let mut parameters = match parameters {
            Value::Null => Value::Object(Map::new()),
            Value::Object(map) => Value::Object(map),
            other => {
                return Err(vec![FieldError {
                    field: String::new(),
                    message: format!(
                        "parameters must be a JSON object, found {}",
                        type_name(&other)
                    ),
                }])
            }
        };
        if depth(&parameters) > MAX_PARAMETER_DEPTH {
            return Err(vec![FieldError {
                field: String::new(),
                message: format!(
                    "parameters are nested deeper than {MAX_PARAMETER_DEPTH} levels"
                ),
            }]);
        }
        apply_defaults(&self.schema, &mut parameters);
        let errors: Vec<FieldError> = self
            .validator
            .iter_errors(&parameters)
            .map(|error| FieldError {
                field: error.instance_path().to_string(),
                message: error.to_string(),
            })
            .collect();
        if errors.is_empty() {
            Ok(parameters)
        } else {
            Err(errors)
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Returns the nesting depth of a value, without recursion.
fn depth(value: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, level)) = stack.pop() {
        max = max.max(level);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    max
}

/// Fills in `default` values of `properties` that the instance lacks,
/// descending into nested objects that are present or defaulted.
fn apply_defaults(schema: &Value, instance: &mut Value) {
    let (Some(properties), Some(object)) = (
        schema.get("properties").and_then(Value::as_object),
        instance.as_object_mut(),
    ) else {
        return;
    };
    for (name, property) in properties {
        if !object.contains_key(name) {
            if let Some(default) = property.get("default") {
                object.insert(name.clone(), default.clone());
            }
        }
        if let Some(child) = object.get_mut(name) {
            apply_defaults(property, child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> ParameterSchema {
        ParameterSchema::compile(json!({
            "required": ["images"],
            "properties": {
                "images": {"type": "array", "items": {"type": "string", "pattern": "^uploads/"}, "minItems": 1},
                "sizes": {"type": "array", "items": {"type": "integer", "minimum": 16, "maximum": 4096}, "default": [256]},
                "format": {"enum": ["jpeg", "png"], "default": "jpeg"},
                "options": {"type": "object", "properties": {"quality": {"type": "integer", "default": 85}}, "default": {}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_applied() {
        let params = schema().validate(json!({"images": ["uploads/a"]})).unwrap();
        assert_eq!(params["sizes"], json!([256]));
        assert_eq!(params["format"], json!("jpeg"));
        assert_eq!(params["options"]["quality"], json!(85));
    }

    #[test]
    fn every_failing_field_is_listed() {
        let errors = schema()
            .validate(json!({"images": ["nope"], "sizes": [8, 9000], "format": "gif", "extra": 1}))
            .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for expected in ["/images/0", "/sizes/0", "/sizes/1", "/format", ""] {
            assert!(fields.contains(&expected), "{expected:?} missing from {fields:?}");
        }
    }

    #[test]
    fn missing_required_is_reported() {
        let errors = schema().validate(json!({})).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("images"), "{}", errors[0].message);
    }

    #[test]
    fn non_object_parameters_are_rejected() {
        let errors = schema().validate(json!([1, 2])).unwrap_err();
        assert!(errors[0].message.contains("an array"));
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let mut value = json!(1);
        for _ in 0..40 {
            value = json!({ "a": value });
        }
        let errors = schema().validate(json!({"images": ["uploads/x"], "deep": value})).unwrap_err();
        assert!(errors[0].message.contains("nested deeper"));
    }

    #[test]
    fn schema_must_describe_an_object() {
        assert!(ParameterSchema::compile(json!({"type": "array"})).is_err());
        assert!(ParameterSchema::compile(json!("string")).is_err());
        assert!(ParameterSchema::compile(json!({"type": "object", "minProperties": "x"})).is_err());
    }
}

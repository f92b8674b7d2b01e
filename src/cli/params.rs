//! Parsing `key=value` arguments of `jobgate submit`.

use std::path::PathBuf;

use serde_json::{Map, Value};

/// One parsed argument.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// A JSON value or a string.
    Value(Value),
    /// `@path`: a file or folder to upload.
    Upload(PathBuf),
}

/// Splits `key=value`; the value is JSON when it parses as JSON, otherwise a
/// string, or an upload for `@path`.
pub fn parse_argument(argument: &str) -> Result<(String, ParamValue), String> {
    let (key, value) = argument
        .split_once('=')
        .ok_or_else(|| format!("{argument:?} is not key=value"))?;
    if key.is_empty() {
        return Err(format!("{argument:?} has an empty key"));
    }
    if let Some(path) = value.strip_prefix('@') {
        return Ok((key.to_owned(), ParamValue::Upload(PathBuf::from(path))));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((key.to_owned(), ParamValue::Value(value)))
}

/// Adds a value under `key`; a key given twice collects its values in a list.
pub fn insert(parameters: &mut Map<String, Value>, key: String, value: Value) {
    match parameters.remove(&key) {
        None => {
            parameters.insert(key, value);
        }
        Some(Value::Array(mut items)) => {
            match value {
                Value::Array(more) => items.extend(more),
                other => items.push(other),
            }
            parameters.insert(key, Value::Array(items));
        }
        Some(first) => {
            let mut items = vec![first];
            match value {
                Value::Array(more) => items.extend(more),
                other => items.push(other),
            }
            parameters.insert(key, Value::Array(items));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_parse_as_json_or_string() {
        assert_eq!(parse_argument("n=5").unwrap().1, ParamValue::Value(json!(5)));
        assert_eq!(parse_argument("sizes=[1,2]").unwrap().1, ParamValue::Value(json!([1, 2])));
        assert_eq!(parse_argument("name=photo").unwrap().1, ParamValue::Value(json!("photo")));
        assert_eq!(parse_argument("eq=a=b").unwrap().1, ParamValue::Value(json!("a=b")));
        assert_eq!(parse_argument("f=@x.jpg").unwrap().1, ParamValue::Upload("x.jpg".into()));
        assert!(parse_argument("novalue").is_err());
        assert!(parse_argument("=x").is_err());
    }

    #[test]
    fn repeated_keys_collect() {
        let mut map = Map::new();
        insert(&mut map, "a".into(), json!("x"));
        insert(&mut map, "a".into(), json!("y"));
        insert(&mut map, "a".into(), json!(["z"]));
        assert_eq!(map["a"], json!(["x", "y", "z"]));
    }
}

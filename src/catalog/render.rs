//! Rendering a template's `job.yaml` into a `batch/v1` Job.
//!
//! Templates use tinytemplate syntax. Every value is written as JSON (which is
//! valid YAML), and a placeholder must stand for a whole YAML value, so no
//! parameter, however hostile, can change the structure of the manifest: the
//! worst it can do is fail to be the type the manifest needs there, which the
//! Job schema then rejects.

use std::fmt::Write as _;

use k8s_openapi::api::batch::v1::Job;
use serde_json::Value;
use tinytemplate::TinyTemplate;

/// Name of the formatter that writes any value as one JSON string.
pub const STRING_FORMATTER: &str = "string";

/// Errors found in a template's text, before any request.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TemplateSyntaxError {
    /// tinytemplate could not parse the text.
    #[error("job.yaml is not a valid tinytemplate: {0}")]
    Parse(String),
    /// A placeholder is part of a larger YAML scalar.
    #[error(
        "job.yaml line {line}: placeholder {placeholder} must be a whole YAML value \
         (after `key: `, after `- `, or an item of a flow sequence); \
         move it into its own value or build the string in an env value"
    )]
    PartialValue {
        /// 1-based line number.
        line: usize,
        /// Placeholder text.
        placeholder: String,
    },
}

/// Errors of rendering one request.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// tinytemplate failed, for example on a path that does not exist.
    #[error("rendering job.yaml failed: {0}")]
    Template(String),
    /// The rendered text is not YAML.
    #[error("rendered job.yaml is not valid YAML: {0}")]
    Yaml(String),
    /// The rendered document is not a `batch/v1` Job.
    #[error("rendered job.yaml is not a valid batch/v1 Job: {0}")]
    NotAJob(String),
}

/// Checks a template's text: it must parse, and every placeholder must be a
/// whole YAML value.
pub fn check_template(text: &str) -> Result<(), TemplateSyntaxError> {
    let mut tt = new_engine();
    tt.add_template("job", text)
        .map_err(|e| TemplateSyntaxError::Parse(e.to_string()))?;
    for (line_index, line) in text.lines().enumerate() {
        for (start, end) in value_tags(line) {
            if !is_whole_value(line, start, end) {
                return Err(TemplateSyntaxError::PartialValue {
                    line: line_index + 1,
                    placeholder: line[start..end].to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Renders a template's text with `context` (`{id, params, env}`) and parses
/// the result as a `batch/v1` Job.
pub fn render_job(text: &str, context: &Value) -> Result<Job, RenderError> {
    let mut tt = new_engine();
    tt.add_template("job", text)
        .map_err(|e| RenderError::Template(e.to_string()))?;
    let rendered = tt
        .render("job", context)
        .map_err(|e| RenderError::Template(e.to_string()))?;
    parse_job(&rendered)
}

/// Parses YAML text as a `batch/v1` Job and checks the fields the gateway relies on.
pub fn parse_job(text: &str) -> Result<Job, RenderError> {
    let document: Value =
        serde_yaml_ng::from_str(text).map_err(|e| RenderError::Yaml(e.to_string()))?;
    let api_version = document.get("apiVersion").and_then(Value::as_str);
    let kind = document.get("kind").and_then(Value::as_str);
    if api_version != Some("batch/v1") || kind != Some("Job") {
        return Err(RenderError::NotAJob(format!(
            "apiVersion must be batch/v1 and kind must be Job, found {} and {}",
            api_version.unwrap_or("nothing"),
            kind.unwrap_or("nothing")
        )));
    }
    let job: Job = serde_json::from_value(document).map_err(|e| RenderError::NotAJob(e.to_string()))?;
    let pod = job
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .ok_or_else(|| RenderError::NotAJob("spec.template.spec is missing".into()))?;
    if pod.containers.is_empty() {
        return Err(RenderError::NotAJob(
            "spec.template.spec.containers is empty".into(),
        ));
    }
    for container in pod.containers.iter().chain(pod.init_containers.iter().flatten()) {
        if !is_dns1123_label(&container.name) {
            return Err(RenderError::NotAJob(format!(
                "container name {:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)",
                container.name
            )));
        }
    }
    Ok(job)
}

/// Returns true for a DNS-1123 label, as Kubernetes requires for container names.
pub fn is_dns1123_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn new_engine<'a>() -> TinyTemplate<'a> {
    let mut tt = TinyTemplate::new();
    tt.set_default_formatter(&format_json);
    tt.add_formatter(STRING_FORMATTER, format_json_string);
    tt
}

/// Writes a value as YAML-safe JSON.
fn format_json(value: &Value, out: &mut String) -> tinytemplate::error::Result<()> {
    write_json(value, out);
    Ok(())
}

/// Writes a value as one JSON string: strings as they are, other values as their JSON text.
fn format_json_string(value: &Value, out: &mut String) -> tinytemplate::error::Result<()> {
    match value {
        Value::String(s) => write_string(s, out),
        other => write_string(&other.to_string(), out),
    }
    Ok(())
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(key, out);
                out.push_str(": ");
                write_json(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Writes a double-quoted string that JSON and YAML read the same way.
///
/// Besides JSON's escapes, this escapes every character YAML does not allow
/// raw in a double-quoted scalar or reads as a line break (C1 controls,
/// U+2028, U+2029, U+FEFF, U+FFFE, U+FFFF), so YAML never folds or rejects it.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20
                || ('\u{7f}'..='\u{9f}').contains(&c)
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}') =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Returns the byte ranges of value placeholders (`{path}` or `{path | fmt}`)
/// in one line, skipping escaped braces, `{{ block }}` tags and `{# comments #}`.
fn value_tags(line: &str) -> Vec<(usize, usize)> {
    let bytes = line.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // tinytemplate treats only `\{` as an escape.
            b'\\' if bytes.get(i + 1) == Some(&b'{') => i += 2,
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                i = line[i..].find("}}").map_or(bytes.len(), |end| i + end + 2);
            }
            b'{' if bytes.get(i + 1) == Some(&b'#') => {
                i = line[i..].find("#}").map_or(bytes.len(), |end| i + end + 2);
            }
            b'{' => {
                let end = line[i..].find('}').map_or(bytes.len(), |end| i + end + 1);
                tags.push((i, end));
                i = end;
            }
            _ => i += 1,
        }
    }
    tags
}

/// Drops `{{ block }}` tags (which render no text) from the end of `text`.
fn strip_block_tags_end(mut text: &str) -> &str {
    while text.trim_end().ends_with("}}") {
        match text.rfind("{{") {
            Some(open) => text = &text[..open],
            None => break,
        }
    }
    text
}

/// Drops `{{ block }}` tags from the start of `text`.
fn strip_block_tags_start(mut text: &str) -> &str {
    while text.trim_start().starts_with("{{") {
        match text.find("}}") {
            Some(close) => text = &text[close + 2..],
            None => break,
        }
    }
    text
}

/// Returns true when the placeholder at `start..end` is a whole YAML value.
fn is_whole_value(line: &str, start: usize, end: usize) -> bool {
    let before = strip_block_tags_end(&line[..start]);
    let after = strip_block_tags_start(&line[end..]);
    let before_trimmed = before.trim_end();
    let has_space_before = before_trimmed.len() < before.len();
    let before_ok = if before_trimmed.is_empty() {
        true
    } else if let Some(rest) = before_trimmed.strip_suffix(':') {
        // `key: {x}`: the colon must end a key and be followed by a space.
        has_space_before && !rest.trim().is_empty()
    } else if let Some(rest) = before_trimmed.strip_suffix('-') {
        // `- {x}`: a sequence entry, so the dash stands alone.
        has_space_before && (rest.is_empty() || rest.ends_with(char::is_whitespace))
    } else {
        before_trimmed.ends_with('[') || before_trimmed.ends_with(',')
    };
    let after_trimmed = after.trim_start();
    let has_space_after = after_trimmed.len() < after.len();
    let after_ok = after_trimmed.is_empty()
        || after_trimmed.starts_with(',')
        || after_trimmed.starts_with(']')
        || (has_space_after && after_trimmed.starts_with('#'));
    before_ok && after_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_value_placeholders_are_accepted() {
        for text in [
            "key: {params.x}",
            "- {params.x}",
            "  - {params.x} # comment",
            "args: [\"a\", {params.x}, {params.y | string}]",
            "{{ if params.x }}key: {params.x}{{ endif }}",
            "literal: \\{not a placeholder}",
            "command: [\"printf '%s' \\\"$X\\\"\", {params.x}]",
        ] {
            assert_eq!(check_template(text), Ok(()), "{text:?}");
        }
    }

    #[test]
    fn partial_value_placeholders_are_rejected() {
        for text in [
            "image: repo/{params.x}",
            "image: {params.x}:latest",
            "image: repo:{params.x}",
            "{params.key}: value",
            "name: a-{id}",
            "cmd: echo {params.x}",
            "key: {params.x}#x",
        ] {
            assert!(
                matches!(check_template(text), Err(TemplateSyntaxError::PartialValue { .. })),
                "{text:?} was accepted"
            );
        }
    }

    #[test]
    fn strings_escape_yaml_line_breaks() {
        let mut out = String::new();
        write_string("a\u{2028}b\u{85}c\"d\\e\u{1}", &mut out);
        assert_eq!(out, r#""a\u2028b\u0085c\"d\\e\u0001""#);
        let parsed: String = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(parsed, "a\u{2028}b\u{85}c\"d\\e\u{1}");
    }

    #[test]
    fn string_formatter_quotes_numbers() {
        let mut out = String::new();
        format_json_string(&json!(42), &mut out).unwrap();
        assert_eq!(out, "\"42\"");
    }

    #[test]
    fn parse_job_requires_batch_v1_job() {
        let err = parse_job("apiVersion: v1\nkind: Pod\n").unwrap_err();
        assert!(err.to_string().contains("batch/v1"), "{err}");
        let err = parse_job("apiVersion: batch/v1\nkind: Job\nspec:\n  template:\n    spec:\n      containers: []\n").unwrap_err();
        assert!(err.to_string().contains("containers is empty"), "{err}");
    }

    #[test]
    fn container_names_must_be_dns_labels() {
        let text = "apiVersion: batch/v1\nkind: Job\nspec:\n  template:\n    spec:\n      containers:\n        - name: Bad_Name\n          image: x\n";
        let err = parse_job(text).unwrap_err();
        assert!(err.to_string().contains("DNS-1123"), "{err}");
    }
}

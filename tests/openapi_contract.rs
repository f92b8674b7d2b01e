//! The committed OpenAPI document must be exactly what the code produces.

use std::path::PathBuf;

#[test]
fn committed_openapi_matches_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = jobgate::openapi::document("yaml");
    assert!(
        committed == generated,
        "{} differs from the document the code produces; regenerate it with \
         `cargo run -q -p jobgate -- openapi > openapi/openapi.yaml` and commit the result",
        path.display()
    );
}

#[test]
fn every_operation_is_documented() {
    let document: serde_json::Value = serde_json::from_str(&jobgate::openapi::document("json")).unwrap();
    let paths = document["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let name = format!("{method} {path}");
            assert!(operation["operationId"].is_string(), "{name} has no operationId");
            assert!(operation["summary"].is_string(), "{name} has no summary");
            assert!(operation["description"].is_string(), "{name} has no description");
            assert!(operation["tags"].is_array(), "{name} has no tag");
            let responses = operation["responses"].as_object().unwrap();
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        response["content"]["application/problem+json"].is_object(),
                        "{name} declares {status} without problem+json"
                    );
                }
            }
        }
    }
    assert!(operations >= 10, "only {operations} operations found");
}

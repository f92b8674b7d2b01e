//! Resource quantities (`500m`, `1.5`, `128Mi`, `1G`) as CPU millicores and
//! memory bytes, for scheduling, OOM thresholds and `resourceFieldRef`.

use serde_json::Value;

/// Parses a quantity into its value times `scale`, rounded up: scale 1000
/// gives millicores for CPU, scale 1 gives bytes for memory.
pub fn parse_scaled(text: &str, scale: f64) -> Option<u64> {
    let text = text.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|number| (number, *factor)))
        .unwrap_or((text, 1.0));
    let value: f64 = number.parse().ok()?;
    if value < 0.0 || !value.is_finite() {
        return None;
    }
    Some((value * factor * scale).ceil() as u64)
}

/// Parses a CPU quantity into millicores.
pub fn cpu_millis(quantity: &Value) -> Option<u64> {
    match quantity {
        Value::String(text) => parse_scaled(text, 1000.0),
        Value::Number(number) => number.as_f64().map(|n| (n * 1000.0).ceil() as u64),
        _ => None,
    }
}

/// Parses a memory quantity into bytes.
pub fn memory_bytes(quantity: &Value) -> Option<u64> {
    match quantity {
        Value::String(text) => parse_scaled(text, 1.0),
        Value::Number(number) => number.as_f64().map(|n| n.ceil() as u64),
        _ => None,
    }
}

/// Returns a container's request for `resource`, which defaults to its
/// limit as the API server's defaulting does.
pub fn container_request<'a>(container: &'a Value, resource: &str) -> Option<&'a Value> {
    container
        .pointer(&format!("/resources/requests/{resource}"))
        .or_else(|| container.pointer(&format!("/resources/limits/{resource}")))
}

/// Returns a pod's effective requests (millicores, bytes): the sum over its
/// containers, or the largest init container's request when that is more.
pub fn pod_requests(spec: &Value) -> (u64, u64) {
    let sum = |list: &str, resource: &str, parse: fn(&Value) -> Option<u64>| -> (u64, u64) {
        let containers = spec.get(list).and_then(Value::as_array).cloned().unwrap_or_default();
        let values: Vec<u64> = containers
            .iter()
            .map(|c| container_request(c, resource).and_then(parse).unwrap_or(0))
            .collect();
        (values.iter().sum(), values.iter().copied().max().unwrap_or(0))
    };
    let (cpu, _) = sum("containers", "cpu", cpu_millis);
    let (memory, _) = sum("containers", "memory", memory_bytes);
    let (_, init_cpu) = sum("initContainers", "cpu", cpu_millis);
    let (_, init_memory) = sum("initContainers", "memory", memory_bytes);
    (cpu.max(init_cpu), memory.max(init_memory))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_quantities_in_millicores() {
        assert_eq!(cpu_millis(&json!("500m")), Some(500));
        assert_eq!(cpu_millis(&json!("2")), Some(2000));
        assert_eq!(cpu_millis(&json!("0.25")), Some(250));
        assert_eq!(cpu_millis(&json!(1)), Some(1000));
    }

    #[test]
    fn memory_quantities_in_bytes() {
        assert_eq!(memory_bytes(&json!("128Mi")), Some(128 << 20));
        assert_eq!(memory_bytes(&json!("1G")), Some(1_000_000_000));
        assert_eq!(memory_bytes(&json!("1e3")), Some(1000));
        assert_eq!(memory_bytes(&json!("64")), Some(64));
    }
}

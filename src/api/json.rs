//! JSON as Traefik's Go encoder writes it: `omitempty` fields left out, and values turned
//! into the bytes a response sends.

use bytes::Bytes;
use serde_json::Value;

/// Maps whose keys and values are the user's (header names, plugin options): shown as
/// written, since an empty value there means something (`customRequestHeaders: {X: ""}`
/// removes the header).
const VERBATIM: &[&str] = &[
    "plugin",
    "customRequestHeaders",
    "customResponseHeaders",
    "sslProxyHeaders",
    "statusRewrites",
    "headerLabels",
];

/// Drops what Traefik's `omitempty` tags leave out: unset options (`null`), empty strings
/// and lists, `false` and `0`. An object stays when it was set, even with only default
/// fields (`healthCheck: {}` turns status propagation on); a map that was empty to begin
/// with goes, as an empty Go map does.
pub(super) fn omit_empty(value: &mut Value) {
    match value {
        Value::Object(map) => map.retain(|key, v| {
            let empty_map = matches!(v, Value::Object(m) if m.is_empty());
            if empty_map {
                return key == "healthCheck";
            }
            if !VERBATIM.contains(&key.as_str()) {
                omit_empty(v);
            }
            !is_zero(v)
        }),
        Value::Array(items) => items.iter_mut().for_each(omit_empty),
        _ => {}
    }
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(_) => false,
    }
}

/// The serialized form of `value`.
pub(super) fn to_bytes(value: &Value) -> Bytes {
    // A `Value` always serializes (its map keys are strings); `null` keeps the body JSON
    // if that ever changed.
    serde_json::to_vec(value).map_or_else(|_| Bytes::from_static(b"null"), Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn omit_empty_leaves_out_what_go_leaves_out() {
        let mut v = json!({
            "rule": "Path(`/`)",
            "priority": 0,
            "middlewares": [],
            "tls": null,
            "service": "",
            "preservePath": false,
            "passHostHeader": true,
            "servers": [{"url": "http://a", "weight": null}],
            "weighted": {"healthCheck": {}, "sticky": {"cookie": {"name": ""}}},
            "customRequestHeaders": {"X-Drop": ""},
            "headers": {},
        });
        omit_empty(&mut v);
        assert_eq!(
            v,
            json!({
                "rule": "Path(`/`)",
                "passHostHeader": true,
                "servers": [{"url": "http://a"}],
                "weighted": {"healthCheck": {}, "sticky": {"cookie": {}}},
                "customRequestHeaders": {"X-Drop": ""},
            })
        );
    }
}

//! The OpenAPI document and the router agree, and the document states the limits the code
//! enforces.

mod common;

use bytes::Bytes;
use common::{config, start};
use serde_json::Value;
use step_04::{MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS};
use testkit::{Method, get, request};

/// The methods an OpenAPI path item can hold, in the document's spelling.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Turns a documented path into one that a request can use (`{id}` → `item-1`).
fn concrete(path: &str) -> String {
    path.replace("{id}", "item-1")
}

async fn document(addr: std::net::SocketAddr) -> Value {
    let reply = get(addr, "/openapi.json").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

// ANCHOR: parity
#[tokio::test]
async fn every_documented_operation_is_routed_and_every_routed_method_is_documented() {
    let addr = start(config()).await;
    // Make `item-1` exist, so its GET answers 200 rather than the item-level 404.
    common::create(addr, r#"{"name":"x"}"#).await;
    let doc = document(addr).await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());

    for (path, item) in paths {
        let documented: Vec<String> = METHODS
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_uppercase())
            .collect();
        for method in METHODS {
            let reply = request(
                addr,
                method.to_uppercase().parse().unwrap(),
                &concrete(path),
                &[],
                Bytes::new(),
            )
            .await
            .unwrap();
            if documented.iter().any(|d| d.eq_ignore_ascii_case(method)) {
                // Documented → routed: not the unknown-route 404, not a 405.
                assert_ne!(
                    reply.status, 405,
                    "{method} {path} is documented but not routed"
                );
                assert_ne!(
                    reply.json(),
                    serde_json::json!({"error": "not found"}),
                    "{method} {path} is documented but not routed"
                );
            } else if method != "head" {
                // Not documented → not routed. (HEAD is served wherever GET is, by axum.)
                assert_eq!(
                    reply.status, 405,
                    "{method} {path} answers but is not documented"
                );
            }
        }
        // And the router's own list of methods for the path is exactly the documented one.
        let reply = request(addr, Method::TRACE, &concrete(path), &[], Bytes::new())
            .await
            .unwrap();
        let mut allowed: Vec<&str> = reply
            .header("allow")
            .unwrap_or("")
            .split(',')
            .filter(|m| *m != "HEAD")
            .collect();
        allowed.sort_unstable();
        let mut documented: Vec<&str> = documented.iter().map(String::as_str).collect();
        documented.sort_unstable();
        assert_eq!(allowed, documented, "Allow header of {path}");
    }
}

#[tokio::test]
async fn paths_outside_the_document_are_not_routed() {
    let addr = start(config()).await;
    let doc = document(addr).await;

    for path in [
        "/",
        "/api",
        "/api/",
        "/api/items/",
        "/api/items/item-1/x",
        "/health/",
        "/docs",
        "/openapi.yaml",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_none(), "{path} is documented");
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 404, "{path}");
    }
}
// ANCHOR_END: parity

#[tokio::test]
async fn the_document_states_the_limits_the_code_enforces() {
    let addr = start(config()).await;
    let doc = document(addr).await;
    let create = &doc["components"]["schemas"]["CreateItem"];

    assert_eq!(create["properties"]["name"]["maxLength"], MAX_NAME_CHARS);
    assert_eq!(
        create["properties"]["description"]["maxLength"],
        MAX_DESCRIPTION_CHARS
    );
    assert_eq!(create["required"], serde_json::json!(["name"]));
    let post = &doc["paths"]["/api/items"]["post"];
    assert_eq!(post["requestBody"]["required"], true);
    for status in ["201", "400", "413", "415", "500", "503", "507"] {
        assert!(
            post["responses"].get(status).is_some(),
            "POST /api/items documents {status}"
        );
    }
}

#[tokio::test]
async fn every_error_response_is_documented_with_the_error_schema() {
    let addr = start(config()).await;
    let doc = document(addr).await;

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn the_document_as_served() {
    let addr = start(config()).await;

    let doc = document(addr).await;

    insta::assert_snapshot!(
        "step04_openapi",
        serde_json::to_string_pretty(&doc).unwrap()
    );
}

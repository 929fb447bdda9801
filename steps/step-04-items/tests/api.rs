//! Step 04's contract, request by request: every endpoint and every error, as transcripts the
//! book shows; a table of bad inputs; concurrent creation; the store's cap.

mod common;

use bytes::Bytes;
use common::{JSON, assert_error, config, create, redact, start};
use step_04::{MAX_BODY_BYTES, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS};
use testkit::{Method, assert_transcript, get, request};

const CREATE: &str = r#"{"name":"Test Item","description":"A test"}"#;
const CURL_POST: &str =
    "curl -i -X POST localhost:8080/api/items -H 'content-type: application/json'";

#[tokio::test]
async fn health_answers_ok() {
    let addr = start(config()).await;

    let reply = get(addr, "/health").await;

    assert_transcript!("step04_health", reply, "curl -i localhost:8080/health");
}

#[tokio::test]
async fn head_works_wherever_get_does() {
    let addr = start(config()).await;

    for path in ["/health", "/api/items", "/openapi.json"] {
        let reply = request(addr, Method::HEAD, path, &[], Bytes::new())
            .await
            .expect("HEAD");

        assert_eq!(reply.status, 200, "HEAD {path}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "HEAD {path}"
        );
        assert_eq!(reply.body, "", "HEAD {path}");
    }
}

#[tokio::test]
async fn the_curl_session_of_the_chapter() {
    let addr = start(config()).await;

    let created = create(addr, CREATE).await;
    let second = create(addr, r#"{"name":"Second"}"#).await;
    let listed = get(addr, "/api/items").await;
    let fetched = get(addr, "/api/items/item-1").await;
    let missing = get(addr, "/api/items/item-99").await;

    assert_transcript!(
        "step04_create",
        redact(created),
        &format!("{CURL_POST} -d '{CREATE}'")
    );
    assert_transcript!(
        "step04_create_second",
        redact(second),
        &format!(r#"{CURL_POST} -d '{{"name":"Second"}}'"#)
    );
    assert_transcript!(
        "step04_list",
        redact(listed),
        "curl -i localhost:8080/api/items"
    );
    assert_transcript!(
        "step04_get",
        redact(fetched),
        "curl -i localhost:8080/api/items/item-1"
    );
    assert_transcript!(
        "step04_get_missing",
        missing,
        "curl -i localhost:8080/api/items/item-99"
    );
}

#[tokio::test]
async fn a_created_item_is_where_its_location_says() {
    let addr = start(config()).await;

    let created = create(addr, CREATE).await;
    let location = created
        .header("location")
        .expect("a Location header")
        .to_owned();
    let fetched = get(addr, &location).await;

    assert_eq!(created.status, 201);
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json(), created.json());
    let item = created.json();
    assert_eq!(item["name"], "Test Item");
    assert_eq!(item["description"], "A test");
    let at = item["created_at"].as_str().expect("created_at is a string");
    assert!(
        at.len() == 27 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );
}

#[tokio::test]
async fn the_list_starts_empty_and_keeps_creation_order() {
    let addr = start(config()).await;
    assert_eq!(get(addr, "/api/items").await.json(), serde_json::json!([]));

    for n in 1..=5 {
        create(addr, &format!(r#"{{"name":"n{n}"}}"#)).await;
    }
    let list = get(addr, "/api/items").await.json();

    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n1", "n2", "n3", "n4", "n5"]);
}

#[tokio::test]
async fn unknown_fields_are_ignored_and_description_is_optional() {
    let addr = start(config()).await;

    let reply = create(addr, r#"{"name":"x","colour":"red","tags":[1,2]}"#).await;

    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["description"], "");
    assert_eq!(reply.json().get("colour"), None);
}

#[tokio::test]
async fn fields_at_their_limits_are_accepted_counting_characters_not_bytes() {
    let addr = start(config()).await;
    // 'é' is two bytes in UTF-8, '😀' four: the limits are in characters, as JSON Schema's
    // maxLength counts them.
    let name = "é".repeat(MAX_NAME_CHARS);
    let description = "😀".repeat(MAX_DESCRIPTION_CHARS);

    let reply = create(
        addr,
        &serde_json::json!({ "name": name, "description": description }).to_string(),
    )
    .await;

    assert_eq!(reply.status, 201, "{}", reply.body);
}

#[tokio::test]
async fn every_error_has_its_status_and_a_json_body() {
    let addr = start(config()).await;
    let too_big = format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));

    let invalid = create(addr, r#"{"name": 42}"#).await;
    let no_name = create(addr, r#"{"name": "   "}"#).await;
    let long = create(
        addr,
        &format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_NAME_CHARS + 1)),
    )
    .await;
    let no_type = request(addr, Method::POST, "/api/items", &[], CREATE)
        .await
        .unwrap();
    let big = create(addr, &too_big).await;
    let no_route = get(addr, "/api/nothing").await;
    let wrong_method = request(addr, Method::DELETE, "/api/items", &[], Bytes::new())
        .await
        .unwrap();

    assert_transcript!(
        "step04_error_invalid_body",
        invalid,
        &format!(r#"{CURL_POST} -d '{{"name": 42}}'"#)
    );
    assert_transcript!(
        "step04_error_name_required",
        no_name,
        &format!(r#"{CURL_POST} -d '{{"name": "   "}}'"#)
    );
    assert_transcript!(
        "step04_error_name_too_long",
        long,
        &format!(r#"{CURL_POST} -d '{{"name":"xxx…(201 characters)"}}'"#)
    );
    assert_transcript!(
        "step04_error_no_content_type",
        no_type,
        &format!("curl -i -X POST localhost:8080/api/items -H 'content-type:' -d '{CREATE}'")
    );
    assert_transcript!(
        "step04_error_too_large",
        big,
        &format!(r#"{CURL_POST} -d '{{"name":"xxx…(64 KiB)"}}'"#)
    );
    assert_transcript!(
        "step04_error_no_route",
        no_route,
        "curl -i localhost:8080/api/nothing"
    );
    assert_transcript!(
        "step04_error_wrong_method",
        wrong_method,
        "curl -i -X DELETE localhost:8080/api/items"
    );
}

// ANCHOR: table
/// What is wrong, method, path, headers, body; then the status and error message expected.
#[rustfmt::skip]
type Case<'a> = (&'a str, Method, &'a str, &'a [(&'a str, &'a str)], &'a str, u16, &'a str);

#[tokio::test]
async fn bad_requests_get_the_documented_status_and_message() {
    let addr = start(config()).await;
    let long_name = format!(r#"{{"name":"{}"}}"#, "n".repeat(MAX_NAME_CHARS + 1));
    let long_description = format!(
        r#"{{"name":"a","description":"{}"}}"#,
        "d".repeat(MAX_DESCRIPTION_CHARS + 1)
    );
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    let text = ("content-type", "text/plain");
    let form = ("content-type", "application/x-www-form-urlencoded");

    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("truncated JSON",           Method::POST,   "/api/items",             &[JSON], r#"{"name":"#,                      400, "invalid request body"),
        ("not JSON at all",          Method::POST,   "/api/items",             &[JSON], "name=x",                           400, "invalid request body"),
        ("empty body",               Method::POST,   "/api/items",             &[JSON], "",                                 400, "invalid request body"),
        ("trailing garbage",         Method::POST,   "/api/items",             &[JSON], r#"{"name":"a"} x"#,                400, "invalid request body"),
        ("an array",                 Method::POST,   "/api/items",             &[JSON], r#"[{"name":"a"}]"#,                400, "invalid request body"),
        ("null",                     Method::POST,   "/api/items",             &[JSON], "null",                             400, "invalid request body"),
        ("name is a number",         Method::POST,   "/api/items",             &[JSON], r#"{"name":42}"#,                   400, "invalid request body"),
        ("name is null",             Method::POST,   "/api/items",             &[JSON], r#"{"name":null}"#,                 400, "invalid request body"),
        ("description is an object", Method::POST,   "/api/items",             &[JSON], r#"{"name":"a","description":{}}"#, 400, "invalid request body"),
        ("name missing",             Method::POST,   "/api/items",             &[JSON], r#"{"description":"d"}"#,           400, "name is required"),
        ("name empty",               Method::POST,   "/api/items",             &[JSON], r#"{"name":""}"#,                   400, "name is required"),
        ("name only whitespace",     Method::POST,   "/api/items",             &[JSON], r#"{"name":" \t\n\u3000"}"#,        400, "name is required"),
        ("name too long",            Method::POST,   "/api/items",             &[JSON], &long_name,                         400, "name must be at most 200 characters"),
        ("description too long",     Method::POST,   "/api/items",             &[JSON], &long_description,                  400, "description must be at most 2000 characters"),
        ("no Content-Type",          Method::POST,   "/api/items",             &[],     CREATE,                             415, "Content-Type must be application/json"),
        ("text/plain",               Method::POST,   "/api/items",             &[text], CREATE,                             415, "Content-Type must be application/json"),
        ("a form",                   Method::POST,   "/api/items",             &[form], CREATE,                             415, "Content-Type must be application/json"),
        ("body too large",           Method::POST,   "/api/items",             &[JSON], &huge,                              413, "request body must be at most 65536 bytes"),
        ("no such item",             Method::GET,    "/api/items/item-999",    &[],     "",                                 404, "item not found"),
        ("not an id",                Method::GET,    "/api/items/banana",      &[],     "",                                 404, "item not found"),
        ("id with a leading zero",   Method::GET,    "/api/items/item-01",     &[],     "",                                 404, "item not found"),
        ("id that is not UTF-8",     Method::GET,    "/api/items/%FF",         &[],     "",                                 404, "item not found"),
        ("unknown route",            Method::GET,    "/nope",                  &[],     "",                                 404, "not found"),
        ("nested too deep",          Method::GET,    "/api/items/item-1/more", &[],     "",                                 404, "not found"),
        ("PUT on the collection",    Method::PUT,    "/api/items",             &[JSON], CREATE,                             405, "method not allowed"),
        ("DELETE an item",           Method::DELETE, "/api/items/item-1",      &[],     "",                                 405, "method not allowed"),
        ("POST to health",           Method::POST,   "/health",                &[JSON], "{}",                               405, "method not allowed"),
    ];

    for (what, method, path, headers, body, status, message) in cases {
        let reply = request(addr, method.clone(), path, headers, body.to_string())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));

        assert_error(&reply, *status, message, what);
        if *status == 405 {
            let allow = reply
                .header("allow")
                .unwrap_or_else(|| panic!("{what}: no Allow header"));
            assert!(allow.contains("GET"), "{what}: Allow: {allow}");
        }
    }
    // Nothing above created anything.
    assert_eq!(get(addr, "/api/items").await.json(), serde_json::json!([]));
}
// ANCHOR_END: table

// ANCHOR: concurrency
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_get_every_id_exactly_once() {
    const TASKS: usize = 16;
    const EACH: usize = 25;
    let addr = start(config()).await;

    // TASKS clients in parallel, each creating EACH items one after the other.
    let clients: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..EACH {
                    let reply = create(addr, &format!(r#"{{"name":"{task}-{n}"}}"#)).await;
                    assert_eq!(reply.status, 201, "{}", reply.body);
                    ids.push(reply.json()["id"].as_str().unwrap().to_owned());
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for client in clients {
        ids.extend(client.await.expect("client task"));
    }

    // Exactly item-1 … item-(TASKS·EACH): no gaps, no duplicates.
    let mut numbers: Vec<usize> = ids
        .iter()
        .map(|id| id["item-".len()..].parse().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=TASKS * EACH).collect::<Vec<_>>());
    // And the list holds them in id order, with time never going backwards.
    let list = get(addr, "/api/items").await.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), TASKS * EACH);
    for (position, item) in list.iter().enumerate() {
        assert_eq!(item["id"], format!("item-{}", position + 1));
    }
    let times: Vec<&str> = list
        .iter()
        .map(|i| i["created_at"].as_str().unwrap())
        .collect();
    assert!(times.is_sorted(), "created_at out of order");
}
// ANCHOR_END: concurrency

#[tokio::test]
async fn a_full_store_answers_507_and_keeps_what_it_has() {
    let addr = start(step_04::Config {
        max_items: 2,
        ..config()
    })
    .await;
    create(addr, r#"{"name":"one"}"#).await;
    create(addr, r#"{"name":"two"}"#).await;

    let refused = create(addr, r#"{"name":"three"}"#).await;

    assert_error(
        &refused,
        507,
        "item store is full (2 items)",
        "third create",
    );
    assert_transcript!(
        "step04_error_store_full",
        refused,
        &format!(r#"{CURL_POST} -d '{{"name":"three"}}'"#)
    );
    let list = get(addr, "/api/items").await.json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["name"], "one");
    assert_eq!(get(addr, "/api/items/item-2").await.status, 200);
}

//! The gRPC service over a real socket, with the generated client, on the memory store or a
//! test double: the calls, every error code, deadlines, streams, health, reflection, and REST
//! over HTTP/2 on the same port.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use step_04::store::ItemStore;
use step_08::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use common::{DownStore, SlowStore, client, fill, h2c, start, start_memory};

fn create(name: &str, description: &str) -> pb::CreateItemRequest {
    pb::CreateItemRequest {
        name: name.into(),
        description: description.into(),
    }
}

fn get(id: &str) -> pb::GetItemRequest {
    pb::GetItemRequest { id: id.into() }
}

/// `CODE: message`, as `grpcurl` prints a refusal.
fn refusal(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

// ANCHOR: round_trip
#[tokio::test]
async fn items_created_over_grpc_are_got_and_streamed_in_creation_order() {
    let (server, _store) = start_memory(100, &[]).await;
    let mut items = client(server.addr).await;

    let mut created = Vec::new();
    for name in ["one", "two", "three"] {
        let item = items.create_item(create(name, "")).await.expect("created");
        created.push(item.into_inner());
    }
    let got = items
        .get_item(get("item-2"))
        .await
        .expect("found")
        .into_inner();
    let mut stream = items
        .list_items(pb::ListItemsRequest::default())
        .await
        .expect("a stream")
        .into_inner();
    let mut listed = Vec::new();
    while let Some(item) = stream.message().await.expect("no error") {
        listed.push(item);
    }

    assert_eq!(created[0].id, "item-1");
    assert_eq!(got, created[1]);
    assert_eq!(listed, created, "every item, in creation order");
}
// ANCHOR_END: round_trip

#[tokio::test]
async fn rest_and_grpc_read_each_others_items() {
    let (server, _store) = start_memory(100, &[]).await;
    let mut items = client(server.addr).await;

    let over_grpc = items
        .create_item(create("from gRPC", "d"))
        .await
        .expect("created")
        .into_inner();
    let body = r#"{"name":"from REST"}"#;
    let over_rest = testkit::request(
        server.addr,
        testkit::Method::POST,
        "/api/items",
        &[("content-type", "application/json")],
        body,
    )
    .await
    .expect("POST");
    let read_over_rest = testkit::get(server.addr, "/api/items/item-1").await.json();
    let read_over_grpc = items
        .get_item(get("item-2"))
        .await
        .expect("found")
        .into_inner();

    assert_eq!(read_over_rest["name"], over_grpc.name);
    assert_eq!(read_over_rest["description"], over_grpc.description);
    assert_eq!(over_rest.status, 201);
    assert_eq!(read_over_grpc.name, "from REST");
    assert_eq!(over_rest.json()["id"], read_over_grpc.id);
}

// ANCHOR: errors
#[tokio::test]
async fn each_refusal_has_its_code_and_rests_message() {
    let (server, store) = start_memory(1, &[]).await;
    let mut items = client(server.addr).await;
    let (down, _store) = (start(Arc::new(DownStore), &[]).await, ());
    let mut down = client(down.addr).await;

    let empty = items.create_item(create(" ", "")).await.unwrap_err();
    let long = items
        .create_item(create(&"n".repeat(201), ""))
        .await
        .unwrap_err();
    let missing = items.get_item(get("item-9")).await.unwrap_err();
    let malformed = items.get_item(get("item-01")).await.unwrap_err();
    let huge = items
        .create_item(create("big", &"d".repeat(70_000)))
        .await
        .unwrap_err();
    items
        .create_item(create("fills the store", ""))
        .await
        .expect("room for one");
    let full = items
        .create_item(create("one too many", ""))
        .await
        .unwrap_err();
    let unavailable = down.get_item(get("item-1")).await.unwrap_err();
    let unavailable_list = down
        .list_items(pb::ListItemsRequest::default())
        .await
        .unwrap_err();

    let seen: Vec<String> = [
        ("CreateItem {\"name\": \" \"}", &empty),
        ("CreateItem {\"name\": \"nnn…\"}  # 201 characters", &long),
        ("GetItem {\"id\": \"item-9\"}", &missing),
        ("GetItem {\"id\": \"item-01\"}", &malformed),
        (
            "CreateItem {\"name\": \"big\", \"description\": \"ddd…\"}  # 70 000",
            &huge,
        ),
        (
            "CreateItem {\"name\": \"one too many\"}  # MAX_ITEMS=1",
            &full,
        ),
        (
            "GetItem {\"id\": \"item-1\"}  # the store is down",
            &unavailable,
        ),
        ("ListItems {}  # the store is down", &unavailable_list),
    ]
    .into_iter()
    .map(|(call, status)| format!("{call}\n  -> {}", refusal(status)))
    .collect();
    testkit::assert_transcript!("step08_grpc_errors", seen.join("\n"));
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(empty.message(), "name is required");
    assert_eq!(long.message(), "name must be at most 200 characters");
    assert_eq!(
        (missing.code(), malformed.code()),
        (Code::NotFound, Code::NotFound)
    );
    assert_eq!(huge.code(), Code::ResourceExhausted);
    assert_eq!(huge.message(), "request body must be at most 65536 bytes");
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert_eq!(full.message(), "item store is full (1 items)");
    assert_eq!(unavailable.code(), Code::Unavailable);
    assert_eq!(unavailable.message(), "item store unavailable");
    assert_eq!(unavailable_list.code(), Code::Unavailable);
    assert_eq!(store.list().await.expect("memory").len(), 1);
}
// ANCHOR_END: errors

#[tokio::test]
async fn shed_calls_get_unavailable_not_a_json_503() {
    let store = SlowStore::new(Duration::from_secs(10));
    let settings = [("MAX_CONCURRENCY", "1"), ("QUEUE_TIMEOUT", "0")];
    let server = start(store.clone(), &settings).await;
    let mut first = client(server.addr).await;
    let mut second = first.clone();
    // Holds the only slot.
    let holder = tokio::spawn(async move { first.get_item(get("item-1")).await });
    testkit::eventually(
        "the first call works",
        async || SlowStore::count(&store.started),
        |n| *n == 1,
    )
    .await;

    let shed = second.get_item(get("item-1")).await.unwrap_err();
    let mut health = HealthClient::new(common::channel(server.addr).await);
    let probe = health.check(HealthCheckRequest::default()).await;

    assert_eq!(shed.code(), Code::Unavailable, "{shed:?}");
    assert_eq!(shed.message(), "server overloaded, retry later");
    let probe = probe.expect("health is never shed").into_inner();
    assert_eq!(probe.status, ServingStatus::Serving as i32);
    holder.abort();
}

#[tokio::test]
async fn a_call_to_no_service_is_unimplemented() {
    let (server, _store) = start_memory(1, &[]).await;

    let response = h2c(
        server.addr,
        http::Request::post("/nowhere.v1.Nothing/Call")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .expect("a request"),
    )
    .await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert_eq!(response.headers()["grpc-status"], "12", "UNIMPLEMENTED");
}

// ANCHOR: deadline
#[tokio::test]
async fn a_deadline_shorter_than_the_work_ends_the_call_and_stops_the_work() {
    let store = SlowStore::new(Duration::from_secs(10));
    let server = start(store.clone(), &[("REQUEST_TIMEOUT", "30s")]).await;

    let started = Instant::now();
    let answer = unary_by_hand(server.addr, "GetItem", &get("item-1"), "300m").await;
    let waited = started.elapsed();

    let status = Status::from_header_map(answer.headers()).expect("a gRPC status");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        waited < Duration::from_secs(5),
        "answered at the deadline, not after the work: {waited:?}"
    );
    testkit::eventually(
        "the server's work was dropped",
        async || SlowStore::count(&store.cancelled),
        |n| *n == 1,
    )
    .await;
    assert_eq!(SlowStore::count(&store.finished), 0);
}
// ANCHOR_END: deadline

#[tokio::test]
async fn without_a_client_deadline_the_request_timeout_applies() {
    let store = SlowStore::new(Duration::from_secs(10));
    let server = start(store.clone(), &[("REQUEST_TIMEOUT", "300ms")]).await;
    let mut items = client(server.addr).await;

    let status = items.get_item(get("item-1")).await.unwrap_err();

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "request timed out");
    testkit::eventually(
        "the server's work was dropped",
        async || SlowStore::count(&store.cancelled),
        |n| *n == 1,
    )
    .await;
}

// ANCHOR: dropped_stream
#[tokio::test]
async fn a_client_that_drops_a_stream_stops_the_servers_stream_task() {
    // About 4 MB of items: far more than the connection's buffers hold.
    let (server, _items, stream) = common::a_long_stream().await;
    let streams = server.grpc.streams.clone();
    assert_eq!(
        streams.running.load(Ordering::Relaxed),
        1,
        "the task waits for the client"
    );

    drop(stream);

    testkit::eventually(
        "the stream task ends",
        async || streams.running.load(Ordering::Relaxed),
        |n| *n == 0,
    )
    .await;
    assert_eq!(streams.client_gone.load(Ordering::Relaxed), 1);
    assert_eq!(
        streams.completed.load(Ordering::Relaxed),
        0,
        "it did not go on to the end"
    );
}
// ANCHOR_END: dropped_stream

#[tokio::test]
async fn draining_ends_an_open_stream_with_unavailable() {
    let (server, _items, mut stream) = common::a_long_stream().await;

    server.grpc.draining.cancel();
    let mut read = 1;
    let ended = loop {
        match stream.message().await {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("the stream ran to its end ({read} items) despite the drain"),
            Err(status) => break status,
        }
    };

    assert_eq!(ended.code(), Code::Unavailable);
    assert_eq!(ended.message(), "server is shutting down");
    assert!(read < 2000, "{read}");
    let streams = server.grpc.streams.clone();
    testkit::eventually(
        "the task ends",
        async || streams.running.load(Ordering::Relaxed),
        |n| *n == 0,
    )
    .await;
    assert_eq!(streams.drained.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_stream_ends_at_the_request_timeout_when_the_client_sets_no_deadline() {
    let (server, store) = start_memory(2000, &[("REQUEST_TIMEOUT", "300ms")]).await;
    fill(&store, 2000).await;
    let mut items = client(server.addr).await;
    let mut stream = items
        .list_items(pb::ListItemsRequest::default())
        .await
        .expect("a stream")
        .into_inner();
    stream
        .message()
        .await
        .expect("no error")
        .expect("a first item");
    let streams = server.grpc.streams.clone();

    testkit::eventually(
        "the task stops at the deadline",
        async || streams.timed_out.load(Ordering::Relaxed),
        |n| *n == 1,
    )
    .await;
    let ended = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ran to its end despite the deadline"),
            Err(status) => break status,
        }
    };

    assert_eq!(ended.code(), Code::DeadlineExceeded);
    assert_eq!(ended.message(), "request timed out");
    assert_eq!(streams.running.load(Ordering::Relaxed), 0);
}

// ANCHOR: health
#[tokio::test]
async fn health_follows_readiness() {
    let (server, _store) = start_memory(1, &[]).await;
    let mut health = HealthClient::new(common::channel(server.addr).await);
    let check = async |health: &mut HealthClient<_>, service: &str| {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let response = health.check(request).await.expect("answered").into_inner();
        ServingStatus::try_from(response.status).expect("a known status")
    };

    let ready = check(&mut health, "").await;
    server.ops.readiness.set_unavailable();
    let unavailable = testkit::eventually(
        "NOT_SERVING",
        async || check(&mut health, "items.v1.ItemService").await,
        |status| *status == ServingStatus::NotServing,
    )
    .await;
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();

    assert_eq!(ready, ServingStatus::Serving);
    assert_eq!(unavailable, ServingStatus::NotServing);
    assert_eq!(unknown.code(), Code::NotFound);
}
// ANCHOR_END: health

#[tokio::test]
async fn reflection_lists_the_services_in_both_versions() {
    use tonic_reflection::pb::{v1, v1alpha};
    let (server, _store) = start_memory(1, &[]).await;
    let channel = common::channel(server.addr).await;

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("a stream")
        .into_inner();
    let reply = replies.message().await.expect("no error").expect("a reply");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("not a service list: {reply:?}");
    };
    let v1_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("a stream")
        .into_inner();
    let reply = replies.message().await.expect("no error").expect("a reply");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("not a service list: {reply:?}");
    };
    let v1alpha_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();

    for names in [&v1_names, &v1alpha_names] {
        assert!(
            names.contains(&"items.v1.ItemService".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_string()),
            "{names:?}"
        );
    }
}

/// A unary call written by hand, with `grpc-timeout: timeout`. tonic's client gives up at the
/// deadline by itself (and says `CANCELLED`), which would hide whether the server does; this
/// one waits for whatever the server answers.
async fn unary_by_hand(
    addr: std::net::SocketAddr,
    method: &str,
    message: &impl prost::Message,
    timeout: &str,
) -> http::Response<hyper::body::Incoming> {
    let encoded = message.encode_to_vec();
    // gRPC's framing: not compressed (0), the length (4 bytes, big-endian), the message.
    let mut framed = vec![0];
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    let request = http::Request::post(format!("/items.v1.ItemService/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(Bytes::from(framed)))
        .expect("a request");
    h2c(addr, request).await
}

// ANCHOR: h2c
#[tokio::test]
async fn rest_answers_over_h2c_on_the_same_port() {
    let (server, _store) = start_memory(10, &[]).await;
    let body = r#"{"name":"over HTTP/2"}"#;
    let created = h2c(
        server.addr,
        http::Request::post("/api/items")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("a request"),
    )
    .await;
    let reply = h2c(
        server.addr,
        http::Request::get("/api/items/item-1")
            .body(Full::default())
            .expect("a request"),
    )
    .await;

    assert_eq!(created.status(), 201);
    assert_eq!(reply.version(), http::Version::HTTP_2);
    let reply = testkit::Reply::from_response(reply).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["name"], "over HTTP/2");
    let transcript = reply
        .transcript("curl -i --http2-prior-knowledge localhost:8080/api/items/item-1")
        .replacen("HTTP/1.1 200 OK", "HTTP/2 200", 1);
    let at = reply.json()["created_at"]
        .as_str()
        .expect("a time")
        .to_owned();
    let request_id = reply.header("x-request-id").expect("an id").to_owned();
    let transcript = transcript
        .replace(&at, "2026-01-01T12:00:00.000000Z")
        .replace(&request_id, "4c0e2c4e-95c5-4d1c-9a8e-3f1f0b6f5e21");
    testkit::assert_transcript!("step08_rest_over_h2c", transcript);
}
// ANCHOR_END: h2c

#[tokio::test]
async fn grpc_calls_go_through_the_production_layers() {
    let (server, _store) = start_memory(10, &[]).await;
    let mut items = client(server.addr).await;
    let mut request = Request::new(get("item-1"));
    request
        .metadata_mut()
        .insert("x-request-id", "call-17".parse().expect("ascii"));

    let refused = items.get_item(request).await.unwrap_err();

    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(
        refused
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().ok()),
        Some(Some("call-17"))
    );
}

#[tokio::test]
async fn a_client_that_stalls_before_its_first_request_is_cut_off() {
    let (server, _store) = start_memory(1, &[("HEADER_READ_TIMEOUT", "300ms")]).await;
    let mut stalled = TcpStream::connect(server.addr).await.expect("connects");
    // Half of HTTP/2's preface: not enough to tell HTTP/1 from HTTP/2, and then nothing.
    stalled
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("sent");

    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(testkit::PATIENCE, stalled.read_to_end(&mut rest)).await;

    assert!(closed.is_ok(), "still open after {:?}", testkit::PATIENCE);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

//! Exercises for step 08 (book: "Step 08", section "Exercises").
//!
//! Each test is `#[ignore]`d so the step's normal `cargo test` stays green; it fails until you
//! solve the exercise. Run one with:
//!
//! ```text
//! cargo test -p step-08 --test exercises -- --ignored <name>
//! ```
//!
//! The reference solutions are patches in `steps/step-08-grpc/exercises/`.

mod common;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use prost::Message;
use step_08::pb;
use tonic::Status;

use common::{client, h2c, start_memory};

/// `ListItemsRequest` as a client that knows the new field sends it. Written here rather than
/// taken from the generated code, so that this test compiles before the `.proto` file has the
/// field, just as an old server meets a new client.
#[derive(Clone, PartialEq, prost::Message)]
struct ListItemsAfter {
    #[prost(string, tag = "1")]
    after_id: String,
}

/// Calls `ListItems` with `request` by hand and returns the items streamed back, or the status
/// the stream ended with.
async fn list(
    addr: std::net::SocketAddr,
    request: &ListItemsAfter,
) -> Result<Vec<pb::Item>, Status> {
    let encoded = request.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    let request = http::Request::post("/items.v1.ItemService/ListItems")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .expect("a request");
    let response = h2c(addr, request).await;
    if let Some(status) = Status::from_header_map(response.headers()) {
        return Err(status);
    }
    let collected = response.into_body().collect().await.expect("a body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let mut body = collected.to_bytes();
    let mut items = Vec::new();
    // Each message: a compression flag (1 byte), its length (4 bytes), the message.
    while body.has_remaining() {
        let _compressed = body.get_u8();
        let length = body.get_u32() as usize;
        items.push(pb::Item::decode(body.split_to(length)).expect("an item"));
    }
    match Status::from_header_map(&trailers) {
        Some(status) if status.code() != tonic::Code::Ok => Err(status),
        _ => Ok(items),
    }
}

/// Exercise 1: `ListItems` takes `after_id`, so a client whose stream broke can resume it
/// where it stopped instead of starting again.
#[tokio::test]
#[ignore = "exercise: resume a stream after an id (see the book, step 08)"]
async fn a_broken_stream_resumes_after_the_last_item_it_got() {
    let (server, _store) = start_memory(10, &[]).await;
    let mut items = client(server.addr).await;
    for name in ["one", "two", "three"] {
        let new = pb::CreateItemRequest {
            name: name.into(),
            description: String::new(),
        };
        items.create_item(new).await.expect("created");
    }

    let all = list(server.addr, &ListItemsAfter::default())
        .await
        .expect("a list");
    let after_one = list(
        server.addr,
        &ListItemsAfter {
            after_id: "item-1".into(),
        },
    )
    .await
    .expect("a list");
    let after_last = list(
        server.addr,
        &ListItemsAfter {
            after_id: "item-3".into(),
        },
    )
    .await
    .expect("a list");
    let bad = list(
        server.addr,
        &ListItemsAfter {
            after_id: "one".into(),
        },
    )
    .await;

    let ids = |items: &[pb::Item]| items.iter().map(|item| item.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&all),
        ["item-1", "item-2", "item-3"],
        "no after_id: everything"
    );
    assert_eq!(ids(&after_one), ["item-2", "item-3"]);
    assert!(after_last.is_empty(), "{after_last:?}");
    let bad = bad.expect_err("an id that is not one is refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
}

//! Step 01's behaviour: any request gets the greeting; `PORT` is honoured; a bad `PORT` is one
//! clear line and exit code 2.

use testkit::{Method, get, request, spawn_in_process};

const BIN: &str = env!("CARGO_BIN_EXE_step-01");

#[tokio::test]
async fn any_request_gets_hello_as_plain_text() {
    let addr = spawn_in_process(step_01::serve).await;

    let reply = get(addr, "/").await;

    testkit::assert_transcript!("step01_curl_root", reply, "curl -i localhost:8080/");
}

#[tokio::test]
async fn every_path_and_method_gets_the_same_answer() {
    let addr = spawn_in_process(step_01::serve).await;

    for (method, path) in [
        (Method::GET, "/anything/at/all"),
        (Method::POST, "/"),
        (Method::DELETE, "/x?y=z"),
    ] {
        let reply = request(addr, method.clone(), path, &[], "ignored body")
            .await
            .expect("request");
        assert_eq!(reply.status, 200, "{method} {path}");
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(reply.body, step_01::GREETING);
    }
}

#[tokio::test]
async fn the_binary_listens_on_port_from_the_environment() {
    testkit::assert_honours_port(BIN, "/").await;
}

#[tokio::test]
async fn a_bad_port_is_one_line_and_exit_code_2() {
    let line = testkit::assert_config_refused(BIN, &[("PORT", "abc")]).await;

    assert_eq!(
        line,
        "step-01: PORT must be a number from 0 to 65535, got \"abc\""
    );
}

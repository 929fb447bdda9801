//! A stand-in OpenTelemetry collector for step 10: it accepts OTLP/gRPC trace exports and
//! keeps the spans, so you can see what the service sent without installing anything.
//!
//! Run it:   `cargo run -p step-10 --bin otlp-sink` (port 4317, OTLP/gRPC's), then start
//!           step 10 with `OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317`, make a few
//!           requests, and `curl localhost:4317/spans`.
//! Settings: `PORT` (default 4317). A real collector, and a UI, instead: the chapter.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use step_10::sink::Sink;

#[tokio::main]
async fn main() -> ExitCode {
    let port = match std::env::var("PORT") {
        Err(_) => 4317,
        Ok(text) => match text.trim().parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("otlp-sink: PORT must be a port number from 0 to 65535, got {text:?}");
                return ExitCode::from(2);
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("otlp-sink: cannot listen on {port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "otlp-sink: listening on {}",
        listener
            .local_addr()
            .map_or(port.to_string(), |a| a.to_string())
    );
    // `axum::serve` answers HTTP/2 without an upgrade, which gRPC clients send.
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match axum::serve(listener, Sink::default().router())
        .with_graceful_shutdown(stop)
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("otlp-sink: {error}");
            ExitCode::FAILURE
        }
    }
}

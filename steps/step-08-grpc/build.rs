//! Turns `proto/items/v1/items.proto` into Rust at build time, with no `protoc` binary: protox
//! parses and checks the file in Rust, tonic-prost-build writes the messages and the service
//! from the result, and the compiled descriptors are kept for server reflection.

use std::path::PathBuf;

// ANCHOR: build
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/items/v1/items.proto"];
    // Run again only when a `.proto` file changes, not on every edit in the package.
    println!("cargo:rerun-if-changed=proto");
    // What `protoc --descriptor_set_out` would produce, computed in this process.
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("items_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // The client is for the tests and for other services that call this one.
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
// ANCHOR_END: build

//! No code: this package exists for its `Cargo.toml`, which puts every third-party crate of
//! the workspace in every step's build so that cargo compiles each crate once, with one set of
//! features (see `Cargo.toml` and CONTRIBUTING.md, "Dependencies").
#![forbid(unsafe_code)]

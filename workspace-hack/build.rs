//! Does nothing: cargo considers a package's build-dependencies only when it has a build script,
//! and this package's `[build-dependencies]` exist so that every build resolves the crates that
//! build scripts use (step 08's protobuf compiler, for one) with the same features.
fn main() {}

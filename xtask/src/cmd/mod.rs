//! One module per command: flags in, library calls, a report out. Commands never import each
//! other; what two of them need lives in a library module below them (ARCHITECTURE.md).

pub mod bake;
pub mod bench;
pub mod cache;
pub mod ci;
pub mod compose_file;
pub mod docker_build;
pub mod engine;
pub mod history;
pub mod policy;
pub mod smoke;
pub mod verify;

//! `cargo xtask docker-build`: every image in parallel on BuildKit, with live progress, a log per
//! image and a summary. The whole run is the library's pipeline (`pipeline.rs`): its phases
//! (up to date, cache import, publish, history, timings, cache export) around one build of the
//! plan.

use std::path::Path;

use crate::{flags, pipeline, util::Status};

pub fn run(root: &Path, args: flags::DockerBuildArgs) -> anyhow::Result<Status> {
    pipeline::run(root, &args)
}

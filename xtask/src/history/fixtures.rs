//! Records and inputs for tests, the library's and the commands' (whose tests are in another
//! crate target, so `#[cfg(test)]` helpers of this one would not reach them).

use std::collections::BTreeMap;

use super::{
    inputs::{source, Source},
    ImageRecord, Inputs, Record, FORMAT_VERSION,
};

pub fn image(name: &str, result: &str, wall: f64, cargo: &str) -> ImageRecord {
    ImageRecord {
        image: name.into(),
        result: result.into(),
        wall_seconds: wall,
        cargo_step: cargo.into(),
        cargo_seconds: (cargo == "ran").then_some(wall - 1.0),
        steps_run: 3,
        steps_cached: 5,
        image_id: Some(format!("sha256:{name}")),
        size_bytes: Some(1000),
        inputs: None,
        digest: Some(format!("d-{name}")),
        why: None,
        output_digest: None,
        product: None,
        published: None,
    }
}

pub fn record(time: f64, images: Vec<ImageRecord>) -> Record {
    Record {
        version: FORMAT_VERSION,
        time,
        command: "docker-build".into(),
        git_rev: Some("abc".into()),
        git_dirty: Some(false),
        strategy: "workspace".into(),
        tag: "dev".into(),
        engine_id: Some("e".into()),
        wall_seconds: 2.0,
        source: None,
        files: BTreeMap::new(),
        images,
    }
}

pub fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(p, d)| (p.to_string(), d.to_string()))
        .collect()
}

pub fn inputs_over(files: &BTreeMap<String, String>) -> Inputs {
    let sources: Vec<Source> = ["Cargo.toml", "Cargo.lock", "crates"]
        .iter()
        .map(|p| source(p, files))
        .collect();
    Inputs {
        dockerfile: "docker/Dockerfile.workspace".into(),
        dockerfile_digest: "df1".into(),
        target: "api".into(),
        sources,
        build_args: [("SERVICE".to_string(), "api".to_string())].into(),
        base_images: [(
            "rust:1.95-slim-bookworm".to_string(),
            Some("sha256:r1".to_string()),
        )]
        .into(),
        options_digest: "o1".into(),
    }
}

//! `cargo xtask bake-file`: the same builds as `docker-build`, as a `docker buildx bake` file
//! (JSON, which bake reads like HCL), generated from the image declaration.

use std::{path::Path, time::Duration};

use anyhow::Context;

use crate::{
    flags,
    proc::capture_with_timeout,
    session,
    target::{bake_file, bake_print_mismatches},
    util::Status,
    workspace,
};

pub fn run(root: &Path, args: flags::BakeFileArgs) -> anyhow::Result<Status> {
    let decl = workspace::load(root)?;
    let plan = session::plan_from_args(&decl, &args.build, Path::new("target/xtask/logs"), 0)?;
    let targets = || plan.builds.iter().map(|b| &b.target);
    let file = bake_file(targets())?;
    if !args.check_print {
        println!("{}", serde_json::to_string_pretty(&file)?);
        return Ok(Status::Ok);
    }
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let path = dir.path().join("docker-bake.json");
    std::fs::write(&path, serde_json::to_string_pretty(&file)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let printed = capture_with_timeout(
        crate::proc::Command::new("docker")
            .args(["buildx", "bake", "--print", "--file"])
            .arg(&path)
            .current_dir(root),
        Duration::from_secs(60),
    )
    .context("docker buildx bake --print")?;
    let printed: serde_json::Value =
        serde_json::from_str(&printed).context("docker buildx bake --print: not JSON")?;
    let mismatches = bake_print_mismatches(targets(), &printed);
    for line in &mismatches {
        println!("bake-file: {line}");
    }
    if mismatches.is_empty() {
        println!(
            "bake-file: docker buildx bake --print reads back the {} planned targets",
            plan.builds.len()
        );
    }
    Ok(Status::from_ok(mismatches.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_projects_bake_file_has_a_target_per_image() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let decl = workspace::load(root).unwrap();
        let images = decl.select(&[]).unwrap();
        let options = crate::plan::Options {
            strategy: "per-service".into(),
            tag: "dev".into(),
            log_dir: "target/xtask/logs".into(),
            ..Default::default()
        };
        let plan = crate::plan::plan(&decl, &images, &options).unwrap();
        let bake = bake_file(plan.builds.iter().map(|b| &b.target)).unwrap();
        // every declared image (names and count from the declaration: adding a service must not
        // break this test); bake's group lists them sorted
        let mut names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        names.sort();
        assert!(!names.is_empty());
        assert_eq!(bake["group"]["default"]["targets"], json!(names));
        for (image, build) in images.iter().zip(&plan.builds) {
            let target = &bake["target"][image.name.as_str()];
            let service: serde_json::Map<String, serde_json::Value> = (image.service.iter())
                .map(|s| ("SERVICE".to_string(), json!(s)))
                .collect();
            assert_eq!(target["args"], json!(service), "{}", image.name);
            assert_eq!(
                target["target"],
                json!(build.target.target),
                "{}",
                image.name
            );
            assert_eq!(
                target["dockerfile"],
                json!(build.dockerfile().display().to_string()),
                "{}",
                image.name
            );
            let output = match &image.output {
                Some(dir) => json!([format!("type=local,dest={}", dir.display())]),
                None => json!(["type=docker,compression=uncompressed"]),
            };
            assert_eq!(target["output"], output, "{}", image.name);
            if image.output.is_none() {
                let tag = format!("{}{}:dev", decl.image_prefix, image.name);
                assert_eq!(target["tags"], json!([tag]), "{}", image.name);
            }
        }
    }
}

//! `cargo xtask bake-file`: the same builds as `docker-build`, as a `docker buildx bake` file
//! (JSON, which bake reads like HCL), generated from the image declaration.

use std::{collections::BTreeMap, path::Path};

use serde_json::{json, Value};

use crate::{build, flags, plan::Plan, workspace, Status};

pub fn run(root: &Path, args: flags::BakeFileArgs) -> anyhow::Result<Status> {
    let decl = workspace::load(root)?;
    let plan = build::plan_from_args(&decl, &args.build)?;
    println!("{}", serde_json::to_string_pretty(&bake_file(&plan))?);
    Ok(Status::Ok)
}

/// The bake definition of `plan`: a target per build and a `default` group of them all.
pub fn bake_file(plan: &Plan) -> Value {
    let mut targets = BTreeMap::new();
    for build in &plan.builds {
        let args: BTreeMap<&str, &str> = build
            .build_args
            .iter()
            .filter_map(|a| a.split_once('='))
            .collect();
        let mut target = json!({
            "context": ".",
            "dockerfile": build.dockerfile,
            "target": build.target,
            "args": args,
        });
        match (&build.tag, &build.output_dir) {
            (Some(tag), _) => {
                target["tags"] = json!([tag]);
                let push = build.argv.iter().any(|a| a == "--push");
                target["output"] = json!([if push { "type=registry" } else { "type=docker" }]);
            }
            (None, Some(dir)) => {
                target["output"] = json!([format!("type=local,dest={}", dir.display())]);
            }
            (None, None) => {}
        }
        targets.insert(build.image.clone(), target);
    }
    let names: Vec<&String> = plan.builds.iter().map(|b| &b.image).collect();
    json!({ "group": { "default": { "targets": names } }, "target": targets })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let bake = bake_file(&crate::plan::plan(&decl, &images, &options));
        assert_eq!(
            bake["group"]["default"]["targets"]
                .as_array()
                .unwrap()
                .len(),
            8
        );
        assert_eq!(
            bake["target"]["api"],
            json!({"context": ".", "dockerfile": "docker/Dockerfile.optimized", "target": "runtime",
                   "args": {"SERVICE": "api"}, "tags": ["attune-api:dev"], "output": ["type=docker"]})
        );
        assert_eq!(
            bake["target"]["pack-binaries"]["output"],
            json!(["type=local,dest=target/pack-binaries"])
        );
        assert_eq!(bake["target"]["worker-full"]["args"], json!({}));
    }
}

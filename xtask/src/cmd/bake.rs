//! `cargo xtask bake-file`: the same builds as `docker-build`, as a `docker buildx bake` file
//! (JSON, which bake reads like HCL), generated from the image declaration.

use std::path::Path;

use crate::{flags, plan::bake_file, session, workspace, Status};

pub fn run(root: &Path, args: flags::BakeFileArgs) -> anyhow::Result<Status> {
    let decl = workspace::load(root)?;
    let plan = session::plan_from_args(&decl, &args.build)?;
    println!("{}", serde_json::to_string_pretty(&bake_file(&plan))?);
    Ok(Status::Ok)
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

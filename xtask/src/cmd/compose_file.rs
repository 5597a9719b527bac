//! `cargo xtask compose-file`: writes docker-compose.yaml from the image declaration, for the
//! default strategy; `--check` only compares; another `--strategy` is printed on stdout.

use std::path::Path;

use anyhow::Context;

use crate::{compose, flags, plan, util::Status, util::UsageError, workspace};

pub fn run(root: &Path, args: flags::ComposeFileArgs) -> anyhow::Result<Status> {
    let decl = workspace::load(root)?;
    let strategy = args
        .strategy
        .clone()
        .unwrap_or_else(|| decl.default_strategy.clone());
    decl.strategy(&strategy)?;
    let is_default = strategy == decl.default_strategy;
    if args.check && !is_default {
        return Err(UsageError(format!(
            "--check compares {} with the default strategy `{}`; --strategy {strategy} is only printed",
            compose::FILE,
            decl.default_strategy
        ))
        .into());
    }
    let plan = plan::plan(
        &decl,
        &decl.select(&[])?,
        &plan::Options {
            strategy,
            tag: decl.tag.clone(),
            ..Default::default()
        },
    )?;
    let text = compose::render(&decl, &plan);
    if !is_default {
        print!("{text}");
        return Ok(Status::Ok);
    }
    let path = root.join(compose::FILE);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if args.check {
        if current == text {
            println!("{} is up to date", compose::FILE);
            return Ok(Status::Ok);
        }
        println!(
            "{} is stale: it does not match [workspace.metadata.attune] in Cargo.toml; run `cargo xtask compose-file`",
            compose::FILE
        );
        return Ok(Status::Failed);
    }
    if current == text {
        println!("{} is up to date", compose::FILE);
    } else {
        std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", compose::FILE);
    }
    Ok(Status::Ok)
}

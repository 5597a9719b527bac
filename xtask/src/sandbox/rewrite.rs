//! Pure Dockerfile rewrites for a sandbox copy (verify-parallel, bench; never the working tree):
//! - [`namespace_cache_ids`]: every cache mount's `id=` gets a `-<suffix>`, and a mount without
//!   an id gets `id=<target>-<suffix>` (BuildKit's default id is the target), so a build with a
//!   fresh suffix starts from empty caches;
//! - [`mark_cargo_runs`]: the cargo `RUN` first prints [`EXEC_MARKER`], whose log timestamp tells
//!   when the process really ran (BuildKit's `started` includes a locked cache mount's wait).
//!
//! Both go through the Dockerfile model's byte spans; no other byte changes.

use crate::dockerfile::{model::parse, rewrite::apply_edits as apply, ParseError};
use crate::exec::events::is_cargo_step;

pub const EXEC_MARKER: &str = "verify-exec-start";

/// Appends `-<suffix>` to every cache mount's id (adding `id=<target>-<suffix>` where absent).
pub fn namespace_cache_ids(text: &str, suffix: &str) -> Result<String, ParseError> {
    let dockerfile = parse(text)?;
    let mut edits = Vec::new();
    for ins in &dockerfile.instructions {
        for mount in ins.mounts.iter().filter(|m| m.is_cache()) {
            match mount.options.iter().rev().find(|o| o.key == "id") {
                Some(option) => {
                    let Some(span) = option.value_span.clone() else {
                        return Err(ParseError::new(
                            option.line,
                            "cannot rewrite this cache id: write it as a plain word",
                        ));
                    };
                    edits.push((span.end..span.end, format!("-{suffix}")));
                }
                None => {
                    let Some(target) = mount.target() else {
                        return Err(ParseError::new(mount.line, "a cache mount without target"));
                    };
                    edits.push((mount.end..mount.end, format!(",id={target}-{suffix}")));
                }
            }
        }
    }
    Ok(apply(text, edits))
}

/// Makes every cargo `RUN` (shell form) print [`EXEC_MARKER`] before anything else.
pub fn mark_cargo_runs(text: &str) -> Result<String, ParseError> {
    let dockerfile = parse(text)?;
    let mut edits = Vec::new();
    for ins in &dockerfile.instructions {
        if ins.keyword != "RUN" || !is_cargo_step(&format!(" RUN {}", ins.args)) {
            continue;
        }
        if ins.args.starts_with('[') || !ins.heredocs.is_empty() {
            return Err(ParseError::new(
                ins.line,
                "verify-parallel marks only shell-form cargo RUNs without heredocs",
            ));
        }
        let at = match ins.flags.last() {
            Some(flag) => flag.span.end,
            None => ins.span.start + "RUN".len(),
        };
        edits.push((at..at, format!(" echo {EXEC_MARKER};")));
    }
    Ok(apply(text, edits))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "FROM rust AS builder\n\
        RUN --mount=type=cache,target=/cargo-home,id=cargo-home,sharing=shared \\\n    \
        --mount=type=cache,target=/build/target,id=target-builder-${SERVICE},sharing=locked \\\n    \
        --mount=type=cache,target=/usr/local/cargo/git,sharing=shared \\\n    \
        mkdir -p x && cargo build --release\n\
        RUN apt-get update\n";

    #[test]
    fn ids_get_a_suffix_or_are_added() {
        let out = namespace_cache_ids(RUN, "n1").unwrap();
        assert!(out.contains("id=cargo-home-n1,sharing=shared"), "{out}");
        assert!(
            out.contains("id=target-builder-${SERVICE}-n1,sharing=locked"),
            "{out}"
        );
        assert!(
            out.contains(
                "target=/usr/local/cargo/git,sharing=shared,id=/usr/local/cargo/git-n1 \\"
            ),
            "{out}"
        );
        assert_eq!(
            out.len(),
            RUN.len() + 6 + ",id=/usr/local/cargo/git-n1".len()
        );
    }

    #[test]
    fn cargo_runs_print_the_marker_first() {
        let out = mark_cargo_runs(RUN).unwrap();
        assert!(
            out.contains("sharing=shared echo verify-exec-start; \\\n    mkdir -p x"),
            "{out}"
        );
        assert!(out.ends_with("RUN apt-get update\n"));
        let plain = mark_cargo_runs("FROM x\nRUN cargo build\n").unwrap();
        assert_eq!(plain, "FROM x\nRUN echo verify-exec-start; cargo build\n");
    }

    #[test]
    fn reference_dockerfiles_parse_and_rewrite() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in ["Dockerfile.seed", "Dockerfile.seed.worker"] {
            let text = std::fs::read_to_string(root.join("docker/reference").join(file)).unwrap();
            let out = namespace_cache_ids(&text, "t").unwrap();
            // the namespace goes after the platform: one namespaced cache per platform
            assert!(out.contains("-${TARGETPLATFORM}-t,sharing=shared"), "{out}");
            assert!(out.contains(
                "target=/usr/local/cargo/registry,sharing=shared,id=/usr/local/cargo/registry-t"
            ));
            assert!(mark_cargo_runs(&out).unwrap().contains(EXEC_MARKER));
            let locked =
                crate::dockerfile::rewrite::set_sharing(&text, crate::dockerfile::Sharing::Locked)
                    .unwrap();
            assert_eq!(locked.mounts.len(), 3);
        }
    }
}

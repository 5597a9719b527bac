//! The atomic publish of an image set: every build pushed only its staging tag, and only when
//! every build of the set succeeded do the tags users pull move, each to the digest its build
//! pushed (`docker buildx imagetools create`, which writes the same manifest under the new tag).
//! A failed or interrupted set moves nothing.

use std::{path::Path, time::Duration};

use crate::proc::Command;

use crate::{
    exec::runner::Outcome,
    plan::Plan,
    proc::{capture_with_timeout, shell_line},
    report::{PublishReport, Report},
};

/// The pushed manifest's digest in buildx's `--metadata-file` JSON.
pub fn digest_from_metadata(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let digest = value.get("containerimage.digest")?.as_str()?;
    digest.starts_with("sha256:").then(|| digest.to_string())
}

/// Why the set cannot be published, one line per image: a build that did not succeed, or one
/// whose digest is unknown. Empty when every tag may move. Pure.
pub fn blockers(plan: &Plan, report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for (build, image) in plan.builds.iter().zip(&report.images) {
        // an image found up to date is published already
        if build.publish.is_none() || image.up_to_date {
            continue;
        }
        match (image.result, &image.digest) {
            (Outcome::Succeeded, Some(_)) => {}
            (Outcome::Succeeded, None) => out.push(format!(
                "{}: built, but buildx wrote no digest to {}",
                image.image,
                build
                    .target
                    .metadata_file
                    .as_deref()
                    .unwrap_or(Path::new("-"))
                    .display()
            )),
            (Outcome::Failed, _) => out.push(format!("{}: build failed", image.image)),
            (Outcome::Interrupted, _) => out.push(format!("{}: interrupted", image.image)),
            (Outcome::NotStarted, _) => out.push(format!("{}: not started", image.image)),
        }
    }
    out
}

/// Moves every tag of an atomic publish once the whole set is pushed; records what happened in
/// `report`. Does nothing for a plan that does not publish.
pub fn finish(root: &Path, plan: &Plan, report: &mut Report) {
    if !plan.publishes() {
        return;
    }
    let mut blocked = blockers(plan, report);
    // under --cache-strict a cache that could not be imported fails the set (the export is the
    // last phase: it has not run yet)
    let import = report.cache.iter().filter_map(|c| c.import.as_ref());
    blocked.extend(
        import
            .filter(|s| s.failed)
            .map(|s| format!("cache: {}", s.line)),
    );
    if blocked.is_empty() && crate::exec::runner::interrupted() {
        blocked.push("interrupted before the tags moved".into());
    }
    if !blocked.is_empty() {
        report.publish = Some(PublishReport {
            moved: false,
            tags: Vec::new(),
            failed: blocked,
        });
        return;
    }
    let mut tags = Vec::new();
    let mut failed = Vec::new();
    for (build, image) in plan.builds.iter().zip(report.images.iter_mut()) {
        if image.up_to_date {
            tags.extend(image.published.clone());
            continue;
        }
        let (Some(publish), Some(digest)) = (&build.publish, &image.digest) else {
            continue;
        };
        let argv = publish.move_argv(digest);
        let result = capture_with_timeout(
            Command::new(&argv[0]).args(&argv[1..]).current_dir(root),
            Duration::from_secs(120),
        );
        match result {
            Ok(_) => {
                let moved = format!("{}@{digest}", publish.tag);
                image.published = Some(moved.clone());
                tags.push(moved);
            }
            Err(err) => failed.push(format!(
                "{}: `{}` failed: {err:#}",
                image.image,
                shell_line(&argv)
            )),
        }
    }
    if failed.is_empty() {
        failed.extend(check_loopback_registry(&tags));
    }
    report.publish = Some(PublishReport {
        moved: failed.is_empty(),
        tags,
        failed,
    });
}

/// `HOST:PORT/NAME:TAG` on a registry at a loopback address: the address, NAME and TAG; None
/// for any other reference (other registries are never asked).
pub fn loopback_tag(repo_tag: &str) -> Option<(std::net::SocketAddr, &str, &str)> {
    let (repo, tag) = repo_tag.rsplit_once(':').filter(|(r, _)| r.contains('/'))?;
    let (host, name) = repo.split_once('/')?;
    let addr: std::net::SocketAddr = host.parse().ok()?;
    addr.ip().is_loopback().then_some((addr, name, tag))
}

/// For a registry on a loopback address (the local one): reads back `/v2/_catalog` and each
/// repository's `tags/list`, one line per tag the registry does not list. Other registries are
/// not asked.
fn check_loopback_registry(moved: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for published in moved {
        let Some((repo_tag, _digest)) = published.split_once('@') else {
            continue;
        };
        let Some((addr, name, tag)) = loopback_tag(repo_tag) else {
            continue;
        };
        let host = addr.to_string();
        let catalog = crate::registry::http_get(addr, "/v2/_catalog?n=1000");
        let listed = |text: &str, word: &str| text.contains(&format!("\"{word}\""));
        match catalog {
            Ok((200, body)) if listed(&body, name) => {}
            other => {
                out.push(format!(
                    "{repo_tag}: {name} missing from {host}/v2/_catalog ({other:?})"
                ));
                continue;
            }
        }
        match crate::registry::http_get(addr, &format!("/v2/{name}/tags/list")) {
            Ok((200, body)) if listed(&body, tag) => {}
            other => out.push(format!(
                "{repo_tag}: tag {tag} missing from {host}/v2/{name}/tags/list ({other:?})"
            )),
        }
    }
    out
}

/// The publish's lines for the summary.
pub fn render(publish: &PublishReport) -> String {
    let mut out = String::new();
    if publish.moved {
        out.push_str(&format!(
            "published {} tag{} at once:\n",
            publish.tags.len(),
            if publish.tags.len() == 1 { "" } else { "s" }
        ));
    } else if publish.tags.is_empty() {
        out.push_str("publish: NO tag moved; every tag is where it was, because:\n");
    } else {
        out.push_str("publish: only some tags moved (a tag move itself failed):\n");
    }
    for tag in &publish.tags {
        out.push_str(&format!("  {tag}\n"));
    }
    for line in &publish.failed {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_comes_from_buildx_metadata() {
        let text = r#"{"containerimage.digest": "sha256:b817", "image.name": "r/a:x"}"#;
        assert_eq!(digest_from_metadata(text).as_deref(), Some("sha256:b817"));
        assert_eq!(digest_from_metadata(r#"{"buildx.build.ref": "x"}"#), None);
        assert_eq!(digest_from_metadata("not json"), None);
        assert_eq!(
            digest_from_metadata(r#"{"containerimage.digest": "md5:1"}"#),
            None
        );
    }

    #[test]
    fn the_summary_says_whether_tags_moved() {
        let moved = PublishReport {
            moved: true,
            tags: vec!["r/attune-api:dev@sha256:1".into()],
            failed: vec![],
        };
        assert_eq!(
            render(&moved),
            "published 1 tag at once:\n  r/attune-api:dev@sha256:1\n"
        );
        let none = PublishReport {
            moved: false,
            tags: vec![],
            failed: vec!["api: build failed".into()],
        };
        assert!(render(&none).starts_with("publish: NO tag moved"));
        assert!(render(&none).contains("  api: build failed\n"));
    }
}

use super::*;

fn ctx() -> LintContext {
    LintContext {
        rust_version: Some("1.95".to_string()),
    }
}

/// `(id, line)` of every finding.
fn ids(text: &str) -> Vec<(&'static str, usize)> {
    lint(text, &ctx())
        .unwrap()
        .into_iter()
        .map(|f| (f.id, f.line))
        .collect()
}

/// `(id, line)` of every finding but the platform rules' (the tests of other rules leave the
/// platform out of their target cache ids).
fn ids_but_platform(text: &str) -> Vec<(&'static str, usize)> {
    ids(text)
        .into_iter()
        .filter(|(id, _)| {
            !matches!(
                *id,
                "target-cache-without-platform" | "target-cache-platform-arg-undeclared"
            )
        })
        .collect()
}

#[test]
fn the_projects_dockerfiles_pass() {
    for (name, text) in [
        (
            "Dockerfile.optimized",
            include_str!("../../../../docker/Dockerfile.optimized"),
        ),
        (
            "Dockerfile.worker.optimized",
            include_str!("../../../../docker/Dockerfile.worker.optimized"),
        ),
        (
            "Dockerfile.pack-binaries",
            include_str!("../../../../docker/Dockerfile.pack-binaries"),
        ),
        (
            "Dockerfile.workspace",
            include_str!("../../../../docker/Dockerfile.workspace"),
        ),
    ] {
        assert_eq!(lint(text, &ctx()).unwrap(), [], "{name}");
    }
}

#[test]
fn the_seeds_recipe_fails_with_every_mistake_it_had() {
    let text = include_str!("../../../tests/fixtures/dockerfiles/Dockerfile.seed");
    assert_eq!(
        ids(text),
        [
            ("cache-registry-race", 7),
            ("cache-registry-race", 8),
            ("cache-mount-implicit-sharing", 9),
            ("target-cache-never-read", 9),
            ("target-cache-without-platform", 9),
            ("cargo-failure-ignored", 10),
            ("cache-registry-race", 16),
            ("cache-registry-race", 17),
            ("cache-mount-implicit-sharing", 18),
            ("target-cache-without-platform", 18),
            ("binary-from-cache-mount", 23),
        ]
    );
    let findings = lint(text, &ctx()).unwrap();
    let race = &findings[0];
    assert!(
        race.message.contains("/usr/local/cargo/registry"),
        "{}",
        race.message
    );
    assert!(race.message.contains("os error 17"), "{}", race.message);
    assert!(race.fix.contains("CARGO_HOME"), "{}", race.fix);
    let never = findings
        .iter()
        .find(|f| f.id == "target-cache-never-read")
        .unwrap();
    assert!(
        never.message.contains("id=target-planner-${SERVICE}"),
        "{}",
        never.message
    );
    assert!(
        never.message.contains("id=target-builder-${SERVICE}"),
        "{}",
        never.message
    );
}

#[test]
fn registry_race_is_fixed_by_a_shared_or_locked_cargo_home_or_a_locked_registry() {
    let race = "FROM rust AS b\nRUN --mount=type=cache,target=/usr/local/cargo/registry/index,sharing=shared cargo fetch\n";
    assert_eq!(ids(race), [("cache-registry-race", 2)]);
    let private_home = "FROM rust AS b\nRUN --mount=type=cache,target=/usr/local/cargo,sharing=private \\\n  --mount=type=cache,target=/usr/local/cargo/git,sharing=shared cargo fetch\n";
    assert_eq!(ids(private_home), [("cache-registry-race", 3)]);
    let implicit = "FROM rust AS b\nRUN --mount=type=cache,target=/cargo/registry/ cargo fetch\n";
    assert_eq!(
        ids(implicit),
        [
            ("cache-mount-implicit-sharing", 2),
            ("cache-registry-race", 2)
        ]
    );
    for ok in [
        "FROM rust AS b\nRUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked cargo fetch\n",
        "FROM rust AS b\nRUN --mount=type=cache,target=/usr/local/cargo,sharing=shared \\\n  --mount=type=cache,target=/usr/local/cargo/registry,sharing=shared cargo fetch\n",
        "FROM rust AS b\nRUN --mount=type=cache,target=/cargo-home,sharing=locked CARGO_HOME=/cargo-home cargo fetch\n",
        "FROM rust AS b\nWORKDIR /w\nRUN --mount=type=cache,target=home,sharing=shared \\\n --mount=type=cache,target=/w/home/registry,sharing=shared cargo fetch\n",
    ] {
        assert_eq!(ids(ok), [], "{ok}");
    }
}

#[test]
fn target_caches_need_an_id_that_names_the_service() {
    let no_id = "FROM rust AS builder\nRUN --mount=type=cache,target=/build/target,sharing=shared cargo build\n";
    assert_eq!(ids_but_platform(no_id), [("target-cache-without-id", 2)]);
    let fixed_id = "FROM rust AS builder\nARG SERVICE\nWORKDIR /build\nRUN --mount=type=cache,target=target,id=target-builder,sharing=shared \\\n    cargo build --bin attune-${SERVICE}\n";
    assert_eq!(
        ids_but_platform(fixed_id),
        [("target-cache-shared-between-services", 4)]
    );
    let per_service = fixed_id.replace("id=target-builder", "id=target-builder-$SERVICE");
    assert_eq!(ids_but_platform(&per_service), []);
    let workspace = fixed_id.replace(
        "cargo build --bin attune-${SERVICE}",
        "cargo build --release --workspace --bins",
    );
    assert_eq!(ids_but_platform(&workspace), []);
    let no_service_arg = fixed_id.replace("ARG SERVICE\n", "ARG OTHER\n");
    assert_eq!(ids_but_platform(&no_service_arg), []);
    let env_dir = "FROM rust AS builder\nARG SERVICE\nENV CARGO_TARGET_DIR=/cache/t\nRUN --mount=type=cache,target=/cache/t,id=t,sharing=shared cargo build\n";
    assert_eq!(
        ids_but_platform(env_dir),
        [("target-cache-shared-between-services", 4)]
    );
    let cmd_dir = "FROM rust AS builder\nRUN --mount=type=cache,target=/ct,sharing=shared CARGO_TARGET_DIR=/ct cargo build\n";
    assert_eq!(ids_but_platform(cmd_dir), [("target-cache-without-id", 2)]);
}

#[test]
fn target_caches_need_the_platform_in_their_id() {
    let compliant = "FROM rust AS builder\nARG TARGETPLATFORM\nRUN --mount=type=cache,target=/build/target,id=target-workspace-${TARGETPLATFORM},sharing=shared \\\n    --mount=type=cache,target=/cargo-home,id=cargo-home,sharing=shared cargo build\n";
    // the cargo home is platform-independent: only the target cache needs the platform
    assert_eq!(ids(compliant), []);
    assert_eq!(
        ids(&compliant.replace("${TARGETPLATFORM}", "$TARGETPLATFORM")),
        []
    );

    let missing = compliant.replace("-${TARGETPLATFORM}", "");
    assert_eq!(ids(&missing), [("target-cache-without-platform", 3)]);
    let finding = &lint(&missing, &ctx()).unwrap()[0];
    assert!(
        finding.message.contains("id=target-workspace (line 3)"),
        "{}",
        finding.message
    );
    assert!(
        finding
            .fix
            .contains("id=target-workspace-${TARGETPLATFORM}")
            && finding.fix.contains("ARG TARGETPLATFORM")
            && finding
                .fix
                .contains("TARGETARCH, which does not separate arm variants"),
        "{}",
        finding.fix
    );

    // TARGETARCH is accepted, declared like TARGETPLATFORM
    let arch = compliant.replace("TARGETPLATFORM", "TARGETARCH");
    assert_eq!(ids(&arch), []);
    assert_eq!(
        ids(&arch.replace("ARG TARGETARCH\n", "ARG TARGETPLATFORM\n")),
        [("target-cache-platform-arg-undeclared", 3)]
    );

    // the platform in the id without the ARG in the stage: BuildKit expands it to nothing
    let undeclared = compliant.replace("ARG TARGETPLATFORM\n", "ARG OTHER\n");
    assert_eq!(
        ids(&undeclared),
        [("target-cache-platform-arg-undeclared", 3)]
    );
    let finding = &lint(&undeclared, &ctx()).unwrap()[0];
    assert!(
        finding.message.contains("uses TARGETPLATFORM")
            && finding.message.contains("stage builder"),
        "{}",
        finding.message
    );
    assert!(
        finding.fix.contains("ARG TARGETPLATFORM"),
        "{}",
        finding.fix
    );
    // a global ARG is not in a stage's scope
    assert_eq!(
        ids(&format!("ARG TARGETPLATFORM\n{undeclared}")),
        [("target-cache-platform-arg-undeclared", 4)]
    );
    // declared after the RUN is too late
    assert_eq!(
        ids(&format!("{undeclared}ARG TARGETPLATFORM\n")),
        [("target-cache-platform-arg-undeclared", 3)]
    );
    // a stage built FROM a stage that declares it has it in scope; a sibling's does not count
    let inherited = "FROM rust AS base\nARG TARGETPLATFORM\nFROM base AS builder\nRUN --mount=type=cache,target=/build/target,id=t-${TARGETPLATFORM},sharing=shared cargo build\n";
    assert_eq!(ids(inherited), []);
    let sibling = inherited.replace("FROM base AS builder", "FROM rust AS builder");
    assert_eq!(ids(&sibling), [("target-cache-platform-arg-undeclared", 4)]);
}

#[test]
fn stages_that_share_a_target_directory_must_share_its_id() {
    let text = "\
FROM rust AS deps
RUN --mount=type=cache,target=/b/target,id=deps,sharing=shared cargo build
FROM deps AS builder
RUN --mount=type=cache,target=/b/target,id=builder,sharing=shared cargo build
";
    assert_eq!(ids_but_platform(text), [("target-cache-never-read", 2)]);
    assert_eq!(ids_but_platform(&text.replace("id=deps", "id=builder")), []);
}

#[test]
fn swallowed_cargo_failures() {
    let lines = |cmd: &str| {
        ids(&format!(
            "FROM rust AS b\nRUN echo start && \\\n    {cmd}\n"
        ))
    };
    assert_eq!(lines("cargo build || true"), [("cargo-failure-ignored", 3)]);
    assert_eq!(lines("cargo build ||:"), [("cargo-failure-ignored", 3)]);
    assert_eq!(
        lines("CARGO_HOME=/c cargo test || exit 0"),
        [("cargo-failure-ignored", 3)]
    );
    assert_eq!(lines("cargo build; true"), [("cargo-failure-ignored", 3)]);
    assert_eq!(lines("cargo build || { echo failed; exit 1; }"), []);
    assert_eq!(lines("test -n x || true; cargo build"), []);
    assert_eq!(lines("echo cargo-less || true"), []);
    let heredoc = "FROM rust AS b\nRUN <<EOF\nset -e\ncargo build || true\nEOF\n";
    assert_eq!(ids(heredoc), [("cargo-failure-ignored", 4)]);
}

#[test]
fn binaries_copied_out_of_a_cache_mount() {
    let text = "\
FROM rust AS builder
WORKDIR /build
RUN --mount=type=cache,target=target,id=t,sharing=shared cargo build && cp target/release/x /out/x
FROM builder AS more
RUN true
FROM debian
COPY --from=more /build/target/release/x /usr/local/bin/x
COPY --from=builder /out/x /usr/local/bin/x
COPY --from=0 [\"/build/target/release/y\", \"/y\"]
RUN --mount=type=bind,from=builder,source=/build/target/release,target=/r cp /r/x /x
";
    assert_eq!(
        ids_but_platform(text),
        [
            ("binary-from-cache-mount", 7),
            ("binary-from-cache-mount", 9),
            ("binary-from-cache-mount", 10)
        ]
    );
}

#[test]
fn copies_from_a_deep_chain_of_stages_find_the_ancestors_cache_and_not_a_siblings() {
    // a chain of 3000 stages, each FROM the one before, and a branch beside it; the lint must
    // look through the whole chain (and only through it) for every COPY --from
    let mut text = String::from(
        "FROM rust AS s0\nARG TARGETPLATFORM\nRUN --mount=type=cache,target=/b/target,id=t-${TARGETPLATFORM},sharing=shared cargo build\n\
         FROM rust AS side\nRUN --mount=type=cache,target=/side,id=side,sharing=shared true\n",
    );
    for i in 1..3000 {
        text.push_str(&format!("FROM s{} AS s{i}\nENV V{i}=x\n", i - 1));
    }
    let line = text.lines().count() + 2;
    text.push_str("FROM debian\nCOPY --from=s2999 /b/target/release/x /x\n");
    text.push_str("COPY --from=s2999 /side/x /y\nCOPY --from=side /side/x /z\n");
    let findings = lint(&text, &ctx()).unwrap();
    let found: Vec<_> = findings.iter().map(|f| (f.id, f.line)).collect();
    assert_eq!(
        found,
        [
            ("binary-from-cache-mount", line),
            ("binary-from-cache-mount", line + 2)
        ]
    );
    assert!(
        findings[0]
            .message
            .contains("cache mount /b/target of stage s2999"),
        "{}",
        findings[0].message
    );
}

#[test]
fn explicit_sharing_is_required_on_cache_mounts_only() {
    let text = "FROM a\nRUN --mount=type=cache,target=/var/cache/apt \\\n  --mount=type=bind,target=/src apt-get update\n";
    assert_eq!(ids(text), [("cache-mount-implicit-sharing", 2)]);
}

#[test]
fn rust_version_default_matches_the_workspace() {
    assert_eq!(
        ids("ARG RUST_VERSION=1.95\nFROM rust:${RUST_VERSION}\n"),
        []
    );
    assert_eq!(
        ids("ARG RUST_VERSION=1.94\nFROM rust:${RUST_VERSION}\n"),
        [("rust-version-mismatch", 1)]
    );
    assert_eq!(
        ids("ARG RUST_VERSION\nFROM rust:${RUST_VERSION}\n"),
        [("rust-version-mismatch", 1)]
    );
    assert_eq!(
        ids("FROM rust:1.80-slim AS b\nFROM rust:1.95 AS c\n"),
        [("rust-version-mismatch", 1)]
    );
    let none = LintContext::default();
    assert_eq!(
        lint("ARG RUST_VERSION=1.0\nFROM rust\n", &none).unwrap(),
        []
    );
}

#[test]
fn every_rule_id_is_listed() {
    let seen = [
        "cache-registry-race",
        "target-cache-without-id",
        "target-cache-shared-between-services",
        "target-cache-without-platform",
        "target-cache-platform-arg-undeclared",
        "target-cache-never-read",
        "cargo-failure-ignored",
        "binary-from-cache-mount",
        "cache-mount-implicit-sharing",
        "rust-version-mismatch",
    ];
    assert_eq!(RULES, seen);
}

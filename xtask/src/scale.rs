//! A generated workspace shaped like the real platform, for `bench --scenarios scale`: N service
//! images, each a small binary crate on a shared `common` crate, and a dependency set, either the
//! platform's (`real`: the upstream attune workspace's dependencies, about 650 crates in
//! Cargo.lock) or this workspace's own (`small`). Written under target/, never committed.
//!
//! Its Dockerfile is this workspace's own workspace-strategy Dockerfile: the header, the builder
//! stage and the `service` runtime (and `timings`) as committed, plus one `FROM service AS <image>`
//! per generated image; the `sccache` strategy's Dockerfile is the same with the target cache mount
//! swapped for an sccache store ([`sccache_dockerfile`]). Nothing here starts a process: [`files`]
//! is pure, [`write`] puts the files on disk.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

/// Which dependency set the generated `common` crate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deps {
    /// The platform's dependency set ([`REAL_DEPS`]).
    Real,
    /// This workspace's own `[workspace.dependencies]` ([`SMALL_DEPS`]).
    Small,
}

impl Deps {
    pub fn key(self) -> &'static str {
        match self {
            Deps::Real => "real",
            Deps::Small => "small",
        }
    }

    pub fn parse(text: &str) -> Option<Deps> {
        match text {
            "real" => Some(Deps::Real),
            "small" => Some(Deps::Small),
            _ => None,
        }
    }

    fn table(self) -> &'static str {
        match self {
            Deps::Real => REAL_DEPS,
            Deps::Small => SMALL_DEPS,
        }
    }
}

/// The upstream attune platform's dependencies (its root `[workspace.dependencies]` and the extra
/// ones its api and cli crates name), all on the build path of `common`. Swagger UI is left out:
/// its build script downloads a zip from GitHub. docs/SCALING.md lists them.
pub const REAL_DEPS: &str = r#"tokio = { version = "1.52", features = ["full"] }
tokio-util = { version = "0.7", features = ["io"] }
tokio-stream = { version = "0.1", features = ["sync"] }
axum = { version = "0.8", features = ["multipart"] }
axum-extra = { version = "0.12", features = ["cookie", "query"] }
cookie = "0.18"
tower = "0.5"
tower-http = { version = "0.6", features = ["trace", "cors"] }
sqlx = { version = "0.8", features = ["runtime-tokio-rustls", "postgres", "json", "chrono", "uuid"] }
serde = { version = "1.0", features = ["derive"] }
serde_json = "1.0"
serde_yaml_ng = "0.10"
serde_path_to_error = "0.1"
tracing = "0.1"
tracing-subscriber = { version = "0.3", features = ["env-filter", "json"] }
anyhow = "1.0"
thiserror = "2.0"
config = "0.15"
chrono = { version = "0.4", features = ["serde"] }
uuid = { version = "1.23", features = ["v4", "serde"] }
validator = { version = "0.20", features = ["derive"] }
clap = { version = "4.6", features = ["derive", "env", "string"] }
lapin = "4.7"
schemars = { version = "1.2", features = ["chrono04"] }
jsonschema = "0.46"
utoipa = { version = "5.5", features = ["chrono", "uuid", "axum_extras"] }
jsonwebtoken = { version = "10.4", features = ["hmac", "sha2", "rust_crypto"] }
hmac = "0.13"
argon2 = "0.5"
ring = "0.17"
base64 = "0.22"
aes-gcm = "0.10"
sha1 = "0.11"
sha2 = "0.11"
hex = "0.4"
subtle = "2.6"
rand = "0.10"
rsa = { version = "0.9", features = ["pem"] }
regex = "1.12"
reqwest = { version = "0.13", features = ["json", "stream", "multipart"] }
eventsource-stream = "0.2"
hyper = { version = "1.9", features = ["full"] }
openidconnect = { version = "4.0", default-features = false }
ldap3 = { version = "0.12", default-features = false, features = ["sync", "tls-rustls-ring"] }
webpki-root-certs = "1.0"
walkdir = "2.5"
tar = "0.4"
flate2 = "1.1"
zip = { version = "3.0", default-features = false, features = ["deflate"] }
ignore = "0.4"
tokio-tungstenite = { version = "0.29", features = ["rustls-tls-native-roots"] }
url = "2.5"
urlencoding = "2.1"
async-trait = "0.1"
futures = "0.3"
bytes = "1.10"
object_store = { version = "0.14", default-features = false, features = ["aws", "fs", "gcp"] }
semver = { version = "1.0", features = ["serde"] }
tempfile = "3.27"
dashmap = "6.1"
dirs = "6.0"
colored = "3.1"
comfy-table = { version = "7.2", features = ["custom_styling"] }
dialoguer = "0.12"
terminal_size = "0.4"
mockall = "0.14"
wiremock = "0.6"
"#;

/// The upstream platform's test-only dependencies: in Cargo.lock (as upstream), never built by
/// `cargo build --bins`.
const REAL_DEV_DEPS: &str = r#"assert_cmd = "2.2"
predicates = "3.1"
mockito = "1.7"
tokio-test = "0.4"
serial_test = "3.4"
"#;

/// This workspace's own dependency set.
pub const SMALL_DEPS: &str = r#"anyhow = "1"
axum = "0.8"
clap = { version = "4", features = ["derive", "env"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
tokio = { version = "1", features = ["rt-multi-thread", "macros", "net", "signal", "time", "sync", "process", "io-util"] }
tracing = "0.1"
tracing-subscriber = { version = "0.3", features = ["fmt", "json"] }
"#;

/// The crate names of a dependency table, in order.
pub fn dep_names(table: &str) -> Vec<String> {
    (table.lines())
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .filter(|k| !k.is_empty())
        .collect()
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub images: usize,
    pub deps: Deps,
}

/// The stages of the workspace Dockerfile the generated one keeps, as committed.
const KEPT_STAGES: &[&str] = &[
    "builder",
    "runtime-base",
    "service",
    "binary-digests",
    "timings",
];

/// The generated images' names: `svc-01` ... (width from the count, so they sort).
pub fn image_names(n: usize) -> Vec<String> {
    let width = n.to_string().len().max(2);
    (1..=n).map(|i| format!("svc-{i:0width$}")).collect()
}

/// The workspace Dockerfile for the generated images: the committed one's header (before the
/// first FROM) and its [`KEPT_STAGES`], then `FROM service AS <image>` for each image.
pub fn workspace_dockerfile(committed: &str, images: &[String]) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut keep = true;
    let mut seen = Vec::new();
    for line in committed.lines() {
        if let Some(rest) = line.strip_prefix("FROM ") {
            let name = rest.split_whitespace().last().unwrap_or("");
            let named = rest.to_ascii_lowercase().contains(" as ");
            keep = named && KEPT_STAGES.contains(&name);
            if keep {
                seen.push(name.to_string());
            }
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    for stage in ["builder", "service"] {
        if !seen.iter().any(|s| s == stage) {
            bail!("the workspace Dockerfile has no `{stage}` stage to build the generated images with");
        }
    }
    out.push_str("\n# the generated images: one runtime stage each\n");
    for image in images {
        let _ = writeln!(out, "FROM service AS {image}");
    }
    Ok(out)
}

/// The target cache mount of the workspace Dockerfile's builder, which the sccache variant swaps.
const TARGET_MOUNT: &str =
    "--mount=type=cache,target=/build/target,id=target-workspace-${TARGETPLATFORM},sharing=shared";
const CARGO_BUILD: &str = "CARGO_HOME=/cargo-home cargo build";
const BUILDER_FROM: &str = "FROM ${RUST_IMAGE} AS builder";
const MKDIR: &str = "mkdir -p xtask/src &&";
const UNITS_MV: &str = "mv target/attune-units.json.part target/attune-units.json &&";

/// The image the sccache binary comes from (`COPY --from`): the bench builds it on this engine
/// from the binary it is given, as a runner's image would carry it.
pub const SCCACHE_IMAGE: &str = "attune-bench-sccache:local";

/// The `sccache` strategy: the workspace Dockerfile with sccache as `RUSTC_WRAPPER`, its store a
/// cache mount (`id=sccache-<platform>`, carried by `--cache` like any other mount) instead of the
/// target directory's (the target directory starts empty, as on a runner using sccache), and
/// `sccache --show-stats` after the build (its hit rate, in the build's log).
pub fn sccache_dockerfile(workspace: &str) -> anyhow::Result<String> {
    for (needle, what) in [
        (TARGET_MOUNT, "target cache mount"),
        (CARGO_BUILD, "cargo build command"),
        (BUILDER_FROM, "builder stage"),
        (MKDIR, "xtask stub's mkdir"),
        (UNITS_MV, "move of cargo's unit list"),
    ] {
        if !workspace.contains(needle) {
            bail!("the workspace Dockerfile has no `{needle}` ({what}) for the sccache variant; update scale.rs");
        }
    }
    let text = workspace
        .replacen(
            BUILDER_FROM,
            &format!(
                "FROM {SCCACHE_IMAGE} AS sccache-tool\n\n{BUILDER_FROM}\nCOPY --from=sccache-tool /usr/local/bin/sccache /usr/local/bin/sccache"
            ),
            1,
        )
        .replacen(
            TARGET_MOUNT,
            "--mount=type=cache,target=/sccache,id=sccache-${TARGETPLATFORM},sharing=shared",
            1,
        )
        .replacen(MKDIR, "mkdir -p xtask/src target &&", 1)
        .replacen(
            CARGO_BUILD,
            "RUSTC_WRAPPER=/usr/local/bin/sccache SCCACHE_DIR=/sccache SCCACHE_CACHE_SIZE=20G \
             SCCACHE_IDLE_TIMEOUT=0 CARGO_INCREMENTAL=0 CARGO_HOME=/cargo-home cargo build",
            1,
        )
        .replacen(
            UNITS_MV,
            "mv target/attune-units.json.part target/attune-units.json && \
             SCCACHE_DIR=/sccache /usr/local/bin/sccache --show-stats && \
             SCCACHE_DIR=/sccache /usr/local/bin/sccache --stop-server >/dev/null &&",
            1,
        );
    Ok(format!(
        "# Generated by `cargo xtask bench --scenarios scale`: the workspace Dockerfile with sccache\n\
         # as RUSTC_WRAPPER, its store a cache mount instead of the target directory.\n{text}"
    ))
}

/// The root manifest: the members, the dependency set, the declaration of the images.
fn root_manifest(shape: Shape, images: &[String], rust_version: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `cargo xtask bench --scenarios scale` ({} images, {} dependencies): not a\n\
         # workspace to edit.\n[workspace]\nresolver = \"2\"\nmembers = [\"crates/*\", \"xtask\"]\n\n\
         [workspace.package]\nversion = \"0.1.0\"\nedition = \"2021\"\nrust-version = \"{rust_version}\"\n\
         publish = false\n\n[profile.release]\nstrip = true\n",
        shape.images,
        shape.deps.key()
    );
    let _ = writeln!(
        out,
        "[workspace.metadata.attune]\ntag = \"dev\"\nimage-prefix = \"attune-scale-\"\n\
         default-strategy = \"workspace\"\nmeasure = [\"services\"]\n\n\
         [workspace.metadata.attune.groups]\nservices = [{}]\n\n\
         [workspace.metadata.attune.strategies.workspace]\ndockerfile = \"docker/Dockerfile.workspace\"\n\n\
         [workspace.metadata.attune.strategies.sccache]\ndockerfile = \"docker/Dockerfile.sccache\"\nbench = false\n",
        images
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for image in images {
        let _ = writeln!(
            out,
            "[[workspace.metadata.attune.images]]\nname = \"{image}\"\nbinary = \"attune-{image}\"\n\
             dockerfile = \"docker/Dockerfile.workspace\"\ntarget = \"{image}\"\nservice = \"{image}\"\n"
        );
    }
    out
}

fn common_manifest(deps: Deps) -> String {
    let mut out = format!(
        "[package]\nname = \"attune-common\"\nversion.workspace = true\nedition.workspace = true\nrust-version.workspace = true\n\
         publish = false\n\n[dependencies]\n{}",
        deps.table()
    );
    if deps == Deps::Real {
        out.push_str("\n[dev-dependencies]\n");
        out.push_str(REAL_DEV_DEPS);
    }
    out
}

/// The common crate's code: it uses the dependency set's main crates, so that every service
/// binary links them as the platform's do.
fn common_lib(deps: Deps) -> String {
    let mut out = String::from(
        "//! Generated by `cargo xtask bench --scenarios scale`.\n\n\
         /// What bench's change sets: every binary prints it, so a change reaches them all.\n\
         pub const CHANGE: &str = \"\";\n\n\
         pub fn describe(service: &str) -> String {\n    \
             serde_json::json!({\"service\": service, \"version\": env!(\"CARGO_PKG_VERSION\"), \"change\": CHANGE}).to_string()\n}\n\n\
         pub fn router(service: &'static str) -> axum::Router {\n    \
             axum::Router::new().route(\"/health\", axum::routing::get(move || async move { describe(service) }))\n}\n\n\
         /// Serves /health for a moment on a loopback port (what a service's main would do for ever).\n\
         pub fn serve(service: &'static str) -> anyhow::Result<()> {\n    \
             let runtime = tokio::runtime::Runtime::new()?;\n    \
             runtime.block_on(async move {\n        \
                 let listener = tokio::net::TcpListener::bind(\"127.0.0.1:0\").await?;\n        \
                 let serve = axum::serve(listener, router(service));\n        \
                 let _ = tokio::time::timeout(std::time::Duration::from_millis(1), serve).await;\n        \
                 anyhow::Ok(())\n    \
             })\n}\n",
    );
    if deps == Deps::Real {
        out.push_str(REAL_LIB);
    }
    out
}

/// What the real dependency set's common crate adds: a call into each of the big crates.
const REAL_LIB: &str = r#"
use argon2::PasswordHasher as _;
use base64::Engine as _;
use sha2::Digest as _;
use validator::Validate as _;

#[derive(serde::Serialize, serde::Deserialize, validator::Validate, schemars::JsonSchema, utoipa::ToSchema)]
pub struct Request {
    #[validate(length(min = 1, max = 64))]
    pub name: String,
    pub at: chrono::DateTime<chrono::Utc>,
    #[schemars(with = "String")]
    pub id: uuid::Uuid,
}

#[derive(serde::Serialize)]
struct Claims {
    sub: String,
    exp: usize,
}

/// One call into each of the platform's big crates (what the services' handlers do).
pub fn platform(service: &str) -> anyhow::Result<String> {
    let request = Request {
        name: service.to_string(),
        at: chrono::Utc::now(),
        id: uuid::Uuid::new_v4(),
    };
    request.validate()?;
    let schema = serde_json::to_value(schemars::schema_for!(Request))?;
    let valid = jsonschema::is_valid(&schema, &serde_json::to_value(&request)?);
    let pattern = regex::Regex::new(r"^svc-[0-9]+$")?;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims { sub: service.to_string(), exp: 4_000_000_000 },
        &jsonwebtoken::EncodingKey::from_secret(b"attune-scale"),
    )?;
    let salt = argon2::password_hash::SaltString::encode_b64(b"attune-scale-salt")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(service.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let digest: String = sha2::Sha256::digest(service.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let settings = config::Config::builder()
        .set_default("service", service)?
        .build()?;
    let yaml = serde_yaml_ng::to_string(&request)?;
    let url = url::Url::parse("http://127.0.0.1:8080/health")?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(service);
    let _properties = lapin::ConnectionProperties::default();
    let _store = object_store::local::LocalFileSystem::new();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(1))
        .build()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let pool = runtime.block_on(async {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy("postgres://attune@127.0.0.1/attune")
    })?;
    drop(pool);
    drop(client);
    Ok(format!(
        "{service} valid={valid} matches={} token={} hash={} digest={digest} setting={} yaml={} url={url} b64={encoded}",
        pattern.is_match(service),
        token.len(),
        hash.len(),
        settings.get_string("service")?,
        yaml.len()
    ))
}
"#;

fn service_manifest(image: &str) -> String {
    format!(
        "[package]\nname = \"attune-{image}\"\nversion.workspace = true\nedition.workspace = true\nrust-version.workspace = true\n\
         publish = false\n\n[dependencies]\nattune-common = {{ path = \"../common\" }}\n"
    )
}

fn service_main(image: &str, deps: Deps) -> String {
    let platform = match deps {
        Deps::Real => format!(
            "    if std::env::var_os(\"ATTUNE_SCALE_PLATFORM\").is_some() {{\n        \
                 println!(\"{{}}\", attune_common::platform(\"{image}\").expect(\"platform\"));\n    }}\n"
        ),
        Deps::Small => String::new(),
    };
    format!(
        "//! Generated by `cargo xtask bench --scenarios scale`: service {image}.\n\n\
         /// What bench's change sets: this binary keeps it, so a change reaches it.\n\
         const CHANGE: &str = \"\";\n\n\
         fn main() {{\n    \
             std::hint::black_box(CHANGE);\n    \
             if std::env::args().nth(1).as_deref() == Some(\"--version\") {{\n        \
                 println!(\"attune-{image} {{}}\", env!(\"CARGO_PKG_VERSION\"));\n        \
                 return;\n    }}\n{platform}    \
             println!(\"{{}}\", attune_common::describe(\"{image}\"));\n    \
             attune_common::serve(\"{image}\").expect(\"serve\");\n}}\n"
    )
}

/// Every file of the generated workspace (relative path, content); pure. `dockerfile` is the
/// source workspace's workspace-strategy Dockerfile as committed.
pub fn files(
    shape: Shape,
    dockerfile: &str,
    rust_version: &str,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    if shape.images == 0 {
        bail!("a generated workspace needs at least one image");
    }
    let images = image_names(shape.images);
    let workspace = workspace_dockerfile(dockerfile, &images)?;
    let mut out = vec![
        (
            PathBuf::from("Cargo.toml"),
            root_manifest(shape, &images, rust_version),
        ),
        (
            PathBuf::from("crates/common/Cargo.toml"),
            common_manifest(shape.deps),
        ),
        (
            PathBuf::from("crates/common/src/lib.rs"),
            common_lib(shape.deps),
        ),
        (
            PathBuf::from("xtask/Cargo.toml"),
            "[package]\nname = \"xtask\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n"
                .into(),
        ),
        (PathBuf::from("xtask/src/main.rs"), "fn main() {}\n".into()),
        (
            PathBuf::from("docker/Dockerfile.sccache"),
            sccache_dockerfile(&workspace)?,
        ),
        (PathBuf::from("docker/Dockerfile.workspace"), workspace),
        (
            PathBuf::from(".dockerignore"),
            "target\n.git\nbench-logs\n".into(),
        ),
        (PathBuf::from(".gitignore"), "/target\n/bench-logs\n".into()),
    ];
    for image in &images {
        let dir = PathBuf::from("crates").join(image);
        out.push((dir.join("Cargo.toml"), service_manifest(image)));
        out.push((dir.join("src/main.rs"), service_main(image, shape.deps)));
    }
    Ok(out)
}

/// Writes the generated workspace into `dir` (emptied first, but for its Cargo.lock, which
/// keeps the dependency versions of an earlier generation); `lock` is a Cargo.lock to start from
/// when the directory has none.
pub fn write(dir: &Path, files: &[(PathBuf, String)], lock: Option<&Path>) -> anyhow::Result<()> {
    let kept_lock = fs::read(dir.join("Cargo.lock")).ok();
    if dir.exists() {
        for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            }
            .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let lock_text = match (kept_lock, lock) {
        (Some(text), _) => Some(text),
        (None, Some(path)) => fs::read(path).ok(),
        (None, None) => None,
    };
    if let Some(text) = lock_text {
        let path = dir.join("Cargo.lock");
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let decl = crate::workspace::load(root).unwrap();
        let file = decl.strategies[&decl.default_strategy]
            .dockerfile
            .clone()
            .unwrap();
        fs::read_to_string(root.join(file)).unwrap()
    }

    #[test]
    fn one_runtime_stage_per_generated_image_and_the_builder_as_committed() {
        let committed = committed();
        for n in [1, 8, 64, 120] {
            let images = image_names(n);
            assert_eq!(images.len(), n);
            let text = workspace_dockerfile(&committed, &images).unwrap();
            let model = crate::dockerfile::model::parse(&text).unwrap();
            let stages: Vec<String> = model.stages.iter().filter_map(|s| s.name.clone()).collect();
            for image in &images {
                assert!(stages.contains(image), "{image} in {stages:?}");
            }
            assert!(stages.contains(&"builder".to_string()));
            // the builder's cargo RUN is the committed one, byte for byte
            let run = |t: &str| {
                t.lines()
                    .skip_while(|l| !l.contains(TARGET_MOUNT))
                    .take_while(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert!(
                !run(&committed).is_empty(),
                "the committed builder's cargo RUN"
            );
            assert_eq!(run(&text), run(&committed));
            // nothing of the committed images' own stages
            assert_eq!(
                stages.len(),
                n + KEPT_STAGES.len(),
                "{stages:?}: only the kept stages and the generated ones"
            );
        }
        assert!(image_names(120)[0] == "svc-001" && image_names(8)[7] == "svc-08");
    }

    #[test]
    fn the_sccache_variant_wraps_rustc_and_carries_its_store_not_the_target() {
        let text = workspace_dockerfile(&committed(), &image_names(2)).unwrap();
        let sccache = sccache_dockerfile(&text).unwrap();
        assert!(!sccache.contains(TARGET_MOUNT));
        assert!(sccache.contains("id=sccache-${TARGETPLATFORM}"));
        assert!(sccache.contains("RUSTC_WRAPPER=/usr/local/bin/sccache"));
        assert!(sccache.contains("sccache --show-stats"));
        assert!(sccache.contains(&format!("FROM {SCCACHE_IMAGE} AS sccache-tool")));
        // a Dockerfile without the mount is refused, naming what is missing
        let err = sccache_dockerfile("FROM x AS builder\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("target cache mount"), "{err}");
    }

    #[test]
    fn the_declaration_of_a_generated_workspace_loads_with_its_images() {
        let dir = tempfile::tempdir().unwrap();
        for n in [3, 9, crate::plan::AUTO_JOBS + 4] {
            let shape = Shape {
                images: n,
                deps: Deps::Small,
            };
            let files = files(shape, &committed(), "1.95").unwrap();
            write(dir.path(), &files, None).unwrap();
            let decl = crate::workspace::load(dir.path()).unwrap();
            let names: Vec<&str> = decl.images.iter().map(|i| i.name.as_str()).collect();
            assert_eq!(names, image_names(n));
            assert_eq!(decl.select(&decl.measure).unwrap().len(), n);
            assert_eq!(
                decl.common_crate().unwrap(),
                Path::new("crates/common"),
                "every service depends on common"
            );
            // without --jobs, up to AUTO_JOBS builds at once (64 at once failed on one engine)
            let selected = decl.select(&decl.measure).unwrap();
            let plan = crate::plan::plan(
                &decl,
                &selected,
                &crate::plan::Options {
                    strategy: decl.default_strategy.clone(),
                    tag: "t".into(),
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(plan.jobs, n.min(crate::plan::AUTO_JOBS));
        }
    }

    #[test]
    fn dependency_tables_name_their_crates() {
        let names = dep_names(REAL_DEPS);
        assert!(names.len() > 50 && names.contains(&"sqlx".to_string()));
        assert_eq!(
            dep_names("a = \"1\"\nb = { version = \"2\" }\n"),
            ["a", "b"]
        );
        // the small set is this workspace's own [workspace.dependencies] (but the path crate and
        // the dev-only tower)
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let section = manifest
            .split("[workspace.dependencies]")
            .nth(1)
            .unwrap()
            .split("\n[")
            .next()
            .unwrap();
        let mut own: Vec<String> = dep_names(section)
            .into_iter()
            .filter(|k| !k.starts_with("attune-") && *k != "tower")
            .collect();
        own.sort();
        let mut small = dep_names(SMALL_DEPS);
        small.sort();
        assert_eq!(small, own);
    }
}

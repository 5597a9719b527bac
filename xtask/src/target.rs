//! One image build as typed data, after buildx bake's own `Target` (docker/buildx
//! `bake/bake.go`): context, Dockerfile, stage, build arguments, tags, platforms, cache sources
//! and destinations, output, pull, no-cache, builder. The `docker buildx build` argv and the bake
//! file are both rendered from it, so they cannot disagree; [`bake_print_mismatches`] checks what
//! `docker buildx bake --print` reads back. Pure.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Serialize;
use serde_json::{json, Value};

use crate::util::UsageError;

/// A buildx key-value spec, as `--cache-from`, `--cache-to` and `--secret` take one
/// (`type=local,src=DIR,tag=api`): its attributes, in order. A cache source given as a bare image
/// reference is the registry source buildx makes of it (`type=registry,ref=REF`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec(pub Vec<(String, String)>);

impl Spec {
    /// `key=value,...`; a text without `=` is a registry reference. The error names the part
    /// that is not `key=value`.
    pub fn parse(text: &str) -> Result<Spec, String> {
        if !text.contains('=') && !text.trim().is_empty() {
            return Ok(Spec::of(&[("type", "registry"), ("ref", text.trim())]));
        }
        let mut attrs = Vec::new();
        for part in csv_fields(text) {
            let part = part.as_str();
            match part.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    attrs.push((key.trim().to_string(), value.to_string()))
                }
                _ => return Err(format!("`{part}` is not KEY=VALUE")),
            }
        }
        Ok(Spec(attrs))
    }

    pub fn of(attrs: &[(&str, &str)]) -> Spec {
        Spec(
            (attrs.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Every value with `{image}` replaced by `image`.
    pub fn for_image(&self, image: &str) -> Spec {
        Spec(
            (self.0.iter())
                .map(|(k, v)| (k.clone(), v.replace("{image}", image)))
                .collect(),
        )
    }
}

/// The fields of one CSV line, as buildx reads these values: a field in double quotes may hold
/// commas, `""` in it is one quote.
fn csv_fields(text: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = (self.0.iter())
            .map(|(k, v)| match format!("{k}={v}") {
                field if field.contains([',', '"']) => {
                    format!("\"{}\"", field.replace('"', "\"\""))
                }
                field => field,
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Tests write specs as buildx does.
#[cfg(test)]
impl From<&str> for Spec {
    fn from(text: &str) -> Spec {
        Spec::parse(text).expect("a key=value spec")
    }
}

/// As buildx and bake spell it: `key=value,...`.
impl Serialize for Spec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Where a build's result goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Output {
    /// Loaded into the engine (`--load`, bake's `type=docker`).
    #[default]
    Load,
    /// Pushed to the registry of its tag (`--push`, bake's `type=registry`).
    Push,
    /// Files exported to a directory (`type=local,dest=...`).
    Local(PathBuf),
    /// Pushed as the image `name`, not by tag (`type=registry,name=...`): a cache entry, its
    /// layers uncompressed (the target's `compression`: its archives are compressed already).
    Registry(String),
}

/// How a build compresses the layers it creates (buildx's `compression=`). An image loaded into
/// the engine is unpacked there at once, so its compressed copy saves nothing on the machine and
/// costs CPU twice (measured, docs/SCALING.md: a 15 MB binary's layer took 0.5 s to export with
/// gzip, 0.1 s uncompressed); a pushed image travels, so BuildKit's default (gzip) stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    Uncompressed,
    Gzip,
    Zstd,
}

impl Compression {
    /// As buildx and the flag spell it.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .expect("every compression is a flag value")
            .get_name()
            .to_string()
    }
}

/// One build's settings: an image's, or a cache helper's (`cache/helper.rs`, `cache/remote.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The bake target's name: the image's name.
    pub name: String,
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    /// The Dockerfile stage; empty: the last one.
    pub target: String,
    /// `(KEY, VALUE)` in the order they are passed.
    pub args: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub platforms: Vec<String>,
    pub cache_from: Vec<Spec>,
    pub cache_to: Vec<Spec>,
    /// buildx `--secret` values (`id=NAME,src=FILE|env=VAR`): bake's `secret`.
    pub secrets: Vec<Spec>,
    /// buildx `--ssh` values (`default` or `ID=SOCKET|KEY`): bake's `ssh`.
    pub ssh: Vec<String>,
    pub output: Output,
    /// The compression of a loaded or pushed image's new layers; none: BuildKit's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    pub pull: bool,
    pub no_cache: bool,
    /// A bake file cannot name one: `docker buildx bake --builder` takes it.
    pub builder: Option<String>,
    /// A docker context to run the build on (`docker --context NAME buildx build`), instead of
    /// a buildx builder: a farm's engine named by its context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_context: Option<String>,
    /// Where buildx writes the build's metadata (the pushed digest): `--metadata-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_file: Option<PathBuf>,
    /// Named build contexts (`--build-context NAME=VALUE`, bake's `contexts`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<(String, String)>,
    /// Image labels (`--label KEY=VALUE`, bake's `labels`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, String)>,
    /// No provenance attestation (`--provenance=false`): an image that is data, not a program.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_provenance: bool,
}

impl Target {
    /// The `docker buildx build` command line, run from the workspace root; `progress` is the
    /// `--progress` mode (how the caller reads the output).
    pub fn build_argv(&self, progress: &str) -> Vec<String> {
        let mut argv: Vec<String> = vec!["docker".into()];
        if let Some(context) = &self.docker_context {
            argv.extend(["--context".into(), context.clone()]);
        }
        argv.extend(["buildx", "build"].map(String::from));
        if let Some(builder) = &self.builder {
            argv.extend(["--builder".into(), builder.clone()]);
        }
        argv.push(format!("--progress={progress}"));
        if self.no_provenance {
            argv.push("--provenance=false".into());
        }
        if let Some(file) = &self.metadata_file {
            argv.extend(["--metadata-file".into(), path_arg(file)]);
        }
        argv.extend(["--file".into(), path_arg(&self.dockerfile)]);
        if !self.target.is_empty() {
            argv.extend(["--target".into(), self.target.clone()]);
        }
        for (key, value) in &self.args {
            argv.extend(["--build-arg".into(), format!("{key}={value}")]);
        }
        for (name, value) in &self.contexts {
            argv.extend(["--build-context".into(), format!("{name}={value}")]);
        }
        for (key, value) in &self.labels {
            argv.extend(["--label".into(), format!("{key}={value}")]);
        }
        for secret in &self.secrets {
            argv.extend(["--secret".into(), secret.to_string()]);
        }
        for ssh in &self.ssh {
            argv.extend(["--ssh".into(), ssh.clone()]);
        }
        if !self.platforms.is_empty() {
            argv.extend(["--platform".into(), self.platforms.join(",")]);
        }
        for from in &self.cache_from {
            argv.extend(["--cache-from".into(), from.to_string()]);
        }
        for to in &self.cache_to {
            argv.extend(["--cache-to".into(), to.to_string()]);
        }
        if self.no_cache {
            argv.push("--no-cache".into());
        }
        if self.pull {
            argv.push("--pull".into());
        }
        for tag in &self.tags {
            argv.extend(["--tag".into(), tag.clone()]);
        }
        match (&self.output, self.compression) {
            (Output::Load, None) => argv.push("--load".into()),
            (Output::Push, None) => argv.push("--push".into()),
            _ => argv.extend(["--output".into(), self.output_spec()]),
        }
        argv.push(path_arg(&self.context));
        argv
    }

    /// The bake target (JSON, which bake reads like HCL), or the option bake cannot express.
    pub fn bake(&self) -> Result<Value, UsageError> {
        if let Some(context) = &self.docker_context {
            return Err(UsageError(format!(
                "--builders {context}: a bake file cannot name a docker context; run `docker --context {context} buildx bake`"
            )));
        }
        if let Some(builder) = &self.builder {
            return Err(UsageError(format!(
                "--builder {builder}: a bake file cannot name a builder; leave it out and run `docker buildx bake --builder {builder}`"
            )));
        }
        let args: BTreeMap<&str, &str> = self
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut target = json!({
            "context": path_arg(&self.context),
            "dockerfile": path_arg(&self.dockerfile),
            "target": self.target,
            "args": args,
            "output": [self.output_spec()],
        });
        if !self.tags.is_empty() {
            target["tags"] = json!(self.tags);
        }
        if !self.platforms.is_empty() {
            target["platforms"] = json!(self.platforms);
        }
        if !self.cache_from.is_empty() {
            target["cache-from"] = json!(self.cache_from);
        }
        if !self.cache_to.is_empty() {
            target["cache-to"] = json!(self.cache_to);
        }
        if !self.secrets.is_empty() {
            target["secret"] = json!(self.secrets);
        }
        if !self.ssh.is_empty() {
            target["ssh"] = json!(self.ssh);
        }
        if self.pull {
            target["pull"] = json!(true);
        }
        if self.no_cache {
            target["no-cache"] = json!(true);
        }
        if !self.contexts.is_empty() {
            let contexts: BTreeMap<&str, &str> = (self.contexts.iter())
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            target["contexts"] = json!(contexts);
        }
        if !self.labels.is_empty() {
            let labels: BTreeMap<&str, &str> = (self.labels.iter())
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            target["labels"] = json!(labels);
        }
        if self.no_provenance {
            target["attest"] = json!(["type=provenance,disabled=true"]);
        }
        if !self.target.is_empty() {
            target["target"] = json!(self.target);
        } else if let Some(map) = target.as_object_mut() {
            map.remove("target");
        }
        Ok(target)
    }

    /// The output as buildx's `--output` spells it.
    pub fn output_spec(&self) -> String {
        let compression = (self.compression)
            .map(|c| format!(",compression={}", c.name()))
            .unwrap_or_default();
        match &self.output {
            Output::Load => format!("type=docker{compression}"),
            Output::Push => format!("type=registry{compression}"),
            Output::Local(dest) => format!("type=local,dest={}", path_arg(dest)),
            Output::Registry(name) => format!("type=registry,name={name}{compression}"),
        }
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The bake definition: a target per build and a `default` group of them all.
pub fn bake_file<'a>(targets: impl IntoIterator<Item = &'a Target>) -> Result<Value, UsageError> {
    let mut out = BTreeMap::new();
    for target in targets {
        out.insert(target.name.clone(), target.bake()?);
    }
    let names: Vec<&String> = out.keys().collect();
    Ok(json!({
        "group": {"default": {"targets": names}},
        "target": out,
    }))
}

/// Where `docker buildx bake --print` of the generated file disagrees with the targets, one line
/// per difference (`image: field: planned X, bake read Y`); empty when it reads back every setting.
pub fn bake_print_mismatches<'a>(
    targets: impl IntoIterator<Item = &'a Target>,
    printed: &Value,
) -> Vec<String> {
    let mut out = Vec::new();
    for target in targets {
        let Some(read) = printed["target"].get(&target.name) else {
            out.push(format!("{}: missing from bake's output", target.name));
            continue;
        };
        let planned = match target.bake() {
            Ok(planned) => planned,
            Err(err) => {
                out.push(format!("{}: {err}", target.name));
                continue;
            }
        };
        let fields = [
            "context",
            "dockerfile",
            "target",
            "args",
            "tags",
            "platforms",
            "cache-from",
            "cache-to",
            "output",
            "pull",
            "no-cache",
        ];
        for field in fields {
            let (want, got) = (normal(&planned[field]), normal(&read[field]));
            if want != got {
                out.push(format!(
                    "{}: {field}: planned {want}, bake read {got}",
                    target.name
                ));
            }
        }
    }
    out
}

/// A field's value with bake's defaults and spellings made equal: absent = `false` = empty list,
/// and a cache or output entry written as an object (newer buildx) = its `key=value,...` string.
fn normal(value: &Value) -> Value {
    match value {
        Value::Null | Value::Bool(false) => Value::Null,
        Value::Array(items) if items.is_empty() => Value::Null,
        Value::Object(map) if map.is_empty() => Value::Null,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| match item {
                    Value::Object(map) => {
                        let mut parts: Vec<String> = map
                            .iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
                            .collect();
                        // `type=` first, as the string form writes it
                        parts.sort_by_key(|p| (!p.starts_with("type="), p.clone()));
                        Value::from(parts.join(","))
                    }
                    other => other.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_option() -> Target {
        Target {
            name: "api".into(),
            context: ".".into(),
            dockerfile: "docker/Dockerfile.optimized".into(),
            target: "runtime".into(),
            args: vec![("SERVICE".into(), "api".into()), ("FOO".into(), "1".into())],
            tags: vec!["reg.example/attune-api:1.0".into()],
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            cache_from: vec!["type=local,src=c/api".into()],
            cache_to: vec!["type=local,dest=c/api,mode=max".into()],
            secrets: vec!["id=npm,src=.npmrc".into()],
            ssh: vec!["default".into()],
            output: Output::Push,
            pull: true,
            no_cache: true,
            builder: None,
            docker_context: None,
            metadata_file: None,
            ..Target::default()
        }
    }

    #[test]
    fn specs_are_typed_and_render_as_buildx_reads_them() {
        let spec = Spec::parse("type=local,src=c/{image},mode=max").unwrap();
        assert_eq!(spec.0[1], ("src".to_string(), "c/{image}".to_string()));
        assert_eq!(
            spec.for_image("api").to_string(),
            "type=local,src=c/api,mode=max"
        );
        // a bare reference is the registry source buildx makes of it
        assert_eq!(
            Spec::parse("reg.example/cache:api").unwrap().to_string(),
            "type=registry,ref=reg.example/cache:api"
        );
        assert_eq!(
            Spec::parse("type=local,oops").unwrap_err(),
            "`oops` is not KEY=VALUE"
        );
        assert!(Spec::parse("=x").is_err());
        // CSV, as buildx reads it: a quoted field may hold a comma, and comes back quoted
        let quoted = Spec::parse("id=x,\"src=/a,b\"").unwrap();
        assert_eq!(quoted.0[1].1, "/a,b");
        assert_eq!(quoted.to_string(), "id=x,\"src=/a,b\"");
        // JSON (the plan, bake files) carries the string
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!("type=local,src=c/{image},mode=max")
        );
    }

    #[test]
    fn a_helper_target_renders_contexts_labels_and_no_provenance() {
        let helper = Target {
            name: "cache-fetch".into(),
            context: "target/xtask/cache/context".into(),
            dockerfile: "target/xtask/cache/fetch.Dockerfile".into(),
            args: vec![("NONCE".into(), "1".into())],
            contexts: vec![("entry".into(), "docker-image://r:5000/c:k".into())],
            labels: vec![("org.x".into(), "{}".into())],
            no_provenance: true,
            output: Output::Registry("r:5000/c:k".into()),
            compression: Some(Compression::Uncompressed),
            docker_context: Some("second".into()),
            ..Target::default()
        };
        assert_eq!(
            helper.build_argv("rawjson").join(" "),
            "docker --context second buildx build --progress=rawjson --provenance=false \
             --file target/xtask/cache/fetch.Dockerfile --build-arg NONCE=1 \
             --build-context entry=docker-image://r:5000/c:k --label org.x={} \
             --output type=registry,name=r:5000/c:k,compression=uncompressed \
             target/xtask/cache/context"
        );
        // no stage named: the last one, and no --target
        assert!(!helper
            .build_argv("rawjson")
            .contains(&"--target".to_string()));
    }

    #[test]
    fn a_compression_turns_load_and_push_into_outputs_that_name_it() {
        let with = |output: Output, compression| Target {
            context: ".".into(),
            dockerfile: "Dockerfile".into(),
            output,
            compression,
            ..Target::default()
        };
        let argv = |t: &Target| t.build_argv("rawjson")[6..].join(" ");
        assert_eq!(argv(&with(Output::Load, None)), "--load .");
        assert_eq!(argv(&with(Output::Push, None)), "--push .");
        let load = with(Output::Load, Some(Compression::Uncompressed));
        assert_eq!(
            argv(&load),
            "--output type=docker,compression=uncompressed ."
        );
        let push = with(Output::Push, Some(Compression::Zstd));
        assert_eq!(argv(&push), "--output type=registry,compression=zstd .");
        // bake says the same
        assert_eq!(
            load.bake().unwrap()["output"],
            json!(["type=docker,compression=uncompressed"])
        );
        assert_eq!(
            push.bake().unwrap()["output"],
            json!(["type=registry,compression=zstd"])
        );
    }

    /// The value after `flag` in an argv, for each occurrence.
    fn values<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn the_argv_and_the_bake_target_say_the_same() {
        let t = every_option();
        let argv = t.build_argv("rawjson");
        let bake = t.bake().unwrap();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            values(&argv, "--file"),
            [bake["dockerfile"].as_str().unwrap()]
        );
        assert_eq!(
            values(&argv, "--target"),
            [bake["target"].as_str().unwrap()]
        );
        assert_eq!(values(&argv, "--secret"), strings(&bake["secret"]));
        assert_eq!(values(&argv, "--ssh"), strings(&bake["ssh"]));
        assert_eq!(argv.last().unwrap(), bake["context"].as_str().unwrap());
        let args: Vec<String> = bake["args"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect();
        let mut argv_args = values(&argv, "--build-arg");
        argv_args.sort();
        assert_eq!(argv_args, args);
        assert_eq!(values(&argv, "--tag"), strings(&bake["tags"]));
        assert_eq!(
            values(&argv, "--platform"),
            [strings(&bake["platforms"]).join(",")]
        );
        assert_eq!(values(&argv, "--cache-from"), strings(&bake["cache-from"]));
        assert_eq!(values(&argv, "--cache-to"), strings(&bake["cache-to"]));
        assert_eq!(argv.contains(&"--pull".into()), bake["pull"] == true);
        assert_eq!(
            argv.contains(&"--no-cache".into()),
            bake["no-cache"] == true
        );
        assert!(argv.contains(&"--push".into()));
        assert_eq!(bake["output"], json!(["type=registry"]));

        let plain = Target {
            pull: false,
            no_cache: false,
            platforms: vec![],
            cache_from: vec![],
            cache_to: vec![],
            output: Output::Local("target/pack-binaries".into()),
            tags: vec![],
            ..every_option()
        };
        let (argv, bake) = (plain.build_argv("plain"), plain.bake().unwrap());
        for flag in [
            "--pull",
            "--no-cache",
            "--platform",
            "--cache-from",
            "--push",
            "--load",
        ] {
            assert!(!argv.contains(&flag.to_string()), "{flag}: {argv:?}");
        }
        for key in ["pull", "no-cache", "platforms", "cache-from", "tags"] {
            assert!(bake.get(key).is_none(), "{key}: {bake}");
        }
        assert_eq!(
            values(&argv, "--output"),
            ["type=local,dest=target/pack-binaries"]
        );
        assert_eq!(
            bake["output"],
            json!(["type=local,dest=target/pack-binaries"])
        );
    }

    #[test]
    fn a_builder_cannot_go_into_a_bake_file() {
        let t = Target {
            builder: Some("remote".into()),
            ..every_option()
        };
        assert_eq!(values(&t.build_argv("rawjson"), "--builder"), ["remote"]);
        let err = bake_file([&t]).unwrap_err();
        assert!(err.0.starts_with("--builder remote:"), "{err}");
    }

    #[test]
    fn bake_print_is_compared_field_by_field() {
        let t = every_option();
        let file = bake_file([&t]).unwrap();
        assert_eq!(bake_print_mismatches([&t], &file), Vec::<String>::new());
        // newer buildx prints cache entries as objects, and leaves out what is false or empty
        let mut printed = file.clone();
        printed["target"]["api"]["cache-to"] =
            json!([{"type": "local", "dest": "c/api", "mode": "max"}]);
        assert_eq!(bake_print_mismatches([&t], &printed), Vec::<String>::new());
        printed["target"]["api"]
            .as_object_mut()
            .unwrap()
            .remove("no-cache");
        printed["target"]["api"]["platforms"] = json!(["linux/amd64"]);
        assert_eq!(
            bake_print_mismatches([&t], &printed),
            [
                "api: platforms: planned [\"linux/amd64\",\"linux/arm64\"], bake read [\"linux/amd64\"]",
                "api: no-cache: planned true, bake read null",
            ]
        );
        assert_eq!(
            bake_print_mismatches([&t], &json!({"target": {}})),
            ["api: missing from bake's output"]
        );
    }
}

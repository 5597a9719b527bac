//! `cargo xtask cache du|prune|export|import`: thin; export and import stand on
//! `cache::transfer`, du and prune on `usage`.

mod usage;

use std::path::Path;

use crate::{
    cache::{
        location::Location,
        transfer::{self, Outcome},
    },
    exec::progress,
    flags::{self, CacheBuildArgs, CacheCmd},
    plan::{self, Plan},
    session,
    util::Status,
    workspace,
};

pub fn run(root: &Path, args: flags::CacheArgs) -> anyhow::Result<Status> {
    match args.cmd {
        CacheCmd::Export { to, layers, build } => {
            export(root, &Location::parse(&to)?, layers.cache_layers, build)
        }
        CacheCmd::Import { from, build } => import(root, &Location::parse(&from)?, build),
        cmd @ (CacheCmd::Du(_) | CacheCmd::Prune(_)) => usage::run(root, cmd),
    }
}

/// The declaration, build options, plan and transfer setup of the builds whose caches travel.
fn prepare(
    root: &Path,
    args: &CacheBuildArgs,
) -> anyhow::Result<(
    workspace::Declaration,
    flags::BuildOptions,
    Plan,
    transfer::Setup,
)> {
    let decl = workspace::load(root)?;
    let options = build_options(args);
    let plan = plan_of(&decl, &options, args)?;
    let setup = transfer::setup(
        root,
        &plan,
        &options.platform,
        &first_build_args(&plan),
        &args.log_dir,
        !args.dry_run,
        &transfer::Known {
            whole: transfer::whole_strategy(&decl, &plan.strategy),
            ..transfer::Known::of(&decl)
        },
    )?;
    Ok((decl, options, plan, setup))
}

/// The build options of the builds whose caches travel: as docker-build would run them.
fn build_options(args: &CacheBuildArgs) -> flags::BuildOptions {
    flags::BuildOptions {
        images: args.images.clone(),
        strategy: args.strategy.clone(),
        tag: None,
        registry: None,
        builder: args.builder.clone(),
        platform: args.platform.iter().cloned().collect(),
        push: false,
        cache_from: Vec::new(),
        cache_to: Vec::new(),
        build_arg: args.build_arg.clone(),
        secret: Vec::new(),
        ssh: Vec::new(),
        no_cache: false,
        pull: false,
        builders: Vec::new(),
        no_retry: false,
        push_partial: false,
        compression: None,
    }
}

fn plan_of(
    decl: &workspace::Declaration,
    options: &flags::BuildOptions,
    args: &CacheBuildArgs,
) -> anyhow::Result<Plan> {
    session::plan_from_args(decl, options, &args.log_dir, 0)
}

/// `KEY=VALUE` of the first build's arguments (the key's RUST_VERSION and RUSTFLAGS).
fn first_build_args(plan: &Plan) -> Vec<String> {
    (plan.builds.first().into_iter())
        .flat_map(|b| b.target.args.iter().map(|(k, v)| format!("{k}={v}")))
        .collect()
}

/// The builds (their cache mounts current), then the export; the builds write a layer cache for
/// the entry only with `layers`.
fn export(
    root: &Path,
    location: &Location,
    layers: bool,
    args: CacheBuildArgs,
) -> anyhow::Result<Status> {
    let (decl, mut options, _, mut setup) = prepare(root, &args)?;
    setup.layers = layers;
    if layers {
        options
            .cache_to
            .push(setup.layer_cache_to(location).to_string());
    }
    let plan = plan_of(&decl, &options, &args)?;
    let store = crate::pipeline::private_store(&options);
    crate::pipeline::refuse_on_store(store, &plan, layers, &options)?;
    if args.dry_run {
        print!("{}", plan::render_dry_run(&plan));
        print!("{}", transfer::render_helper(&setup.export_build()));
        println!(
            "# then: zstd of each tar{}, published as {location}/{}/",
            if layers { " and the layer cache" } else { "" },
            setup.inputs.key()
        );
        return Ok(Status::Ok);
    }
    session::preflight(root, &plan, args.engine, args.builder.is_some())?;
    let _ = std::fs::remove_dir_all(root.join(transfer::layers_out()));
    let report = session::execute(root, &plan, progress::detect_mode());
    if report.status() != Status::Ok {
        print!("{}", session::render_summary(&report));
        eprintln!("cache: builds failed; {location} left as it is");
        return Ok(report.status());
    }
    let layers_out = layers.then(transfer::layers_out);
    let outcome = transfer::export(root, &setup, location, layers_out.as_deref());
    Ok(transfer::finish(outcome?, args.cache_strict, ""))
}

fn import(root: &Path, location: &Location, args: CacheBuildArgs) -> anyhow::Result<Status> {
    let (_, _, plan, setup) = prepare(root, &args)?;
    if args.dry_run {
        println!("# the entry {location}/{}/ (or the closest one of the same toolchain and platform), its archives checked and linked into {}/import-in, the import helper's build context", setup.inputs.key(), transfer::WORK_DIR);
        print!("{}", transfer::render_helper(&setup.import_build()));
        return Ok(Status::Ok);
    }
    session::preflight(root, &plan, args.engine, args.builder.is_some())?;
    let outcome = transfer::import(root, &setup, location);
    let imported = matches!(outcome, Outcome::Done(_));
    let status = transfer::finish(outcome, args.cache_strict, "; the builds will be cold");
    if let Some(from) = imported
        .then(|| setup.layer_cache_from(root, location))
        .flatten()
    {
        println!(
            "cache: the layer cache is ready; build with --cache-from '{from}' (docker-build --cache does both)"
        );
    }
    Ok(status)
}

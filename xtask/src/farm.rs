//! Several builders: which image builds where, the shared builder stage's layer cache in the
//! registry, and where a failed build runs again. Pure: the plan calls [`place`] and
//! [`seed_cache`], the session calls [`retry_builder`].

use crate::target::{Spec, Target};

/// The builder of each of `count` builds, in order: the first build (the seed, when the builder
/// stage is shared) on the first builder, the others round-robin starting with the second
/// builder, so the seed's builder gets no more than its share.
pub fn place(count: usize, builders: &[String]) -> Vec<String> {
    if builders.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|i| builders[i % builders.len()].clone())
        .collect()
}

/// Where the shared builder stage's layer cache lives: `REGISTRY/attune-cache:STRATEGY`.
pub fn cache_ref(registry: &str, strategy: &str) -> String {
    format!("{}/attune-cache:{strategy}", registry.trim_end_matches('/'))
}

/// The first build exports every layer it built (`mode=max`, the builder stage included) to
/// `reference`; every other build imports from it, so its builder stage comes from the cache
/// instead of compiling again.
pub fn seed_cache<'a>(targets: impl Iterator<Item = &'a mut Target>, reference: &str) {
    for (i, target) in targets.enumerate() {
        if i == 0 {
            (target.cache_to).push(Spec::of(&[
                ("type", "registry"),
                ("ref", reference),
                ("mode", "max"),
            ]));
        } else {
            (target.cache_from).push(Spec::of(&[("type", "registry"), ("ref", reference)]));
        }
    }
}

/// The builder a build that failed on `failed` runs on once more: the next one in the list
/// (wrapping around) that is not `failed`; `None` with a single builder.
pub fn retry_builder(failed: &str, builders: &[String]) -> Option<String> {
    let at = builders.iter().position(|b| b == failed)?;
    (1..builders.len())
        .map(|step| &builders[(at + step) % builders.len()])
        .find(|b| *b != failed)
        .cloned()
}

/// Checks a `--builders` list: at least one name, no empty or repeated name.
pub fn check_builders(builders: &[String]) -> Result<(), String> {
    for (i, name) in builders.iter().enumerate() {
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(format!(
                "--builders `{}`: a builder name is empty or has spaces",
                builders.join(",")
            ));
        }
        if builders[..i].contains(name) {
            return Err(format!(
                "--builders `{}`: `{name}` is named twice",
                builders.join(",")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn images_are_spread_round_robin_with_the_seed_on_the_first_builder() {
        let two = names(&["default", "second"]);
        assert_eq!(place(4, &two), ["default", "second", "default", "second"]);
        assert_eq!(place(3, &names(&["a", "b", "c", "d"])), ["a", "b", "c"]);
        assert_eq!(place(2, &names(&["only"])), ["only", "only"]);
        assert!(place(3, &[]).is_empty());
    }

    #[test]
    fn a_failed_build_moves_to_the_next_builder() {
        let three = names(&["a", "b", "c"]);
        assert_eq!(retry_builder("a", &three).as_deref(), Some("b"));
        assert_eq!(retry_builder("c", &three).as_deref(), Some("a"));
        assert_eq!(retry_builder("a", &names(&["a"])), None);
        assert_eq!(retry_builder("z", &three), None);
    }

    #[test]
    fn the_cache_ref_lives_under_the_registry_prefix() {
        assert_eq!(
            cache_ref("127.0.0.1:5000/attune/", "workspace"),
            "127.0.0.1:5000/attune/attune-cache:workspace"
        );
    }

    #[test]
    fn builder_lists_are_checked() {
        assert_eq!(check_builders(&names(&["a", "b"])), Ok(()));
        assert!(check_builders(&names(&["a", "a"]))
            .unwrap_err()
            .contains("`a` is named twice"));
        assert!(check_builders(&names(&["a", ""])).is_err());
    }
}

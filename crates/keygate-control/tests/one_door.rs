//! The one door (ARCHITECTURE.md, invariant "every change is audited"): the store's changes are
//! `keygate_store::Change` values, and only keygate-control makes them. The admin API and the
//! binary do not depend on keygate-store at all, so they cannot name a `Change`: they hold a
//! `keygate_control::Store`, whose `apply` is private to keygate-control. The gateway depends on
//! the store for its snapshot and its counters, and never names a change.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_control_and_the_gateway_depend_on_the_store() {
    let root = workspace();
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("Cargo.toml"))
        .filter(|p| p.is_file())
        .collect();
    manifests.push(root.join("examples/candidate-service/Cargo.toml"));
    manifests.push(root.join("fuzz/Cargo.toml"));
    let mut seen = 0;
    let mut wrong = Vec::new();
    for manifest in &manifests {
        let text = std::fs::read_to_string(manifest).unwrap();
        let package = manifest.parent().unwrap().file_name().unwrap().to_string_lossy();
        let depends = text.lines().any(|l| l.trim_start().starts_with("keygate-store"));
        if ["keygate-control", "keygate-gateway"].contains(&package.as_ref()) {
            assert!(depends, "{package} is expected to depend on keygate-store");
            seen += 1;
        } else if depends && package != "keygate-store" {
            wrong.push(manifest.display().to_string());
        }
    }
    assert_eq!(seen, 2, "the crates were not found under {}", root.display());
    assert!(
        wrong.is_empty(),
        "only keygate-control makes changes; these depend on the store: {wrong:?}"
    );
}

#[test]
fn the_gateway_never_names_a_change() {
    let mut files = Vec::new();
    sources(&workspace().join("crates/keygate-gateway"), &mut files);
    assert!(files.len() > 5, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let names = line.contains("Change::")
                || (line.contains("keygate_store") && line.contains("Change"))
                || line.contains(".apply(");
            assert!(!names, "{}:{}: the gateway makes no changes: {line}", file.display(), n + 1);
        }
    }
}

/// `keygate-types` and `keygate-limits` do no IO (ARCHITECTURE.md's first invariant): neither
/// depends on an async runtime, an HTTP stack or a database driver.
#[test]
fn the_pure_crates_depend_on_no_io_crate() {
    for krate in ["keygate-types", "keygate-limits"] {
        let manifest = workspace().join("crates").join(krate).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let deps = text
            .split("[dependencies]")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .unwrap_or_else(|| panic!("{} has no [dependencies]", manifest.display()));
        for io in ["tokio", "hyper", "sqlx", "reqwest", "axum", "mio", "keygate-store"] {
            let found = deps.lines().any(|l| {
                let name = l.split(['=', '.', ' ']).next().unwrap_or("");
                name == io
            });
            assert!(!found, "{krate} depends on {io}: it must do no IO");
        }
    }
}

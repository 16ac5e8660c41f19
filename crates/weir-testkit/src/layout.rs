//! A guard of the test layout: every end-to-end test file in the repository's `tests/` is a
//! test target.
//!
//! The root package (`weir-server`, in the root Cargo.toml) owns the `weir` binary and lets
//! Cargo discover `tests/*.rs` (and `tests/<dir>/main.rs`) as test targets, so a new test
//! file runs without being listed anywhere. This guard fails if that ever stops being true:
//! `autotests = false` with a `[[test]]` list in place of discovery, tests moved to a package
//! that does not discover them, a file Cargo would not pick up. It is a unit test of the
//! testkit, not a file in `tests/`: it must run even when discovery there is broken.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (this crate is `crates/weir-testkit`).
fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// What Cargo would discover in `tests/`: every `*.rs` file, and every directory with a
/// `main.rs` (other directories hold modules of a test, such as `tests/discovery_kubernetes/`).
fn test_files() -> BTreeSet<PathBuf> {
    let dir = root().join("tests");
    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("read tests/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            let main = path.join("main.rs");
            if main.is_file() {
                files.insert(main);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.insert(path);
        }
    }
    files
}

/// The source files of the test targets of every workspace package, per `cargo metadata`.
fn test_targets() -> BTreeSet<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let mut targets = BTreeSet::new();
    for package in meta["packages"].as_array().expect("packages") {
        for target in package["targets"].as_array().expect("targets") {
            let is_test = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
            if is_test {
                let src = target["src_path"].as_str().expect("src_path");
                targets.insert(canonical(Path::new(src)));
            }
        }
    }
    targets
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

#[test]
fn every_file_in_tests_is_a_test_target() {
    let targets = test_targets();
    let missing: Vec<PathBuf> = test_files()
        .into_iter()
        .filter(|f| !targets.contains(&canonical(f)))
        .collect();
    assert!(
        missing.is_empty(),
        "test files that no test target compiles (is `autotests` off, or is a `[[test]]` list \
         in the root Cargo.toml in place of Cargo's discovery?): {missing:?}"
    );
}

/// A `[[test]]` entry next to discovery is harmless (it configures one target, say
/// `harness = false`); `autotests = false` would leave every unlisted file out.
#[test]
fn the_root_manifest_keeps_test_discovery_on() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("read Cargo.toml");
    for line in manifest.lines().map(str::trim) {
        assert!(
            !(line.starts_with("autotests") && line.contains("false")),
            "the root package must discover tests/*.rs itself: {line}"
        );
    }
}

//! Compiles plugin crates of this workspace for `wasm32-wasip2` from a build
//! script, the way wasmtime's test-programs artifacts do: a nested cargo with a
//! target directory of its own (sharing the outer build's would wait forever on
//! its lock), and `rerun-if-changed` for every source file from the dep-info
//! files cargo writes beside each component.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The package names of the crates directly below `dir` (those with a Cargo.toml).
pub fn crates_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("Cargo.toml").exists())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Builds `packages` (release, `wasm32-wasip2`) and returns each component's path,
/// in the same order. `out_dir` is the calling build script's `OUT_DIR`.
pub fn build_components(workspace: &Path, packages: &[String], out_dir: &Path) -> Vec<PathBuf> {
    let target_dir = out_dir.join("wasm-target");
    ensure_target_installed(workspace);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--target", WASM_TARGET, "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        // Components without DWARF: a tenth of the size, faster to compile and
        // lighter in memory; the name section stays, so guest backtraces keep
        // function names.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command.status().expect("run cargo to build the wasm components");
    assert!(
        status.success(),
        "building {packages:?} for {WASM_TARGET} failed; if the target is missing, \
         `rustup target add {WASM_TARGET}` (rust-toolchain.toml names it)"
    );
    let release = target_dir.join(WASM_TARGET).join("release");
    packages
        .iter()
        .map(|package| {
            let artifact = package.replace('-', "_");
            rerun_if_sources_change(&release.join(format!("{artifact}.d")));
            release.join(format!("{artifact}.wasm"))
        })
        .collect()
}

/// rustup installs the targets `rust-toolchain.toml` names only together with
/// the toolchain; on a machine that already had the toolchain, add the target
/// here so a fresh clone builds with no manual step. Without rustup, the
/// build below says what is missing.
fn ensure_target_installed(workspace: &Path) {
    let installed = Command::new("rustup")
        .current_dir(workspace)
        .args(["target", "list", "--installed"])
        .output();
    let Ok(installed) = installed else { return };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|t| t.trim() == WASM_TARGET)
    {
        return;
    }
    let added = Command::new("rustup")
        .current_dir(workspace)
        .args(["target", "add", WASM_TARGET])
        .status();
    if !added.is_ok_and(|s| s.success()) {
        println!("cargo:warning=could not run `rustup target add {WASM_TARGET}`");
    }
}

fn rerun_if_sources_change(dep_info: &Path) {
    let Ok(text) = fs::read_to_string(dep_info) else {
        return;
    };
    let Some((_, sources)) = text.split_once(": ") else {
        return;
    };
    for source in sources.split_whitespace().filter(|s| !s.ends_with('\\')) {
        println!("cargo:rerun-if-changed={source}");
    }
}

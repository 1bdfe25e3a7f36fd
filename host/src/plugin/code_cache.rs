//! Compiled plugin code kept on disk, so a plugin is compiled once per
//! (component, wasmtime version, engine settings) instead of at every start.
//!
//! A Python or JavaScript component is 12–20 MB of Wasm and takes seconds to
//! compile; its compiled form loads in milliseconds, and loads *mapped* from
//! the file, so only the code pages a call touches become resident.
//!
//! Layout: `<dir>/<key>.cwasm` with `<dir>/<key>.sha256` beside it, where the
//! key is the SHA-256 of the component's bytes and of the engine's
//! compatibility hash (which covers the wasmtime version, target, compiler flags
//! and tunables). Both files are written to a temporary name and renamed, the
//! digest last, so a reader sees a whole entry or none; a reader checks the
//! digest before mapping the code (a torn or corrupted file is recompiled,
//! never run), and wasmtime checks the header again on load.
//!
//! The directory is trusted like the rest of the data directory: whoever can
//! write it can also replace the database and the JWT secret.

use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::CompileError;

/// Entries not used for this long are removed when a runtime opens the cache.
const UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where a component's code came from, for the log and `plugin inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeOrigin {
    /// Compiled now (no cache, or no usable entry).
    Compiled,
    /// Mapped from a cache entry.
    Cached,
}

#[derive(Debug, Clone)]
pub(super) struct CodeCache {
    dir: PathBuf,
}

impl CodeCache {
    /// Opens (creating) the cache directory and drops long-unused entries.
    /// Directories it creates are owner-only: the default cache lives in the
    /// data directory, which may not exist yet and holds the JWT secret.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        let cache = Self { dir: dir.to_path_buf() };
        cache.remove_unused();
        Ok(cache)
    }

    /// The compiled `wasm`: mapped from the cache when a verified entry exists,
    /// else compiled by `compile` (to serialized code) and stored; a failure
    /// to store is logged, not fatal.
    pub fn component(
        &self,
        engine: &Engine,
        wasm: &[u8],
        compile: impl FnOnce(&[u8]) -> Result<Vec<u8>, CompileError>,
    ) -> Result<(Component, CodeOrigin), CompileError> {
        let key = cache_key(engine, wasm);
        let code = self.dir.join(format!("{key}.cwasm"));
        let digest = self.dir.join(format!("{key}.sha256"));
        match self.load(engine, &code, &digest) {
            Ok(Some(component)) => return Ok((component, CodeOrigin::Cached)),
            Ok(None) => {}
            Err(reason) => {
                tracing::warn!(entry = %code.display(), "compiled plugin code discarded: {reason}");
                let _ = fs::remove_file(&digest);
                let _ = fs::remove_file(&code);
            }
        }
        let compiled = compile(wasm)?;
        if let Err(e) = self.store(&compiled, &code, &digest) {
            tracing::warn!(dir = %self.dir.display(), "cannot store compiled plugin code: {e}");
        }
        // Map the stored copy: its pages stay out of memory until called.
        if let Ok(Some(mapped)) = self.load(engine, &code, &digest) {
            return Ok((mapped, CodeOrigin::Compiled));
        }
        Ok((deserialize(engine, &compiled)?, CodeOrigin::Compiled))
    }

    /// `Ok(None)` when there is no entry; `Err` when there is one that must not be used.
    fn load(&self, engine: &Engine, code: &Path, digest: &Path) -> Result<Option<Component>, String> {
        let expected = match fs::read_to_string(digest) {
            Ok(expected) => expected,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read its digest: {e}")),
        };
        let actual = file_digest(code).map_err(|e| format!("cannot read it: {e}"))?;
        if actual != expected.trim() {
            return Err("its contents do not match their digest".into());
        }
        // SAFETY: the file was written by `store` from `Component::serialize` of
        // this engine's settings (the key says so), its digest matches what was
        // written, and wasmtime re-checks the header; the cache directory is as
        // trusted as the binary's data directory (see the module docs).
        let component = unsafe { Component::deserialize_file(engine, code) }.map_err(|e| format!("{e:#}"))?;
        // Mark it used, for `remove_unused`; best effort.
        let _ = File::options()
            .write(true)
            .open(code)
            .and_then(|f| f.set_modified(SystemTime::now()));
        Ok(Some(component))
    }

    fn store(&self, bytes: &[u8], code: &Path, digest: &Path) -> io::Result<()> {
        let hex = format!("{:x}", Sha256::digest(bytes));
        write_atomically(code, bytes)?;
        write_atomically(digest, hex.as_bytes())
    }

    fn remove_unused(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        let cutoff = SystemTime::now() - UNUSED_FOR;
        for entry in entries.flatten() {
            let path = entry.path();
            let stale = path.extension().is_some_and(|ext| ext == "cwasm")
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|modified| modified < cutoff);
            if stale {
                let _ = fs::remove_file(path.with_extension("sha256"));
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// Loads code `compile_apart` just produced for `engine`'s configuration; an
/// error here is this engine refusing the component (its limits), not a bad component.
pub(super) fn deserialize(engine: &Engine, code: &[u8]) -> Result<Component, CompileError> {
    // SAFETY: `code` comes from `Engine::precompile_component` of an engine with
    // this engine's configuration, in this process.
    unsafe { Component::deserialize(engine, code) }.map_err(|e| CompileError::Refused(format!("{e:#}")))
}

/// The entry name of `wasm` compiled by `engine`.
fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.update(wasm);
    format!("{:x}", hasher.0.finalize())
}

/// Feeds a `Hash` value into SHA-256: stable across processes, unlike `DefaultHasher`'s contract.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
}

/// SHA-256 of a file, read in chunks (a compiled Python plugin is tens of MB).
fn file_digest(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(format!("{:x}", hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}

/// Writes `path` through a unique temporary file and a rename: readers and
/// concurrent writers (two processes starting at once) never see a torn file.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::NamedTempFile::new_in(dir)?;
    temporary.write_all(bytes)?;
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::new(wasmtime::Config::new().wasm_component_model(true)).unwrap()
    }

    /// A real component: the shipped log carrier.
    fn wasm() -> std::borrow::Cow<'static, [u8]> {
        super::super::builtin::resolve("builtin:log").unwrap()
    }

    #[test]
    fn a_component_is_compiled_once_then_mapped_and_a_corrupt_entry_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(dir.path()).unwrap();
        let engine = engine();
        let origin = || {
            let compile =
                |wasm: &[u8]| (engine.precompile_component(wasm)).map_err(|e| CompileError::Invalid(e.to_string()));
            cache.component(&engine, &wasm(), compile).unwrap().1
        };
        assert_eq!(origin(), CodeOrigin::Compiled);
        assert_eq!(origin(), CodeOrigin::Cached);

        let entry = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .unwrap();
        let mut bytes = fs::read(&entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&entry, bytes).unwrap();
        assert_eq!(origin(), CodeOrigin::Compiled);
        assert_eq!(origin(), CodeOrigin::Cached);
    }

    #[test]
    fn other_engine_settings_use_other_entries() {
        let with_fuel = Engine::new(wasmtime::Config::new().consume_fuel(true)).unwrap();
        assert_ne!(cache_key(&engine(), b"x"), cache_key(&with_fuel, b"x"));
        assert_ne!(cache_key(&engine(), b"x"), cache_key(&engine(), b"y"));
        assert_eq!(cache_key(&engine(), b"x"), cache_key(&engine(), b"x"));
    }
}

//! Plugins compiled into the binary (`builtin:<name>`), and loading by spec.

use std::borrow::Cow;

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The component bytes of a plugin named in the configuration: `builtin:<name>`
/// or a path to a `.wasm` file.
pub fn resolve(spec: &str) -> Result<Cow<'static, [u8]>, String> {
    match spec.strip_prefix("builtin:") {
        Some(name) => BUILTIN_PLUGINS
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .map(|(_, bytes)| Cow::Borrowed(*bytes))
            .ok_or_else(|| {
                let known: Vec<_> = BUILTIN_PLUGINS.iter().map(|(n, _)| format!("builtin:{n}")).collect();
                format!("no built-in plugin {spec:?} (built in: {})", known.join(", "))
            }),
        None => std::fs::read(spec)
            .map(Cow::Owned)
            .map_err(|e| format!("cannot read plugin file {spec}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_template_is_built_in() {
        let bytes = super::resolve("builtin:default").unwrap();
        assert!(bytes.starts_with(b"\0asm"), "a wasm component");
        assert!(super::resolve("builtin:nope").unwrap_err().contains("builtin:default"));
    }
}

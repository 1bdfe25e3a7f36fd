//! The plugins a configuration names, loaded once at start.

use std::collections::{BTreeMap, HashMap};

use super::builtin;
use super::carrier::CarrierPlugin;
use super::http::PluginHttp;
use super::template::TemplatePlugin;
use super::{PluginError, PluginIdentity, PluginRuntime};
use crate::config::Config;

/// The template plugin and every configured carrier.
#[derive(Clone)]
pub struct Plugins {
    pub runtime: PluginRuntime,
    pub template: TemplatePlugin,
    carriers: HashMap<String, CarrierPlugin>,
    default_carrier: Option<String>,
}

impl Plugins {
    /// Loads every plugin of the configuration; the first that cannot load stops start-up.
    pub async fn load(config: &Config) -> Result<Self, PluginError> {
        let runtime = PluginRuntime::new(config.plugins.clone(), config.plugin_cache_dir().as_deref())?;
        let template = TemplatePlugin::load(
            &runtime,
            identity("template", &config.template_settings)?,
            &read(&config.template, "template")?,
        )
        .await?;
        let mut carriers = HashMap::new();
        for carrier in &config.carriers {
            let http = PluginHttp::new(&carrier.allowed_hosts, carrier.allow_insecure_http, &config.plugins)?;
            let loaded = CarrierPlugin::load(
                &runtime,
                identity(&carrier.name, &carrier.settings)?,
                http,
                &read(&carrier.plugin, &carrier.name)?,
            )
            .await?;
            let at_once = runtime.calls_at_once(&loaded.footprint());
            if carrier.max_concurrency > at_once {
                tracing::warn!(
                    carrier = %carrier.name,
                    "max_concurrency is {} but the plugin pool runs {at_once} of this carrier's calls at once \
                     (it needs {} each); the others wait for a free slot: raise plugins.max_instances",
                    carrier.max_concurrency,
                    loaded.footprint()
                );
            }
            carriers.insert(carrier.name.clone(), loaded);
        }
        Ok(Self {
            runtime,
            template,
            carriers,
            default_carrier: config.default_carrier().map(str::to_string),
        })
    }

    /// The carrier called `name`, or the default one for `None`.
    pub fn carrier(&self, name: Option<&str>) -> Option<&CarrierPlugin> {
        self.carriers.get(name.or(self.default_carrier.as_deref())?)
    }
}

fn read(spec: &str, plugin: &str) -> Result<std::borrow::Cow<'static, [u8]>, PluginError> {
    builtin::resolve(spec).map_err(|reason| PluginError::Load {
        plugin: plugin.to_string(),
        reason,
    })
}

/// A plugin's identity with `env:NAME` settings resolved from the environment.
fn identity(name: &str, settings: &BTreeMap<String, String>) -> Result<PluginIdentity, PluginError> {
    let settings = resolve_settings(settings, |var| std::env::var(var).ok()).map_err(|reason| PluginError::Load {
        plugin: name.to_string(),
        reason,
    })?;
    Ok(PluginIdentity {
        name: name.to_string(),
        settings,
    })
}

/// Replaces `env:NAME` values with the variable's value; a missing variable is an error naming both.
fn resolve_settings(
    settings: &BTreeMap<String, String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, String> {
    settings
        .iter()
        .map(|(key, value)| match value.strip_prefix("env:") {
            Some(var) => env(var)
                .map(|resolved| (key.clone(), resolved))
                .ok_or_else(|| format!("setting {key:?} names environment variable {var}, which is not set")),
            None => Ok((key.clone(), value.clone())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_resolve_and_missing_ones_are_named() {
        let settings: BTreeMap<String, String> = [("token", "env:TOKEN"), ("sid", "AC1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let resolved = resolve_settings(&settings, |var| (var == "TOKEN").then(|| "s3cret".to_string())).unwrap();
        assert_eq!(resolved["token"], "s3cret");
        assert_eq!(resolved["sid"], "AC1");
        let err = resolve_settings(&settings, |_| None).unwrap_err();
        assert!(err.contains("token") && err.contains("TOKEN"), "{err}");
    }
}

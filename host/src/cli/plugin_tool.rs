//! `herald plugin inspect|send`: for people writing plugins.

use std::time::Instant;

use anyhow::{Context, bail};

use super::PluginCommand;
use crate::config::Config;
use crate::domain::phone::PhonePolicy;
use crate::plugin::carrier::{CarrierPlugin, Message};
use crate::plugin::http::PluginHttp;
use crate::plugin::template::TemplatePlugin;
use crate::plugin::{
    CodeOrigin, CompileError, PluginError, PluginIdentity, PluginRuntime, Plugins, SUPPORTED_VERSIONS, builtin,
};

pub async fn run(config: &Config, command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Inspect { file } => inspect(config, &file).await,
        PluginCommand::Send {
            carrier,
            to,
            body,
            from,
        } => send(config, &carrier, &to, &body, &from).await,
    }
}

/// Compiles `file` once (through the code cache), describes it, and loads it
/// the way `herald serve` would, instantiating it once.
async fn inspect(config: &Config, file: &str) -> anyhow::Result<()> {
    let wasm = builtin::resolve(file).map_err(anyhow::Error::msg)?;
    let runtime = PluginRuntime::new(config.plugins.clone(), config.plugin_cache_dir().as_deref())?;
    let started = Instant::now();
    let (component, origin) = match runtime.compile(&wasm) {
        Ok(compiled) => compiled,
        Err(CompileError::Refused(reason)) => {
            println!("file:     {file} ({} bytes)", wasm.len());
            println!("loadable: no — {reason}");
            return Ok(());
        }
        Err(invalid) => bail!("{file} is {invalid}"),
    };
    let compile_time = started.elapsed();
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(runtime.engine()).map(|(name, _)| name.to_string()).collect();
    let imports: Vec<String> = ty.imports(runtime.engine()).map(|(name, _)| name.to_string()).collect();
    let herald_export = exports.iter().find_map(|e| e.strip_prefix("herald:plugin/"));
    let (world, version) = match herald_export.and_then(|e| e.split_once('@')) {
        Some(("carrier", version)) => ("carrier-plugin", version),
        Some(("template", version)) => ("template-plugin", version),
        _ => ("(none: exports no herald:plugin interface)", "-"),
    };
    println!("file:     {file} ({} bytes)", wasm.len());
    println!("world:    {world}");
    println!(
        "version:  herald:plugin@{version} (this host supports {})",
        SUPPORTED_VERSIONS.join(", ")
    );
    println!("exports:  {}", exports.join(", "));
    println!("imports:  {}", imports.join(", "));
    let how = match origin {
        CodeOrigin::Cached => "mapped from the code cache",
        CodeOrigin::Compiled => "compiled",
    };
    println!("code:     {how} in {} ms", compile_time.as_millis());
    let identity = PluginIdentity {
        name: file.to_string(),
        settings: Default::default(),
    };
    let loaded = match world {
        "carrier-plugin" => {
            let http = PluginHttp::new(&[], false, &config.plugins)?;
            CarrierPlugin::load_compiled(&runtime, identity, http, &component)
                .await
                .map(|plugin| plugin.footprint())
        }
        _ => TemplatePlugin::load_compiled(&runtime, identity, &component)
            .await
            .map(|plugin| plugin.footprint()),
    };
    match loaded {
        Ok(footprint) => {
            let calls = runtime.calls_at_once(&footprint);
            println!("instance: {footprint} (up to {calls} calls at once)");
            println!("loadable: yes");
        }
        Err(PluginError::Load { reason, .. }) => println!("loadable: no — {reason}"),
        Err(e) => println!("loadable: no — {e}"),
    }
    Ok(())
}

async fn send(config: &Config, carrier: &str, to: &str, body: &str, from: &str) -> anyhow::Result<()> {
    let plugins = Plugins::load(config).await.context("loading the configured plugins")?;
    let Some(plugin) = plugins.carrier(Some(carrier)) else {
        let known: Vec<_> = config.carriers.iter().map(|c| c.name.as_str()).collect();
        bail!(
            "no carrier {carrier:?} in the configuration (configured: {})",
            known.join(", ")
        );
    };
    let to = PhonePolicy::new(&config.contacts.country_codes)
        .normalize(to)
        .map_err(anyhow::Error::msg)?;
    let rendered = plugins
        .template
        .render(body, &[])
        .await?
        .map_err(|e| anyhow::anyhow!("the template plugin refused the body: {}", e.message))?;
    let message = Message {
        id: uuid::Uuid::now_v7().to_string(),
        to: to.into(),
        from: from.to_string(),
        body: rendered.body,
        segments: rendered.segments,
        encoding: rendered.encoding,
        metadata: vec![("source".into(), "herald plugin send".into())],
    };
    println!(
        "message {} → {} ({} segment(s))",
        message.id, message.to, message.segments
    );
    let (result, reach) = plugin.send(&message).await;
    if reach == crate::plugin::carrier::Reach::Unanswered {
        println!("note: a request reached the carrier but no answer came back; it may have been sent");
    }
    match result? {
        Ok(accepted) => {
            println!(
                "accepted: carrier message id {:?}, status {:?}",
                accepted.carrier_message_id, accepted.status
            );
            Ok(())
        }
        Err(error) => bail!("carrier refused: {error:?}"),
    }
}

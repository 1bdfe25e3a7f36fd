//! Configuration: built-in defaults ← TOML file ← `HERALD_<SECTION>__<KEY>` environment.
//!
//! Every key is named and documented in `config/default.toml`; this module only
//! gives them types and defaults and checks what types alone cannot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The file read when neither `--config` nor `HERALD_CONFIG` names one. It is
/// optional: a binary run outside the repository works on built-in defaults.
pub const DEFAULT_CONFIG_FILE: &str = "config/default.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Holds the SQLite file and the generated JWT secret.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub contacts: ContactsConfig,
    pub campaigns: CampaignsConfig,
    pub compliance: ComplianceConfig,
    pub bus: BusConfig,
    pub dispatch: DispatchConfig,
    /// Template plugin: `builtin:<name>` or a path to a `.wasm` component.
    pub template: String,
    /// Settings handed to the template plugin (e.g. `smart_encoding = "true"`).
    pub template_settings: BTreeMap<String, String>,
    /// Limits every plugin call runs under.
    pub plugins: crate::plugin::PluginLimits,
    pub carriers: Vec<CarrierConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Largest JSON request body accepted; larger ones get 413.
    pub max_body_bytes: u64,
    /// The URL carriers reach Herald at (e.g. `https://sms.example.com`), for
    /// webhook signature checks behind a proxy; unset = from the request's
    /// `Host` and `X-Forwarded-Proto` headers.
    pub public_url: Option<String>,
    /// Largest carrier webhook body accepted, counted as it streams (chunked
    /// bodies included); larger ones get 413.
    pub max_webhook_bytes: u64,
    /// Carrier webhook requests handled at once per carrier; more wait.
    pub webhook_concurrency: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter directive, e.g. `info` or `herald=debug,sqlx=warn`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; empty means `herald.db` in `data_dir`.
    pub url: Option<String>,
    pub max_connections: u32,
    /// Apply pending migrations when `herald serve` starts.
    pub migrate_on_start: bool,
    /// SQLite page cache of all connections together, in MiB (PostgreSQL ignores it).
    pub sqlite_cache_mib: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 shared secret. Generated into `data_dir` on first start when unset.
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA → RS256, P-256 → ES256) of an external identity provider.
    pub jwt_public_key: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactsConfig {
    /// Country calling codes accepted in phone numbers; `["1"]` is NANP only,
    /// `["*"]` accepts every E.164 number.
    pub country_codes: Vec<String>,
    /// Largest CSV upload accepted; larger ones get 413.
    pub max_import_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignsConfig {
    /// Highest `daily_limit` a campaign may have (SPEC §3.1). 1000, the
    /// original contract, unless the operator has the carrier throughput for more.
    pub max_daily_limit: u32,
}

impl Default for CampaignsConfig {
    fn default() -> Self {
        Self { max_daily_limit: 1000 }
    }
}

/// The recipient rules (SPEC §4.1, docs/compliance.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComplianceConfig {
    /// A rule set file (TOML, the format of config/compliance/us-rules.toml)
    /// that replaces the shipped one; unset = the shipped rule set.
    pub rules: Option<PathBuf>,
}

impl ComplianceConfig {
    /// The rule set in force: the file's, or the shipped one.
    pub fn rule_set(&self) -> Result<crate::domain::compliance::RuleSet, ConfigError> {
        let Some(path) = &self.rules else {
            return Ok(crate::domain::compliance::RuleSet::shipped().clone());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("compliance.rules", format!("cannot read {}: {e}", path.display())))?;
        crate::domain::compliance::RuleSet::from_toml(&text)
            .map_err(|e| invalid("compliance.rules", format!("{}: {e}", path.display())))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// NATS server; unset means the in-process transport.
    pub nats_url: Option<String>,
    pub stream_prefix: String,
    pub subject_prefix: String,
}

/// The sending pipeline: scheduler (api role) and dispatcher.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Carrier attempts a message gets before it fails (retryable errors).
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; doubles per attempt, with jitter.
    pub retry_base_ms: u64,
    /// Upper bound of the retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// Share of failed sends over the last `pause_window` that pauses a campaign.
    pub pause_error_rate: f64,
    pub pause_window: u32,
    /// How often the scheduler looks for due messages, in milliseconds.
    pub tick_ms: u64,
    /// Messages handed to dispatchers and not yet answered, at most.
    pub max_in_flight: u32,
    /// A hand-off without a result after this long is handed out again, in seconds.
    pub lease_secs: u64,
    /// Jobs a dispatcher works on at once (per-carrier `max_concurrency` also applies).
    pub workers: u32,
    /// A message whose send outcome is unknown (the request may have reached a
    /// carrier that does not deduplicate, no answer came) and that no receipt
    /// reconciles within this time fails with reason `unknown_outcome`, in seconds.
    pub unknown_outcome_secs: u64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_base_ms: 30_000,
            retry_max_ms: 3_600_000,
            pause_error_rate: 0.5,
            pause_window: 100,
            tick_ms: 200,
            max_in_flight: 5_000,
            lease_secs: 120,
            workers: 256,
            unknown_outcome_secs: 86_400,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierConfig {
    pub name: String,
    /// `builtin:<name>` or a path to a `.wasm` component.
    pub plugin: String,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub allow_insecure_http: bool,
    #[serde(default = "CarrierConfig::default_max_per_second")]
    pub max_per_second: u32,
    #[serde(default = "CarrierConfig::default_max_concurrency")]
    pub max_concurrency: u32,
    /// The carrier deduplicates sends on Herald's message id: a send whose
    /// outcome is unknown is retried instead of held for reconciliation.
    #[serde(default)]
    pub idempotent: bool,
    /// Handed to the plugin through `config-get`.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

impl CarrierConfig {
    fn default_max_per_second() -> u32 {
        100
    }
    fn default_max_concurrency() -> u32 {
        16
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            server: ServerConfig::default(),
            log: LogConfig::default(),
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            contacts: ContactsConfig::default(),
            campaigns: CampaignsConfig::default(),
            compliance: ComplianceConfig::default(),
            bus: BusConfig::default(),
            dispatch: DispatchConfig::default(),
            template: "builtin:default".into(),
            template_settings: BTreeMap::new(),
            plugins: crate::plugin::PluginLimits::default(),
            carriers: vec![CarrierConfig {
                name: "log".into(),
                plugin: "builtin:log".into(),
                default: true,
                allowed_hosts: Vec::new(),
                allow_insecure_http: false,
                max_per_second: CarrierConfig::default_max_per_second(),
                max_concurrency: CarrierConfig::default_max_concurrency(),
                idempotent: false,
                settings: BTreeMap::new(),
            }],
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            public_url: None,
            max_webhook_bytes: 1024 * 1024,
            webhook_concurrency: 4,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
            migrate_on_start: true,
            sqlite_cache_mib: 32,
        }
    }
}

impl Default for ContactsConfig {
    fn default() -> Self {
        Self {
            country_codes: vec!["1".into()],
            max_import_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            nats_url: None,
            stream_prefix: "HERALD".into(),
            subject_prefix: "herald".into(),
        }
    }
}

impl Config {
    /// Loads the configuration. `file` is the explicit `--config`/`HERALD_CONFIG`
    /// path (which must exist); without it `config/default.toml` is read if present.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE)),
        }
        figment = figment.merge(Env::prefixed("HERALD_").ignore(&["CONFIG"]).split("__"));
        let config: Config = figment.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.into(),
            reason: reason.to_string(),
        };
        if let Some(url) = self.database.url.as_deref().filter(|u| !u.is_empty())
            && !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.database.sqlite_cache_mib == 0 {
            return Err(invalid("database.sqlite_cache_mib", "must be at least 1"));
        }
        if !(1..=i32::MAX as u32).contains(&self.campaigns.max_daily_limit) {
            return Err(invalid("campaigns.max_daily_limit", "must be between 1 and 2147483647"));
        }
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be positive"));
        }
        let dispatch = &self.dispatch;
        if dispatch.max_attempts == 0 {
            return Err(invalid("dispatch.max_attempts", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&dispatch.pause_error_rate) {
            return Err(invalid("dispatch.pause_error_rate", "must be between 0.0 and 1.0"));
        }
        if dispatch.tick_ms == 0 || dispatch.max_in_flight == 0 || dispatch.workers == 0 || dispatch.lease_secs == 0 {
            return Err(invalid(
                "dispatch",
                "tick_ms, max_in_flight, workers and lease_secs must be positive",
            ));
        }
        if self.contacts.max_import_bytes == 0 {
            return Err(invalid("contacts.max_import_bytes", "must be positive"));
        }
        if self.auth.jwt_secret.as_deref().is_some_and(|s| s.len() < 32) {
            return Err(invalid(
                "auth.jwt_secret",
                "must be at least 32 characters (HS256 needs 256 bits of key)",
            ));
        }
        for code in &self.contacts.country_codes {
            let digits_ok = !code.is_empty()
                && code.len() <= 3
                && code.bytes().all(|b| b.is_ascii_digit())
                && !code.starts_with('0');
            if code != "*" && !digits_ok {
                return Err(ConfigError::Invalid {
                    key: "contacts.country_codes".into(),
                    reason: format!("{code:?} is not a country calling code (1-3 digits) or \"*\""),
                });
            }
        }
        if self.contacts.country_codes.is_empty() {
            return Err(invalid("contacts.country_codes", "must name at least one code"));
        }
        self.validate_carriers()
    }

    fn validate_carriers(&self) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            key: "carriers".into(),
            reason,
        };
        if self.carriers.is_empty() {
            return Err(invalid("at least one carrier must be configured".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for carrier in &self.carriers {
            let valid_name = !carrier.name.is_empty()
                && carrier
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !valid_name {
                return Err(invalid(format!(
                    "carrier name {:?} must be lowercase letters, digits, '-' or '_'",
                    carrier.name
                )));
            }
            if !names.insert(carrier.name.as_str()) {
                return Err(invalid(format!("carrier {:?} is configured twice", carrier.name)));
            }
            if carrier.max_per_second == 0 || carrier.max_concurrency == 0 {
                return Err(invalid(format!(
                    "carrier {:?}: max_per_second and max_concurrency must be at least 1",
                    carrier.name
                )));
            }
        }
        match self.carriers.iter().filter(|c| c.default).count() {
            0 if self.carriers.len() > 1 => Err(invalid(
                "with several carriers, mark one `default = true` (campaigns with carrier null use it)".into(),
            )),
            0 | 1 => Ok(()),
            _ => Err(invalid("more than one carrier is marked default".into())),
        }
    }

    /// The carrier used by campaigns whose `carrier` is null: the one marked
    /// default, or the only one configured.
    pub fn default_carrier(&self) -> Option<&str> {
        self.carriers
            .iter()
            .find(|c| c.default)
            .or(if self.carriers.len() == 1 {
                self.carriers.first()
            } else {
                None
            })
            .map(|c| c.name.as_str())
    }

    /// Where compiled plugin code is kept: `plugins.cache_dir`, else
    /// `plugin-cache` in the data directory; `None` when set to an empty path.
    pub fn plugin_cache_dir(&self) -> Option<PathBuf> {
        match &self.plugins.cache_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir.clone()),
            None => Some(self.data_dir.join("plugin-cache")),
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!("sqlite://{}", self.data_dir.join("herald.db").display()),
        }
    }
}

/// Names the first bad key as written in this file (`server.bind`) and where the
/// value came from (`HERALD_SERVER__BIND`, or the file), rather than figment's
/// internal `default.server.bind`.
fn describe(errors: figment::Error) -> ConfigError {
    let e = errors
        .into_iter()
        .next()
        .expect("a figment error holds at least one error");
    let key = e.path.join(".").to_lowercase();
    let origin = e.metadata.as_ref().map(|m| match &m.source {
        Some(figment::Source::File(path)) => path.display().to_string(),
        _ if m.name.contains("environment") => format!("HERALD_{}", e.path.join("__").to_uppercase()),
        _ => m.name.to_string(),
    });
    ConfigError::Invalid {
        key: if key.is_empty() { "(top level)".into() } else { key },
        reason: match origin {
            Some(origin) => format!("{} (set by {origin})", e.kind),
            None => e.kind.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_name_the_log_carrier() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.default_carrier(), Some("log"));
        assert!(config.database_url().ends_with("data/herald.db"));
    }

    #[test]
    fn bad_country_code_names_the_key() {
        let mut config = Config::default();
        config.contacts.country_codes = vec!["+44".into()];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("contacts.country_codes"), "{err}");
    }

    #[test]
    fn shipped_default_file_matches_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/default.toml");
        let from_file: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file_exact(&path))
            .extract()
            .unwrap();
        let built_in = Config::default();
        assert_eq!(
            serde_json::to_value(&from_file).unwrap(),
            serde_json::to_value(&built_in).unwrap(),
            "config/default.toml documents the defaults; keep it in step with Config::default()"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns its own error type
    fn bad_value_names_the_key_and_its_origin() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_SERVER__BIND", "not-an-address");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.starts_with("invalid configuration: `server.bind`: "), "{err}");
            assert!(err.contains("HERALD_SERVER__BIND"), "{err}");
            assert_eq!(err.matches("server.bind").count(), 1, "{err}");
            Ok(())
        });
    }

    #[test]
    fn several_carriers_need_one_default() {
        let mut config = Config::default();
        let mut second = config.carriers[0].clone();
        second.name = "twilio".into();
        second.default = false;
        config.carriers[0].default = false;
        config.carriers.push(second);
        assert!(config.validate().unwrap_err().to_string().contains("default"));
        config.carriers[1].default = true;
        config.validate().unwrap();
        assert_eq!(config.default_carrier(), Some("twilio"));
    }

    #[test]
    fn empty_database_url_means_the_default_file() {
        let mut config = Config::default();
        config.database.url = Some(String::new());
        config.validate().unwrap();
        assert!(config.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn short_secret_is_refused() {
        let mut config = Config::default();
        config.auth.jwt_secret = Some("short".into());
        assert!(config.validate().unwrap_err().to_string().contains("auth.jwt_secret"));
    }
}

//! Bearer tokens: verification (HS256 secret, or an RS256/ES256 public key of an
//! identity provider), issuing HS256 tokens for `herald token`, and the secret
//! generated on first start.
//!
//! The algorithm comes from configuration only; a token's `alg` header must
//! match it, and `none` never parses.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::ids::UserId;

use crate::config::AuthConfig;

const SECRET_FILE: &str = "jwt_secret";
const FIRST_USER_FILE: &str = "first_user";
/// HS256 needs 256 bits of key; `auth.jwt_secret` has the same floor.
pub const MIN_SECRET_CHARS: usize = 32;

/// Why a request's token was refused. Deliberately coarse: callers answer 401
/// with the same body whatever the reason, and log the reason.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth.jwt_public_key: cannot read {path}: {source}")]
    ReadKey { path: PathBuf, source: std::io::Error },
    #[error("auth.jwt_public_key: {0} is neither an RSA nor a P-256 EC public key in PEM form")]
    BadKey(PathBuf),
    #[error("cannot keep the generated JWT secret in {path}: {source}")]
    Secret { path: PathBuf, source: std::io::Error },
    #[error("{0} holds fewer than {MIN_SECRET_CHARS} characters; delete it to generate a new secret")]
    WeakSecret(PathBuf),
    #[error("cannot sign a token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error(
        "tokens are issued by your identity provider (auth.jwt_public_key is set); herald token only signs HS256 tokens"
    )]
    ExternalIssuer,
}

/// What Herald reads from a verified token. `exp`, `nbf`, `iss` and `aud` (a string or
/// a list, RFC 7519 §4.1.3) are checked by the validation, not deserialized here.
#[derive(Debug, Deserialize)]
struct VerifiedClaims {
    sub: String,
}

#[derive(Debug, Serialize)]
struct IssuedClaims<'a> {
    sub: String,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Checks bearer tokens against the one configured key and algorithm.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// A public key wins over a secret: with an identity provider configured,
    /// only its tokens are accepted.
    pub fn new(config: &AuthConfig, secret: &str) -> Result<Self, AuthSetupError> {
        let (key, algorithm) = match &config.jwt_public_key {
            Some(path) => load_public_key(path)?,
            None => (DecodingKey::from_secret(secret.as_bytes()), Algorithm::HS256),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // The same leeway applies to `nbf` as to `exp`: a token from a clock
        // slightly ahead is accepted, one not valid for another minute is not.
        validation.leeway = 30;
        validation.validate_nbf = true;
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Ok(Self { key, validation })
    }

    /// The user id (`sub`) of a valid token.
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        let data = jsonwebtoken::decode::<VerifiedClaims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        data.claims
            .sub
            .parse()
            .map_err(|_| AuthError::Invalid("sub is not a UUID".into()))
    }

    /// The user id of an `Authorization` header value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<UserId, AuthError> {
        let value = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        self.verify(token.trim())
    }
}

fn load_public_key(path: &Path) -> Result<(DecodingKey, Algorithm), AuthSetupError> {
    let pem = fs::read(path).map_err(|source| AuthSetupError::ReadKey {
        path: path.into(),
        source,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    DecodingKey::from_ec_pem(&pem)
        .map(|key| (key, Algorithm::ES256))
        .map_err(|_| AuthSetupError::BadKey(path.into()))
}

/// Signs an HS256 token for `sub`, valid for `ttl`.
pub fn issue(config: &AuthConfig, secret: &str, sub: Uuid, ttl: Duration) -> Result<String, AuthSetupError> {
    if config.jwt_public_key.is_some() {
        return Err(AuthSetupError::ExternalIssuer);
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = IssuedClaims {
        sub: sub.to_string(),
        exp: now + ttl.as_secs(),
        iat: now,
        iss: config.issuer.as_deref(),
        aud: config.audience.as_deref(),
    };
    let key = EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)?)
}

/// The HS256 secret in force and where it came from.
pub struct Secret {
    pub value: String,
    /// Kept in the data directory (generated on some first start) rather than configured.
    pub from_data_dir: bool,
    /// True when this start generated it.
    pub generated: bool,
}

/// The configured secret, or the one kept in `data_dir`, generated (mode 0600) if absent.
pub fn resolve_secret(config: &AuthConfig, data_dir: &Path) -> Result<Secret, AuthSetupError> {
    if let Some(value) = &config.jwt_secret {
        return Ok(Secret {
            value: value.clone(),
            from_data_dir: false,
            generated: false,
        });
    }
    let path = data_dir.join(SECRET_FILE);
    let bytes: [u8; 48] = rand::rng().random();
    let fresh = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let (value, generated) = read_or_create(&path, &fresh)?;
    if value.len() < MIN_SECRET_CHARS {
        return Err(AuthSetupError::WeakSecret(path));
    }
    Ok(Secret {
        value,
        from_data_dir: true,
        generated,
    })
}

/// The user the start-up token is issued to, kept beside the generated secret so
/// the same token subject works across restarts.
pub fn first_user(data_dir: &Path) -> Result<Uuid, AuthSetupError> {
    let path = data_dir.join(FIRST_USER_FILE);
    let (value, _) = read_or_create(&path, &Uuid::now_v7().to_string())?;
    Uuid::parse_str(value.trim()).map_err(|e| AuthSetupError::Secret {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Reads `path`, or creates it owner-only with `fresh` if it does not exist.
/// The file appears complete or not at all: it is written aside, then linked
/// into place (which fails if another process created it first).
fn read_or_create(path: &Path, fresh: &str) -> Result<(String, bool), AuthSetupError> {
    let fail = |source| AuthSetupError::Secret {
        path: path.into(),
        source,
    };
    let read = || fs::read_to_string(path).map(|v| v.trim().to_string()).map_err(fail);
    if path.exists() {
        return Ok((read()?, false));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(fail)?;
    let aside = dir.join(format!(".{}.{}", std::process::id(), Uuid::new_v4().simple()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&aside)
        .and_then(|mut file| file.write_all(fresh.as_bytes()).and_then(|()| file.sync_all()))
        .and_then(|()| fs::hard_link(&aside, path));
    let _ = fs::remove_file(&aside);
    match written {
        Ok(()) => Ok((fresh.to_string(), true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((read()?, false)),
        Err(e) => Err(fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_token_verifies_and_yields_sub() {
        let config = AuthConfig::default();
        let sub = UserId::new();
        let token = issue(&config, SECRET, sub.as_uuid(), Duration::from_secs(60)).unwrap();
        let verifier = Verifier::new(&config, SECRET).unwrap();
        assert_eq!(verifier.verify_header(Some(&format!("Bearer {token}"))).unwrap(), sub);
        assert!(matches!(
            verifier.verify_header(Some(&format!("Basic {token}"))),
            Err(AuthError::Missing)
        ));
        let other = Verifier::new(&config, "another-secret-another-secret-xx").unwrap();
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_set() {
        let config = AuthConfig {
            issuer: Some("https://id.example".into()),
            audience: Some("herald".into()),
            ..Default::default()
        };
        let token = issue(&AuthConfig::default(), SECRET, Uuid::now_v7(), Duration::from_secs(60)).unwrap();
        assert!(Verifier::new(&config, SECRET).unwrap().verify(&token).is_err());
        let token = issue(&config, SECRET, Uuid::now_v7(), Duration::from_secs(60)).unwrap();
        assert!(Verifier::new(&config, SECRET).unwrap().verify(&token).is_ok());
    }

    #[test]
    fn generated_secret_is_kept_owner_only_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve_secret(&AuthConfig::default(), dir.path()).unwrap();
        assert!(first.generated && first.value.len() >= 32);
        let again = resolve_secret(&AuthConfig::default(), dir.path()).unwrap();
        assert!(!again.generated);
        assert_eq!(first.value, again.value);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(SECRET_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(first_user(dir.path()).unwrap(), first_user(dir.path()).unwrap());
    }

    #[test]
    fn a_truncated_secret_file_is_refused_not_used() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SECRET_FILE), "").unwrap();
        let err = resolve_secret(&AuthConfig::default(), dir.path()).err().unwrap();
        assert!(matches!(err, AuthSetupError::WeakSecret(_)), "{err}");
    }
}

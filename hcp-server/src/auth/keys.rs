//! The identity provider's metadata (OIDC discovery) and signing keys (JWKS), cached.
//!
//! # Behavior
//! - Discovery reads `{issuer}/.well-known/openid-configuration`; its `issuer` must name the
//!   configured issuer, and its `jwks_uri` must be https (http for loopback hosts only).
//! - Keys are cached and shared by every request. A token whose `kid` is not cached causes at
//!   most one refetch per cooldown (single-flight: concurrent misses wait for the same fetch), so
//!   a flood of random `kid`s cannot hammer the provider. A rotated key is picked up by that
//!   refetch.
//! - A failed fetch keeps the cached keys: tokens signed with them still validate while the
//!   provider is down.
//! - A background task refreshes the keys every refresh interval and retries a failed first load
//!   with backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

use super::settings::check_url;

/// Why one background load ended.
enum Refresh {
    /// The cache was dropped: the refresher stops.
    Dropped,
    /// The provider did not answer usable keys: retried.
    Failed(String),
}

/// The largest discovery or JWKS document read.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// How often requests may retry the first load while no key has loaded.
const UNLOADED_RETRY: Duration = Duration::from_secs(2);

/// What the provider publishes in its discovery document (the parts HCP uses).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) issuer: String,
    pub(crate) jwks_uri: String,
    #[serde(default)]
    pub(crate) authorization_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) token_endpoint: Option<String>,
}

/// One verification key.
pub(crate) struct Key {
    pub(crate) key: DecodingKey,
    pub(crate) family: AlgorithmFamily,
    /// The algorithm the JWK pins, when it names one.
    pub(crate) alg: Option<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    /// Keys published without a `kid`.
    unnamed: Vec<Arc<Key>>,
    loaded: bool,
}

/// Why no key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// The provider publishes no key with this id (after a refetch, or within the cooldown).
    UnknownKid,
    /// No key was ever loaded: the provider has not answered yet.
    Unavailable(String),
}

/// The provider's metadata and keys.
pub(crate) struct KeyCache {
    http: reqwest::Client,
    issuer: String,
    discovery_url: String,
    cooldown: Duration,
    metadata: RwLock<Option<Arc<Metadata>>>,
    keys: RwLock<Arc<KeySet>>,
    /// Serialises fetches (single-flight).
    fetching: tokio::sync::Mutex<()>,
    /// When the last fetch caused by an unknown `kid` started.
    last_miss_fetch: Mutex<Option<Instant>>,
    /// When a request last tried to load keys while none had loaded.
    last_load_attempt: Mutex<Option<Instant>>,
    /// Counts successful key loads; a waiter that sees it change knows a fetch happened.
    generation: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl KeyCache {
    pub(crate) fn new(http: reqwest::Client, issuer: &str, cooldown: Duration) -> KeyCache {
        KeyCache {
            http,
            issuer: issuer.to_string(),
            discovery_url: format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            ),
            cooldown,
            metadata: RwLock::new(None),
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetching: tokio::sync::Mutex::new(()),
            last_miss_fetch: Mutex::new(None),
            last_load_attempt: Mutex::new(None),
            generation: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Returns the issuer tokens must name: the discovery document's, once it is known.
    pub(crate) fn expected_issuer(&self) -> String {
        read(&self.metadata)
            .as_ref()
            .map_or_else(|| self.issuer.clone(), |m| m.issuer.clone())
    }

    /// Returns the discovery document, fetching it when it is not known yet.
    pub(crate) async fn metadata(&self) -> Result<Arc<Metadata>, String> {
        if let Some(m) = read(&self.metadata).clone() {
            return Ok(m);
        }
        let _guard = self.fetching.lock().await;
        if let Some(m) = read(&self.metadata).clone() {
            return Ok(m);
        }
        self.discover().await
    }

    /// Returns the key for `kid` (`None`: the token names no key).
    pub(crate) async fn key(&self, kid: Option<&str>) -> Result<Arc<Key>, KeyError> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(k) = self.lookup(kid) {
            return Ok(k);
        }
        let loaded = self.loaded();
        // Before the first load, retry often (the provider may just be starting); after it, an
        // unknown kid refetches at most once per cooldown.
        if !self.fetch_due(loaded) {
            return Err(self.miss());
        }
        let _guard = self.fetching.lock().await;
        if self.generation.load(Ordering::Acquire) != generation {
            // Another request fetched while this one waited: its result answers this one too.
            return self.lookup(kid).ok_or_else(|| self.miss());
        }
        if !self.claim_fetch(loaded) {
            return self.lookup(kid).ok_or_else(|| self.miss());
        }
        if loaded {
            tracing::info!(target: "hcp::auth", "a token names a signing key not in the cache; refetching the provider's keys");
        }
        if let Err(e) = self.fetch_keys().await {
            tracing::warn!(target: "hcp::auth", error = %e, "cannot fetch the identity provider's keys; cached keys stay in use");
        }
        self.lookup(kid).ok_or_else(|| self.miss())
    }

    /// Fetches the discovery document and the keys now (the background refresh).
    pub(crate) async fn refresh(&self) -> Result<(), String> {
        let _guard = self.fetching.lock().await;
        self.discover().await?;
        self.fetch_keys().await
    }

    /// Returns true once keys have loaded.
    pub(crate) fn loaded(&self) -> bool {
        read(&self.keys).loaded
    }

    /// Starts the background refresh: retries the first load with backoff, then refreshes every
    /// `interval`. It stops when the cache is dropped.
    pub(crate) fn spawn_refresher(self: &Arc<Self>, interval: Duration) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<KeyCache> = Arc::downgrade(self);
        // A failed load is retried 1 s, 2 s, 4 s, ... apart, at most 30 s (or the refresh
        // interval, when shorter), for as long as the cache lives.
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(interval.clamp(Duration::from_secs(1), Duration::from_secs(30)))
            .without_max_times();
        handle.spawn(async move {
            loop {
                let load = || {
                    let weak = weak.clone();
                    async move {
                        // No strong reference is held between attempts, so a dropped cache
                        // ends the task.
                        let cache = weak.upgrade().ok_or(Refresh::Dropped)?;
                        cache.refresh().await.map_err(Refresh::Failed)
                    }
                };
                let loaded = load
                    .retry(backoff)
                    .sleep(tokio::time::sleep)
                    .when(|e| matches!(e, Refresh::Failed(_)))
                    .notify(|e, _| {
                        if let Refresh::Failed(e) = e {
                            tracing::warn!(target: "hcp::auth", error = %e, "cannot load the identity provider's keys; retrying");
                        }
                    })
                    .await;
                if loaded.is_err() {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        });
    }

    fn lookup(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        let keys = read(&self.keys).clone();
        match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            // Without a kid, only an unambiguous key set answers.
            None => {
                let all: Vec<&Arc<Key>> = keys.by_kid.values().chain(keys.unnamed.iter()).collect();
                (all.len() == 1).then(|| all[0].clone())
            }
        }
    }

    fn miss(&self) -> KeyError {
        if self.loaded() {
            KeyError::UnknownKid
        } else {
            KeyError::Unavailable(
                lock(&self.last_error)
                    .clone()
                    .unwrap_or_else(|| "the identity provider's keys have not loaded yet".into()),
            )
        }
    }

    fn slot(&self, loaded: bool) -> (&Mutex<Option<Instant>>, Duration) {
        if loaded {
            (&self.last_miss_fetch, self.cooldown)
        } else {
            (&self.last_load_attempt, self.cooldown.min(UNLOADED_RETRY))
        }
    }

    fn fetch_due(&self, loaded: bool) -> bool {
        let (slot, wait) = self.slot(loaded);
        lock(slot).is_none_or(|t| t.elapsed() >= wait)
    }

    fn claim_fetch(&self, loaded: bool) -> bool {
        let (slot, wait) = self.slot(loaded);
        let mut last = lock(slot);
        if last.is_some_and(|t| t.elapsed() < wait) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Fetches and checks the discovery document. The caller holds `fetching`.
    async fn discover(&self) -> Result<Arc<Metadata>, String> {
        let result = async {
            let body = self.get(&self.discovery_url).await?;
            let meta: Metadata = serde_json::from_slice(&body).map_err(|e| {
                format!(
                    "the discovery document at {} is not valid: {e}",
                    self.discovery_url
                )
            })?;
            if meta.issuer.trim_end_matches('/') != self.issuer.trim_end_matches('/') {
                return Err(format!(
                    "the discovery document at {} names issuer `{}`, not the configured `{}` \
                     (OIDC_ISSUER_URL)",
                    self.discovery_url, meta.issuer, self.issuer
                ));
            }
            check_url("jwks_uri", &meta.jwks_uri).map_err(|e| e.message().to_string())?;
            Ok(Arc::new(meta))
        }
        .await;
        match result {
            Ok(meta) => {
                *write(&self.metadata) = Some(meta.clone());
                Ok(meta)
            }
            Err(e) => {
                *lock(&self.last_error) = Some(e.clone());
                let cached = read(&self.metadata).clone();
                match cached {
                    // A known document stays in use while the provider is down.
                    Some(m) => {
                        tracing::warn!(target: "hcp::auth", error = %e, "cannot refresh the discovery document; the cached one stays in use");
                        Ok(m)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Fetches the keys and replaces the cached set. The caller holds `fetching`.
    async fn fetch_keys(&self) -> Result<(), String> {
        let cached = read(&self.metadata).clone();
        let meta = match cached {
            Some(m) => m,
            None => self.discover().await?,
        };
        let result = async {
            let body = self.get(&meta.jwks_uri).await?;
            parse_jwks(&body).map_err(|e| format!("the key set at {} {e}", meta.jwks_uri))
        }
        .await;
        match result {
            Ok(set) => {
                tracing::info!(target: "hcp::auth", keys = set.by_kid.len() + set.unnamed.len(), "loaded the identity provider's signing keys");
                *write(&self.keys) = Arc::new(set);
                *lock(&self.last_error) = None;
                self.generation.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                *lock(&self.last_error) = Some(e.clone());
                Err(e)
            }
        }
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {}", without_url(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_DOCUMENT as u64)
        {
            return Err(format!("{url} answered a document larger than 1 MiB"));
        }
        let mut body = Vec::new();
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("cannot read {url}: {}", without_url(&e)))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT {
                return Err(format!("{url} answered a document larger than 1 MiB"));
            }
        }
        Ok(body)
    }
}

/// Describes a reqwest error without its URL (the caller names the URL once).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_decode() || e.is_body() {
        "the answer could not be read"
    } else {
        "the request failed"
    }
    .to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

/// Parses a JWKS document, keeping the signature keys HCP can use (asymmetric, `use` absent or
/// `sig`); others are skipped.
fn parse_jwks(body: &[u8]) -> Result<KeySet, String> {
    #[derive(Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("is not a JWKS: {e}"))?;
    let mut set = KeySet {
        loaded: true,
        ..KeySet::default()
    };
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            // Symmetric and unknown key types never verify tokens here.
            _ => continue,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::UNKNOWN_ALGORITHM) => continue,
            Some(a) => match Algorithm::try_from(a) {
                Ok(a) if a.family() == family => Some(a),
                _ => continue,
            },
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let key = Arc::new(Key { key, family, alg });
        match jwk.common.key_id {
            Some(kid) => {
                set.by_kid.insert(kid, key);
            }
            None => set.unnamed.push(key),
        }
    }
    Ok(set)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_keeps_asymmetric_signature_keys_only() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig",
             "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
             "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "e1", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "RSA", "kid": "bad-alg", "alg": "ES256", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird", "kid": "w"}
        ]});
        let set = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let mut kids: Vec<&String> = set.by_kid.keys().collect();
        kids.sort();
        assert_eq!(kids, ["e1", "r1"]);
        assert_eq!(set.by_kid["r1"].alg, Some(Algorithm::RS256));
        assert_eq!(set.by_kid["e1"].family, AlgorithmFamily::Ec);
        assert!(parse_jwks(b"[]").is_err());
    }
}

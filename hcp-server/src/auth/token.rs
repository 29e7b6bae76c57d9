//! Token validation per RFC 8725: an explicit allow-list of asymmetric algorithms checked before
//! any key lookup, the signature against the provider's published key, `iss` exactly, `aud`
//! required and matching, `exp` required, `nbf` honoured, `iat` not in the future, a small
//! leeway. The signature and the registered claim checks are `jsonwebtoken`'s; this module
//! decides what to accept, checks `iat` and the shape of the roles and projects claims (JSON
//! arrays of strings), and says which check failed, never echoing the token.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::Value;

use super::keys::{KeyCache, KeyError};
use super::settings::{OidcSettings, StringClaim};

/// The algorithms HCP accepts. `none` and every HS* are refused before any key lookup.
pub(crate) const ALLOWED_ALGORITHMS: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// The longest token accepted.
const MAX_TOKEN: usize = 16 * 1024;
/// The longest `kid` accepted.
const MAX_KID: usize = 256;

/// Why a token was refused. The message names the failed check and never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// The token failed a check (`invalid_token`).
    Invalid(String),
    /// The provider's keys are not available, so no token can be checked yet.
    ProviderUnavailable(String),
}

impl TokenError {
    fn invalid(msg: impl Into<String>) -> Self {
        TokenError::Invalid(msg.into())
    }
}

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) subject: String,
    pub(crate) roles: BTreeSet<String>,
    pub(crate) projects: BTreeSet<String>,
    /// The token's `exp` (seconds since the epoch).
    pub(crate) expires_at: i64,
    /// The token's `nonce`, for ID tokens.
    pub(crate) nonce: Option<String>,
    /// The token's audiences.
    pub(crate) audiences: Vec<String>,
    /// The token's authorized party (`azp`), for ID tokens.
    pub(crate) azp: Option<String>,
}

/// Validates tokens against the provider's keys.
pub(crate) struct Validator {
    settings: OidcSettings,
    keys: std::sync::Arc<KeyCache>,
}

impl Validator {
    pub(crate) fn new(settings: OidcSettings, keys: std::sync::Arc<KeyCache>) -> Self {
        Validator { settings, keys }
    }

    /// Validates `token` and returns who it names.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] naming the failed check; [`TokenError::ProviderUnavailable`] when
    /// no key has loaded yet.
    pub(crate) async fn validate(&self, token: &str) -> Result<Identity, TokenError> {
        if token.len() > MAX_TOKEN {
            return Err(TokenError::invalid(format!(
                "the token is longer than {MAX_TOKEN} bytes"
            )));
        }
        let header = header_of(token)?;
        let Some((alg_name, alg)) = ALLOWED_ALGORITHMS
            .iter()
            .find(|(_, a)| *a == header.alg)
            .copied()
        else {
            return Err(not_allowed(&format!("{:?}", header.alg)));
        };
        if header.crit.is_some() {
            return Err(TokenError::invalid(
                "the token header has critical extensions (`crit`) this service does not support",
            ));
        }
        let kid = match header.kid.as_deref() {
            None => None,
            Some(k) if valid_kid(k) => Some(k),
            Some(_) => return Err(malformed_kid()),
        };
        let key = match self.keys.key(kid).await {
            Ok(k) => k,
            Err(KeyError::UnknownKid) => {
                return Err(TokenError::invalid(match kid {
                    Some(_) => {
                        "the token's `kid` names no signing key the identity provider \
                                publishes"
                    }
                    None => {
                        "the token has no `kid` and the identity provider publishes several \
                             keys"
                    }
                }));
            }
            Err(KeyError::Unavailable(e)) => return Err(TokenError::ProviderUnavailable(e)),
        };
        if key.family != alg.family() || key.alg.is_some_and(|a| a != alg) {
            return Err(TokenError::invalid(format!(
                "the algorithm `{alg_name}` does not match the signing key the `kid` names"
            )));
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[self.keys.expected_issuer()]);
        let mut audiences = vec![self.settings.client_id.clone()];
        audiences.extend(self.settings.audiences.iter().cloned());
        validation.set_audience(&audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = self.settings.leeway.as_secs();
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &validation)
            .map_err(|e| TokenError::Invalid(describe(e.kind())))?;
        check_issued_at(
            &data.claims,
            jsonwebtoken::get_current_timestamp(),
            self.settings.leeway.as_secs(),
        )?;
        self.identity(&data.claims)
    }

    fn identity(&self, claims: &Value) -> Result<Identity, TokenError> {
        let s = &self.settings;
        let subject = match claim(claims, &s.subject_claim) {
            Some(Value::String(v)) if !v.is_empty() && v.len() <= 256 => v.clone(),
            Some(_) => {
                return Err(TokenError::invalid(format!(
                    "the `{}` claim is not a name",
                    s.subject_claim
                )));
            }
            None => {
                return Err(TokenError::invalid(format!(
                    "the token has no `{}` claim",
                    s.subject_claim
                )));
            }
        };
        Ok(Identity {
            subject,
            roles: names(
                claims,
                &s.roles_claim,
                s.roles_string,
                "OIDC_ROLES_CLAIM_STRING",
            )?,
            projects: names(
                claims,
                &s.projects_claim,
                s.projects_string,
                "OIDC_PROJECTS_CLAIM_STRING",
            )?,
            expires_at: claims.get("exp").and_then(Value::as_i64).unwrap_or(0),
            nonce: claims
                .get("nonce")
                .and_then(Value::as_str)
                .map(str::to_string),
            audiences: audiences(claims.get("aud")),
            azp: claims
                .get("azp")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// Decodes the token's header without trusting it: `jsonwebtoken::decode_header` reads it (the
/// same reader `jsonwebtoken::decode` verifies with), and the header's JSON is read once more by
/// [`crate::limits::parse_unique_keys`] to refuse duplicate keys (serde_json keeps the last of
/// two `alg`s, so a reader that keeps the first would disagree) and to name what a header
/// jsonwebtoken cannot type holds (`"alg": "none"` is no [`Algorithm`]).
fn header_of(token: &str) -> Result<Header, TokenError> {
    let typed = jsonwebtoken::decode_header(token);
    if typed.is_err() && token.split('.').count() != 3 {
        return Err(TokenError::invalid(
            "the token is not a JWS compact serialization (three base64url parts)",
        ));
    }
    // The first part is the header; decode_header has split the same way.
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::invalid("the token header is not base64url"))?;
    let raw = match crate::limits::parse_unique_keys(&bytes) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(TokenError::invalid(
                "the token header is not a JSON object with unique keys",
            ));
        }
    };
    typed.map_err(|_| match (raw.get("alg"), raw.get("kid")) {
        (None, _) => TokenError::invalid("the token header has no `alg`"),
        (Some(Value::String(a)), _) if !ALLOWED_ALGORITHMS.iter().any(|(n, _)| n == a) => {
            not_allowed(a)
        }
        (Some(Value::String(_)), Some(k)) if !k.is_string() => malformed_kid(),
        (Some(Value::String(_)), _) => {
            TokenError::invalid("the token header has a field of the wrong type")
        }
        (Some(_), _) => TokenError::invalid("the token header's `alg` is not a string"),
    })
}

/// Refuses an algorithm outside [`ALLOWED_ALGORITHMS`], naming it when it is printable.
fn not_allowed(alg: &str) -> TokenError {
    TokenError::invalid(format!(
        "the algorithm `{}` is not allowed; allowed: {}",
        printable(alg),
        ALLOWED_ALGORITHMS.map(|(n, _)| n).join(", ")
    ))
}

fn malformed_kid() -> TokenError {
    TokenError::invalid(
        "the token header's `kid` is malformed (a short printable string without quotes or \
         backslashes is expected)",
    )
}

/// A `kid` is at most 256 printable ASCII characters without quotes or backslashes; anything
/// else is refused before a lookup, so it never reaches a log, a header or the provider.
fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID
        && kid
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'\'')
}

/// Returns `s` if it is a short printable word, else a placeholder (it is echoed in errors).
fn printable(s: &str) -> &str {
    if s.len() <= 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        s
    } else {
        "(unprintable)"
    }
}

fn describe(kind: &JwtErrorKind) -> String {
    match kind {
        JwtErrorKind::InvalidSignature => "the signature does not verify".into(),
        JwtErrorKind::ExpiredSignature => "the token has expired (`exp`)".into(),
        JwtErrorKind::ImmatureSignature => "the token is not valid yet (`nbf`)".into(),
        JwtErrorKind::InvalidIssuer => "the issuer (`iss`) is not the configured one".into(),
        JwtErrorKind::InvalidAudience => {
            "the audience (`aud`) does not name this service's client id".into()
        }
        JwtErrorKind::MissingRequiredClaim(c) => {
            format!("the token has no `{}` claim", printable(c))
        }
        JwtErrorKind::InvalidClaimFormat(c) => {
            format!("the `{}` claim is malformed", printable(c))
        }
        JwtErrorKind::InvalidAlgorithm => "the algorithm does not match the signing key".into(),
        JwtErrorKind::InvalidRsaKey(_)
        | JwtErrorKind::InvalidEcdsaKey
        | JwtErrorKind::InvalidEddsaKey
        | JwtErrorKind::InvalidKeyFormat => {
            "the identity provider's signing key cannot verify this token".into()
        }
        JwtErrorKind::Base64(_) | JwtErrorKind::Utf8(_) | JwtErrorKind::InvalidToken => {
            "the token is not well-formed base64url JSON".into()
        }
        JwtErrorKind::Json(_) => "the token's claims are not a JSON object".into(),
        _ => "the token is invalid".into(),
    }
}

/// Reads a claim by name or dotted path (`realm_access.roles`). A name with a dot that exists
/// as such wins over the path (`https://example.com/roles`, as Auth0 names claims).
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    claims.get(path).or_else(|| claims.pointer(&pointer(path)))
}

/// Translates a dotted claim path into a JSON pointer (RFC 6901): each dot-separated segment
/// becomes one reference token, with `~` written `~0` and `/` written `~1`, so
/// `a/b.c~d` reads the key `c~d` inside the key `a/b`.
fn pointer(path: &str) -> String {
    path.split('.')
        .fold(String::with_capacity(path.len() + 8), |mut out, segment| {
            out.push('/');
            out.push_str(&segment.replace('~', "~0").replace('/', "~1"));
            out
        })
}

/// Refuses a token issued (`iat`) more than `leeway` seconds after `now`: no honest provider
/// issues tokens in the future, and such a token would outlive its stated lifetime. A token
/// without `iat` passes (access tokens need not carry it); a non-numeric `iat` is malformed.
fn check_issued_at(claims: &Value, now: u64, leeway: u64) -> Result<(), TokenError> {
    let Some(iat) = claims.get("iat") else {
        return Ok(());
    };
    let Some(iat) = iat.as_f64().filter(|v| v.is_finite()) else {
        return Err(TokenError::invalid("the `iat` claim is malformed"));
    };
    // Seconds since the epoch fit an f64 exactly far beyond any real date.
    if iat > now.saturating_add(leeway) as f64 {
        return Err(TokenError::invalid(
            "the token was issued in the future (`iat`)",
        ));
    }
    Ok(())
}

/// The most names a roles or projects claim may carry.
const MAX_NAMES: usize = 1000;
/// The longest name accepted in a roles or projects claim.
const MAX_NAME: usize = 256;

/// Reads a list claim (roles, projects): a JSON array of strings; one string only as
/// `string_claim` says (the variable `setting` names how). An absent or `null` claim is no
/// names. Empty names are ignored.
fn names(
    claims: &Value,
    path: &str,
    string_claim: StringClaim,
    setting: &str,
) -> Result<BTreeSet<String>, TokenError> {
    let list: Vec<String> = match claim(claims, path) {
        None | Some(Value::Null) => return Ok(BTreeSet::new()),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len().min(MAX_NAMES));
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    _ => {
                        return Err(TokenError::invalid(format!(
                            "the `{path}` claim must be a JSON array of strings; it holds \
                             something else"
                        )));
                    }
                }
            }
            out
        }
        Some(Value::String(s)) => string_claim.split(s).ok_or_else(|| {
            TokenError::invalid(format!(
                "the `{path}` claim is a string; this service accepts a JSON array of strings \
                 (an operator can set {setting} for an identity provider that sends one string)"
            ))
        })?,
        Some(_) => {
            return Err(TokenError::invalid(format!(
                "the `{path}` claim must be a JSON array of strings"
            )));
        }
    };
    if list.len() > MAX_NAMES || list.iter().any(|n| n.len() > MAX_NAME) {
        return Err(TokenError::invalid(format!(
            "the `{path}` claim holds more than {MAX_NAMES} names or a name longer than \
             {MAX_NAME} bytes"
        )));
    }
    Ok(list.into_iter().filter(|n| !n.is_empty()).collect())
}

/// Reads `aud`: one string (one audience, spaces and all) or an array of strings.
fn audiences(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn list_claims_are_arrays_of_strings_at_a_name_or_path() {
        let c = json!({"roles": ["a", "b", ""], "realm_access": {"roles": ["r"]}, "none": null});
        let read = |path| names(&c, path, StringClaim::Refuse, "X");
        assert_eq!(read("roles").unwrap(), set(&["a", "b"]));
        assert_eq!(read("realm_access.roles").unwrap(), set(&["r"]));
        assert!(read("missing").unwrap().is_empty());
        assert!(read("none").unwrap().is_empty());
    }

    #[test]
    fn list_claims_of_other_shapes_are_refused() {
        for bad in [
            json!({"roles": ["a", 3]}),
            json!({"roles": [["hcp-operator"]]}),
            json!({"roles": {"hcp-operator": true}}),
            json!({"roles": 7}),
            json!({"roles": true}),
            json!({"roles": vec!["r"; MAX_NAMES + 1]}),
            json!({"roles": ["x".repeat(MAX_NAME + 1)]}),
        ] {
            let e = names(&bad, "roles", StringClaim::Comma, "X").unwrap_err();
            assert!(
                matches!(&e, TokenError::Invalid(m) if m.contains("`roles` claim")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn string_claims_are_refused_unless_configured() {
        let c = json!({"roles": "x,hcp-operator", "scp": " a  b ", "one": "x y"});
        let e = names(&c, "roles", StringClaim::Refuse, "OIDC_ROLES_CLAIM_STRING").unwrap_err();
        let TokenError::Invalid(m) = e else {
            panic!("{e:?}")
        };
        assert!(
            m.contains("OIDC_ROLES_CLAIM_STRING") && m.contains("array"),
            "{m}"
        );
        assert_eq!(
            names(&c, "roles", StringClaim::Single, "X").unwrap(),
            set(&["x,hcp-operator"])
        );
        assert_eq!(
            names(&c, "roles", StringClaim::Space, "X").unwrap(),
            set(&["x,hcp-operator"])
        );
        assert_eq!(
            names(&c, "roles", StringClaim::Comma, "X").unwrap(),
            set(&["x", "hcp-operator"])
        );
        assert_eq!(
            names(&c, "scp", StringClaim::Space, "X").unwrap(),
            set(&["a", "b"])
        );
        assert_eq!(
            names(&c, "one", StringClaim::Single, "X").unwrap(),
            set(&["x y"])
        );
    }

    #[test]
    fn iat_in_the_future_beyond_the_leeway_is_refused() {
        let now = 1_700_000_000;
        for ok in [
            json!({}),
            json!({"iat": now - 3600}),
            json!({"iat": now + 60}),
            json!({"iat": (now + 59) as f64 + 0.5}),
        ] {
            assert_eq!(check_issued_at(&ok, now, 60), Ok(()), "{ok}");
        }
        for bad in [json!({"iat": now + 61}), json!({"iat": u64::MAX})] {
            let e = check_issued_at(&bad, now, 60).unwrap_err();
            assert_eq!(
                e,
                TokenError::invalid("the token was issued in the future (`iat`)")
            );
        }
        for malformed in [
            json!({"iat": "soon"}),
            json!({"iat": null}),
            json!({"iat": [1]}),
        ] {
            assert_eq!(
                check_issued_at(&malformed, now, 60),
                Err(TokenError::invalid("the `iat` claim is malformed")),
                "{malformed}"
            );
        }
    }

    #[test]
    fn aud_string_is_one_audience() {
        assert_eq!(audiences(Some(&json!("a b,c"))), ["a b,c"]);
        assert_eq!(audiences(Some(&json!(["a", "b"]))), ["a", "b"]);
        assert!(audiences(None).is_empty());
    }

    #[test]
    fn malformed_kids_and_headers_are_refused() {
        assert!(valid_kid("abc-123_x.y/z+="));
        assert!(valid_kid("../../etc/passwd"));
        for bad in ["", "a\"b", "a'b", "a\\b", "a b", "é", &"x".repeat(300)] {
            assert!(!valid_kid(bad), "{bad}");
        }
        assert!(matches!(header_of("a.b"), Err(TokenError::Invalid(_))));
        assert!(matches!(header_of("!!.b.c"), Err(TokenError::Invalid(_))));
        assert_eq!(printable("none"), "none");
        assert_eq!(printable("x\"y"), "(unprintable)");
    }

    fn token_with_header(header: &str) -> String {
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(header))
    }

    fn refusal(header: &str) -> String {
        match header_of(&token_with_header(header)) {
            Err(TokenError::Invalid(m)) => m,
            other => panic!("{header}: {other:?}"),
        }
    }

    #[test]
    fn headers_are_read_by_jsonwebtoken_and_refused_by_name() {
        let h = header_of(&token_with_header(
            r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
        ))
        .unwrap();
        assert_eq!(h.alg, Algorithm::RS256);
        assert_eq!(h.kid.as_deref(), Some("k1"));
        for (header, says) in [
            (r#"{"alg":"RS256","alg":"none"}"#, "unique keys"),
            (r#"{"alg":"none","alg":"RS256"}"#, "unique keys"),
            (r#"{"alg":"RS256","kid":"a","kid":"b"}"#, "unique keys"),
            (r#"{"alg":"none"}"#, "`none` is not allowed"),
            (r#"{"alg":"XYZ999"}"#, "`XYZ999` is not allowed"),
            (
                r#"{"alg":"RS256 OR 1=1"}"#,
                "`(unprintable)` is not allowed",
            ),
            (r#"{"kid":"k1"}"#, "has no `alg`"),
            (r#"{"alg":7}"#, "`alg` is not a string"),
            (r#"{"alg":"RS256","kid":7}"#, "`kid` is malformed"),
            (r#"{"alg":"RS256","crit":"x"}"#, "wrong type"),
            (r#"["alg"]"#, "JSON object"),
        ] {
            let m = refusal(header);
            assert!(m.contains(says), "{header}: {m}");
        }
        assert!(matches!(
            header_of("a.b.c.d"),
            Err(TokenError::Invalid(m)) if m.contains("three base64url parts")
        ));
    }

    #[test]
    fn dotted_claim_paths_become_escaped_json_pointers() {
        assert_eq!(pointer("roles"), "/roles");
        assert_eq!(pointer("realm_access.roles"), "/realm_access/roles");
        assert_eq!(pointer("a/b.c~d"), "/a~1b/c~0d");
        assert_eq!(pointer("~1"), "/~01");
        let c = json!({
            "a/b": {"c~d": ["x"], "~1": ["wrong"]},
            "https://hcp.example.com/roles": ["namespaced"],
            "resource_access": {"hcp": {"roles": ["deep"]}},
        });
        assert_eq!(claim(&c, "a/b.c~d"), Some(&json!(["x"])));
        assert_eq!(
            claim(&c, "https://hcp.example.com/roles"),
            Some(&json!(["namespaced"]))
        );
        assert_eq!(
            claim(&c, "resource_access.hcp.roles"),
            Some(&json!(["deep"]))
        );
        assert_eq!(claim(&c, "a/b.~0"), None);
    }
}

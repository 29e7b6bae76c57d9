//! Authentication settings: which OIDC provider to trust, which claims carry roles and projects,
//! which role grants what, and which routes stay public. Read from the environment by
//! [`crate::ServeOptions::apply_env`].

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use hcp_core::{Error, Result, SecretString, Secrets, parse_duration};

/// The role of the Hyper-V service's `/api/v1` routes when neither `OIDC_HYPERV_ROLE` nor
/// `OIDC_ROLE_NAME` is set.
pub const DEFAULT_HYPERV_ROLE: &str = "vm-admin";
/// The tenant role when `OIDC_TENANT_ROLE` is not set.
pub const DEFAULT_TENANT_ROLE: &str = "hcp-tenant";
/// The operator role when `OIDC_OPERATOR_ROLE` is not set.
pub const DEFAULT_OPERATOR_ROLE: &str = "hcp-operator";
/// The routes that answer without a token when `HCP_PUBLIC_ROUTES` is not set.
pub const DEFAULT_PUBLIC_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];
/// The routes `HCP_PUBLIC_ROUTES` may make public.
pub const PUBLICABLE_ROUTES: [&str; 5] =
    ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"];

/// How the service authenticates callers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthSettings {
    /// The OIDC provider to trust; `None` is development mode: authentication off, loopback only.
    pub oidc: Option<OidcSettings>,
    /// The routes that answer without a token (`/healthz`, `/readyz`, `/metrics` by default).
    pub public_routes: Vec<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            oidc: None,
            public_routes: DEFAULT_PUBLIC_ROUTES
                .iter()
                .map(|r| r.to_string())
                .collect(),
        }
    }
}

impl AuthSettings {
    /// Returns true when callers must present a token.
    pub fn enabled(&self) -> bool {
        self.oidc.is_some()
    }

    /// Reads the settings from the environment (see `docs/configuration.md`, "Authentication").
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the variable: an issuer without a client id
    /// (or the reverse), an issuer or redirect URL that is not https (http is allowed for
    /// loopback hosts only), an unknown public route, a bad duration.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<AuthSettings> {
        let get = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut settings = AuthSettings::default();
        if let Some(v) = env("HCP_PUBLIC_ROUTES") {
            settings.public_routes = parse_public_routes(&v)?;
        }
        let (issuer, client_id) = match (get("OIDC_ISSUER_URL"), get("OIDC_CLIENT_ID")) {
            (None, None) => return Ok(settings),
            (Some(_), None) => {
                return Err(Error::invalid(
                    "OIDC_CLIENT_ID",
                    "is missing: OIDC_ISSUER_URL is set, so set OIDC_CLIENT_ID to this service's \
                     client id (the audience its tokens carry)",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "OIDC_ISSUER_URL",
                    "is missing: OIDC_CLIENT_ID is set, so set OIDC_ISSUER_URL to the identity \
                     provider's issuer (https://login.microsoftonline.com/TENANT/v2.0, ...)",
                ));
            }
            (Some(i), Some(c)) => (i, c),
        };
        let mut oidc = OidcSettings::new(issuer, client_id)?;
        match (get("OIDC_HYPERV_ROLE"), get("OIDC_ROLE_NAME")) {
            (Some(h), Some(r)) if h != r => {
                return Err(Error::invalid(
                    "OIDC_HYPERV_ROLE",
                    format!(
                        "`{h}` differs from OIDC_ROLE_NAME (`{r}`); both name the role of the \
                         Hyper-V service's /api/v1 routes (OIDC_ROLE_NAME is its old name): set \
                         only OIDC_HYPERV_ROLE"
                    ),
                ));
            }
            (Some(v), _) | (None, Some(v)) => oidc.hyperv_role = v,
            (None, None) => {}
        }
        // Never derived from the Hyper-V role: a tenant role that opened /api/v1 would reach
        // every project.
        if let Some(v) = get("OIDC_TENANT_ROLE") {
            oidc.tenant_role = v;
        }
        if let Some(v) = get("OIDC_OPERATOR_ROLE") {
            oidc.operator_role = v;
        }
        if let Some(v) = get("OIDC_ALLOW_SHARED_TENANT_ROLE") {
            oidc.allow_shared_tenant_role = parse_bool("OIDC_ALLOW_SHARED_TENANT_ROLE", &v)?;
        }
        if let Some(v) = get("OIDC_ROLES_CLAIM_STRING") {
            oidc.roles_string = StringClaim::parse("OIDC_ROLES_CLAIM_STRING", &v)?;
        }
        if let Some(v) = get("OIDC_PROJECTS_CLAIM_STRING") {
            oidc.projects_string = StringClaim::parse("OIDC_PROJECTS_CLAIM_STRING", &v)?;
        }
        if let Some(v) = get("OIDC_ROLES_CLAIM") {
            oidc.roles_claim = claim_path("OIDC_ROLES_CLAIM", &v)?;
        }
        if let Some(v) = get("OIDC_PROJECTS_CLAIM") {
            oidc.projects_claim = claim_path("OIDC_PROJECTS_CLAIM", &v)?;
        }
        if let Some(v) = get("OIDC_SUBJECT_CLAIM") {
            oidc.subject_claim = claim_path("OIDC_SUBJECT_CLAIM", &v)?;
        }
        if let Some(v) = get("OIDC_AUDIENCES") {
            oidc.audiences = v
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(v) = get("OIDC_REDIRECT_URL") {
            check_url("OIDC_REDIRECT_URL", &v)?;
            oidc.redirect_url = Some(v);
        }
        if let Some(v) = get("OIDC_SCOPES") {
            if !v.split_whitespace().any(|s| s == "openid") {
                return Err(Error::invalid(
                    "OIDC_SCOPES",
                    format!("`{v}` lacks `openid`; use e.g. `openid profile email`"),
                ));
            }
            oidc.scopes = v;
        }
        if let Some(v) = get("OIDC_LEEWAY") {
            oidc.leeway = parse_duration("OIDC_LEEWAY", &v)?;
            if oidc.leeway > Duration::from_secs(300) {
                return Err(Error::invalid(
                    "OIDC_LEEWAY",
                    "must be at most 5m: a large leeway keeps expired tokens alive",
                ));
            }
        }
        if let Some(v) = get("OIDC_JWKS_REFRESH_COOLDOWN") {
            oidc.jwks_cooldown = parse_duration("OIDC_JWKS_REFRESH_COOLDOWN", &v)?;
        }
        if let Some(v) = get("OIDC_JWKS_REFRESH_INTERVAL") {
            oidc.jwks_refresh_interval = parse_duration("OIDC_JWKS_REFRESH_INTERVAL", &v)?;
            if oidc.jwks_refresh_interval.is_zero() {
                return Err(Error::invalid(
                    "OIDC_JWKS_REFRESH_INTERVAL",
                    "must be longer than zero",
                ));
            }
        }
        let secrets = Secrets::new(get("HCP_SECRETS_DIR").unwrap_or_else(|| "/run/secrets".into()));
        oidc.client_secret = secret(&secrets, env, "oidc_client_secret")?;
        oidc.session_key = secret(&secrets, env, "hcp_session_key")?;
        oidc.check_roles()?;
        settings.oidc = Some(oidc);
        Ok(settings)
    }

    /// Checks the settings that do not depend on how they were read.
    ///
    /// # Errors
    /// See [`OidcSettings::check_roles`].
    pub fn validate(&self) -> Result<()> {
        match &self.oidc {
            Some(o) => o.check_roles(),
            None => Ok(()),
        }
    }
}

fn parse_bool(field: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::invalid(
            field,
            format!("`{value}` is not a boolean; use true or false"),
        )),
    }
}

/// How a roles or projects claim that is one JSON string (not an array) is read.
///
/// A JSON array of strings is always accepted. Some identity providers can only send one
/// string; the operator then says how to read it. By default a string is refused, so a claim
/// such as `"roles": "x,hcp-operator"` never grants a role by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StringClaim {
    /// A string is refused: the token is invalid (the default).
    #[default]
    Refuse,
    /// The whole string is one name, exactly as sent.
    Single,
    /// Names are separated by whitespace (like the OAuth `scope` claim).
    Space,
    /// Names are separated by commas; whitespace around each is trimmed.
    Comma,
}

impl StringClaim {
    /// The values the variables accept.
    pub const VALUES: [&str; 4] = ["refuse", "single", "space", "comma"];

    /// Reads the value of `field`.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming `field` and the allowed values.
    pub fn parse(field: &str, value: &str) -> Result<StringClaim> {
        match value.trim().to_ascii_lowercase().as_str() {
            "refuse" => Ok(StringClaim::Refuse),
            "single" => Ok(StringClaim::Single),
            "space" => Ok(StringClaim::Space),
            "comma" => Ok(StringClaim::Comma),
            _ => Err(Error::invalid(
                field,
                format!(
                    "`{value}` is not a way to read a string claim; allowed: {}",
                    Self::VALUES.join(", ")
                ),
            )),
        }
    }

    /// Splits `s` into names the way this setting says; `None` when strings are refused.
    pub fn split(self, s: &str) -> Option<Vec<String>> {
        let names: Vec<String> = match self {
            StringClaim::Refuse => return None,
            StringClaim::Single => vec![s.to_string()],
            StringClaim::Space => s.split_whitespace().map(str::to_string).collect(),
            StringClaim::Comma => s.split(',').map(|n| n.trim().to_string()).collect(),
        };
        Some(names.into_iter().filter(|n| !n.is_empty()).collect())
    }
}

/// Reads a secret from its file, else from the variable `NAME` in `env`.
fn secret(
    secrets: &Secrets,
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<SecretString>> {
    if let Some(s) = secrets.get(name)? {
        return Ok(Some(s).filter(|s| !s.expose().is_empty()));
    }
    Ok(env(&name.to_ascii_uppercase())
        .filter(|v| !v.is_empty())
        .map(SecretString::new))
}

fn parse_public_routes(value: &str) -> Result<Vec<String>> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for r in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let r = if r.starts_with('/') {
            r.to_string()
        } else {
            format!("/{r}")
        };
        if !PUBLICABLE_ROUTES.contains(&r.as_str()) {
            return Err(Error::invalid(
                "HCP_PUBLIC_ROUTES",
                format!(
                    "`{r}` cannot be public; allowed: {} (comma-separated), or `none`",
                    PUBLICABLE_ROUTES.join(", ")
                ),
            ));
        }
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

fn claim_path(field: &str, value: &str) -> Result<String> {
    if value.split('.').any(str::is_empty) || value.chars().any(char::is_whitespace) {
        return Err(Error::invalid(
            field,
            format!(
                "`{value}` is not a claim name; use a name such as `roles` or a dotted path such \
                 as `realm_access.roles`"
            ),
        ));
    }
    Ok(value.to_string())
}

/// Returns true for `localhost`, `127.0.0.0/8` and `::1`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks that `value` is an absolute https URL (http only for loopback hosts).
pub(crate) fn check_url(field: &str, value: &str) -> Result<url::Url> {
    let url = url::Url::parse(value)
        .map_err(|e| Error::invalid(field, format!("`{value}` is not an absolute URL ({e})")))?;
    let host = url.host_str().unwrap_or_default().to_string();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&host) => {}
        s => {
            return Err(Error::invalid(
                field,
                format!(
                    "`{value}` uses `{s}`; it must be an https URL (http is allowed only for \
                     localhost, 127.0.0.1 and [::1])"
                ),
            ));
        }
    }
    if host.is_empty() {
        return Err(Error::invalid(field, format!("`{value}` has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(Error::invalid(
            field,
            format!("`{value}` must not carry credentials or a fragment"),
        ));
    }
    Ok(url)
}

/// The OIDC provider HCP trusts and how its tokens map to roles and projects.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OidcSettings {
    /// The issuer (`OIDC_ISSUER_URL`); tokens' `iss` must equal it exactly (its discovery
    /// document must name the same issuer).
    pub issuer_url: String,
    /// This service's client id (`OIDC_CLIENT_ID`): the audience its tokens must carry.
    pub client_id: String,
    /// More accepted audiences (`OIDC_AUDIENCES`, comma-separated), e.g. `api://CLIENT_ID`.
    pub audiences: Vec<String>,
    /// The client secret (the secret `oidc_client_secret`), sent to the token endpoint in the
    /// browser login; public clients (PKCE only) have none.
    pub client_secret: Option<SecretString>,
    /// The role of the Hyper-V service's `/api/v1` routes (`OIDC_HYPERV_ROLE`, or its old name
    /// `OIDC_ROLE_NAME`; default `vm-admin`). Those routes act across projects.
    pub hyperv_role: String,
    /// The role of tenant members (`OIDC_TENANT_ROLE`, default `hcp-tenant`): tenant routes of
    /// the projects in the token's projects claim. Never derived from another role.
    pub tenant_role: String,
    /// The operator role (`OIDC_OPERATOR_ROLE`, default `hcp-operator`): ops routes and every
    /// project.
    pub operator_role: String,
    /// Lets the tenant role equal a cross-project role (the Hyper-V role or the operator role)
    /// (`OIDC_ALLOW_SHARED_TENANT_ROLE`, default `false`). Such a tenant reaches every project;
    /// the service warns at start-up.
    pub allow_shared_tenant_role: bool,
    /// How a roles claim that is one string is read (`OIDC_ROLES_CLAIM_STRING`, default
    /// refused).
    pub roles_string: StringClaim,
    /// How a projects claim that is one string is read (`OIDC_PROJECTS_CLAIM_STRING`, default
    /// refused).
    pub projects_string: StringClaim,
    /// The claim (or dotted path) that carries roles (`OIDC_ROLES_CLAIM`, default `roles`).
    ///
    /// A top-level claim of exactly this name wins (`https://hcp.example.com/roles`); otherwise
    /// each dot-separated segment steps into an object, read as a JSON pointer whose segments
    /// escape `~` and `/` (`~0`, `~1`), so those characters stay part of the key.
    pub roles_claim: String,
    /// The claim (or dotted path) that carries project membership (`OIDC_PROJECTS_CLAIM`,
    /// default `projects`), read like [`OidcSettings::roles_claim`].
    pub projects_claim: String,
    /// The claim that names the caller (`OIDC_SUBJECT_CLAIM`, default `sub`; `oid` suits
    /// Microsoft Entra ID).
    pub subject_claim: String,
    /// Where the provider sends the browser back (`OIDC_REDIRECT_URL`, e.g.
    /// `https://hcp.example.com/oidc/callback`); derived from the request when absent.
    pub redirect_url: Option<String>,
    /// The scopes the browser login asks for (`OIDC_SCOPES`, default `openid profile email`).
    pub scopes: String,
    /// The clock skew allowed on `exp`, `nbf` and `iat` (`OIDC_LEEWAY`, default 60 s, at most
    /// 5 min).
    pub leeway: Duration,
    /// The least time between two key refetches caused by unknown key ids
    /// (`OIDC_JWKS_REFRESH_COOLDOWN`, default 30 s).
    pub jwks_cooldown: Duration,
    /// How often the keys are refreshed in the background (`OIDC_JWKS_REFRESH_INTERVAL`,
    /// default 1 h).
    pub jwks_refresh_interval: Duration,
    /// The key that signs CSRF tokens (the secret `hcp_session_key`); a random one per process
    /// when absent.
    pub session_key: Option<SecretString>,
}

impl fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer_url", &self.issuer_url)
            .field("client_id", &self.client_id)
            .field("audiences", &self.audiences)
            .field("hyperv_role", &self.hyperv_role)
            .field("tenant_role", &self.tenant_role)
            .field("operator_role", &self.operator_role)
            .field("allow_shared_tenant_role", &self.allow_shared_tenant_role)
            .field("roles_claim", &self.roles_claim)
            .field("roles_string", &self.roles_string)
            .field("projects_claim", &self.projects_claim)
            .field("projects_string", &self.projects_string)
            .field("redirect_url", &self.redirect_url)
            .finish_non_exhaustive()
    }
}

impl OidcSettings {
    /// Trusts `issuer_url` for tokens with audience `client_id`, with every other setting at its
    /// default.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming `OIDC_ISSUER_URL` when it is not an https URL
    /// (http is allowed for loopback hosts), or `OIDC_CLIENT_ID` when it is empty.
    pub fn new(issuer_url: impl Into<String>, client_id: impl Into<String>) -> Result<Self> {
        let issuer_url = issuer_url.into();
        let client_id = client_id.into();
        check_url("OIDC_ISSUER_URL", &issuer_url)?;
        if client_id.trim().is_empty() {
            return Err(Error::invalid("OIDC_CLIENT_ID", "must not be empty"));
        }
        Ok(OidcSettings {
            issuer_url,
            client_id,
            audiences: Vec::new(),
            client_secret: None,
            hyperv_role: DEFAULT_HYPERV_ROLE.into(),
            tenant_role: DEFAULT_TENANT_ROLE.into(),
            operator_role: DEFAULT_OPERATOR_ROLE.into(),
            allow_shared_tenant_role: false,
            roles_string: StringClaim::Refuse,
            projects_string: StringClaim::Refuse,
            roles_claim: "roles".into(),
            projects_claim: "projects".into(),
            subject_claim: "sub".into(),
            redirect_url: None,
            scopes: "openid profile email".into(),
            leeway: Duration::from_secs(60),
            jwks_cooldown: Duration::from_secs(30),
            jwks_refresh_interval: Duration::from_secs(3600),
            session_key: None,
        })
    }

    /// Returns the cross-project roles the tenant role equals, with the variables that set
    /// them: the Hyper-V role (`/api/v1` acts in every project) and the operator role.
    pub fn shared_tenant_roles(&self) -> Vec<&'static str> {
        let mut shared = Vec::new();
        if self.tenant_role == self.hyperv_role {
            shared.push("OIDC_HYPERV_ROLE (or OIDC_ROLE_NAME)");
        }
        if self.tenant_role == self.operator_role {
            shared.push("OIDC_OPERATOR_ROLE");
        }
        shared
    }

    /// Refuses a tenant role that equals a cross-project role, unless
    /// [`OidcSettings::allow_shared_tenant_role`] says so: every holder of tenant rights would
    /// read and act in every project.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming `OIDC_TENANT_ROLE` and the variables it
    /// coincides with.
    pub fn check_roles(&self) -> Result<()> {
        let shared = self.shared_tenant_roles();
        if shared.is_empty() || self.allow_shared_tenant_role {
            return Ok(());
        }
        Err(Error::invalid(
            "OIDC_TENANT_ROLE",
            format!(
                "the tenant role `{}` is also set as {}, a role that reaches every project, so \
                 every tenant could read and act outside its projects; give OIDC_TENANT_ROLE a \
                 role of its own (default `{DEFAULT_TENANT_ROLE}`), or set \
                 OIDC_ALLOW_SHARED_TENANT_ROLE=true to accept that every tenant reaches every \
                 project (see docs/configuration.md, \"Roles and projects\")",
                self.tenant_role,
                shared.join(" and ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn no_oidc_is_development_mode_with_default_public_routes() {
        let s = AuthSettings::from_env(&env_of(&[])).unwrap();
        assert!(!s.enabled());
        assert_eq!(s.public_routes, ["/healthz", "/readyz", "/metrics"]);
    }

    #[test]
    fn oidc_reads_every_variable_with_defaults() {
        let s = AuthSettings::from_env(&env_of(&[
            ("OIDC_ISSUER_URL", "https://login.example.com/t/v2.0"),
            ("OIDC_CLIENT_ID", "hcp"),
            ("OIDC_ROLES_CLAIM", "realm_access.roles"),
            ("OIDC_AUDIENCES", "api://hcp, other"),
            ("HCP_PUBLIC_ROUTES", "healthz,/readyz"),
            ("HCP_SECRETS_DIR", "/nonexistent-hcp-secrets"),
            ("OIDC_CLIENT_SECRET", "s3cret"),
        ]))
        .unwrap();
        let o = s.oidc.as_ref().unwrap();
        assert_eq!(o.hyperv_role, "vm-admin");
        assert_eq!(o.tenant_role, "hcp-tenant");
        assert_eq!(o.operator_role, "hcp-operator");
        assert!(!o.allow_shared_tenant_role);
        assert_eq!(o.roles_string, StringClaim::Refuse);
        assert_eq!(o.projects_string, StringClaim::Refuse);
        assert_eq!(o.roles_claim, "realm_access.roles");
        assert_eq!(o.projects_claim, "projects");
        assert_eq!(o.audiences, ["api://hcp", "other"]);
        assert_eq!(o.jwks_cooldown, Duration::from_secs(30));
        assert_eq!(o.client_secret.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(s.public_routes, ["/healthz", "/readyz"]);
        let role = AuthSettings::from_env(&env_of(&[
            ("OIDC_ISSUER_URL", "https://login.example.com"),
            ("OIDC_CLIENT_ID", "hcp"),
            ("OIDC_ROLE_NAME", "hcp-admin"),
        ]))
        .unwrap();
        let o = role.oidc.as_ref().unwrap();
        assert_eq!(o.hyperv_role, "hcp-admin");
        assert_eq!(
            o.tenant_role, DEFAULT_TENANT_ROLE,
            "never derived from OIDC_ROLE_NAME"
        );
    }

    const OIDC: [(&str, &str); 2] = [
        ("OIDC_ISSUER_URL", "https://login.example.com"),
        ("OIDC_CLIENT_ID", "hcp"),
    ];

    fn with_oidc(extra: &[(&'static str, &'static str)]) -> Result<AuthSettings> {
        let mut vars = OIDC.to_vec();
        vars.extend_from_slice(extra);
        AuthSettings::from_env(&env_of(&vars))
    }

    #[test]
    fn the_documented_hyperv_setup_starts_with_separate_roles() {
        let s = with_oidc(&[("OIDC_ROLE_NAME", "vm-admin")]).unwrap();
        let o = s.oidc.as_ref().unwrap();
        assert_eq!(
            (o.hyperv_role.as_str(), o.tenant_role.as_str()),
            ("vm-admin", "hcp-tenant")
        );
        assert!(o.shared_tenant_roles().is_empty());
        let s = with_oidc(&[("OIDC_HYPERV_ROLE", "hv"), ("OIDC_ROLE_NAME", "hv")]).unwrap();
        assert_eq!(s.oidc.unwrap().hyperv_role, "hv");
        let e =
            with_oidc(&[("OIDC_HYPERV_ROLE", "hv"), ("OIDC_ROLE_NAME", "vm-admin")]).unwrap_err();
        assert_eq!(e.field(), Some("OIDC_HYPERV_ROLE"), "{e}");
        assert!(e.message().contains("OIDC_ROLE_NAME"), "{e}");
    }

    #[test]
    fn a_tenant_role_equal_to_a_cross_project_role_is_refused_at_start() {
        for (env, names) in [
            (
                &[
                    ("OIDC_ROLE_NAME", "vm-admin"),
                    ("OIDC_TENANT_ROLE", "vm-admin"),
                ][..],
                &["OIDC_HYPERV_ROLE", "OIDC_ROLE_NAME"][..],
            ),
            (
                &[("OIDC_HYPERV_ROLE", "ops"), ("OIDC_TENANT_ROLE", "ops")][..],
                &["OIDC_HYPERV_ROLE"][..],
            ),
            (
                &[("OIDC_TENANT_ROLE", "hcp-operator")][..],
                &["OIDC_OPERATOR_ROLE"][..],
            ),
            (
                &[("OIDC_OPERATOR_ROLE", "hcp-tenant")][..],
                &["OIDC_OPERATOR_ROLE"][..],
            ),
            (
                &[
                    ("OIDC_TENANT_ROLE", "all"),
                    ("OIDC_HYPERV_ROLE", "all"),
                    ("OIDC_OPERATOR_ROLE", "all"),
                    ("OIDC_ALLOW_SHARED_TENANT_ROLE", "false"),
                ][..],
                &["OIDC_HYPERV_ROLE", "OIDC_OPERATOR_ROLE"][..],
            ),
        ] {
            let e = with_oidc(env).unwrap_err();
            assert_eq!(e.field(), Some("OIDC_TENANT_ROLE"), "{env:?}: {e}");
            for n in names.iter().chain(&["OIDC_ALLOW_SHARED_TENANT_ROLE"]) {
                assert!(e.message().contains(n), "{env:?}: {e} lacks {n}");
            }
        }
    }

    #[test]
    fn a_shared_tenant_role_starts_only_with_the_explicit_opt_in() {
        let s = with_oidc(&[
            ("OIDC_ROLE_NAME", "vm-admin"),
            ("OIDC_TENANT_ROLE", "vm-admin"),
            ("OIDC_ALLOW_SHARED_TENANT_ROLE", "true"),
        ])
        .unwrap();
        let o = s.oidc.as_ref().unwrap();
        assert!(o.allow_shared_tenant_role);
        assert_eq!(
            o.shared_tenant_roles(),
            ["OIDC_HYPERV_ROLE (or OIDC_ROLE_NAME)"]
        );
        assert!(s.validate().is_ok());
        // Settings built in code are held to the same rule when the service checks them.
        let mut o = OidcSettings::new("https://login.example.com", "hcp").unwrap();
        o.tenant_role = o.hyperv_role.clone();
        let s = AuthSettings {
            oidc: Some(o),
            ..AuthSettings::default()
        };
        assert_eq!(s.validate().unwrap_err().field(), Some("OIDC_TENANT_ROLE"));
        let e = with_oidc(&[("OIDC_ALLOW_SHARED_TENANT_ROLE", "sure")]).unwrap_err();
        assert_eq!(e.field(), Some("OIDC_ALLOW_SHARED_TENANT_ROLE"));
    }

    #[test]
    fn string_claims_are_read_only_as_configured() {
        let s = with_oidc(&[
            ("OIDC_ROLES_CLAIM_STRING", "space"),
            ("OIDC_PROJECTS_CLAIM_STRING", "Comma"),
        ])
        .unwrap();
        let o = s.oidc.unwrap();
        assert_eq!(o.roles_string, StringClaim::Space);
        assert_eq!(o.projects_string, StringClaim::Comma);
        let e = with_oidc(&[("OIDC_ROLES_CLAIM_STRING", "split")]).unwrap_err();
        assert_eq!(e.field(), Some("OIDC_ROLES_CLAIM_STRING"));
        assert!(e.message().contains("refuse, single, space, comma"), "{e}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[("OIDC_ISSUER_URL", "https://x")], "OIDC_CLIENT_ID"),
            (&[("OIDC_CLIENT_ID", "hcp")], "OIDC_ISSUER_URL"),
            (
                &[
                    ("OIDC_ISSUER_URL", "http://idp.example.com"),
                    ("OIDC_CLIENT_ID", "hcp"),
                ],
                "OIDC_ISSUER_URL",
            ),
            (&[("HCP_PUBLIC_ROUTES", "/api/v1/vms")], "HCP_PUBLIC_ROUTES"),
            (
                &[
                    ("OIDC_ISSUER_URL", "https://x"),
                    ("OIDC_CLIENT_ID", "hcp"),
                    ("OIDC_LEEWAY", "1h"),
                ],
                "OIDC_LEEWAY",
            ),
            (
                &[
                    ("OIDC_ISSUER_URL", "https://x"),
                    ("OIDC_CLIENT_ID", "hcp"),
                    ("OIDC_SCOPES", "profile"),
                ],
                "OIDC_SCOPES",
            ),
        ];
        for (env, field) in cases {
            let e = AuthSettings::from_env(&env_of(env)).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
        }
        assert!(
            AuthSettings::from_env(&env_of(&[
                ("OIDC_ISSUER_URL", "http://localhost:9000"),
                ("OIDC_CLIENT_ID", "hcp"),
            ]))
            .is_ok()
        );
        assert!(
            AuthSettings::from_env(&env_of(&[("HCP_PUBLIC_ROUTES", "none")]))
                .unwrap()
                .public_routes
                .is_empty()
        );
    }
}

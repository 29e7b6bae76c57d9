//! The provider: its configuration and the connection every resource and data source shares.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use hcp_client::Client;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, DynamicDataSource, DynamicResource, Provider};

use crate::data::{CapabilitiesData, FlavorsData, ImagesData, ZonesData};
use crate::diag;
use crate::server_group::ServerGroupResource;
use crate::vm::VmResource;

/// How long create waits for its job unless `create_timeout` says otherwise.
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long an in-place update waits for its jobs unless `update_timeout` says otherwise.
pub const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long destroy waits for the delete job unless `delete_timeout` says otherwise.
pub const DEFAULT_DELETE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// The longest timeout the configuration may give (a guard against typos such as `10000h`).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How long each kind of operation may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Create: the create job (and the stop job when `desired_power` is `stopped`).
    pub create: Duration,
    /// In-place update: the start or stop job.
    pub update: Duration,
    /// Destroy: the delete job.
    pub delete: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            create: DEFAULT_CREATE_TIMEOUT,
            update: DEFAULT_UPDATE_TIMEOUT,
            delete: DEFAULT_DELETE_TIMEOUT,
        }
    }
}

/// A configured connection to one HCP service.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client (it holds the token; its `Debug` does not print it).
    pub client: Client,
    /// The project resources use when they name none.
    pub project: Option<String>,
    /// The operation timeouts.
    pub timeouts: Timeouts,
}

/// The connection slot shared by the provider and everything it serves: empty until Terraform
/// configures the provider.
#[derive(Clone, Default)]
pub struct Shared(Arc<RwLock<Option<Arc<Connection>>>>);

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// Returns the connection, or records an error diagnostic when the provider is not
    /// configured yet.
    pub fn get(&self, diags: &mut Diagnostics) -> Option<Arc<Connection>> {
        let conn = self.0.read().ok().and_then(|c| c.clone());
        if conn.is_none() {
            diag::root_error(
                diags,
                "The hcp provider is not configured",
                "Terraform called the provider before configuring it; set `url` (or HCP_URL) in the provider block.",
            );
        }
        conn
    }

    fn set(&self, conn: Connection) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(Arc::new(conn));
        }
    }
}

/// The provider block, as Terraform sends it.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// HCP's base URL.
    pub url: Value<String>,
    /// The bearer token.
    pub token: Value<String>,
    /// The default project.
    pub project: Value<String>,
    /// A PEM file of CA certificates to trust.
    pub ca_file: Value<String>,
    /// The timeout of one HTTP request.
    pub request_timeout: Value<String>,
    /// See [`Timeouts::create`].
    pub create_timeout: Value<String>,
    /// See [`Timeouts::update`].
    pub update_timeout: Value<String>,
    /// See [`Timeouts::delete`].
    pub delete_timeout: Value<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

/// The HCP provider.
#[derive(Debug, Default)]
pub struct HcpProvider {
    shared: Shared,
}

impl HcpProvider {
    /// Creates an unconfigured provider.
    pub fn new() -> Self {
        HcpProvider::default()
    }
}

fn string_attr(description: &str, constraint: AttributeConstraint, sensitive: bool) -> Attribute {
    Attribute {
        attr_type: AttributeType::String,
        description: Description::plain(description),
        constraint,
        sensitive,
        deprecated: false,
    }
}

/// Reads one optional string of the configuration, falling back to an environment variable.
fn setting(
    diags: &mut Diagnostics,
    field: &'static str,
    value: &Value<String>,
    env: Option<&str>,
) -> Option<String> {
    match value {
        Value::Value(v) if !v.is_empty() => Some(v.clone()),
        Value::Unknown => {
            diag::error(
                diags,
                format!("`{field}` is not known yet"),
                "The provider configuration must be known before planning; do not derive it from resources.",
                AttributePath::new(field),
            );
            None
        }
        _ => env
            .and_then(|name| std::env::var(name).ok())
            .filter(|v| !v.is_empty()),
    }
}

/// Parses a duration such as `90s` or `20m`, bounded by [`MAX_TIMEOUT`].
///
/// # Errors
/// A message naming what is wrong, for a diagnostic on the attribute.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); use e.g. 90s, 20m or 1h"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    if d > MAX_TIMEOUT {
        return Err(format!(
            "is longer than the most allowed, {}",
            humantime::format_duration(MAX_TIMEOUT)
        ));
    }
    Ok(d)
}

fn timeout(
    diags: &mut Diagnostics,
    field: &'static str,
    value: &Value<String>,
    default: Duration,
) -> Option<Duration> {
    match setting(diags, field, value, None) {
        None => Some(default),
        Some(text) => match parse_timeout(&text) {
            Ok(d) => Some(d),
            Err(msg) => {
                diag::error(
                    diags,
                    format!("Invalid {field}"),
                    format!("{field}: {msg}"),
                    AttributePath::new(field),
                );
                None
            }
        },
    }
}

impl Config {
    /// Builds the connection this configuration describes, reporting every problem as a
    /// diagnostic on its attribute.
    pub fn connect(&self, diags: &mut Diagnostics) -> Option<Connection> {
        let url = setting(diags, "url", &self.url, Some("HCP_URL"));
        let token = setting(diags, "token", &self.token, Some("HCP_TOKEN"));
        let project = setting(diags, "project", &self.project, Some("HCP_PROJECT"));
        let ca_file = setting(diags, "ca_file", &self.ca_file, None);
        let request = timeout(
            diags,
            "request_timeout",
            &self.request_timeout,
            Duration::from_secs(60),
        );
        let create = timeout(
            diags,
            "create_timeout",
            &self.create_timeout,
            DEFAULT_CREATE_TIMEOUT,
        );
        let update = timeout(
            diags,
            "update_timeout",
            &self.update_timeout,
            DEFAULT_UPDATE_TIMEOUT,
        );
        let delete = timeout(
            diags,
            "delete_timeout",
            &self.delete_timeout,
            DEFAULT_DELETE_TIMEOUT,
        );
        if let Some(p) = &project
            && let Err(e) = hcp_core::ProjectId::new(p.clone()).validate()
        {
            diag::report(diags, &e, &AttributePath::root());
        }
        let Some(url) = url else {
            diag::error(
                diags,
                "Missing HCP URL",
                "Set `url` in the provider block or the HCP_URL environment variable (e.g. http://127.0.0.1:8080).",
                AttributePath::new("url"),
            );
            return None;
        };
        let (request, create, update, delete) = (request?, create?, update?, delete?);
        let mut builder = Client::builder(&url).token(token).timeout(request);
        if let Some(ca) = ca_file {
            builder = builder.ca_file(ca);
        }
        match builder.build() {
            Ok(client) => Some(Connection {
                client,
                project,
                timeouts: Timeouts {
                    create,
                    update,
                    delete,
                },
            }),
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                None
            }
        }
    }
}

#[async_trait]
impl Provider for HcpProvider {
    type Config<'a> = Config;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::Optional;
        let attrs = [
            (
                "url",
                string_attr(
                    "HCP's base URL, e.g. http://127.0.0.1:8080 (default: the HCP_URL environment variable).",
                    Optional,
                    false,
                ),
            ),
            (
                "token",
                string_attr(
                    "The bearer token sent to HCP (default: the HCP_TOKEN environment variable).",
                    Optional,
                    true,
                ),
            ),
            (
                "project",
                string_attr(
                    "The project resources use when they name none (default: the HCP_PROJECT environment variable).",
                    Optional,
                    false,
                ),
            ),
            (
                "ca_file",
                string_attr(
                    "A PEM file of CA certificates to trust for an https:// URL.",
                    Optional,
                    false,
                ),
            ),
            (
                "request_timeout",
                string_attr(
                    "The timeout of one HTTP request (default 60s).",
                    Optional,
                    false,
                ),
            ),
            (
                "create_timeout",
                string_attr(
                    "How long creating a VM may take, its jobs included (default 20m).",
                    Optional,
                    false,
                ),
            ),
            (
                "update_timeout",
                string_attr(
                    "How long an in-place update may take (default 20m).",
                    Optional,
                    false,
                ),
            ),
            (
                "delete_timeout",
                string_attr(
                    "How long destroying a VM may take (default 20m).",
                    Optional,
                    false,
                ),
            ),
        ];
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                attributes: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                description: Description::plain("HCP, the Hypervisor Control Plane."),
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Config) -> Option<()> {
        for (field, value) in [
            ("request_timeout", &config.request_timeout),
            ("create_timeout", &config.create_timeout),
            ("update_timeout", &config.update_timeout),
            ("delete_timeout", &config.delete_timeout),
        ] {
            if let Value::Value(text) = value
                && let Err(msg) = parse_timeout(text)
            {
                diag::error(
                    diags,
                    format!("Invalid {field}"),
                    format!("{field}: {msg}"),
                    AttributePath::new(field),
                );
            }
        }
        Some(())
    }

    async fn configure<'a>(
        &self,
        diags: &mut Diagnostics,
        _terraform_version: String,
        config: Config,
    ) -> Option<()> {
        let conn = config.connect(diags)?;
        self.shared.set(conn);
        Some(())
    }

    fn get_resources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        let mut m: HashMap<String, Box<dyn DynamicResource>> = HashMap::new();
        m.insert("vm".into(), Box::new(VmResource::new(self.shared.clone())));
        m.insert(
            "server_group".into(),
            Box::new(ServerGroupResource::new(self.shared.clone())),
        );
        Some(m)
    }

    fn get_data_sources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        let mut m: HashMap<String, Box<dyn DynamicDataSource>> = HashMap::new();
        m.insert(
            "images".into(),
            Box::new(ImagesData::new(self.shared.clone())),
        );
        m.insert(
            "flavors".into(),
            Box::new(FlavorsData::new(self.shared.clone())),
        );
        m.insert(
            "zones".into(),
            Box::new(ZonesData::new(self.shared.clone())),
        );
        m.insert(
            "capabilities".into(),
            Box::new(CapabilitiesData::new(self.shared.clone())),
        );
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_and_are_bounded() {
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout(" 20m "), Ok(Duration::from_secs(1200)));
        assert!(parse_timeout("0s").unwrap_err().contains("zero"));
        assert!(parse_timeout("25h").unwrap_err().contains("most"));
        assert!(parse_timeout("soon").unwrap_err().contains("`soon`"));
    }

    #[test]
    fn a_missing_url_is_a_diagnostic_on_url() {
        let mut diags = Diagnostics::default();
        // HCP_URL may be set in the environment of the test run: give an explicit empty URL
        // and no variable fallback by checking the built-in error.
        let config = Config {
            url: Value::Value("not a url".into()),
            ..Default::default()
        };
        assert!(config.connect(&mut diags).is_none());
        let text = format!("{:?}", diags.errors);
        assert!(text.contains("url"), "{text}");
    }

    #[test]
    fn config_debug_hides_the_token() {
        let config = Config {
            token: Value::Value("s3cr3t-token".into()),
            ..Default::default()
        };
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}

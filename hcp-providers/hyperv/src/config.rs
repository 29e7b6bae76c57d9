//! The Hyper-V provider's settings (the `settings:` blocks of the provider and of each host in the
//! hosts file) and its WinRM credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hcp_core::{Error, ProviderConfig, Result, SecretString, Secrets};
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls as rustls_config;

/// How WinRM authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// NTLMv2 (the default).
    Ntlm,
    /// HTTP Basic; HTTPS only.
    Basic,
    /// Kerberos through SPNEGO `Negotiate` (the crate feature `kerberos`); HTTPS only, with the
    /// process's default Kerberos credentials (`KRB5_CLIENT_KTNAME` or `KRB5CCNAME`) and the
    /// service principal `HTTP/<host address>`.
    Kerberos,
}

/// The WinRM transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// HTTPS (WinRM's port 5986), the default.
    Https,
    /// Plain HTTP (port 5985).
    Http,
}

/// How a new VM's disk is made from its template VHDX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMode {
    /// A differencing disk whose parent is the template (fast; the template must stay).
    Differencing,
    /// A full copy of the template (slow for large templates; reports progress).
    Copy,
}

impl DiskMode {
    /// Returns the name the scripts take.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskMode::Differencing => "differencing",
            DiskMode::Copy => "copy",
        }
    }
}

/// Settings of one Hyper-V provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HypervSettings {
    /// `https` (default) or `http`.
    pub scheme: Scheme,
    /// The WinRM port; 5986 for HTTPS and 5985 for HTTP when absent.
    pub port: Option<u16>,
    /// `ntlm` (default), `basic` (HTTPS only) or `kerberos` (HTTPS only; see [`AuthKind`]).
    pub auth: AuthKind,
    /// Verifies the hosts' TLS certificates (against the public web PKI roots, or `ca_file`);
    /// switch off only for test hosts with self-signed certificates (HCP logs a warning).
    pub tls_verify: bool,
    /// A PEM bundle of the CA certificates that sign the hosts' WinRM certificates (a private
    /// CA). HTTPS only. HCP then verifies each host's chain and name against these CAs alone (not
    /// the public roots) in an in-process forwarder, because winrm-rs 1.1 trusts only the public
    /// roots: winrm-rs speaks plain HTTP to the forwarder on 127.0.0.1 (guarded by a random
    /// per-host token), and the forwarder speaks TLS to the host. NTLM channel binding (CBT)
    /// cannot cross the forwarder, so hosts whose Extended Protection is `Strict` need Kerberos
    /// or Basic; see the provider README and [`crate::forward`].
    pub ca_file: Option<PathBuf>,
    /// Allows NTLM over plain HTTP, which needs NTLM message sealing; see the crate docs.
    pub allow_http_ntlm: bool,
    /// The directory on each host where HCP deploys its scripts (one sub-directory per version).
    pub script_dir: String,
    /// A local directory of the site's own scripts, deployed instead of the embedded ones
    /// (`SCRIPT_PATH` overrides it).
    pub script_path: Option<PathBuf>,
    /// A local directory of ISO images deployed with the scripts (`ISO_PATH` overrides it).
    pub iso_path: Option<PathBuf>,
    /// ISO names (from `iso_path`) attached to every new VM.
    pub attach_isos: Vec<String>,
    /// The directory on each host holding template VHDX files named `<image>.vhdx`.
    pub template_dir: String,
    /// The directory on each host where new VMs' disks go.
    pub vhd_dir: String,
    /// `differencing` (default) or `copy`.
    pub disk_mode: DiskMode,
    /// The VM generation, 1 or 2.
    pub generation: u8,
    /// The virtual switch of networks not listed in `networks`.
    pub switch: String,
    /// Catalog network name → virtual switch.
    pub networks: BTreeMap<String, String>,
    /// Gives new VMs dynamic memory (startup = the flavor's memory, between the bounds below).
    pub dynamic_memory: bool,
    /// Dynamic memory minimum, as a percentage of the flavor's memory.
    pub dynamic_memory_min_percent: u8,
    /// Dynamic memory maximum, as a multiple of the flavor's memory.
    pub dynamic_memory_max_factor: u8,
    /// Most WinRM commands running at once on one host (the PowerShell endpoint allows 5 users).
    pub max_concurrent_per_host: usize,
    /// WS-Management's OperationTimeout: how long one Receive may wait for output.
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// The longest one script may run before HCP terminates it on the host.
    #[serde(with = "humantime_serde")]
    pub script_timeout: Duration,
    /// How long a host that refused the credentials is not asked again.
    #[serde(with = "humantime_serde")]
    pub auth_backoff: Duration,
    /// How long a console description stays valid.
    #[serde(with = "humantime_serde")]
    pub console_ttl: Duration,
    /// The NTLM domain; the host's own when empty.
    pub domain: String,
    /// The site's own PowerShell run around operations, by hook point (see [`HOOK_POINTS`]).
    pub hooks: BTreeMap<String, HookSettings>,
    /// Per-image settings: create hooks and a replacement create script.
    pub images: BTreeMap<String, ImageSettings>,
}

/// The hook points, in the order of the operations they wrap.
pub const HOOK_POINTS: [&str; 10] = [
    "pre_create",
    "post_create",
    "pre_delete",
    "post_delete",
    "pre_start",
    "post_start",
    "pre_stop",
    "post_stop",
    "pre_reboot",
    "post_reboot",
];

/// The hook points an image may set: delete and power operations do not know the VM's image.
pub const IMAGE_HOOK_POINTS: [&str; 2] = ["pre_create", "post_create"];

/// The longest a hook may be given to run.
pub const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The largest hook script HCP deploys.
pub const MAX_HOOK_BYTES: u64 = 1024 * 1024;

/// One hook (or replacement create script): a local PowerShell file deployed to the hosts with
/// HCP's scripts, how long it may run, and the secrets it is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSettings {
    /// The local `.ps1` file (from the ConfigMap); deployed as `hooks\<file name>`.
    pub script: PathBuf,
    /// The longest the hook may run before HCP terminates it on the host (default 5 minutes).
    #[serde(with = "humantime_serde", default = "default_hook_timeout")]
    pub timeout: Duration,
    /// Names of secrets (files in the secrets directory) handed to the hook as `Secrets.<name>`.
    #[serde(default)]
    pub secrets: Vec<String>,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(300)
}

/// Settings of one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSettings {
    /// Create hooks for this image (`pre_create`, `post_create`), run instead of the provider's.
    pub hooks: BTreeMap<String, HookSettings>,
    /// A script run instead of HCP's `New-HcpVm.ps1` for this image.
    pub create_script: Option<HookSettings>,
    /// Windows unattended setup for this image (see [`WindowsSettings`]).
    pub windows: Option<WindowsSettings>,
    /// Linux guests' setup completion signal through cloud-init (see [`LinuxSettings`]).
    pub linux: Option<LinuxSettings>,
}

/// A Linux image's setup completion signal: HCP adds a `runcmd` entry to the cloud-init
/// user-data that writes the KVP item `HcpSetupComplete` into the guest-to-host pool
/// (`/var/lib/hyperv/.kvp_pool_1`; the guest must run `hv_kvp_daemon`), and the create job waits
/// for it like a Windows guest's (see `crate::linux`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinuxSettings {
    /// Waits for the signal; `false` leaves the image's create jobs ending when the VM starts.
    pub completion_signal: bool,
    /// How long the create job waits for the signal (default 30 minutes).
    #[serde(with = "humantime_serde", default = "default_setup_timeout")]
    pub setup_timeout: Duration,
    /// How often the job asks the host for the signal (default 10 seconds).
    #[serde(with = "humantime_serde", default = "default_setup_poll")]
    pub setup_poll: Duration,
}

/// Windows unattended setup: an answer file rendered from a template, put on a small ISO made on
/// the host, and a completion signal the guest writes through Hyper-V's KVP exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsSettings {
    /// The answer file template (XML with `{{variable}}` placeholders; see `crate::unattend`).
    pub unattend_template: PathBuf,
    /// The Windows time zone id (`W. Europe Standard Time`).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// The locale (`en-US`).
    #[serde(default = "default_locale")]
    pub locale: String,
    /// The secret holding the local Administrator password.
    pub admin_password_secret: String,
    /// Joins the guest to a domain with credentials from secrets.
    #[serde(default)]
    pub domain_join: Option<DomainJoin>,
    /// Commands run at the first logon, before HCP's completion signal.
    #[serde(default)]
    pub first_logon_commands: Vec<String>,
    /// How long the create job waits for the guest's completion signal (default 30 minutes).
    #[serde(with = "humantime_serde", default = "default_setup_timeout")]
    pub setup_timeout: Duration,
    /// How often the job asks the host for the signal (default 10 seconds).
    #[serde(with = "humantime_serde", default = "default_setup_poll")]
    pub setup_poll: Duration,
}

/// A domain join in the answer file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainJoin {
    /// The DNS domain name (`corp.example.com`).
    pub domain: String,
    /// The organizational unit for the computer account, if not the default.
    #[serde(default)]
    pub ou: Option<String>,
    /// The secret holding the join account's name (`CORP\\svc-join` or `svc-join`).
    pub username_secret: String,
    /// The secret holding the join account's password.
    pub password_secret: String,
}

fn default_time_zone() -> String {
    "UTC".into()
}

fn default_locale() -> String {
    "en-US".into()
}

fn default_setup_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_setup_poll() -> Duration {
    Duration::from_secs(10)
}

fn check_windows(field: &str, w: &WindowsSettings) -> Result<()> {
    let secret_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let mut secrets = vec![("admin_password_secret", w.admin_password_secret.as_str())];
    if let Some(d) = &w.domain_join {
        secrets.push(("domain_join.username_secret", d.username_secret.as_str()));
        secrets.push(("domain_join.password_secret", d.password_secret.as_str()));
        if d.domain.is_empty() || d.domain.len() > 255 {
            return Err(Error::invalid(
                format!("{field}.domain_join.domain"),
                "must be a DNS domain name of 1-255 characters",
            ));
        }
    }
    for (k, v) in secrets {
        if !secret_ok(v) {
            return Err(Error::invalid(
                format!("{field}.{k}"),
                format!("`{v}` is not a secret name (1-64 of a-z, 0-9 and '_')"),
            ));
        }
    }
    if w.time_zone.is_empty() || w.time_zone.len() > 64 {
        return Err(Error::invalid(
            format!("{field}.time_zone"),
            "must be 1-64 characters",
        ));
    }
    if w.locale.is_empty() || w.locale.len() > 16 {
        return Err(Error::invalid(
            format!("{field}.locale"),
            "must be 1-16 characters",
        ));
    }
    if w.first_logon_commands.len() > 50 || w.first_logon_commands.iter().any(|c| c.len() > 1024) {
        return Err(Error::invalid(
            format!("{field}.first_logon_commands"),
            "at most 50 commands of at most 1024 characters",
        ));
    }
    check_setup_wait(field, w.setup_timeout, w.setup_poll)
}

/// Bounds a guest setup wait (Windows or Linux): the timeout 1s-24h, the poll 100ms-10m.
fn check_setup_wait(field: &str, timeout: Duration, poll: Duration) -> Result<()> {
    if timeout < Duration::from_secs(1) || timeout > MAX_HOOK_TIMEOUT {
        return Err(Error::invalid(
            format!("{field}.setup_timeout"),
            "must be between 1s and 24h",
        ));
    }
    if poll < Duration::from_millis(100) || poll > Duration::from_secs(600) {
        return Err(Error::invalid(
            format!("{field}.setup_poll"),
            "must be between 100ms and 10m",
        ));
    }
    Ok(())
}

fn check_hook(field: &str, hook: &HookSettings) -> Result<()> {
    let name = hook
        .script
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let name_ok = name.len() > 4
        && name.len() <= 100
        && name.ends_with(".ps1")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !name_ok {
        return Err(Error::invalid(
            format!("{field}.script"),
            format!(
                "`{}` must name a .ps1 file of at most 100 characters from letters, digits, '.', \
                 '_' and '-'",
                hook.script.display()
            ),
        ));
    }
    if hook.timeout < Duration::from_secs(1) || hook.timeout > MAX_HOOK_TIMEOUT {
        return Err(Error::invalid(
            format!("{field}.timeout"),
            "must be between 1s and 24h",
        ));
    }
    for secret in &hook.secrets {
        let ok = !secret.is_empty()
            && secret.len() <= 64
            && secret
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(Error::invalid(
                format!("{field}.secrets"),
                format!("`{secret}` is not a secret name (1-64 of a-z, 0-9 and '_')"),
            ));
        }
    }
    Ok(())
}

fn check_hooks(
    field: &str,
    hooks: &BTreeMap<String, HookSettings>,
    allowed: &[&str],
) -> Result<()> {
    for (point, hook) in hooks {
        if !allowed.contains(&point.as_str()) {
            return Err(Error::invalid(
                format!("{field}.{point}"),
                format!("is not a hook point here; allowed: {}", allowed.join(", ")),
            ));
        }
        check_hook(&format!("{field}.{point}"), hook)?;
    }
    Ok(())
}

impl Default for HypervSettings {
    fn default() -> Self {
        HypervSettings {
            scheme: Scheme::Https,
            port: None,
            auth: AuthKind::Ntlm,
            tls_verify: true,
            ca_file: None,
            allow_http_ntlm: false,
            script_dir: r"C:\ProgramData\HCP\scripts".into(),
            script_path: None,
            iso_path: None,
            attach_isos: Vec::new(),
            template_dir: r"C:\HCP\Templates".into(),
            vhd_dir: r"C:\HCP\VMs".into(),
            disk_mode: DiskMode::Differencing,
            generation: 2,
            switch: "LAN".into(),
            networks: BTreeMap::new(),
            dynamic_memory: false,
            dynamic_memory_min_percent: 50,
            dynamic_memory_max_factor: 2,
            max_concurrent_per_host: 4,
            operation_timeout: Duration::from_secs(20),
            script_timeout: Duration::from_secs(30 * 60),
            auth_backoff: Duration::from_secs(30),
            console_ttl: Duration::from_secs(300),
            domain: String::new(),
            hooks: BTreeMap::new(),
            images: BTreeMap::new(),
        }
    }
}

/// Settings of one host (its `settings:` block).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSettings {
    /// The address WinRM connects to; the host name when absent.
    pub address: Option<String>,
    /// The WinRM port, overriding the provider's.
    pub port: Option<u16>,
    /// The failover cluster this host is a node of; scripts then find VMs on every node.
    pub cluster: Option<String>,
}

/// Kerberos needs the crate feature, HTTPS, and the process's default credentials.
fn check_kerberos(
    key: &dyn Fn(&str) -> String,
    s: &HypervSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    if !cfg!(feature = "kerberos") {
        return Err(Error::invalid(
            key("auth"),
            "kerberos needs an HCP built with the `kerberos` feature of hcp-provider-hyperv \
             (it links the system's GSS-API library, libgssapi_krb5)",
        ));
    }
    if s.scheme == Scheme::Http {
        return Err(Error::invalid(
            key("scheme"),
            "kerberos over plain HTTP is refused: winrm-rs 1.1 (the pinned WinRM client) \
             authenticates Kerberos requests but cannot encrypt WinRM messages with the Kerberos \
             session key, so scripts, parameters and results would cross the network in clear \
             (and Windows refuses such requests while AllowUnencrypted is false, its default); \
             use scheme: https (port 5986)",
        ));
    }
    let has = |k: &str| env(k).is_some_and(|v| !v.is_empty());
    if !has("KRB5_CLIENT_KTNAME") && !has("KRB5CCNAME") {
        return Err(Error::invalid(
            key("auth"),
            "kerberos takes the process's default Kerberos credentials (winrm-rs 1.1 accepts no \
             other): set KRB5_CLIENT_KTNAME to a keytab file (recommended: a Secret mounted as a \
             file) or KRB5CCNAME to a credential cache that something renews, and KRB5_CONFIG \
             when /etc/krb5.conf does not name the realm",
        ));
    }
    Ok(())
}

/// Reads the PEM bundle `path` (the `ca_file` setting named `field`) into a TLS client
/// configuration that trusts those CAs only.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming `field` when the file cannot be read, is empty, or
/// holds no PEM certificate or one rustls refuses.
pub fn load_ca_file(field: &str, path: &std::path::Path) -> Result<rustls_config::ClientConfig> {
    let refuse = |why: String| Error::invalid(field, format!("{}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| refuse(format!("cannot be read ({})", e.kind())))?;
    if pem.iter().all(u8::is_ascii_whitespace) {
        return Err(refuse(
            "is empty; it must hold the CA certificates as PEM".into(),
        ));
    }
    let pem = String::from_utf8(pem).map_err(|_| refuse("is not a PEM file".into()))?;
    hcp_tls::client_config(&hcp_core::TlsTrust::CaPem(pem)).map_err(refuse)
}

/// Windows path characters the scripts' directories may use (no quotes, no `$`, no backtick).
fn check_windows_dir(field: &str, value: &str) -> Result<()> {
    let ok = value.len() >= 3
        && value.len() <= 200
        && value.as_bytes()[1] == b':'
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || r"\:._- ()".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "`{value}` is not an absolute Windows directory of 3-200 characters from \
                 letters, digits, '\\', ':', '.', '_', '-', ' ', '(' and ')'"
            ),
        ))
    }
}

impl HypervSettings {
    /// Parses the provider's `settings:` block and applies `SCRIPT_PATH` and `ISO_PATH` from
    /// `env`.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the key: unknown keys, bad values, Basic or
    /// NTLM over plain HTTP without `allow_http_ntlm`, `ca_file` with `scheme: http` or with
    /// `tls_verify: false`. The `ca_file` itself is read when the provider is built
    /// ([`load_ca_file`]).
    pub fn from_value(
        provider: &str,
        value: &serde_json::Value,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let key = |k: &str| format!("providers.{provider}.settings.{k}");
        let mut s: HypervSettings = if value.is_null() {
            HypervSettings::default()
        } else {
            serde_json::from_value(value.clone()).map_err(|e| {
                Error::invalid(format!("providers.{provider}.settings"), e.to_string())
            })?
        };
        if let Some(p) = env("SCRIPT_PATH").filter(|p| !p.is_empty()) {
            s.script_path = Some(PathBuf::from(p));
        }
        if let Some(p) = env("ISO_PATH").filter(|p| !p.is_empty()) {
            s.iso_path = Some(PathBuf::from(p));
        }
        check_windows_dir(&key("script_dir"), &s.script_dir)?;
        check_windows_dir(&key("template_dir"), &s.template_dir)?;
        check_windows_dir(&key("vhd_dir"), &s.vhd_dir)?;
        if !(1..=2).contains(&s.generation) {
            return Err(Error::invalid(key("generation"), "must be 1 or 2"));
        }
        if s.max_concurrent_per_host == 0 || s.max_concurrent_per_host > 5 {
            return Err(Error::invalid(
                key("max_concurrent_per_host"),
                "must be 1-5: the PowerShell endpoint allows 5 concurrent shells per user",
            ));
        }
        if s.operation_timeout < Duration::from_secs(1) {
            return Err(Error::invalid(
                key("operation_timeout"),
                "must be at least 1s",
            ));
        }
        if s.ca_file.is_some() && s.scheme == Scheme::Http {
            return Err(Error::invalid(
                key("ca_file"),
                "verifies the hosts' HTTPS certificates; with scheme: http there is no TLS to \
                 verify (use scheme: https)",
            ));
        }
        if s.ca_file.is_some() && !s.tls_verify {
            return Err(Error::invalid(
                key("tls_verify"),
                "is false while ca_file is set: HCP either verifies the hosts' certificates \
                 against ca_file or, on a network you trust, not at all; remove one of the two",
            ));
        }
        if s.auth == AuthKind::Kerberos {
            check_kerberos(&key, &s, env)?;
        }
        if s.scheme == Scheme::Http && s.auth == AuthKind::Basic {
            return Err(Error::invalid(
                key("auth"),
                "basic sends the password in clear text; use scheme: https with basic",
            ));
        }
        if s.scheme == Scheme::Http && s.auth == AuthKind::Ntlm && !s.allow_http_ntlm {
            return Err(Error::invalid(
                key("scheme"),
                "NTLM over plain HTTP needs WinRM message sealing, which winrm-rs 1.1 cannot \
                 read from Windows hosts; use scheme: https (port 5986), or set \
                 allow_http_ntlm: true for hosts known to work",
            ));
        }
        for (network, switch) in &s.networks {
            if switch.is_empty() {
                return Err(Error::invalid(
                    key(&format!("networks.{network}")),
                    "names no virtual switch",
                ));
            }
        }
        check_hooks(&key("hooks"), &s.hooks, &HOOK_POINTS)?;
        for (image, settings) in &s.images {
            let field = key(&format!("images.{image}"));
            for point in settings.hooks.keys() {
                if !IMAGE_HOOK_POINTS.contains(&point.as_str())
                    && HOOK_POINTS.contains(&point.as_str())
                {
                    return Err(Error::invalid(
                        format!("{field}.hooks.{point}"),
                        "is not an image hook point: delete and power operations do not know \
                         the VM's image, so set their hooks per provider (settings.hooks)",
                    ));
                }
            }
            check_hooks(
                &format!("{field}.hooks"),
                &settings.hooks,
                &IMAGE_HOOK_POINTS,
            )?;
            if let Some(c) = &settings.create_script {
                check_hook(&format!("{field}.create_script"), c)?;
            }
            if let Some(w) = &settings.windows {
                check_windows(&format!("{field}.windows"), w)?;
            }
            if let Some(l) = &settings.linux {
                if settings.windows.is_some() {
                    return Err(Error::invalid(
                        format!("{field}.linux"),
                        "an image is either a Windows image (windows:) or a Linux one (linux:)",
                    ));
                }
                check_setup_wait(&format!("{field}.linux"), l.setup_timeout, l.setup_poll)?;
            }
        }
        for iso in &s.attach_isos {
            if s.iso_path.is_none() {
                return Err(Error::invalid(
                    key("attach_isos"),
                    format!("`{iso}` needs iso_path (or ISO_PATH) to point at the ISO directory"),
                ));
            }
            if !iso.ends_with(".iso") || iso.contains(['\\', '/', '\'']) {
                return Err(Error::invalid(
                    key("attach_isos"),
                    format!("`{iso}` is not a plain .iso file name"),
                ));
            }
        }
        Ok(s)
    }

    /// Returns the port of `host`.
    pub fn port_of(&self, host: &HostSettings) -> u16 {
        host.port.or(self.port).unwrap_or(match self.scheme {
            Scheme::Https => 5986,
            Scheme::Http => 5985,
        })
    }

    /// Returns the virtual switch of catalog network `network`.
    pub fn switch_of(&self, network: &str) -> &str {
        self.networks
            .get(network)
            .map(String::as_str)
            .unwrap_or(&self.switch)
    }
}

impl HostSettings {
    /// Parses one host's `settings:` block.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the key.
    pub fn from_value(provider: &str, host: &str, value: &serde_json::Value) -> Result<Self> {
        let field = format!("providers.{provider}.hosts.{host}.settings");
        let s: HostSettings = if value.is_null() {
            HostSettings::default()
        } else {
            serde_json::from_value(value.clone())
                .map_err(|e| Error::invalid(&field, e.to_string()))?
        };
        if let Some(a) = &s.address
            && (a.is_empty() || a.contains(['/', '@', ' ']))
        {
            return Err(Error::invalid(
                format!("{field}.address"),
                format!("`{a}` is not a host name or IP address"),
            ));
        }
        Ok(s)
    }
}

/// WinRM credentials, from the secrets `winrm_username` and `winrm_password` (files in the
/// secrets directory, or the variables `WINRM_USERNAME` and `WINRM_PASSWORD`).
#[derive(Clone)]
pub struct Credentials {
    /// The account name.
    pub username: String,
    /// The password.
    pub password: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads the credentials of `provider`.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the missing secret.
    pub fn from_secrets(secrets: &Secrets) -> Result<Self> {
        let username = secrets.get("winrm_username")?.ok_or_else(|| {
            Error::invalid(
                "secrets.winrm_username",
                format!(
                    "is missing: put it in {}/winrm_username or set WINRM_USERNAME",
                    secrets.dir().display()
                ),
            )
        })?;
        let password = secrets.get("winrm_password")?.ok_or_else(|| {
            Error::invalid(
                "secrets.winrm_password",
                format!(
                    "is missing: put it in {}/winrm_password or set WINRM_PASSWORD",
                    secrets.dir().display()
                ),
            )
        })?;
        Ok(Credentials {
            username: username.expose().to_string(),
            password,
        })
    }
}

/// One configured host.
#[derive(Debug, Clone)]
pub struct HostEntry {
    /// Its name in the hosts file.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// The configured vCPUs, if any (inventory reports the real count).
    pub vcpus: Option<u32>,
    /// The configured memory, if any.
    pub memory_mib: Option<u64>,
    /// Its settings.
    pub settings: HostSettings,
}

/// Reads the hosts of a provider section.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] for bad host settings.
pub fn hosts_of(config: &ProviderConfig) -> Result<Vec<HostEntry>> {
    config
        .hosts
        .iter()
        .map(|h| {
            Ok(HostEntry {
                name: h.name.clone(),
                zone: h.zone.clone(),
                vcpus: h.vcpus,
                memory_mib: h.memory_mib,
                settings: HostSettings::from_value(&config.name, &h.name, &h.settings)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<HypervSettings> {
        HypervSettings::from_value("hv", &v, &|_| None)
    }

    #[test]
    fn defaults_are_https_ntlm_differencing_with_a_cap_of_four() {
        let s = parse(serde_json::Value::Null).unwrap();
        assert_eq!(s.scheme, Scheme::Https);
        assert_eq!(s.auth, AuthKind::Ntlm);
        assert_eq!(s.disk_mode, DiskMode::Differencing);
        assert_eq!(s.max_concurrent_per_host, 4);
        assert_eq!(s.port_of(&HostSettings::default()), 5986);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse(serde_json::json!({"disk_mode": "clone"})).unwrap_err();
        assert_eq!(e.field(), Some("providers.hv.settings"));
        assert!(e.message().contains("clone"), "{e}");
        let e = parse(serde_json::json!({"script_dir": "C:\\x'; rm"})).unwrap_err();
        assert_eq!(e.field(), Some("providers.hv.settings.script_dir"));
        let e = parse(serde_json::json!({"max_concurrent_per_host": 6})).unwrap_err();
        assert_eq!(
            e.field(),
            Some("providers.hv.settings.max_concurrent_per_host")
        );
        let e = parse(serde_json::json!({"scheme": "http", "auth": "basic"})).unwrap_err();
        assert_eq!(e.field(), Some("providers.hv.settings.auth"));
        let e = parse(serde_json::json!({"scheme": "http"})).unwrap_err();
        assert_eq!(e.field(), Some("providers.hv.settings.scheme"));
        let e = parse(serde_json::json!({"ca_file": "/etc/ca.pem", "scheme": "http"})).unwrap_err();
        assert_eq!(e.field(), Some("providers.hv.settings.ca_file"));
        let e =
            parse(serde_json::json!({"ca_file": "/etc/ca.pem", "tls_verify": false})).unwrap_err();
        assert_eq!(e.field(), Some("providers.hv.settings.tls_verify"));
        assert!(e.message().contains("ca_file"), "{e}");
    }

    #[test]
    fn kerberos_needs_the_feature_https_and_default_credentials() {
        let keytab =
            |k: &str| (k == "KRB5_CLIENT_KTNAME").then(|| "/run/secrets/hcp.keytab".into());
        let http = serde_json::json!({"auth": "kerberos", "scheme": "http"});
        let https = serde_json::json!({"auth": "kerberos"});
        if cfg!(feature = "kerberos") {
            let e = HypervSettings::from_value("hv", &http, &keytab).unwrap_err();
            assert_eq!(e.field(), Some("providers.hv.settings.scheme"));
            assert!(e.message().contains("cannot encrypt WinRM messages"), "{e}");
            let e = HypervSettings::from_value("hv", &https, &|_| None).unwrap_err();
            assert_eq!(e.field(), Some("providers.hv.settings.auth"));
            assert!(e.message().contains("KRB5_CLIENT_KTNAME"), "{e}");
            let s = HypervSettings::from_value("hv", &https, &keytab).unwrap();
            assert_eq!(s.auth, AuthKind::Kerberos);
        } else {
            let e = HypervSettings::from_value("hv", &https, &keytab).unwrap_err();
            assert_eq!(e.field(), Some("providers.hv.settings.auth"));
            assert!(e.message().contains("`kerberos` feature"), "{e}");
        }
    }

    #[test]
    fn an_unreadable_empty_or_non_pem_ca_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let field = "providers.hv.settings.ca_file";
        let missing = dir.path().join("missing.pem");
        let e = load_ca_file(field, &missing).unwrap_err();
        assert_eq!(e.field(), Some(field));
        assert!(e.message().contains("cannot be read"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "\n").unwrap();
        let e = load_ca_file(field, &empty).unwrap_err();
        assert!(e.message().contains("is empty"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = load_ca_file(field, &junk).unwrap_err();
        assert_eq!(e.field(), Some(field));
        assert!(e.message().contains("no PEM certificate"), "{e}");
        let binary = dir.path().join("ca.der");
        std::fs::write(&binary, [0x30, 0x82, 0xff, 0xfe]).unwrap();
        let e = load_ca_file(field, &binary).unwrap_err();
        assert!(e.message().contains("not a PEM file"), "{e}");
    }

    #[test]
    fn linux_completion_signal_settings_are_bounded() {
        let s = parse(serde_json::json!({"images": {"ubuntu-24.04": {"linux": {
            "completion_signal": true, "setup_timeout": "20m"}}}}))
        .unwrap();
        let l = s.images["ubuntu-24.04"].linux.clone().unwrap();
        assert!(l.completion_signal);
        assert_eq!(l.setup_timeout, Duration::from_secs(1200));
        assert_eq!(l.setup_poll, Duration::from_secs(10));
        let e = parse(serde_json::json!({"images": {"u": {"linux": {
            "completion_signal": true, "setup_poll": "1ms"}}}}))
        .unwrap_err();
        assert_eq!(
            e.field(),
            Some("providers.hv.settings.images.u.linux.setup_poll")
        );
        let e = parse(serde_json::json!({"images": {"u": {"linux": {"setup_timeout": "1m"}}}}))
            .unwrap_err();
        assert!(e.message().contains("completion_signal"), "{e}");
    }

    #[test]
    fn script_and_iso_paths_come_from_the_environment() {
        let s = HypervSettings::from_value("hv", &serde_json::Value::Null, &|k| match k {
            "SCRIPT_PATH" => Some("/srv/scripts".into()),
            "ISO_PATH" => Some("/srv/isos".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.script_path, Some(PathBuf::from("/srv/scripts")));
        assert_eq!(s.iso_path, Some(PathBuf::from("/srv/isos")));
    }

    #[test]
    fn credentials_never_print_the_password() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("winrm_username"), "hcp\n").unwrap();
        std::fs::write(dir.path().join("winrm_password"), "s3cret-pw\n").unwrap();
        let c = Credentials::from_secrets(&Secrets::new(dir.path())).unwrap();
        assert_eq!(c.username, "hcp");
        assert_eq!(c.password.expose(), "s3cret-pw");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}

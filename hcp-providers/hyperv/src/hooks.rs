//! The site's own PowerShell: hooks around operations and replacement create scripts.
//!
//! A hook is a local `.ps1` file named in the settings (`hooks:` per provider, `images.<image>.
//! hooks:` per image for the create hooks, `images.<image>.create_script:`). HCP reads the files
//! at start-up and deploys them with its own scripts, under `<version>\hooks\<file>`, so a hook's
//! content is part of the deployed version: an unchanged hook is never uploaded again, and jobs
//! never upload. A hook runs through HCP's constant wrapper like every script; its parameters are
//! one JSON document, bound to the hook's single `[hashtable]$Hcp` parameter (see the README for
//! the contract).

use std::collections::BTreeMap;
use std::time::Duration;

use hcp_core::{Error, ErrorKind, Result, SecretString, Secrets};
use serde_json::{Map, Value, json};

use crate::config::{HookSettings, HypervSettings, MAX_HOOK_BYTES};

/// The version of the parameter document hooks receive (`Hcp.Contract`).
pub const CONTRACT: u32 = 1;

/// The folder, inside a deployed version, that holds the hooks.
pub const HOOK_DIR: &str = "hooks";

/// One hook ready to run: its deployed file, timeout and secrets.
#[derive(Clone)]
pub struct Hook {
    /// The file name, deployed as `hooks\<file>`.
    pub file: String,
    /// The longest it may run.
    pub timeout: Duration,
    secrets: Vec<(String, SecretString)>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("file", &self.file)
            .field("timeout", &self.timeout)
            .field(
                "secrets",
                &self.secrets.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Hook {
    /// Returns the hook's parameter document: `{"Hcp": {Contract, Operation, ..fields, Secrets}}`.
    pub fn document(&self, operation: &str, fields: Map<String, Value>) -> Value {
        let mut doc = Map::new();
        doc.insert("Contract".into(), json!(CONTRACT));
        doc.insert("Operation".into(), json!(operation));
        doc.extend(fields);
        if !self.secrets.is_empty() {
            let secrets: Map<String, Value> = self
                .secrets
                .iter()
                .map(|(n, s)| (n.clone(), json!(s.expose())))
                .collect();
            doc.insert("Secrets".into(), Value::Object(secrets));
        }
        json!({ "Hcp": doc })
    }

    /// Returns the secret values given to the hook, which HCP removes from its output.
    pub fn secret_values(&self) -> Vec<SecretString> {
        self.secrets.iter().map(|(_, s)| s.clone()).collect()
    }
}

/// Replaces every secret value in `text` with `***`.
pub fn redact(text: &str, secrets: &[SecretString]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.expose().is_empty() {
            out = out.replace(s.expose(), "***");
        }
    }
    out
}

#[derive(Debug, Clone, Default)]
struct ImageHooks {
    hooks: BTreeMap<String, Hook>,
    create: Option<Hook>,
}

/// Every hook of one provider.
#[derive(Debug, Clone, Default)]
pub struct HookSet {
    provider: BTreeMap<String, Hook>,
    images: BTreeMap<String, ImageHooks>,
}

impl HookSet {
    /// Reads the hook files named in `settings` and the secrets they map.
    ///
    /// Returns the hooks and the files to deploy (`hooks\<file>` → content).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming the setting: an unreadable or too large file, two hooks
    /// with one file name but different content, a mapped secret that is missing (or mapped
    /// without a secrets directory).
    pub fn load(
        provider: &str,
        settings: &HypervSettings,
        secrets: Option<&Secrets>,
    ) -> Result<(HookSet, BTreeMap<String, Vec<u8>>)> {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let key = |k: &str| format!("providers.{provider}.settings.{k}");
        let mut load_one = |field: String, h: &HookSettings| -> Result<Hook> {
            let file = h
                .script
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let too_large = std::fs::metadata(&h.script)
                .map(|m| m.len() > MAX_HOOK_BYTES)
                .unwrap_or(false);
            if too_large {
                return Err(Error::invalid(
                    format!("{field}.script"),
                    format!("{} is larger than 1 MiB", h.script.display()),
                ));
            }
            let data = std::fs::read(&h.script).map_err(|e| {
                Error::invalid(
                    format!("{field}.script"),
                    format!("cannot read {}: {}", h.script.display(), e.kind()),
                )
            })?;
            let deployed = format!("{HOOK_DIR}\\{file}");
            if let Some(other) = files.get(&deployed)
                && *other != data
            {
                return Err(Error::invalid(
                    format!("{field}.script"),
                    format!(
                        "another hook is also named `{file}` but has different content; \
                         give each hook file its own name"
                    ),
                ));
            }
            files.insert(deployed, data);
            let mut mapped = Vec::new();
            for name in &h.secrets {
                let value = match secrets {
                    Some(s) => s.get(name)?,
                    None => None,
                };
                let value = value.ok_or_else(|| {
                    Error::invalid(
                        format!("{field}.secrets"),
                        format!(
                            "secret `{name}` is missing{}",
                            secrets
                                .map(|s| format!(": put it in {}/{name}", s.dir().display()))
                                .unwrap_or_default()
                        ),
                    )
                })?;
                mapped.push((name.clone(), value));
            }
            Ok(Hook {
                file,
                timeout: h.timeout,
                secrets: mapped,
            })
        };
        let mut set = HookSet::default();
        for (point, h) in &settings.hooks {
            let hook = load_one(key(&format!("hooks.{point}")), h)?;
            set.provider.insert(point.clone(), hook);
        }
        for (image, s) in &settings.images {
            let mut ih = ImageHooks::default();
            for (point, h) in &s.hooks {
                let hook = load_one(key(&format!("images.{image}.hooks.{point}")), h)?;
                ih.hooks.insert(point.clone(), hook);
            }
            if let Some(c) = &s.create_script {
                ih.create = Some(load_one(key(&format!("images.{image}.create_script")), c)?);
            }
            set.images.insert(image.clone(), ih);
        }
        Ok((set, files))
    }

    /// Returns the hook for `point`: the image's own when it has one, else the provider's.
    pub fn at(&self, point: &str, image: Option<&str>) -> Option<&Hook> {
        image
            .and_then(|i| self.images.get(i))
            .and_then(|ih| ih.hooks.get(point))
            .or_else(|| self.provider.get(point))
    }

    /// Returns the replacement create script of `image`, if it has one.
    pub fn create_script(&self, image: &str) -> Option<&Hook> {
        self.images.get(image).and_then(|ih| ih.create.as_ref())
    }
}

/// Turns a hook's failure into the job's error: the hook's own message (secrets removed, at most
/// 300 characters), its kind from the PowerShell category.
pub fn hook_error(label: &str, base: &Error, message: &str, secrets: &[SecretString]) -> Error {
    let mut msg: String = redact(message.trim(), secrets).chars().take(300).collect();
    if msg.is_empty() {
        msg = "no message".into();
    }
    let mut e = Error::new(base.kind(), format!("the {label} failed: {msg}"))
        .with_detail(redact(base.detail().unwrap_or_default(), secrets))
        .with_context("hook", label);
    if base.is_temporary() && base.kind() == ErrorKind::ProviderUnavailable {
        e = e.temporary();
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_carries_the_contract_and_only_mapped_secrets() {
        let hook = Hook {
            file: "Register-Cmdb.ps1".into(),
            timeout: Duration::from_secs(5),
            secrets: vec![("cmdb_token".into(), SecretString::new("t0ken-value"))],
        };
        let mut fields = Map::new();
        fields.insert("VmId".into(), json!("vm-1"));
        let doc = hook.document("post_create", fields);
        assert_eq!(doc["Hcp"]["Contract"], json!(1));
        assert_eq!(doc["Hcp"]["Operation"], json!("post_create"));
        assert_eq!(doc["Hcp"]["VmId"], json!("vm-1"));
        assert_eq!(doc["Hcp"]["Secrets"]["cmdb_token"], json!("t0ken-value"));
        assert!(!format!("{hook:?}").contains("t0ken"));
        assert_eq!(
            redact("token t0ken-value refused", &hook.secret_values()),
            "token *** refused"
        );
    }
}

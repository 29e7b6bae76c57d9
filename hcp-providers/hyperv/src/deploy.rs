//! Versioned script deployment: read each host's version marker and, only where it differs,
//! upload the scripts and ISOs in checksummed chunks to a staging directory, then publish them
//! with one rename and replace the marker atomically. Jobs only ever call deployed scripts.

use base64::Engine as _;
use hcp_core::{OpContext, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::client::HostClient;
use crate::scripts::{Bundle, deploy_step, wrapper_for_deploy};

/// Raw bytes per uploaded chunk.
pub const CHUNK: usize = 32 * 1024;

/// What a deployment did on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployReport {
    /// The host.
    pub host: String,
    /// The version now deployed.
    pub version: String,
    /// The version found before, if any.
    pub previous: Option<String>,
    /// How many files were uploaded (0 when the version matched).
    pub files_uploaded: usize,
    /// How many bytes were uploaded.
    pub bytes_uploaded: usize,
}

async fn step(
    host: &HostClient,
    name: &str,
    params: serde_json::Value,
    ctx: &OpContext,
) -> Result<serde_json::Value> {
    host.invoke(name, &wrapper_for_deploy(deploy_step(name)), &params, ctx)
        .await
}

/// Makes sure `bundle` is deployed in `script_dir` on `host`.
///
/// # Behavior
/// Uploads nothing when the host's marker names `bundle.version`. Otherwise clears the staging
/// directory `<script_dir>\.staging-<version>`, uploads every file as `<name>.part` in chunks,
/// checks its SHA-256 on the host and renames it, then renames the staging directory to
/// `<script_dir>\<version>` and replaces the marker `<script_dir>\VERSION`. An interrupted
/// upload leaves only the staging directory, which the next attempt clears.
///
/// # Errors
/// The first failed step, classified by [`crate::error::parse_error`].
pub async fn ensure(
    host: &HostClient,
    host_name: &str,
    script_dir: &str,
    bundle: &Bundle,
    ctx: &OpContext,
) -> Result<DeployReport> {
    let found = step(
        host,
        "Get-HcpDeployment",
        json!({ "ScriptDir": script_dir }),
        ctx,
    )
    .await?;
    let previous = found
        .get("Version")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let mut report = DeployReport {
        host: host_name.to_string(),
        version: bundle.version.clone(),
        previous: previous.clone(),
        files_uploaded: 0,
        bytes_uploaded: 0,
    };
    if previous.as_deref() == Some(bundle.version.as_str()) {
        return Ok(report);
    }
    tracing::info!(host = host_name, from = ?previous, to = %bundle.version, "deploying HCP scripts");
    let staging = format!("{script_dir}\\.staging-{}", bundle.version);
    step(
        host,
        "Clear-HcpStaging",
        json!({ "StagingDir": staging }),
        ctx,
    )
    .await?;
    for (name, data) in &bundle.files {
        let path = format!("{staging}\\{name}");
        let part = format!("{path}.part");
        let mut offset = 0usize;
        let pieces: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(CHUNK).collect()
        };
        for piece in pieces {
            step(
                host,
                "Write-HcpFileChunk",
                json!({
                    "Path": part,
                    "Offset": offset,
                    "Data": base64::engine::general_purpose::STANDARD.encode(piece),
                }),
                ctx,
            )
            .await?;
            offset += piece.len();
        }
        let digest = hex::encode_upper(Sha256::digest(data));
        step(
            host,
            "Complete-HcpFile",
            json!({ "PartPath": part, "Path": path, "Sha256": digest }),
            ctx,
        )
        .await?;
        report.files_uploaded += 1;
        report.bytes_uploaded += data.len();
    }
    step(
        host,
        "Publish-HcpDeployment",
        json!({ "ScriptDir": script_dir, "Version": bundle.version, "StagingDir": staging }),
        ctx,
    )
    .await?;
    Ok(report)
}

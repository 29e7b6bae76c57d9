//! HCP errors as Terraform diagnostics: the summary carries the stable code, and an error that
//! names a request field points at the attribute that field came from.

use hcp_core::{Error, ErrorInfo, ErrorKind};
use tf_provider::{AttributePath, Diagnostic, Diagnostics};

/// The `hcp_vm` attributes that are sent to HCP under the same name.
const VM_FIELDS: &[&str] = &[
    "project",
    "name",
    "image",
    "flavor",
    "vcpus",
    "memory_mib",
    "disk_gib",
    "zone",
    "networks",
    "tags",
    "user_data",
];

/// Returns the attribute path of an HCP request field (`name`, `networks[1].network`,
/// `tags.owner`), or `None` for a field that no `hcp_vm` attribute carries.
///
/// # Examples
/// ```
/// use hcp_terraform::diag::field_path;
/// assert_eq!(field_path("networks[1].network").unwrap().to_string(), "networks[1]");
/// assert_eq!(field_path("tags.owner").unwrap().to_string(), "tags[\"owner\"]");
/// assert!(field_path("idempotency_key").is_none());
/// ```
pub fn field_path(field: &str) -> Option<AttributePath> {
    if let Some(rest) = field.strip_prefix("networks[") {
        let (index, _) = rest.split_once(']')?;
        let index: i64 = index.parse().ok()?;
        return Some(AttributePath::new("networks").index(index));
    }
    if let Some(key) = field.strip_prefix("tags.") {
        return Some(AttributePath::new("tags").key(key.to_string()));
    }
    VM_FIELDS
        .iter()
        .find(|f| **f == field)
        .map(|f| AttributePath::new(*f))
}

fn summary(kind_code: &str, kind: ErrorKind) -> String {
    let what = match kind {
        ErrorKind::InvalidSpec => "HCP refused the request",
        ErrorKind::NotFound => "Not found in HCP",
        ErrorKind::Conflict => "Conflict in HCP",
        ErrorKind::FeatureNotSupported => "Not supported by the hypervisor",
        ErrorKind::QuotaExceeded => "HCP quota or capacity exceeded",
        ErrorKind::ProviderUnavailable => "HCP or its hypervisor is unavailable",
        ErrorKind::Timeout => "Timed out",
        ErrorKind::Unauthorized => "Not authorized by HCP",
        ErrorKind::Cancelled => "Cancelled",
        _ => "HCP failed",
    };
    format!("{what} ({kind_code})")
}

/// Records an error diagnostic on `path`. Unlike `Diagnostic::new`, it never appends a
/// backtrace to the detail (which `RUST_BACKTRACE` in Terraform's environment would).
pub fn error(
    diags: &mut Diagnostics,
    summary: impl Into<String>,
    detail: impl Into<String>,
    path: AttributePath,
) {
    diags.add_error(Diagnostic {
        summary: summary.into().into(),
        detail: detail.into().into(),
        attribute: path,
    });
}

/// Records an error diagnostic about the whole resource or configuration.
pub fn root_error(diags: &mut Diagnostics, summary: impl Into<String>, detail: impl Into<String>) {
    error(diags, summary, detail, AttributePath::root());
}

/// Records `error` as an error diagnostic: on the attribute its field names, else on
/// `fallback`.
pub fn report(diags: &mut Diagnostics, error: &Error, fallback: &AttributePath) {
    let path = error
        .field()
        .and_then(field_path)
        .unwrap_or_else(|| fallback.clone());
    self::error(
        diags,
        summary(error.code(), error.kind()),
        error.message(),
        path,
    );
}

/// Records a failed job's error as an error diagnostic, naming the job.
pub fn report_job(diags: &mut Diagnostics, job: &str, error: &ErrorInfo) {
    let path = error
        .field
        .as_deref()
        .and_then(field_path)
        .unwrap_or_else(AttributePath::root);
    self::error(
        diags,
        summary(&error.code, error.kind),
        format!("job `{job}` failed: {}", error.message),
        path,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_spec_points_at_the_attribute_and_carries_the_code() {
        let mut diags = Diagnostics::default();
        let e = Error::invalid("name", "must start with a lowercase letter");
        report(&mut diags, &e, &AttributePath::root());
        let d = &diags.errors[0];
        assert_eq!(d.attribute.to_string(), "name");
        assert!(d.summary.contains("INVALID_SPEC"), "{}", d.summary);
        assert!(d.detail.contains("lowercase"), "{}", d.detail);
    }

    #[test]
    fn fields_map_to_paths() {
        for f in VM_FIELDS {
            assert_eq!(field_path(f).unwrap().to_string(), *f);
        }
        assert_eq!(
            field_path("networks[0].network").unwrap().to_string(),
            "networks[0]"
        );
        assert!(field_path("networks[x].network").is_none());
        assert!(field_path("host").is_none());
    }

    #[test]
    fn a_job_error_names_its_code_and_job() {
        let mut diags = Diagnostics::default();
        let info = ErrorInfo {
            kind: ErrorKind::ProviderError,
            code: "PROVIDER_ERROR".into(),
            message: "the disk could not be cloned".into(),
            detail: None,
            field: None,
        };
        report_job(&mut diags, "job-1", &info);
        let d = &diags.errors[0];
        assert!(d.summary.contains("PROVIDER_ERROR"));
        assert!(d.detail.contains("job-1") && d.detail.contains("cloned"));
    }
}

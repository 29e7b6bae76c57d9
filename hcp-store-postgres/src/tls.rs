//! TLS towards PostgreSQL, asked for the libpq way in the database URL (`sslmode`,
//! `sslrootcert`).
//!
//! # Behavior
//! - `sslmode=require`, `verify-ca` or `verify-full`: the connection is encrypted, and the
//!   server's certificate chain and name (its host name or IP address in the URL) are verified
//!   against the PEM CA file `sslrootcert`, or the public roots (Mozilla's) without one. HCP
//!   verifies in all three modes: it never sends a password over a connection whose server it
//!   has not authenticated.
//! - `sslmode=disable`, `allow` or `prefer` (the default when absent): plain TCP.
//! - Any other `sslmode` is refused; so is an `sslrootcert` that cannot be read or holds no
//!   certificate.

use std::path::PathBuf;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use hcp_core::{Error, Result, TlsTrust};
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How HCP connects to the database.
#[derive(Clone)]
pub(crate) enum Tls {
    /// Plain TCP.
    Plain,
    /// TLS with the server authenticated.
    Verified(MakeRustlsConnect),
}

impl Tls {
    /// The driver's `sslmode` for this choice: TLS required, or none.
    pub(crate) fn ssl_mode(&self) -> SslMode {
        match self {
            Tls::Plain => SslMode::Disable,
            Tls::Verified(_) => SslMode::Require,
        }
    }

    /// The pool's connection manager for `cfg`, dialling this way.
    pub(crate) fn manager(&self, cfg: &Config) -> Manager {
        let config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        match self {
            Tls::Plain => Manager::from_config(cfg.clone(), NoTls, config),
            Tls::Verified(c) => Manager::from_config(cfg.clone(), c.clone(), config),
        }
    }

    /// Opens one connection outside the pool, dialling this way; the task driving it ends when
    /// the client is dropped.
    pub(crate) async fn connect(
        &self,
        cfg: &Config,
    ) -> std::result::Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        match self {
            Tls::Plain => connect_with(cfg, NoTls).await,
            Tls::Verified(c) => connect_with(cfg, c.clone()).await,
        }
    }
}

async fn connect_with<T>(
    cfg: &Config,
    tls: T,
) -> std::result::Result<(Client, JoinHandle<()>), tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, conn) = cfg.connect(tls).await?;
    let conn = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok((client, conn))
}

/// What the URL asked for, before its CA file was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsRequest {
    /// True for `require`, `verify-ca` and `verify-full`.
    pub(crate) encrypt: bool,
    /// The PEM CA file (`sslrootcert`).
    pub(crate) root_cert: Option<PathBuf>,
}

const MODES: &str = "disable, allow, prefer, require, verify-ca or verify-full";

fn mode(value: &str) -> Result<bool> {
    match value {
        "disable" | "allow" | "prefer" => Ok(false),
        "require" | "verify-ca" | "verify-full" => Ok(true),
        _ => Err(Error::invalid(
            "database_url",
            format!("sslmode must be {MODES}"),
        )),
    }
}

/// Takes `sslmode` and `sslrootcert` out of `url` (a `postgres://` URL or a `key=value`
/// string) and returns the rest, for the driver's parser, with what they asked for.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming `database_url` for an unknown `sslmode`; the URL
/// itself is never repeated.
pub(crate) fn split(url: &str) -> Result<(String, TlsRequest)> {
    let mut request = TlsRequest {
        encrypt: false,
        root_cert: None,
    };
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if is_url {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), request));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            // One pair at a time, decoded as a query string is; the others stay as written.
            let (key, value) = form_urlencoded::parse(pair.as_bytes())
                .next()
                .unwrap_or_default();
            match &*key {
                "sslmode" => request.encrypt = mode(&value)?,
                "sslrootcert" => request.root_cert = Some(PathBuf::from(&*value)),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, request));
    }
    let mut kept = Vec::new();
    for token in url.split_whitespace() {
        let (key, value) = token.split_once('=').unwrap_or((token, ""));
        let value = value.trim_matches('\'');
        match key {
            "sslmode" => request.encrypt = mode(value)?,
            "sslrootcert" => request.root_cert = Some(PathBuf::from(value)),
            _ => kept.push(token),
        }
    }
    Ok((kept.join(" "), request))
}

impl TlsRequest {
    /// Reads the CA file, when one is named, and builds the connector.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming `database_url` when the CA file cannot be
    /// read or holds no usable certificate (the message names the file, never the URL).
    pub(crate) fn connector(&self) -> Result<Tls> {
        if !self.encrypt {
            return Ok(Tls::Plain);
        }
        let trust = match &self.root_cert {
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    Error::invalid(
                        "database_url",
                        format!("sslrootcert {} cannot be read: {e}", path.display()),
                    )
                })?;
                TlsTrust::CaPem(pem)
            }
            None => TlsTrust::System,
        };
        let config = hcp_tls::client_config(&trust).map_err(|e| {
            Error::invalid(
                "database_url",
                match &self.root_cert {
                    Some(path) => format!("sslrootcert {}: {e}", path.display()),
                    None => e,
                },
            )
        })?;
        Ok(Tls::Verified(MakeRustlsConnect::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_rest_of_a_url_alone() {
        let (rest, r) =
            split("postgres://u:p%40ss@db:5432/hcp?sslmode=verify-full&sslrootcert=%2Fca%20dir%2Fca.crt&connect_timeout=5")
                .unwrap();
        assert_eq!(rest, "postgres://u:p%40ss@db:5432/hcp?connect_timeout=5");
        assert!(r.encrypt);
        assert_eq!(r.root_cert, Some(PathBuf::from("/ca dir/ca.crt")));

        let (rest, r) = split("postgres://u@db/hcp?sslmode=prefer").unwrap();
        assert_eq!(rest, "postgres://u@db/hcp");
        assert!(!r.encrypt);
        let (rest, r) = split("postgres://u@db/hcp").unwrap();
        assert_eq!(rest, "postgres://u@db/hcp");
        assert!(!r.encrypt);

        let (rest, r) =
            split("host=db user=u sslmode=require sslrootcert='/etc/ca.pem' dbname=hcp").unwrap();
        assert_eq!(rest, "host=db user=u dbname=hcp");
        assert!(r.encrypt);
        assert_eq!(r.root_cert, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn a_bad_mode_or_ca_file_names_the_setting_never_the_url() {
        let e = split("postgres://u:hunter2@db/hcp?sslmode=always").unwrap_err();
        assert_eq!(e.field(), Some("database_url"));
        assert!(e.message().contains("verify-full"), "{e}");
        assert!(!format!("{e} {e:?}").contains("hunter2"));

        let (_, r) =
            split("postgres://u:hunter2@db/hcp?sslmode=require&sslrootcert=/nonexistent/ca.crt")
                .unwrap();
        let e = r.connector().err().expect("a missing CA file is refused");
        assert_eq!(e.field(), Some("database_url"));
        assert!(e.message().contains("/nonexistent/ca.crt"), "{e}");
        assert!(!format!("{e} {e:?}").contains("hunter2"));

        let dir = std::env::temp_dir().join(format!("hcp-no-pem-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate").unwrap();
        let r = TlsRequest {
            encrypt: true,
            root_cert: Some(dir.clone()),
        };
        let e = r
            .connector()
            .err()
            .expect("a file without a certificate is refused");
        assert!(e.message().contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_file(dir);
    }
}

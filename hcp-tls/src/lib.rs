//! # hcp-tls
//!
//! Builds the TLS client configuration HCP uses towards a hypervisor's API or console from one
//! [`TlsTrust`]: the bundled public roots (Mozilla's, through `webpki-roots`), a private CA given
//! as PEM, or one pinned certificate by its SHA-256 digest. Providers hand the configuration to
//! their HTTP client (`reqwest`'s `use_preconfigured_tls`), and console relays to their
//! WebSocket connection, so every place that dials a hypervisor trusts the same way.
//!
//! ```
//! use hcp_core::TlsTrust;
//! let digest = hcp_tls::parse_fingerprint(&"ab".repeat(32)).unwrap();
//! let config = hcp_tls::client_config(&TlsTrust::PinnedSha256(digest)).unwrap();
//! assert!(config.alpn_protocols.is_empty());
//! ```

use std::sync::Arc;

pub use hcp_core::TlsTrust;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// Builds a client configuration that trusts what `trust` says.
///
/// # Errors
/// A message (naming no secret) when the PEM holds no certificate or a certificate the root
/// store refuses.
pub fn client_config(trust: &TlsTrust) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let config = match trust {
        TlsTrust::PinnedSha256(digest) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                digest: *digest,
                provider,
            }))
            .with_no_client_auth(),
        TlsTrust::CaPem(pem) => {
            let mut roots = RootCertStore::empty();
            let mut count = 0usize;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("the CA file is not valid PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA file holds a certificate rustls refuses: {e}"))?;
                count += 1;
            }
            if count == 0 {
                return Err("the CA file holds no PEM certificate".into());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::System => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => return Err("this kind of TLS trust is not supported".into()),
    };
    Ok(config)
}

/// Parses a SHA-256 fingerprint written as 64 hex digits, with or without colons (the form
/// `openssl x509 -fingerprint -sha256` and Proxmox print).
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let bad = || "is not a SHA-256 fingerprint (64 hex digits, colons allowed)".to_string();
    let hexdigits: String = s.trim().chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&hexdigits).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

/// Accepts exactly the certificate whose SHA-256 digest was pinned; handshake signatures are
/// still checked.
#[derive(Debug)]
struct PinnedCertificate {
    digest: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = Sha256::digest(end_entity.as_ref());
        if digest.as_slice() == self.digest {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the certificate does not match the pinned fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let plain = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&plain).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("ab").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn a_pem_without_certificates_is_refused() {
        let e = client_config(&TlsTrust::CaPem("not a certificate".into())).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        assert!(client_config(&TlsTrust::System).is_ok());
    }
}

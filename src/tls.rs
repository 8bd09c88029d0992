//! TLS files: the listener's certificate chain and private key, parsed into the
//! `rustls::ServerConfig` the listener serves with, and extra CA certificates trusted for
//! upstreams. A leaf: it knows PEM and rustls, nothing of the crate around it. Config
//! validation calls it once and keeps the result, so a broken file fails at start and is
//! never parsed twice.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Which of the two listener files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
}

/// A listener file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct TlsError {
    pub file: TlsFile,
    pub reason: String,
}

impl TlsError {
    fn new(file: TlsFile, reason: String) -> Self {
        TlsError { file, reason }
    }
}

/// Parses the certificate chain and the key (which must match it) into a server config
/// that offers h2 and http/1.1 by ALPN.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| {
            TlsError::new(
                TlsFile::Cert,
                format!("cannot read {}: {e}", cert_file.display()),
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TlsError::new(
                TlsFile::Cert,
                format!(
                    "{} is not a PEM certificate chain: {e}",
                    cert_file.display()
                ),
            )
        })?;
    if certs.is_empty() {
        return Err(TlsError::new(
            TlsFile::Cert,
            format!("{} contains no PEM certificate", cert_file.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        TlsError::new(
            TlsFile::Key,
            format!("{} is not a PEM private key: {e}", key_file.display()),
        )
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::new(TlsFile::Key, format!("does not match the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Reads a PEM bundle of CA certificates, each checked to be usable as a trust anchor.
pub fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} contains no certificate", path.display()));
    }
    let mut probe = rustls::RootCertStore::empty();
    for cert in &certs {
        probe
            .add(cert.clone())
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_and_unparsable_files_name_the_file_they_are_in() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem\n").unwrap();
        let err = server_config(&missing, &junk).unwrap_err();
        assert_eq!(err.file, TlsFile::Cert, "{err}");
        assert!(err.reason.contains("absent.pem"), "{err}");

        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_file = dir.path().join("cert.pem");
        std::fs::write(&cert_file, cert.cert.pem()).unwrap();
        let err = server_config(&cert_file, &junk).unwrap_err();
        assert_eq!(err.file, TlsFile::Key, "{err}");

        let key_file = dir.path().join("key.pem");
        std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
        install_provider();
        let config = server_config(&cert_file, &key_file).unwrap();
        assert_eq!(config.alpn_protocols[0], b"h2");
    }

    #[test]
    fn a_ca_bundle_needs_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = ca_certificates(&empty).unwrap_err();
        assert!(err.contains("contains no certificate"), "{err}");
        let cert = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, cert.cert.pem()).unwrap();
        assert_eq!(ca_certificates(&bundle).unwrap().len(), 1);
    }

    /// rustls needs a process-wide provider (the crate installs it in `main`).
    fn install_provider() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

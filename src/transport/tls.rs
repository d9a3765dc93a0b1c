//! TLS with rustls (ring as its crypto provider): the server
//! configuration read from a PEM certificate chain and key, and the accept
//! step that first tells a TLS client from one that sent something else.

use super::{Refused, first_byte};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

pub use tokio_rustls::TlsAcceptor;

/// Why a certificate or key file was refused at start: the field, the file
/// and what is wrong (never the key's contents).
#[derive(Debug, thiserror::Error)]
#[error("{field}: {path}: {problem}")]
pub struct TlsFileError {
    pub field: String,
    pub path: String,
    pub problem: String,
}

/// Reads `cert` (the chain, server certificate first) and `key` for the
/// TLS listeners of `section` (`mqtt` or `http`, for the messages).
/// `alpn`: the application protocols offered (empty: none).
pub fn acceptor(
    section: &str,
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<TlsAcceptor, TlsFileError> {
    let cert_error = |problem: String| TlsFileError {
        field: format!("{section}.tls_cert"),
        path: cert.display().to_string(),
        problem,
    };
    let key_error = |problem: String| TlsFileError {
        field: format!("{section}.tls_key"),
        path: key.display().to_string(),
        problem,
    };
    let text = std::fs::read(cert).map_err(|e| cert_error(format!("cannot read it: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error(
            "holds no certificate (a PEM block \"-----BEGIN CERTIFICATE-----\")".into(),
        ));
    }
    let text = std::fs::read(key).map_err(|e| key_error(format!("cannot read it: {e}")))?;
    let private = match PrivateKeyDer::from_pem_slice(&text) {
        Ok(private) => private,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(key_error(
                "holds no private key (a PEM block \"-----BEGIN PRIVATE KEY-----\", \
                 \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")"
                    .into(),
            ));
        }
        Err(e) => return Err(key_error(format!("not a PEM private key: {e}"))),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(format!("TLS set-up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => key_error(format!(
                "does not match the certificate in {} ({e})",
                cert.display()
            )),
            e => key_error(format!("unusable with the certificate: {e}")),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS handshake of a new connection, after checking that it starts
/// like one (a handshake record): plain MQTT or HTTP sent to a TLS port is
/// named as such. The caller bounds the time it takes.
pub async fn accept(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, Refused> {
    const HANDSHAKE_RECORD: u8 = 0x16;
    match first_byte(&tcp).await? {
        HANDSHAKE_RECORD => {}
        other => return Err(Refused::not_tls(other)),
    }
    acceptor.accept(tcp).await.map_err(Refused::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::certs;

    fn files() -> (tempfile::TempDir, certs::Files) {
        let dir = tempfile::tempdir().unwrap();
        certs::ensure(dir.path()).unwrap();
        let files = certs::Files::in_dir(dir.path());
        (dir, files)
    }

    #[test]
    fn a_generated_certificate_loads() {
        let (_dir, files) = files();
        acceptor("mqtt", &files.cert, &files.key, &[]).unwrap();
    }

    /// Each bad file is refused naming the field and the file, and never
    /// showing the key.
    #[test]
    fn bad_files_are_named() {
        let (dir, files) = files();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        let other = tempfile::tempdir().unwrap();
        certs::ensure(other.path()).unwrap();
        let other_key = certs::Files::in_dir(other.path()).key;
        let key_text = std::fs::read_to_string(&files.key).unwrap();
        let cases = [
            (&missing, &files.key, "mqtt.tls_cert", "cannot read it"),
            (
                &garbage,
                &files.key,
                "mqtt.tls_cert",
                "holds no certificate",
            ),
            (
                &broken,
                &files.key,
                "mqtt.tls_cert",
                "not a PEM certificate",
            ),
            (
                &files.key,
                &files.key,
                "mqtt.tls_cert",
                "holds no certificate",
            ),
            (&files.cert, &missing, "mqtt.tls_key", "cannot read it"),
            (
                &files.cert,
                &garbage,
                "mqtt.tls_key",
                "holds no private key",
            ),
            (
                &files.cert,
                &files.cert,
                "mqtt.tls_key",
                "holds no private key",
            ),
            (&files.cert, &other_key, "mqtt.tls_key", "does not match"),
        ];
        for (cert, key, field, problem) in cases {
            let e = acceptor("mqtt", cert, key, &[]).err().unwrap();
            let message = e.to_string();
            assert!(message.starts_with(field), "{message}");
            assert!(message.contains(problem), "{problem}: {message}");
            let named = if field.ends_with("cert") { cert } else { key };
            assert!(message.contains(&named.display().to_string()), "{message}");
            for line in key_text.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!message.contains(line), "{message}");
            }
        }
    }
}

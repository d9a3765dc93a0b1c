//! Self-signed certificates for trying TLS out: a CA of its own and a
//! server certificate it signed, for the names given (by default
//! `127.0.0.1`, `::1` and `localhost`). The demo writes them into its
//! storage directory when they are missing; `mqgate cert` writes them
//! anywhere. A client trusts the CA file (`ca.crt`); the server reads
//! `server.crt` and `server.key`.
//!
//! The CA's private key is not kept: nobody can sign another certificate
//! with it once the files are written. A new CA is made when any of the
//! three files is missing.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The names a certificate made without `--name` is valid for: loopback.
pub const LOOPBACK_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];
/// How long the certificates are valid (a local CA the user trusts by
/// hand: the 398-day limit of public CAs does not apply).
const VALID_DAYS: u64 = 3650;

/// The three PEM texts. `Debug` leaves the private key out.
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generated")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Where the three files are in a directory.
#[derive(Debug, Clone)]
pub struct Files {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Files {
    /// `dir/ca.crt`, `dir/server.crt`, `dir/server.key`.
    pub fn in_dir(dir: &Path) -> Files {
        use crate::config::demo;
        Files {
            ca: dir.join(demo::TLS_CA_FILE),
            cert: dir.join(demo::TLS_CERT_FILE),
            key: dir.join(demo::TLS_KEY_FILE),
        }
    }

    fn all_exist(&self) -> bool {
        [&self.ca, &self.cert, &self.key]
            .iter()
            .all(|p| p.is_file())
    }
}

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

/// A new CA and a server certificate it signed for `names` (IP addresses
/// or DNS names), valid from yesterday for ten years.
pub fn generate(names: &[String]) -> Result<Generated, rcgen::Error> {
    let today = chrono::Utc::now().date_naive();
    let (from, until) = (
        ymd(today - chrono::Days::new(1)),
        ymd(today + chrono::Days::new(VALID_DAYS)),
    );

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = rcgen::DistinguishedName::new();
    // A name of its own: a client that trusts another mqgate CA (an
    // earlier demo's) then says "unknown CA", not "bad signature".
    let ca_serial = serial();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("mqgate local CA {}", hex::encode(&ca_serial.as_ref()[..4])),
    );
    ca.distinguished_name
        .push(DnType::OrganizationName, "mqgate");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    ca.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    ca.serial_number = Some(ca_serial);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(names.to_vec())?;
    server.distinguished_name = rcgen::DistinguishedName::new();
    let common_name = names.first().map_or("mqgate", String::as_str);
    server
        .distinguished_name
        .push(DnType::CommonName, common_name);
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // OpenSSL's strict verification (Python 3.13's default) wants it.
    server.use_authority_key_identifier_extension = true;
    server.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    server.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    server.serial_number = Some(serial());
    let cert = server.signed_by(&key, &issuer)?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes the three files into `files`' places (the directory is made if
/// missing; the key is readable by its owner alone).
pub fn write(files: &Files, generated: &Generated) -> Result<(), CertError> {
    if let Some(dir) = files.cert.parent() {
        std::fs::create_dir_all(dir).map_err(|error| CertError::Write {
            path: dir.display().to_string(),
            error,
        })?;
    }
    // The key first and the CA last: a half-written set is made again.
    write_file(&files.key, generated.key_pem.as_bytes(), true)?;
    write_file(&files.cert, generated.cert_pem.as_bytes(), false)?;
    write_file(&files.ca, generated.ca_pem.as_bytes(), false)
}

/// The demo's certificates in `dir`: kept when all three files are there,
/// else made anew for loopback. True when they were made.
pub fn ensure(dir: &Path) -> Result<bool, CertError> {
    let files = Files::in_dir(dir);
    if files.all_exist() {
        return Ok(false);
    }
    let names: Vec<String> = LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect();
    write(&files, &generate(&names)?)?;
    Ok(true)
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let error = |error| CertError::Write {
        path: path.display().to_string(),
        error,
    };
    // Written beside and renamed: a reader never sees half a file.
    let partial = path.with_extension("partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&partial).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&partial, path).map_err(error)
}

/// A day as rcgen takes it: year, month, day.
fn ymd(day: chrono::NaiveDate) -> (i32, u8, u8) {
    use chrono::Datelike;
    (day.year(), day.month() as u8, day.day() as u8)
}

/// A random positive 16-byte serial number (RFC 5280: at most 20 bytes,
/// unique per CA).
fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_kept_and_remade_when_one_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure(dir.path()).unwrap());
        let files = Files::in_dir(dir.path());
        let first = std::fs::read_to_string(&files.ca).unwrap();
        assert!(first.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!ensure(dir.path()).unwrap(), "kept across restarts");
        assert_eq!(std::fs::read_to_string(&files.ca).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_file(&files.cert).unwrap();
        assert!(ensure(dir.path()).unwrap());
        assert_ne!(std::fs::read_to_string(&files.ca).unwrap(), first);
    }

    #[test]
    fn debug_hides_the_key() {
        let generated = generate(&["localhost".into()]).unwrap();
        assert!(generated.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{generated:?}").contains("PRIVATE KEY"));
    }
}

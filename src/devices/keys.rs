//! Random identifiers, and the server key device secrets are derived from.
//!
//! A device credential's secret is not stored: it is
//! `HMAC-SHA256(server key, instance | client id | DeviceAccessKeyId |
//! generation)`, encoded, computed when it is needed (GetDeviceCredential
//! hands it back; a DeviceCredential CONNECT checks a signature made with
//! it). So a copy of the device database alone hands out no secret; the
//! server key lives in its own file (`storage.dir/devices.key` unless
//! `storage.device_key_file` says where), created on first start with
//! permissions 0600. Losing it changes every device secret: back it up
//! with the database.
//!
//! A custom-auth identity's secret cannot be derived: the caller chooses it
//! and QueryCustomAuthIdentity hands it back. It is stored sealed
//! ([`ServerKey::seal`]): ChaCha20-Poly1305 under a key derived from the
//! server key, with a fresh random nonce per secret and the row's identity
//! as associated data, so a sealed secret moved to another row does not
//! open. The database alone reveals no secret either.

use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

/// Bytes of the server key.
const KEY_BYTES: usize = 32;

/// Why the server key could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: holds {len} bytes, not the {KEY_BYTES} of a device key; restore it from a backup"
    )]
    Length { path: String, len: usize },
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// The key device secrets are derived from.
pub struct ServerKey([u8; KEY_BYTES]);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey([REDACTED])")
    }
}

impl ServerKey {
    /// Reads the key at `path`, or creates it (0600) if there is none.
    pub fn load_or_create(path: &Path) -> Result<ServerKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; KEY_BYTES] =
                    bytes.as_slice().try_into().map_err(|_| KeyError::Length {
                        path: path.display().to_string(),
                        len: bytes.len(),
                    })?;
                Ok(ServerKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_BYTES];
                random(&mut key)?;
                match write_private(path, &key) {
                    Ok(()) => Ok(ServerKey(key)),
                    // Another process created it meanwhile: its key it is.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        ServerKey::load_or_create(path)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The secret of a device credential.
    pub fn device_secret(
        &self,
        instance_id: &str,
        client_id: &str,
        access_key_id: &str,
        generation: u32,
    ) -> Secret {
        // Two blocks (64 bytes), so that the letters drawn from them never
        // run short (see `base62`).
        let mut bytes = Vec::with_capacity(64);
        for block in [0u8, 1] {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
            for part in [instance_id, client_id, access_key_id] {
                // Length-prefixed, so that no two inputs read the same.
                mac.update(&(part.len() as u64).to_be_bytes());
                mac.update(part.as_bytes());
            }
            mac.update(&generation.to_be_bytes());
            mac.update(&[block]);
            bytes.extend_from_slice(&mac.finalize().into_bytes());
        }
        Secret::new(format!("DC.{}", base62(&bytes, 30)))
    }
}

impl ServerKey {
    /// A name for this key that does not reveal it: nodes of a cluster
    /// compare theirs, since they must derive the same device secrets.
    pub fn fingerprint(&self) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(b"mqgate key fingerprint v1");
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The key secrets are sealed with: derived, so that it is never the
    /// key device secrets come from.
    fn sealing_key(&self) -> chacha20poly1305::Key {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(b"mqgate sealing key v1");
        let bytes: [u8; 32] = mac.finalize().into_bytes().into();
        bytes.into()
    }

    /// Encrypts `secret` bound to `context` (what row it belongs to):
    /// nonce (12 bytes) followed by ciphertext and tag.
    pub fn seal(&self, context: &[u8], secret: &str) -> Result<Vec<u8>, KeyError> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&self.sealing_key());
        let mut nonce = [0u8; 12];
        random(&mut nonce)?;
        let sealed = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: secret.as_bytes(),
                    aad: context,
                },
            )
            .map_err(|_| KeyError::Random("sealing failed".into()))?;
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts what [`ServerKey::seal`] made for the same `context`;
    /// `None` if the bytes were altered, belong to another row, or were
    /// sealed under another server key.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Option<Secret> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        if sealed.len() < 12 {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&self.sealing_key());
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let plain = cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .ok()?;
        String::from_utf8(plain).ok().map(Secret::new)
    }
}

/// Writes a file readable by its owner only.
/// Writes a new file at `path` holding `bytes` (0600), or fails with
/// `AlreadyExists`: written whole under another name first and then linked
/// into place, so that nodes starting at once on one shared key file never
/// read it half written, and only one of their keys becomes the file.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut name = path.as_os_str().to_owned();
    let mut unique = [0u8; 8];
    random(&mut unique).map_err(std::io::Error::other)?;
    name.push(format!(".new-{}", hex::encode(unique)));
    let staged = std::path::PathBuf::from(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&staged).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&staged, path));
    let _ = std::fs::remove_file(&staged);
    linked
}

/// Fills `bytes` from the operating system's random source.
pub fn random(bytes: &mut [u8]) -> Result<(), KeyError> {
    getrandom::fill(bytes).map_err(|e| KeyError::Random(e.to_string()))
}

/// A fresh random identifier: `prefix` and `len` letters and digits (about
/// 5.95 bits each).
pub fn random_id(prefix: &str, len: usize) -> Result<String, KeyError> {
    let mut bytes = [0u8; 64];
    random(&mut bytes)?;
    Ok(format!("{prefix}{}", base62(&bytes, len)))
}

/// `len` characters of `A-Za-z0-9` from `bytes` (rejection sampling, so
/// each character is uniform; 64 random bytes give more than 40
/// characters).
fn base62(bytes: &[u8], len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    for byte in bytes {
        // 248 = 4 * 62: bytes at or above it would favour some letters.
        if *byte < 248 {
            out.push(ALPHABET[(*byte % 62) as usize] as char);
            if out.len() == len {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_row_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = ServerKey::load_or_create(&dir.path().join("k")).unwrap();
        let other = ServerKey::load_or_create(&dir.path().join("other")).unwrap();
        let sealed = key.seal(b"i1|USER|alice|", "s3cret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(
            key.open(b"i1|USER|alice|", &sealed).unwrap().expose(),
            "s3cret"
        );
        assert!(key.open(b"i1|USER|bob|", &sealed).is_none());
        assert!(other.open(b"i1|USER|alice|", &sealed).is_none());
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(key.open(b"i1|USER|alice|", &altered).is_none());
        // A fresh nonce each time: the same secret seals differently.
        assert_ne!(key.seal(b"i1|USER|alice|", "s3cret").unwrap(), sealed);
    }

    #[test]
    fn the_key_is_created_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.key");
        let key = ServerKey::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = ServerKey::load_or_create(&path).unwrap();
        let secret = |k: &ServerKey, generation| {
            k.device_secret("i", "GID_a@@@d", "DC.x", generation)
                .expose()
                .to_string()
        };
        assert_eq!(secret(&key, 0), secret(&again, 0));
        assert_ne!(secret(&key, 0), secret(&key, 1));
        assert_ne!(
            key.device_secret("i", "GID_a@@@d", "DC.x", 0).expose(),
            key.device_secret("i", "GID_a@@@e", "DC.x", 0).expose()
        );
        assert!(secret(&key, 0).starts_with("DC.") && secret(&key, 0).len() == 33);
        assert!(!format!("{key:?}").contains(&format!("{:?}", key.0)));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            ServerKey::load_or_create(&path),
            Err(KeyError::Length { len: 5, .. })
        ));
    }

    #[test]
    fn processes_creating_one_key_at_once_all_get_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.key");
        let fingerprints: Vec<String> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| ServerKey::load_or_create(&path).unwrap().fingerprint()))
                .collect();
            starts.into_iter().map(|s| s.join().unwrap()).collect()
        });
        assert!(
            fingerprints.iter().all(|f| f == &fingerprints[0]),
            "{fingerprints:?}"
        );
        assert_eq!(
            ServerKey::load_or_create(&path).unwrap().fingerprint(),
            fingerprints[0]
        );
        // Nothing staged is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn random_ids_are_letters_and_digits_and_differ() {
        let a = random_id("DC.", 22).unwrap();
        let b = random_id("DC.", 22).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        assert!(a[3..].chars().all(|c| c.is_ascii_alphanumeric()));
    }
}

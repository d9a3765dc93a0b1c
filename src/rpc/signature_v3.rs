//! Signature V3 (`ACS3-HMAC-SHA256`): pure functions of plain values, no
//! I/O, tested against Alibaba's published vector.
//!
//! ```text
//! Authorization: ACS3-HMAC-SHA256 Credential=<AccessKeyId>,SignedHeaders=<a;b;c>,Signature=<hex>
//! CanonicalRequest = METHOD \n / \n canonical query \n canonical headers \n SignedHeaders \n HashedPayload
//! StringToSign     = ACS3-HMAC-SHA256 \n hex(SHA-256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(AccessKeySecret, StringToSign))
//! ```
//! The canonical query covers the query string only (the body is covered by
//! its hash); canonical headers are `name:trimmed value\n` for each signed
//! header, in the order of SignedHeaders.

use super::signature_v1::canonical_query;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// The parts of an `Authorization: ACS3-...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub algorithm: String,
    pub access_key_id: String,
    /// Lower-case header names, in the order the client signed them.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    #[error("it does not start with an algorithm name such as ACS3-HMAC-SHA256")]
    NoAlgorithm,
    #[error("it has no {0}= part")]
    Missing(&'static str),
    #[error("its {0}= part is empty")]
    Empty(&'static str),
    #[error("{0}= appears twice")]
    Repeated(&'static str),
    #[error("part \"{0}\" is not Credential=, SignedHeaders= or Signature=")]
    Unknown(String),
}

/// Parses `ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`.
/// The algorithm is returned as sent, for the caller to accept or refuse.
pub fn parse_authorization(value: &str) -> Result<Authorization, AuthorizationError> {
    let value = value.trim();
    let (algorithm, rest) = value
        .split_once(' ')
        .filter(|(a, _)| !a.is_empty() && !a.contains('='))
        .ok_or(AuthorizationError::NoAlgorithm)?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, field) = match part.split_once('=') {
            Some(("Credential", v)) => ("Credential", (&mut credential, v)),
            Some(("SignedHeaders", v)) => ("SignedHeaders", (&mut signed_headers, v)),
            Some(("Signature", v)) => ("Signature", (&mut signature, v)),
            _ => return Err(AuthorizationError::Unknown(part.chars().take(40).collect())),
        };
        let (slot, v) = field;
        if slot.is_some() {
            return Err(AuthorizationError::Repeated(name));
        }
        if v.trim().is_empty() {
            return Err(AuthorizationError::Empty(name));
        }
        *slot = Some(v.trim().to_string());
    }
    let access_key_id = credential.ok_or(AuthorizationError::Missing("Credential"))?;
    let signed_headers = signed_headers.ok_or(AuthorizationError::Missing("SignedHeaders"))?;
    let signature = signature.ok_or(AuthorizationError::Missing("Signature"))?;
    Ok(Authorization {
        algorithm: algorithm.to_string(),
        access_key_id,
        signed_headers: signed_headers
            .split(';')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
        signature,
    })
}

/// Lower-case hex SHA-256 of a body (the `x-acs-content-sha256` value).
pub fn hashed_payload(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The canonical request. `sorted_query` is the query's parameters sorted by
/// key (byte order); `signed_headers` pairs each signed header name (lower
/// case, in SignedHeaders order) with its value.
pub fn canonical_request<'a>(
    method: &str,
    sorted_query: impl IntoIterator<Item = (&'a str, &'a str)>,
    signed_headers: &[(&str, &str)],
    hashed_payload: &str,
) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(method);
    out.push_str("\n/\n");
    out.push_str(&canonical_query(sorted_query));
    out.push('\n');
    for (name, value) in signed_headers {
        out.push_str(name);
        out.push(':');
        out.push_str(value.trim());
        out.push('\n');
    }
    out.push('\n');
    let names: Vec<&str> = signed_headers.iter().map(|(n, _)| *n).collect();
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(hashed_payload);
    out
}

/// `ACS3-HMAC-SHA256\n` + hex(SHA-256(canonical request)).
pub fn string_to_sign(canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

fn mac(secret: &str, string_to_sign: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    mac
}

/// hex(HMAC-SHA256(secret, string_to_sign)).
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    hex::encode(mac(secret, string_to_sign).finalize().into_bytes())
}

/// Whether `provided` (hex, either case) is the signature, compared in
/// constant time.
pub fn verify(secret: &str, string_to_sign: &str, provided: &str) -> bool {
    let Ok(provided) = hex::decode(provided) else {
        return false;
    };
    mac(secret, string_to_sign).verify_slice(&provided).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alibaba's published V3 vector (ECS RunInstances).
    #[test]
    fn published_vector_run_instances() {
        let payload = hashed_payload(b"");
        assert_eq!(
            payload,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let query = [
            (
                "ImageId",
                "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            ),
            ("RegionId", "cn-shanghai"),
        ];
        let headers = [
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-action", "RunInstances"),
            ("x-acs-content-sha256", payload.as_str()),
            ("x-acs-date", "2023-10-26T10:22:32Z"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            ("x-acs-version", "2014-05-26"),
        ];
        let canonical = canonical_request("POST", query, &headers, &payload);
        let sts = string_to_sign(&canonical);
        assert_eq!(
            sts,
            "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        let signature = sign("YourAccessKeySecret", &sts);
        assert_eq!(
            signature,
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
        assert!(verify("YourAccessKeySecret", &sts, &signature));
        assert!(verify(
            "YourAccessKeySecret",
            &sts,
            &signature.to_uppercase()
        ));
        assert!(!verify("YourAccessKeySecreT", &sts, &signature));
        assert!(!verify("YourAccessKeySecret", &sts, "zz"));
    }

    #[test]
    fn authorization_headers_parse_or_say_why_not() {
        let a = parse_authorization(
            "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=Host;x-acs-action,Signature=ab12",
        )
        .unwrap();
        assert_eq!(a.algorithm, "ACS3-HMAC-SHA256");
        assert_eq!(a.access_key_id, "testid");
        assert_eq!(a.signed_headers, ["host", "x-acs-action"]);
        assert_eq!(a.signature, "ab12");
        let spaced =
            parse_authorization("ACS3-HMAC-SHA256 Credential=k, SignedHeaders=host, Signature=00")
                .unwrap();
        assert_eq!(spaced.signed_headers, ["host"]);
        let bad = [
            ("", AuthorizationError::NoAlgorithm),
            (
                "Credential=k,SignedHeaders=h,Signature=s",
                AuthorizationError::NoAlgorithm,
            ),
            (
                "ACS3-HMAC-SHA256 SignedHeaders=h,Signature=s",
                AuthorizationError::Missing("Credential"),
            ),
            (
                "ACS3-HMAC-SHA256 Credential=k,Signature=s",
                AuthorizationError::Missing("SignedHeaders"),
            ),
            (
                "ACS3-HMAC-SHA256 Credential=k,SignedHeaders=h",
                AuthorizationError::Missing("Signature"),
            ),
            (
                "ACS3-HMAC-SHA256 Credential=,SignedHeaders=h,Signature=s",
                AuthorizationError::Empty("Credential"),
            ),
            (
                "ACS3-HMAC-SHA256 Credential=k,Credential=k,SignedHeaders=h,Signature=s",
                AuthorizationError::Repeated("Credential"),
            ),
            (
                "ACS3-HMAC-SHA256 Credential=k,Foo=1,SignedHeaders=h,Signature=s",
                AuthorizationError::Unknown("Foo=1".into()),
            ),
        ];
        for (value, expected) in bad {
            assert_eq!(parse_authorization(value), Err(expected), "{value}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any header value: parsed or refused with a reason, never a panic.
        #[test]
        fn parsing_arbitrary_authorization_never_panics(value in "\\PC{0,200}") {
            let _ = parse_authorization(&value);
        }

        /// What a client writes, the parser reads back.
        #[test]
        fn authorization_round_trips(
            key in "[A-Za-z0-9]{1,24}",
            headers in proptest::collection::vec("[a-z][a-z0-9-]{0,20}", 1..10),
            signature in "[0-9a-f]{64}",
        ) {
            let value = format!("{ALGORITHM} Credential={key},SignedHeaders={},Signature={signature}", headers.join(";"));
            let parsed = parse_authorization(&value).unwrap();
            prop_assert_eq!(parsed.access_key_id, key);
            prop_assert_eq!(parsed.signed_headers, headers);
            prop_assert_eq!(parsed.signature, signature);
        }

        #[test]
        fn verify_arbitrary_signatures(provided in "\\PC{0,80}") {
            let _ = verify("secret", "ACS3-HMAC-SHA256\n00", &provided);
        }
    }
}

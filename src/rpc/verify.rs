//! Signature verification: turns an incoming request into a
//! [`VerifiedRequest`], the only type the rest of the pipeline accepts.
//! Nothing past this module can see a request whose signature was not
//! checked, because a `VerifiedRequest` can only be built here.

use super::params::Params;
use super::signature_v1;
use crate::directory::{Directory, User};
use crate::error::{ApiError, ErrorCode};
use std::sync::Arc;

/// A request as it arrived: its method, its parameters (query and form
/// body), and the host it was sent to.
#[derive(Debug)]
pub struct IncomingRequest {
    pub method: String,
    pub params: Params,
}

/// Answer format, from `Format` (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

/// Parameters every RPC call carries, which are not the action's own.
pub const COMMON_PARAMETERS: &[&str] = &[
    "AccessKeyId",
    "Action",
    "Format",
    "RegionId",
    "SecurityToken",
    "Signature",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureType",
    "SignatureVersion",
    "Timestamp",
    "Version",
];

/// A request whose signature matched the secret of a known, active
/// AccessKey. Built only by [`verify`]: the private field keeps every other
/// module, in this crate too, from making one (`#[non_exhaustive]` would
/// only stop other crates).
#[derive(Debug)]
#[allow(clippy::manual_non_exhaustive)]
pub struct VerifiedRequest {
    pub user: Arc<User>,
    pub action: String,
    pub version: String,
    pub timestamp: String,
    pub nonce: String,
    /// The action's own parameters (common parameters removed).
    pub params: Params,
    _verified: (),
}

/// The format a request asks for, read before verification so that errors
/// can be answered in it too. `None` when `Format` is absent.
pub fn requested_format(params: &Params) -> Result<Option<Format>, ApiError> {
    match params.get("Format") {
        None => Ok(None),
        Some(f) if f.eq_ignore_ascii_case("json") => Ok(Some(Format::Json)),
        Some(f) if f.eq_ignore_ascii_case("xml") => Ok(Some(Format::Xml)),
        Some(other) => Err(ApiError::invalid(
            "Format",
            format!("\"{other}\" is not a format; use JSON or XML"),
        )),
    }
}

fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    params.get(name).ok_or_else(|| ApiError::missing(name))
}

/// Checks the V1 signature of `request` against the directory's keys.
pub fn verify(
    request: IncomingRequest,
    directory: &Directory,
) -> Result<VerifiedRequest, ApiError> {
    let params = &request.params;
    let Some(signature) = params.get("Signature").filter(|s| !s.is_empty()) else {
        return Err(ApiError::new(
            ErrorCode::IncompleteSignature,
            "The request signature does not conform to Aliyun standards: the Signature parameter is missing or empty.",
        ));
    };
    let access_key_id = required(params, "AccessKeyId")?;
    let method = required(params, "SignatureMethod")?;
    if method != "HMAC-SHA1" {
        return Err(ApiError::new(
            ErrorCode::InvalidSignatureMethod,
            format!(
                "Specified signature method \"{method}\" is not supported; use SignatureMethod=HMAC-SHA1."
            ),
        ));
    }
    let version = required(params, "SignatureVersion")?;
    if version != "1.0" {
        return Err(ApiError::new(
            ErrorCode::InvalidSignatureMethod,
            format!(
                "Specified signature version \"{version}\" is not supported; use SignatureVersion=1.0."
            ),
        ));
    }
    required(params, "SignatureNonce")?;
    required(params, "Timestamp")?;
    if params.contains("SecurityToken") {
        return Err(ApiError::new(
            ErrorCode::InvalidSecurityToken,
            "mqgate issues no STS tokens, so it cannot accept SecurityToken; sign with an AccessKey of the configuration instead.",
        ));
    }
    let user = lookup_key(directory, access_key_id)?;

    let unsigned = params.iter().filter(|(k, _)| *k != "Signature");
    let canonical = signature_v1::canonical_query(unsigned);
    let string_to_sign = signature_v1::string_to_sign(&request.method, &canonical);
    if !signature_v1::verify(user.access_key_secret.expose(), &string_to_sign, signature) {
        // The old Python SDK compares the text after the colon with its own
        // string to sign, to tell a wrong secret from a wrong canonical form.
        return Err(ApiError::new(
            ErrorCode::SignatureDoesNotMatch,
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"
            ),
        ));
    }

    let mut params = request.params;
    let action = required(&params, "Action")?.to_string();
    let version = required(&params, "Version")?.to_string();
    let timestamp = params.get("Timestamp").unwrap_or_default().to_string();
    let nonce = params.get("SignatureNonce").unwrap_or_default().to_string();
    for common in COMMON_PARAMETERS {
        params.remove(common);
    }
    Ok(VerifiedRequest {
        user,
        action,
        version,
        timestamp,
        nonce,
        params,
        _verified: (),
    })
}

fn lookup_key(directory: &Directory, access_key_id: &str) -> Result<Arc<User>, ApiError> {
    let Some(user) = directory.user(access_key_id) else {
        return Err(ApiError::new(
            ErrorCode::InvalidAccessKeyIdNotFound,
            format!(
                "Specified access key is not found: \"{access_key_id}\" is not an AccessKeyId of this service."
            ),
        ));
    };
    if user.disabled {
        return Err(ApiError::new(
            ErrorCode::InvalidAccessKeyIdInactive,
            format!(
                "Specified access key is disabled: \"{access_key_id}\" is marked disabled in the configuration."
            ),
        ));
    }
    Ok(user.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn directory() -> Directory {
        let text = r#"
            [[accounts]]
            id = "1"
              [[accounts.instances]]
              id = "i"
              [[accounts.users]]
              name = "root"
              access_key_id = "testid"
              access_key_secret = "testsecret"
              root = true
              [[accounts.users]]
              name = "off"
              access_key_id = "offid"
              access_key_secret = "offsecret"
              disabled = true
        "#;
        Directory::from_config(&Config::parse(text, "t.toml").unwrap())
    }

    fn signed(method: &str, extra: &[(&str, &str)], secret: &str) -> IncomingRequest {
        let mut params = Params::default();
        for (k, v) in [
            ("AccessKeyId", "testid"),
            ("Action", "QuerySessionByClientId"),
            ("Version", "2020-04-20"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", "n1"),
            ("Timestamp", "2026-11-22T02:48:57Z"),
            ("ClientId", "GID_x@@@dev 1+*~/é"),
            ("InstanceId", "i"),
        ] {
            params.insert(k.into(), v.into()).unwrap();
        }
        for (k, v) in extra {
            params.remove(k);
            params.insert(k.to_string(), v.to_string()).unwrap();
        }
        let canonical = signature_v1::canonical_query(params.iter());
        let sts = signature_v1::string_to_sign(method, &canonical);
        params
            .insert("Signature".into(), signature_v1::sign(secret, &sts))
            .unwrap();
        IncomingRequest {
            method: method.into(),
            params,
        }
    }

    #[test]
    fn a_good_signature_yields_the_action_and_its_own_parameters() {
        let v = verify(signed("POST", &[], "testsecret"), &directory()).unwrap();
        assert_eq!(v.action, "QuerySessionByClientId");
        assert_eq!(v.user.access_key_id, "testid");
        let keys: Vec<_> = v.params.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["ClientId", "InstanceId"]);
    }

    #[test]
    fn each_bad_request_gets_its_code() {
        let d = directory();
        let code = |r: IncomingRequest| verify(r, &d).unwrap_err().code();
        assert_eq!(code(signed("POST", &[], "wrong")), "SignatureDoesNotMatch");
        let mut wrong_method = signed("POST", &[], "testsecret");
        wrong_method.method = "GET".into();
        assert_eq!(code(wrong_method), "SignatureDoesNotMatch");
        assert_eq!(
            code(signed("GET", &[("AccessKeyId", "nobody")], "testsecret")),
            "InvalidAccessKeyId.NotFound"
        );
        assert_eq!(
            code(signed("GET", &[("AccessKeyId", "offid")], "offsecret")),
            "InvalidAccessKeyId.Inactive"
        );
        assert_eq!(
            code(signed(
                "GET",
                &[("SignatureMethod", "HMAC-SHA256")],
                "testsecret"
            )),
            "InvalidSignatureMethod"
        );
        assert_eq!(
            code(signed("GET", &[("SignatureVersion", "2.0")], "testsecret")),
            "InvalidSignatureMethod"
        );
        assert_eq!(
            code(signed("GET", &[("SecurityToken", "t")], "testsecret")),
            "InvalidSecurityToken"
        );
        let mut unsigned = signed("GET", &[], "testsecret");
        unsigned.params.remove("Signature");
        assert_eq!(code(unsigned), "IncompleteSignature");
        let mut no_nonce = signed("GET", &[], "testsecret");
        no_nonce.params.remove("SignatureNonce");
        let e = verify(no_nonce, &d).unwrap_err();
        assert_eq!(e.code(), "MissingParameter");
        assert!(e.message.contains("SignatureNonce"));
    }

    #[test]
    fn the_mismatch_message_carries_the_server_string_to_sign() {
        let e = verify(signed("POST", &[], "wrong"), &directory()).unwrap_err();
        let (_, sts) = e.message.split_once("server string to sign is:").unwrap();
        assert!(sts.starts_with("POST&%2F&AccessKeyId%3Dtestid%26Action%3DQuerySessionByClientId"));
        assert!(!e.message.contains("testsecret"));
    }

    #[test]
    fn format_is_read_case_insensitively() {
        let mut p = Params::default();
        assert_eq!(requested_format(&p).unwrap(), None);
        p.insert("Format".into(), "json".into()).unwrap();
        assert_eq!(requested_format(&p).unwrap(), Some(Format::Json));
        p.remove("Format");
        p.insert("Format".into(), "Xml".into()).unwrap();
        assert_eq!(requested_format(&p).unwrap(), Some(Format::Xml));
        p.remove("Format");
        p.insert("Format".into(), "yaml".into()).unwrap();
        assert_eq!(
            requested_format(&p).unwrap_err().code(),
            "InvalidParameter.Format"
        );
    }
}

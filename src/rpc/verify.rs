//! Signature verification: turns an incoming request into a
//! [`VerifiedRequest`], the only type the rest of the pipeline accepts.
//! Nothing past this module can see a request whose signature was not
//! checked, because a `VerifiedRequest` can only be built here.

use super::parse::{IncomingRequest, Scheme};
use super::{signature_v1, signature_v3};
use crate::directory::{Directory, User};
use crate::error::{ApiError, ErrorCode, STRING_TO_SIGN_MARK};
use crate::params::{Params, Span};
use std::sync::Arc;

/// Parameters every V1 call carries, which are not the action's own.
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
    pub scheme: Scheme,
    /// The action's own parameters (common parameters removed); their text
    /// also holds the action, version, timestamp and nonce (below).
    pub params: Params,
    action: Span,
    version: Span,
    timestamp: Span,
    nonce: Span,
    _verified: (),
}

impl VerifiedRequest {
    pub fn action(&self) -> &str {
        self.params.text(self.action)
    }

    pub fn version(&self) -> &str {
        self.params.text(self.version)
    }

    pub fn timestamp(&self) -> &str {
        self.params.text(self.timestamp)
    }

    pub fn nonce(&self) -> &str {
        self.params.text(self.nonce)
    }
}

/// Checks the request's signature (V1 or V3, whichever it carries) against
/// the directory's keys.
pub fn verify(
    request: IncomingRequest,
    directory: &Directory,
) -> Result<VerifiedRequest, ApiError> {
    match request.scheme() {
        Scheme::V1 => verify_v1(request, directory),
        Scheme::V3 => verify_v3(request, directory),
    }
}

/// Whether `key` is one of the [`COMMON_PARAMETERS`] (a `match`, which
/// compiles to a switch on the length and one comparison).
fn is_common(key: &str) -> bool {
    matches!(
        key,
        "AccessKeyId"
            | "Action"
            | "Format"
            | "RegionId"
            | "SecurityToken"
            | "Signature"
            | "SignatureMethod"
            | "SignatureNonce"
            | "SignatureType"
            | "SignatureVersion"
            | "Timestamp"
            | "Version"
    )
}

/// The common parameters of a V1 call, found in one pass over its
/// parameters (each looked up by name would bisect them a dozen times).
#[derive(Default)]
struct CommonV1 {
    signature: Option<Span>,
    access_key_id: Option<Span>,
    signature_method: Option<Span>,
    signature_version: Option<Span>,
    nonce: Option<Span>,
    timestamp: Option<Span>,
    action: Option<Span>,
    version: Option<Span>,
    security_token: bool,
}

impl CommonV1 {
    fn of(params: &Params) -> CommonV1 {
        let mut common = CommonV1::default();
        for (key, value) in params.spans() {
            let slot = match key {
                "Signature" => &mut common.signature,
                "AccessKeyId" => &mut common.access_key_id,
                "SignatureMethod" => &mut common.signature_method,
                "SignatureVersion" => &mut common.signature_version,
                "SignatureNonce" => &mut common.nonce,
                "Timestamp" => &mut common.timestamp,
                "Action" => &mut common.action,
                "Version" => &mut common.version,
                "SecurityToken" => {
                    common.security_token = true;
                    continue;
                }
                _ => continue,
            };
            *slot = Some(value);
        }
        common
    }
}

/// A common parameter the call must carry (it may be empty).
fn present(span: Option<Span>, name: &str) -> Result<Span, ApiError> {
    span.ok_or_else(|| ApiError::missing(name))
}

fn verify_v1(request: IncomingRequest, directory: &Directory) -> Result<VerifiedRequest, ApiError> {
    let params = &request.params;
    let common = CommonV1::of(params);
    let Some(signature) = common
        .signature
        .map(|s| params.text(s))
        .filter(|s| !s.is_empty())
    else {
        return Err(ApiError::new(
            ErrorCode::IncompleteSignature,
            "The request signature does not conform to Aliyun standards: it has neither a Signature parameter (V1) nor an Authorization: ACS3-HMAC-SHA256 header (V3).",
        ));
    };
    let access_key_id = params.text(present(common.access_key_id, "AccessKeyId")?);
    let method = params.text(present(common.signature_method, "SignatureMethod")?);
    if method != "HMAC-SHA1" {
        return Err(ApiError::new(
            ErrorCode::InvalidSignatureMethod,
            format!(
                "Specified signature method \"{method}\" is not supported; use SignatureMethod=HMAC-SHA1, or signature V3 (ACS3-HMAC-SHA256)."
            ),
        ));
    }
    let version = params.text(present(common.signature_version, "SignatureVersion")?);
    if version != "1.0" {
        return Err(ApiError::new(
            ErrorCode::InvalidSignatureMethod,
            format!(
                "Specified signature version \"{version}\" is not supported; use SignatureVersion=1.0."
            ),
        ));
    }
    let nonce = present(common.nonce, "SignatureNonce")?;
    let timestamp = present(common.timestamp, "Timestamp")?;
    if common.security_token {
        return Err(sts_refused("SecurityToken"));
    }
    let user = lookup_key(directory, access_key_id)?;

    let unsigned = || params.iter().filter(|(k, _)| *k != "Signature");
    if !user.v1_key.verify(&request.method, unsigned(), signature) {
        // The old Python SDK compares the text after the colon with its own
        // string to sign, to tell a wrong secret from a wrong canonical form:
        // spelled out here, on the refusal's path only.
        let canonical = signature_v1::canonical_query(unsigned());
        let string_to_sign = signature_v1::string_to_sign(&request.method, &canonical);
        return Err(ApiError::new(
            ErrorCode::SignatureDoesNotMatch,
            format!(
                "Specified signature is not matched with our calculation. {STRING_TO_SIGN_MARK}{string_to_sign}"
            ),
        ));
    }

    let action = present(common.action, "Action")?;
    let version = present(common.version, "Version")?;
    // The common parameters are not the action's; their values stay
    // readable through their spans.
    let mut params = request.params;
    params.retain(|key| !is_common(key));
    Ok(VerifiedRequest {
        user,
        scheme: Scheme::V1,
        action,
        version,
        timestamp,
        nonce,
        params,
        _verified: (),
    })
}

/// Headers a V3 request must carry (and sign).
const V3_REQUIRED_HEADERS: &[&str] = &[
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
];

fn verify_v3(request: IncomingRequest, directory: &Directory) -> Result<VerifiedRequest, ApiError> {
    let incomplete = |why: String| {
        ApiError::new(
            ErrorCode::IncompleteSignature,
            format!("The request signature does not conform to Aliyun standards: {why}"),
        )
    };
    let authorization = request.header("authorization")?.unwrap_or_default();
    let auth = signature_v3::parse_authorization(&authorization)
        .map_err(|e| incomplete(format!("the Authorization header is malformed: {e}.")))?;
    if auth.algorithm != signature_v3::ALGORITHM {
        return Err(ApiError::new(
            ErrorCode::InvalidSignatureMethod,
            format!(
                "Specified signature method \"{}\" is not supported; use ACS3-HMAC-SHA256.",
                auth.algorithm
            ),
        ));
    }
    for name in V3_REQUIRED_HEADERS {
        if request.header(name)?.is_none() {
            return Err(ApiError::missing(name));
        }
    }
    // What is not signed could be changed in transit: host and every
    // x-acs-* header must be.
    let signed = |name: &str| auth.signed_headers.iter().any(|h| h == name);
    if !signed("host") {
        return Err(incomplete("SignedHeaders must include host.".into()));
    }
    if let Some((name, _)) = request
        .headers
        .iter()
        .find(|(n, _)| n.starts_with("x-acs-") && !signed(n))
    {
        return Err(incomplete(format!(
            "the header {name} is not in SignedHeaders; sign host and every x-acs-* header."
        )));
    }
    let mut signed_values = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let Some(value) = request.header(name)? else {
            return Err(incomplete(format!(
                "SignedHeaders names {name}, but the request has no such header."
            )));
        };
        signed_values.push((name.as_str(), value));
    }
    if request.header("x-acs-security-token")?.is_some() {
        return Err(sts_refused("x-acs-security-token"));
    }
    let user = lookup_key(directory, &auth.access_key_id)?;

    let claimed = request.header("x-acs-content-sha256")?.unwrap_or_default();
    let body_sha256 = request.body_sha256();
    if !claimed.eq_ignore_ascii_case(&body_sha256) {
        return Err(ApiError::new(
            ErrorCode::SignatureDoesNotMatch,
            format!(
                "Specified signature is not matched with our calculation: x-acs-content-sha256 is {claimed}, but the SHA-256 of the body is {body_sha256}."
            ),
        ));
    }
    let canonical = signature_v3::canonical_request(
        &request.method,
        request.query_params().iter(),
        &signed_values
            .iter()
            .map(|(name, value)| (*name, value.as_ref()))
            .collect::<Vec<_>>(),
        &body_sha256,
    );
    let string_to_sign = signature_v3::string_to_sign(&canonical);
    if !signature_v3::verify(
        user.access_key_secret.expose(),
        &string_to_sign,
        &auth.signature,
    ) {
        return Err(ApiError::new(
            ErrorCode::SignatureDoesNotMatch,
            format!(
                "Specified signature is not matched with our calculation. {STRING_TO_SIGN_MARK}{string_to_sign}\nserver canonical request is:\n{canonical}"
            ),
        ));
    }

    let header = |name: &str| {
        request
            .header(name)
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string()
    };
    let (action, version) = (header("x-acs-action"), header("x-acs-version"));
    let (timestamp, nonce) = (header("x-acs-date"), header("x-acs-signature-nonce"));
    // The same set as V1's: an action sees the same parameters whichever
    // scheme signed the call (V3 carries its common parameters in headers;
    // any sent in the query are not the action's either).
    let mut params = request.params;
    params.retain(|key| !is_common(key));
    let action = params.keep(&action)?;
    let version = params.keep(&version)?;
    let timestamp = params.keep(&timestamp)?;
    let nonce = params.keep(&nonce)?;
    Ok(VerifiedRequest {
        user,
        scheme: Scheme::V3,
        action,
        version,
        timestamp,
        nonce,
        params,
        _verified: (),
    })
}

fn sts_refused(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidSecurityToken,
        format!(
            "The security token is not accepted: mqgate issues no STS tokens, so it cannot accept {name}; sign with an AccessKey of the configuration instead."
        ),
    )
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

    #[test]
    fn the_common_parameters_are_the_ones_the_match_knows() {
        for name in COMMON_PARAMETERS {
            assert!(is_common(name), "{name}");
        }
        for other in ["ClientId", "InstanceId", "signature", "Formats", ""] {
            assert!(!is_common(other), "{other}");
        }
    }
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
            method: method.to_string().into(),
            query: None,
            params,
            headers: Vec::new().into(),
            body: bytes::Bytes::new(),
        }
    }

    #[test]
    fn a_good_signature_yields_the_action_and_its_own_parameters() {
        let v = verify(signed("POST", &[], "testsecret"), &directory()).unwrap();
        assert_eq!(v.action(), "QuerySessionByClientId");
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

    /// V1 and V3 hand the action the same parameters: its own, whatever
    /// common parameters the query also carries. (Before, V3 removed only
    /// `Format`, so an action saw `RegionId`, `AccessKeyId`... under V3 and
    /// not under V1.)
    #[test]
    fn both_schemes_hand_the_action_the_same_parameters() {
        let own = [("ClientId", "c1"), ("InstanceId", "i")];
        let extra = [("RegionId", "cn-hangzhou"), ("Format", "JSON")];
        let v1 = verify(signed("GET", &extra, "testsecret"), &directory()).unwrap();
        let mut query: Vec<(String, String)> = own
            .iter()
            .chain(&extra)
            .chain(&[("AccessKeyId", "testid"), ("Version", "2020-04-20")])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        query.sort();
        let now = chrono::Utc::now();
        let signed_v3 = crate::client::sign_v3(
            "GET",
            "localhost",
            "QuerySessionByClientId",
            &query,
            "testid",
            "testsecret",
            now,
            "n3",
        );
        let mut params = Params::default();
        for (k, v) in &query {
            params.insert(k.clone(), v.clone()).unwrap();
        }
        let request = IncomingRequest {
            method: "GET".into(),
            query: None,
            params,
            headers: signed_v3
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect::<Vec<_>>()
                .into(),
            body: bytes::Bytes::new(),
        };
        let v3 = verify(request, &directory()).unwrap();
        assert_eq!(v3.scheme, Scheme::V3);
        let names = |v: &VerifiedRequest| -> Vec<String> {
            v.params.iter().map(|(k, _)| k.to_string()).collect()
        };
        assert_eq!(names(&v3), ["ClientId", "InstanceId"]);
        assert_eq!(names(&v1), names(&v3));
    }
}

//! The parse stage: an HTTP request becomes an [`IncomingRequest`] — its
//! method, its parameters (query string and form body, decoded by
//! [`Params`]), its headers and its raw body — or a `MalformedRequest`
//! that says which limit it broke.
//!
//! Limits on input, each a 400 with a code and a message: bodies over
//! [`MAX_BODY_BYTES`], query strings over [`MAX_QUERY_BYTES`], more than
//! [`MAX_HEADERS`] headers, bodies that are not form data, methods other
//! than GET and POST (and, in [`Params`], too many parameters, a parameter
//! sent twice, bytes that are not UTF-8).

use super::signature_v3;
use crate::error::{ApiError, ErrorCode};
use crate::params::Params;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, header};

/// Largest request body accepted, in bytes. Room for SendMessage's 64 KB
/// payload percent-encoded (up to three bytes per byte) and its other
/// parameters.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Longest query string accepted, in bytes. The HTTP stack itself refuses
/// a URI over 65,534 bytes (the `http` crate's limit, answered 414 before
/// mqgate sees the request), so a SendMessage payload sent in the query
/// string, as the Tea SDK sends it, is bounded by that: about 60 KB of
/// Base64 text. In a form body, the full 64 KB fits.
pub const MAX_QUERY_BYTES: usize = 65_000;
/// Most headers a request may carry (the HTTP layer itself stops at
/// [`crate::server::HTTP_MAX_HEADERS`]).
pub const MAX_HEADERS: usize = 100;

/// A request as it arrived: its method, its parameters, its headers and its
/// body.
#[derive(Debug)]
pub struct IncomingRequest {
    pub method: String,
    /// Query and form-body parameters together (V1 signs them all; every
    /// action reads them all). A key in both is refused when parsing.
    pub params: Params,
    /// The query string's parameters alone (what V3 signs) when the request
    /// also has a form body; `None` when every parameter came in the query
    /// (then they are `params`, not copied).
    pub query: Option<Params>,
    /// Header names in lower case, values as sent, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The raw body (a form body's parameters are in `params` too).
    pub body: bytes::Bytes,
}

/// Signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HMAC-SHA1 over the parameters (`Signature=` parameter).
    V1,
    /// ACS3-HMAC-SHA256 over a canonical request (`Authorization` header).
    V3,
}

/// Answer format, from `Format` (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl IncomingRequest {
    /// The query string's parameters alone.
    pub fn query_params(&self) -> &Params {
        self.query.as_ref().unwrap_or(&self.params)
    }

    /// Lower-case hex SHA-256 of the raw body (what V3 signs).
    pub fn body_sha256(&self) -> String {
        signature_v3::hashed_payload(&self.body)
    }

    /// The one value of a header; a header sent twice is refused, since
    /// signer and server could read different values.
    pub fn header(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("The header {name} appears more than once; send it once."),
            ));
        }
        Ok(first)
    }

    /// Which signature scheme the request uses: V3 when it carries an
    /// `Authorization: ACS3-...` header, V1 otherwise.
    pub fn scheme(&self) -> Scheme {
        let v3 = self
            .headers
            .iter()
            .any(|(n, v)| n == "authorization" && v.trim_start().starts_with("ACS3-"));
        if v3 { Scheme::V3 } else { Scheme::V1 }
    }

    /// The format to answer in: `Format` if given, else the scheme's default
    /// (V1: XML, as Alibaba's gateway; V3: JSON).
    pub fn format(&self) -> Result<Format, ApiError> {
        Ok(
            requested_format(&self.params)?.unwrap_or(match self.scheme() {
                Scheme::V1 => Format::Xml,
                Scheme::V3 => Format::Json,
            }),
        )
    }
}

/// The format a request asks for. `None` when `Format` is absent.
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

/// The format for answers given before the parameters are parsed (or when
/// they cannot be): JSON for V3, else what a `Format=` in the query says,
/// else XML (Alibaba's V1 default).
pub fn fallback_format(headers: &HeaderMap, query: Option<&str>) -> Format {
    let v3 = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("ACS3-"));
    let json_asked = query
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.eq_ignore_ascii_case("Format=JSON"));
    if v3 || json_asked {
        Format::Json
    } else {
        Format::Xml
    }
}

/// The parse stage over an HTTP request: reads the body (bounded) and
/// parses everything.
pub async fn read_request(request: Request) -> Result<IncomingRequest, ApiError> {
    let (parts, body) = request.into_parts();
    if parts.headers.len() > MAX_HEADERS {
        return Err(ApiError::new(
            ErrorCode::MalformedRequest,
            format!(
                "The request has {} headers; at most {MAX_HEADERS} are accepted.",
                parts.headers.len()
            ),
        ));
    }
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = read_body(body).await?;
    parse_request(parts.method.as_str(), parts.uri.query(), headers, &body)
}

/// The parse stage, as a pure function: the parameters of a call from its
/// method, query string, headers (names in lower case) and body.
pub fn parse_request(
    method: &str,
    query: Option<&str>,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> Result<IncomingRequest, ApiError> {
    if method != "GET" && method != "POST" {
        return Err(ApiError::new(
            ErrorCode::MalformedRequest,
            format!("HTTP method {method} is not supported; use GET or POST."),
        ));
    }
    let mut query_params = Params::default();
    if let Some(query) = query {
        if query.len() > MAX_QUERY_BYTES {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("The query string is longer than {MAX_QUERY_BYTES} bytes."),
            ));
        }
        query_params.add_form(query.as_bytes(), "query")?;
    }
    let mut query = None;
    let mut params = query_params;
    if !body.is_empty() {
        let content_type = headers
            .iter()
            .find(|(n, _)| n == "content-type")
            .map(|(_, v)| v.as_str());
        if !content_type.is_some_and(is_form) {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                "The request has a body that is not application/x-www-form-urlencoded; send parameters in the query or in a form body.",
            ));
        }
        query = Some(params.clone());
        params.add_form(body, "body")?;
    }
    Ok(IncomingRequest {
        method: method.to_string(),
        params,
        query,
        headers,
        body: bytes::Bytes::copy_from_slice(body),
    })
}

async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::MalformedRequest,
                format!(
                    "The request body is larger than {MAX_BODY_BYTES} bytes or could not be read."
                ),
            )
        })
}

fn is_form(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|v| {
        v.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_body_must_be_form_data_and_its_parameters_join_the_query_ones() {
        let form = vec![(
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=UTF-8".to_string(),
        )];
        let r = parse_request("POST", Some("a=1"), form, b"b=2").unwrap();
        assert_eq!(r.params.get("b"), Some("2"));
        assert_eq!(r.query_params().get("b"), None);
        assert_eq!(r.query_params().get("a"), Some("1"));
        let e = parse_request("POST", None, Vec::new(), b"b=2").unwrap_err();
        assert_eq!(e.code(), "MalformedRequest");
        let e = parse_request("PUT", None, Vec::new(), b"").unwrap_err();
        assert!(e.message.contains("PUT"));
    }
}

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
//!
//! The query string is the URI's, or, when the request-target was too long
//! for a URI, the one [`long_query`](crate::server::long_query) moved into
//! the [`QUERY_HEADER`] header.

use super::signature_v3;
use crate::error::{ApiError, ErrorCode};
use crate::params::Params;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use std::borrow::Cow;

/// The header a query string too long for a URI arrives in: the HTTP
/// layer (`server::long_query`) moves it there, bytes unchanged, before
/// hyper reads the request head.
pub const QUERY_HEADER: &str = "x-mqgate-query";

/// The error a request body's reader gets when the body did not arrive
/// within `http.body_timeout_secs` (the HTTP layer's deadline, read here
/// to answer the client with what happened).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimedOut(pub std::time::Duration);

/// A request's headers, names in lower case, values as sent (bytes that
/// are not UTF-8 read as U+FFFD), in arrival order: the HTTP stack's map,
/// read in place, or a list (tests and captured requests).
#[derive(Debug, Default)]
pub struct Headers(HeaderSource);

#[derive(Debug)]
enum HeaderSource {
    /// Off the wire: the map the request came with ([`QUERY_HEADER`], which
    /// is not the client's, skipped).
    Map(HeaderMap),
    List(Vec<(String, String)>),
}

impl Default for HeaderSource {
    fn default() -> Self {
        HeaderSource::List(Vec::new())
    }
}

impl From<Vec<(String, String)>> for Headers {
    fn from(list: Vec<(String, String)>) -> Headers {
        Headers(HeaderSource::List(list))
    }
}

impl From<HeaderMap> for Headers {
    fn from(map: HeaderMap) -> Headers {
        Headers(HeaderSource::Map(map))
    }
}

impl Headers {
    pub fn iter(&self) -> HeaderIter<'_> {
        match &self.0 {
            HeaderSource::Map(map) => HeaderIter::Map(map.iter()),
            HeaderSource::List(list) => HeaderIter::List(list.iter()),
        }
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, Cow<'a, str>);
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// The iterator of [`Headers::iter`].
pub enum HeaderIter<'a> {
    Map(axum::http::header::Iter<'a, HeaderValue>),
    List(std::slice::Iter<'a, (String, String)>),
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            HeaderIter::Map(map) => map
                .find(|(name, _)| *name != QUERY_HEADER)
                .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes()))),
            HeaderIter::List(list) => list
                .next()
                .map(|(name, value)| (name.as_str(), Cow::Borrowed(value.as_str()))),
        }
    }
}

/// Largest request body accepted, in bytes. Room for SendMessage's 64 KB
/// payload percent-encoded (up to three bytes per byte) and its other
/// parameters.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Longest query string accepted, in bytes: as for a body, room for
/// SendMessage's 64 KB payload percent-encoded and its other parameters,
/// since the Tea SDK sends them all in the query string. A query that long
/// does not fit in a URI (the HTTP stack takes 65,534 bytes at most): it
/// arrives in the [`QUERY_HEADER`] header
/// ([`long_query`](crate::server::long_query)).
pub const MAX_QUERY_BYTES: usize = 256 * 1024;
/// Most headers a request may carry (the HTTP layer itself stops at
/// [`crate::server::HTTP_MAX_HEADERS`], 100; an official SDK sends about
/// ten, and a proxy adds a few).
pub const MAX_HEADERS: usize = 64;

/// A request as it arrived: its method, its parameters, its headers and its
/// body.
#[derive(Debug)]
pub struct IncomingRequest {
    /// `GET` or `POST` (borrowed from a constant for a request off the
    /// wire).
    pub method: Cow<'static, str>,
    /// Query and form-body parameters together (V1 signs them all; every
    /// action reads them all). A key in both is refused when parsing.
    pub params: Params,
    /// The query string's parameters alone (what V3 signs) when the request
    /// also has a form body; `None` when every parameter came in the query
    /// (then they are `params`, not copied).
    pub query: Option<Params>,
    /// Header names in lower case, values as sent, in arrival order.
    pub headers: Headers,
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
    pub fn header(&self, name: &str) -> Result<Option<Cow<'_, str>>, ApiError> {
        let mut values = self.headers.iter().filter(|(n, _)| *n == name);
        let first = values.next().map(|(_, v)| v);
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
/// they cannot be): JSON for V3, else what a `Format=` in the query (the
/// URI's, or else the moved one in [`QUERY_HEADER`]) says, else XML
/// (Alibaba's V1 default).
pub fn fallback_format(headers: &HeaderMap, query: Option<&str>) -> Format {
    let moved = || headers.get(QUERY_HEADER).and_then(|v| v.to_str().ok());
    let query = query.or_else(moved);
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
    // A moved query string is not one of the client's headers.
    let count = parts.headers.len() - parts.headers.get_all(QUERY_HEADER).iter().count();
    if count > MAX_HEADERS {
        return Err(ApiError::new(
            ErrorCode::MalformedRequest,
            format!("The request has {count} headers; at most {MAX_HEADERS} are accepted."),
        ));
    }
    // A query string moved into the header (a long one, rare) is copied
    // out, so that the headers can be handed on whole; the URI's is read
    // in place.
    let moved = match query_of(&parts.uri, &parts.headers)? {
        Some(query) if parts.uri.query().is_none() => Some(query.to_owned()),
        _ => None,
    };
    let query = moved.as_deref().or(parts.uri.query());
    let body = read_body(body).await?;
    // The moved query string is skipped by `Headers`: it is not a header
    // of the call.
    parse_request(
        parts.method.as_str(),
        query,
        Headers::from(parts.headers),
        &body,
    )
}

/// The request's query string: the URI's, or the one
/// [`long_query`](crate::server::long_query) moved into the
/// [`QUERY_HEADER`] header when the request-target was too long for a URI.
///
/// A client may send that header itself: that is harmless, since the query
/// string is the client's data either way, and is verified alike wherever
/// it came: V1 signs the parameters; V3 the canonical query string built
/// from them, and only the headers the client lists in SignedHeaders (the
/// header, added on the way in, is not among them and is ignored there).
/// What is refused is ambiguity: the header with a query in the URI too,
/// or twice.
pub fn query_of<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Result<Option<&'a str>, ApiError> {
    let mut moved = headers.get_all(QUERY_HEADER).iter();
    let Some(value) = moved.next() else {
        return Ok(uri.query());
    };
    let malformed = |message: String| Err(ApiError::new(ErrorCode::MalformedRequest, message));
    if moved.next().is_some() {
        return malformed(format!(
            "The header {QUERY_HEADER} appears more than once; send it once."
        ));
    }
    if uri.query().is_some() {
        return malformed(format!(
            "The request has both a query string in its URI and a {QUERY_HEADER} header; send the query string in one of them."
        ));
    }
    // The bytes the HTTP stack takes in a URI's query (the `http` crate's
    // rule), so that a query is read alike wherever it came.
    let bytes = value.as_bytes();
    let allowed = |b: &u8| matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E | 0x80..=0xFF);
    match std::str::from_utf8(bytes) {
        Ok(query) if bytes.iter().all(allowed) => Ok(Some(query)),
        _ => malformed(format!(
            "The {QUERY_HEADER} header is not a query string: it holds a character a URI cannot."
        )),
    }
}

/// The parse stage, as a pure function: the parameters of a call from its
/// method, query string, headers (names in lower case) and body.
pub fn parse_request(
    method: &str,
    query: Option<&str>,
    headers: impl Into<Headers>,
    body: &[u8],
) -> Result<IncomingRequest, ApiError> {
    let headers = headers.into();
    let method = match method {
        "GET" => "GET",
        "POST" => "POST",
        other => {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("HTTP method {other} is not supported; use GET or POST."),
            ));
        }
    };
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
            .find(|(n, _)| *n == "content-type")
            .map(|(_, v)| v);
        if !content_type.is_some_and(|v| is_form(&v)) {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                "The request has a body that is not application/x-www-form-urlencoded; send parameters in the query or in a form body.",
            ));
        }
        query = Some(params.clone());
        params.add_form(body, "body")?;
    }
    Ok(IncomingRequest {
        method: Cow::Borrowed(method),
        params,
        query,
        headers,
        body: bytes::Bytes::copy_from_slice(body),
    })
}

async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    use axum::body::HttpBody as _;
    let too_large = || {
        ApiError::new(
            ErrorCode::MalformedRequest,
            format!("The request body is larger than {MAX_BODY_BYTES} bytes or could not be read."),
        )
    };
    // A body declared larger than the limit (Content-Length) is refused at
    // once, from its head: waiting for it would hold the connection until
    // the body timeout for a body that could only be refused (a client
    // declaring 100 MB and sending one byte used to hold it for ever).
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            // The timeout's error comes wrapped by each body layer.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut timed_out = None;
            while let Some(error) = cause {
                if let Some(found) = error.downcast_ref::<BodyTimedOut>() {
                    timed_out = Some(found);
                    break;
                }
                cause = error.source();
            }
            match timed_out {
                Some(timed_out) => ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!(
                        "The request body did not arrive within {} s of its headers.",
                        timed_out.0.as_secs()
                    ),
                ),
                None => too_large(),
            }
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

    #[test]
    fn a_query_moved_into_the_header_is_the_query_and_only_one_may_come() {
        let headers = |values: &[&str]| {
            let mut map = HeaderMap::new();
            for value in values {
                map.append(QUERY_HEADER, value.parse().unwrap());
            }
            map
        };
        let bare: Uri = "/".parse().unwrap();
        let with_query: Uri = "/?a=1".parse().unwrap();
        assert_eq!(query_of(&with_query, &headers(&[])).unwrap(), Some("a=1"));
        assert_eq!(query_of(&bare, &headers(&[])).unwrap(), None);
        let moved = headers(&["Payload=%E2%82%AC&b=~"]);
        assert_eq!(
            query_of(&bare, &moved).unwrap(),
            Some("Payload=%E2%82%AC&b=~")
        );
        assert_eq!(query_of(&bare, &headers(&[""])).unwrap(), Some(""));
        let both = query_of(&with_query, &moved).unwrap_err();
        assert_eq!(both.code(), "MalformedRequest");
        assert!(both.message.contains("both"), "{}", both.message);
        let twice = query_of(&bare, &headers(&["a=1", "b=2"])).unwrap_err();
        assert!(
            twice.message.contains("more than once"),
            "{}",
            twice.message
        );
        // What a URI's query cannot hold, the header cannot either.
        for bad in ["a=1 2", "a=<b>", "a=\"b\"", "a=1#frag"] {
            let e = query_of(&bare, &headers(&[bad])).unwrap_err();
            assert_eq!(e.code(), "MalformedRequest", "{bad}");
        }
        // A query over the URI limit, under MAX_QUERY_BYTES: read whole.
        let long = format!("Payload={}", "%E2%82%AC".repeat(21_845));
        assert!(long.len() > 65_534 && long.len() < MAX_QUERY_BYTES);
        let parsed = parse_request("GET", Some(&long), Vec::new(), b"").unwrap();
        assert_eq!(parsed.params.get("Payload").unwrap().len(), 3 * 21_845);
        let e = parse_request(
            "GET",
            Some(&"x".repeat(MAX_QUERY_BYTES + 1)),
            Vec::new(),
            b"",
        );
        assert!(e.unwrap_err().message.contains("262144 bytes"));
    }
}

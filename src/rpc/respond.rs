//! The respond stage: an action's typed answer or an error, rendered in the
//! format the caller asked for (JSON or XML), with its `RequestId`. This is
//! the only module that knows about JSON, XML and request ids: actions
//! return plain values.
//!
//! XML follows Alibaba's gateway: the success root is `<{Action}Response>`,
//! an error's is `<Error>`; an array becomes one element per item, each named
//! after the array; content type `text/xml;charset=utf-8` (the Tea SDK
//! parses XML only under exactly that type).

use super::parse::Format;
use crate::actions::{Reply, RequestIdAt};
use crate::api::Action;
use crate::error::ApiError;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

pub const JSON_CONTENT_TYPE: &str = "application/json;charset=utf-8";
pub const XML_CONTENT_TYPE: &str = "text/xml;charset=utf-8";
/// Header names known at compile time, not parsed again on every answer.
const X_ACS_REQUEST_ID: HeaderName = HeaderName::from_static("x-acs-request-id");
const X_ACS_RETRY_AFTER: HeaderName = HeaderName::from_static("x-acs-retry-after");

/// A fresh `RequestId`: an upper-case UUID, as Alibaba's.
/// A RequestId on the stack: a UUID (v4) in upper-case hyphenated form,
/// as Alibaba's gateway writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 36]);

impl RequestId {
    pub fn new() -> RequestId {
        let mut text = [0u8; 36];
        uuid::Uuid::new_v4().hyphenated().encode_upper(&mut text);
        RequestId(text)
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII: written by the UUID encoder above.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub fn new_request_id() -> String {
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_upper(&mut uuid::Uuid::encode_buffer())
        .to_string()
}

/// A successful call's answer: its fields, then `RequestId` where the
/// action's documentation puts it (first for most, last for the few whose
/// fields are listed in alphabetical order).
pub fn success(
    action: Action,
    reply: &Reply,
    format: Format,
    request_id: &str,
) -> Result<Response, ApiError> {
    let internal = |e: serde_json::Error| {
        ApiError::internal(format!(
            "the answer of {} could not be serialized: {e}",
            action.name()
        ))
    };
    let (content_type, text) = match format {
        Format::Json => {
            let fields = serde_json::to_string(reply).map_err(internal)?;
            (
                JSON_CONTENT_TYPE,
                with_request_id(&fields, request_id, reply.request_id_at()),
            )
        }
        Format::Xml => {
            let Value::Object(mut fields) = serde_json::to_value(reply).map_err(internal)? else {
                return Err(ApiError::internal(format!(
                    "the answer of {} is not an object",
                    action.name()
                )));
            };
            let id = Value::String(request_id.to_string());
            match reply.request_id_at() {
                RequestIdAt::First => {
                    fields.shift_insert(0, "RequestId".to_string(), id);
                }
                RequestIdAt::Last => {
                    fields.insert("RequestId".to_string(), id);
                }
            }
            let root = format!("{}Response", action.name());
            (XML_CONTENT_TYPE, to_xml(&root, &Value::Object(fields)))
        }
    };
    let mut response =
        (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], text).into_response();
    set_request_id(&mut response, request_id);
    Ok(response)
}

/// Splices `"RequestId": id` into a JSON object's text, first or last.
fn with_request_id(object: &str, request_id: &str, at: RequestIdAt) -> String {
    let inner = object
        .strip_prefix('{')
        .and_then(|o| o.strip_suffix('}'))
        .unwrap_or_default();
    let mut out = String::with_capacity(object.len() + request_id.len() + 16);
    out.push('{');
    let id = |out: &mut String| {
        out.push_str("\"RequestId\":\"");
        out.push_str(request_id);
        out.push('"');
    };
    match at {
        RequestIdAt::First => {
            id(&mut out);
            if !inner.is_empty() {
                out.push(',');
                out.push_str(inner);
            }
        }
        RequestIdAt::Last => {
            if !inner.is_empty() {
                out.push_str(inner);
                out.push(',');
            }
            id(&mut out);
        }
    }
    out.push('}');
    out
}

/// Alibaba's error body.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody<'a> {
    request_id: &'a str,
    host_id: &'a str,
    code: String,
    message: &'a str,
    recommend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_denied_detail: Option<&'a crate::error::AccessDeniedDetail>,
}

/// An error's answer: Alibaba's error body with the error table's status,
/// and for flow control how long to wait. An internal error's cause is not
/// in it (the endpoint logs it with the request id).
pub fn error(error: &ApiError, format: Format, request_id: &str, host: &str) -> Response {
    let code = error.code();
    let body = ErrorBody {
        request_id,
        host_id: host,
        recommend: format!("https://api.aliyun.com/troubleshoot?q={code}&product=OnsMqtt"),
        code,
        message: &error.message,
        access_denied_detail: error.access_denied.as_deref(),
    };
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let value = serde_json::to_value(body).unwrap_or(Value::Null);
    let (content_type, text) = match format {
        Format::Json => (JSON_CONTENT_TYPE, value.to_string()),
        Format::Xml => (XML_CONTENT_TYPE, to_xml("Error", &value)),
    };
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], text).into_response();
    set_request_id(&mut response, request_id);
    if let Some(ms) = error.retry_after_ms {
        // Alibaba's header is in milliseconds; the standard one in whole
        // seconds, rounded up.
        response
            .headers_mut()
            .insert(X_ACS_RETRY_AFTER, HeaderValue::from(ms.max(1)));
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(ms.div_ceil(1000).max(1)),
        );
    }
    response
}

fn set_request_id(response: &mut Response, request_id: &str) {
    if let Ok(id) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(X_ACS_REQUEST_ID, id);
    }
}

/// Renders a JSON value as Alibaba-style XML under `root`.
pub fn to_xml(root: &str, value: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    element(&mut out, root, value);
    out
}

fn element(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Array(items) => {
            for item in items {
                element(out, name, item);
            }
        }
        Value::Object(fields) => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            for (key, field) in fields {
                element(out, key, field);
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        Value::Null => {
            out.push('<');
            out.push_str(name);
            out.push_str("/>");
        }
        Value::String(s) => leaf(out, name, s),
        other => leaf(out, name, &other.to_string()),
    }
}

fn leaf(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_into(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all (C0 controls other
            // than tab, LF, CR) become U+FFFD rather than a broken document.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_request_id_goes_where_the_action_documents_it() {
        assert_eq!(
            with_request_id("{\"Code\":200}", "R1", RequestIdAt::First),
            "{\"RequestId\":\"R1\",\"Code\":200}"
        );
        assert_eq!(
            with_request_id("{\"OnlineStatus\":true}", "R1", RequestIdAt::Last),
            "{\"OnlineStatus\":true,\"RequestId\":\"R1\"}"
        );
        for at in [RequestIdAt::First, RequestIdAt::Last] {
            assert_eq!(with_request_id("{}", "R1", at), "{\"RequestId\":\"R1\"}");
        }
    }

    #[test]
    fn xml_keeps_order_repeats_arrays_and_escapes_text() {
        let body = json!({
            "RequestId": "R1",
            "OnlineStatusList": [
                {"ClientId": "GID_a@@@<1>&\"'", "OnlineStatus": true},
                {"ClientId": "b\u{1}", "OnlineStatus": false}
            ]
        });
        assert_eq!(
            to_xml("BatchQuerySessionByClientIdsResponse", &body),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><BatchQuerySessionByClientIdsResponse>\
             <RequestId>R1</RequestId>\
             <OnlineStatusList><ClientId>GID_a@@@&lt;1&gt;&amp;&quot;&apos;</ClientId><OnlineStatus>true</OnlineStatus></OnlineStatusList>\
             <OnlineStatusList><ClientId>b\u{FFFD}</ClientId><OnlineStatus>false</OnlineStatus></OnlineStatusList>\
             </BatchQuerySessionByClientIdsResponse>"
        );
        assert_eq!(
            to_xml("X", &json!({"Code": 200})),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><X><Code>200</Code></X>"
        );
    }
}

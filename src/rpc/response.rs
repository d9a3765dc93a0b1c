//! The respond stage: a success body or an error, rendered in the format the
//! caller asked for (JSON or XML), with its `RequestId`.
//!
//! XML follows Alibaba's gateway: the success root is `<{Action}Response>`,
//! an error's is `<Error>`; an array becomes one element per item, each named
//! after the array; content type `text/xml;charset=utf-8` (the Tea SDK
//! parses XML only under exactly that type).

use super::verify::Format;
use crate::actions::Action;
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

pub enum Answer {
    Success { action: Action, body: SuccessBody },
    Error(ApiError),
}

/// A successful call's body, serialized once, in the format it is sent in:
/// JSON text straight from the action's response type, or for XML the
/// value tree the XML writer walks.
#[derive(Debug)]
pub enum SuccessBody {
    Json(String),
    Xml(Value),
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

impl Answer {
    pub fn render(self, format: Format, request_id: &str, host: &str) -> Response {
        let retry_after_ms = match &self {
            Answer::Error(error) => error.retry_after_ms,
            Answer::Success { .. } => None,
        };
        let (status, content_type, text) = match self {
            Answer::Success {
                body: SuccessBody::Json(text),
                ..
            } => (StatusCode::OK, JSON_CONTENT_TYPE, text),
            Answer::Success {
                action,
                body: SuccessBody::Xml(value),
            } => (
                StatusCode::OK,
                XML_CONTENT_TYPE,
                to_xml(&format!("{}Response", action.name()), &value),
            ),
            Answer::Error(error) => {
                let code = error.code();
                let body = ErrorBody {
                    request_id,
                    host_id: host,
                    recommend: format!(
                        "https://api.aliyun.com/troubleshoot?q={code}&product=OnsMqtt"
                    ),
                    code,
                    message: &error.message,
                    access_denied_detail: error.access_denied.as_deref(),
                };
                let status = StatusCode::from_u16(error.status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let value = serde_json::to_value(body).unwrap_or(Value::Null);
                match format {
                    Format::Json => (status, JSON_CONTENT_TYPE, value.to_string()),
                    Format::Xml => (status, XML_CONTENT_TYPE, to_xml("Error", &value)),
                }
            }
        };
        let mut response = (status, [(header::CONTENT_TYPE, content_type)], text).into_response();
        if let Ok(id) = HeaderValue::from_str(request_id) {
            response.headers_mut().insert(X_ACS_REQUEST_ID, id);
        }
        if let Some(ms) = retry_after_ms {
            // Alibaba's header is in milliseconds; the standard one in
            // whole seconds, rounded up.
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

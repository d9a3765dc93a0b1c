//! The respond stage: a success body or an error, rendered in the format the
//! caller asked for, with its `RequestId`.

use super::verify::Format;
use crate::actions::Action;
use crate::error::ApiError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub enum Answer {
    Success {
        action: Action,
        body: serde_json::Value,
    },
    Error(ApiError),
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
}

impl Answer {
    pub fn render(self, _format: Format, request_id: &str, host: &str) -> Response {
        let (status, body) = match self {
            Answer::Success { action: _, body } => (StatusCode::OK, body),
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
                };
                let status = StatusCode::from_u16(error.status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (
                    status,
                    serde_json::to_value(body).unwrap_or(serde_json::Value::Null),
                )
            }
        };
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
            body.to_string(),
        )
            .into_response();
        if let Ok(id) = HeaderValue::from_str(request_id) {
            response.headers_mut().insert("x-acs-request-id", id);
        }
        response
    }
}

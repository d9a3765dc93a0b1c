//! `QueryMqttTraceMessagePublish`: who published a message, and when.
//!
//! ```text
//! Action=QueryMqttTraceMessagePublish&InstanceId=post-cn-demo&MqttRegionId=cn-hangzhou
//!     &MsgId=8c2f...&BeginTime=1700000000000&EndTime=1700003600000
//! -> {"RequestId": "...",
//!     "MessageTraceLists": [{"Time": "2026-11-23 17:50:01.254", "MsgId": "8c2f...",
//!                            "ClientId": "GID_test@@@dev", "Action": "pub_mqtt",
//!                            "ActionCode": "mqtt.trace.action.msg.pub.mqtt",
//!                            "ActionInfo": "Pub From Mqtt Client"}]}
//! ```
//!
//! A message from a device is `pub_mqtt` (the SDK's value); one from
//! SendMessage is `pub_api` / `mqtt.trace.action.msg.pub.api` / `Pub From
//! OpenAPI` with the caller's AccessKeyId as `ClientId` (mqgate's names:
//! the SDK lists none). A well-formed MsgId with no publish in the range
//! (never seen, swept, or outside it) answers an empty list, as a search
//! does. RAM: `mq:QueryMqttTraceMessagePublish` on the instance; 500/s;
//! billed (Alibaba's page).
//!
//! In a cluster, every node's events, merged by time (`trace_params::gather`).

use super::trace_params::{MessageEntry, Window, gather, msg_id};
use crate::trace::query::{TraceFound, TraceQuery};
use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct QueryMqttTraceMessagePublish;

pub struct Request {
    pub window: Window,
    pub msg_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub message_trace_lists: Vec<MessageEntry>,
}

impl<'a> Handler<'a> for QueryMqttTraceMessagePublish {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        Ok(Request {
            window: Window::parse(params)?,
            msg_id: msg_id(params)?,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.window.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        request.window.check(ctx)?;
        let query = TraceQuery::Publishes {
            instance_id: request.window.instance_id.clone(),
            msg_id: request.msg_id.clone(),
            range: request.window.range(),
        };
        let TraceFound::Messages { events, .. } = gather(ctx, query).await? else {
            return Err(ApiError::internal("a message trace query found device events"));
        };
        Ok(Answer {
            message_trace_lists: events.into_iter().map(MessageEntry::from).collect(),
        })
    }
}

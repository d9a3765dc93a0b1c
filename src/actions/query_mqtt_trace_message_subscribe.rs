//! `QueryMqttTraceMessageSubscribe`: to whom a message was pushed, and
//! what became of each delivery, a page at a time.
//!
//! ```text
//! Action=QueryMqttTraceMessageSubscribe&InstanceId=post-cn-demo&MqttRegionId=cn-hangzhou
//!     &MsgId=8c2f...&BeginTime=...&EndTime=...&CurrentPage=1&PageSize=20
//! -> {"RequestId": "...", "Total": 2, "CurrentPage": 1, "PageSize": 20,
//!     "MessageTraceLists": [{"Time": "...", "MsgId": "8c2f...", "ClientId": "GID_test@@@sub",
//!                            "Action": "sub", "ActionCode": "mqtt.trace.action.msg.sub",
//!                            "ActionInfo": "Push To Mqtt Client"}, ...]}
//! ```
//!
//! `sub` (pushed to the subscriber: the SDK's value) and, named by mqgate
//! in the same style, `ack` (the subscriber acknowledged a QoS 1 or 2
//! delivery) and `drop` (it left before acknowledging). `ClientId`
//! narrows to one subscriber. How deliveries are matched to their MsgId:
//! see [`crate::trace`]. RAM: `mq:QueryMqttTraceMessageSubscribe` on the
//! instance; 500/s; billed.
//!
//! In a cluster, every node's events, merged by time (`trace_params::gather`).

use super::trace_params::{MessageEntry, PageHeader, PageRequest, Window, gather, msg_id};
use crate::trace::query::{TraceFound, TraceQuery};
use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct QueryMqttTraceMessageSubscribe;

pub struct Request {
    pub window: Window,
    pub msg_id: String,
    pub client_id: Option<String>,
    pub page: PageRequest,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    #[serde(flatten)]
    pub page: PageHeader,
    pub message_trace_lists: Vec<MessageEntry>,
}

impl<'a> Handler<'a> for QueryMqttTraceMessageSubscribe {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let client_id = match params.get("ClientId").filter(|c| !c.is_empty()) {
            Some(_) => Some(params.client_id("ClientId")?.to_string()),
            None => None,
        };
        Ok(Request {
            window: Window::parse(params)?,
            msg_id: msg_id(params)?,
            client_id,
            page: PageRequest::parse(params)?,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.window.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        request.window.check(ctx)?;
        let query = TraceQuery::Deliveries {
            instance_id: request.window.instance_id.clone(),
            msg_id: request.msg_id.clone(),
            client_id: request.client_id.clone(),
            range: request.window.range(),
            page: request.page.page,
            size: request.page.size,
            reverse: request.page.reverse,
        };
        let TraceFound::Messages { total, events } = gather(ctx, query).await? else {
            return Err(ApiError::internal("a message trace query found device events"));
        };
        Ok(Answer {
            page: request.page.header(total),
            message_trace_lists: events.into_iter().map(MessageEntry::from).collect(),
        })
    }
}

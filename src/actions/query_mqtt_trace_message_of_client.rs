//! `QueryMqttTraceMessageOfClient`: the messages a client published or was
//! pushed over a time range, a page at a time.
//!
//! ```text
//! Action=QueryMqttTraceMessageOfClient&InstanceId=post-cn-demo&MqttRegionId=cn-hangzhou
//!     &ClientId=GID_test@@@dev&BeginTime=...&EndTime=...&CurrentPage=1&PageSize=20
//! -> {"RequestId": "...", "Total": 2, "CurrentPage": 1, "PageSize": 20,
//!     "MessageOfClientList": [{"Time": "...", "MsgId": "...", "ClientId": "GID_test@@@dev",
//!                              "Action": "pub_mqtt", "ActionCode": "mqtt.trace.action.msg.pub.mqtt",
//!                              "ActionInfo": "Pub From Mqtt Client"}, ...]}
//! ```
//!
//! The actions are those of the two other message traces (`pub_mqtt`,
//! `sub`, and mqgate's `ack` and `drop`). RAM:
//! `mq:QueryMqttTraceMessageOfClient` on the instance; 500/s; billed.

use super::trace_params::{MessageEntry, page, reverse, time_range, within_retention};
use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct QueryMqttTraceMessageOfClient;

pub struct Request {
    pub instance_id: String,
    pub client_id: String,
    pub begin_ms: i64,
    pub end_ms: i64,
    pub page: u32,
    pub size: u32,
    pub reverse: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub total: u64,
    pub current_page: u32,
    pub page_size: u32,
    pub message_of_client_list: Vec<MessageEntry>,
}

impl Handler for QueryMqttTraceMessageOfClient {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        params.required("MqttRegionId")?;
        let client_id = params.client_id("ClientId")?.to_string();
        let (begin_ms, end_ms) = time_range(params)?;
        let (page, size) = page(params)?;
        Ok(Request {
            instance_id,
            client_id,
            begin_ms,
            end_ms,
            page,
            size,
            reverse: reverse(params)?,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        within_retention(ctx, request.begin_ms)?;
        let (total, events) = ctx
            .traces
            .client_messages(
                &request.instance_id,
                &request.client_id,
                (request.begin_ms, request.end_ms),
                (request.page, request.size),
                request.reverse,
            )
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(Answer {
            total,
            current_page: request.page,
            page_size: request.size,
            message_of_client_list: events.into_iter().map(MessageEntry::from).collect(),
        })
    }
}

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
//!
//! In a cluster, every node's events, merged by time (`trace_params::gather`).

use super::trace_params::{MessageEntry, PageHeader, PageRequest, Window, gather};
use crate::trace::query::{TraceFound, TraceQuery};
use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct QueryMqttTraceMessageOfClient;

pub struct Request {
    pub window: Window,
    pub client_id: String,
    pub page: PageRequest,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    #[serde(flatten)]
    pub page: PageHeader,
    pub message_of_client_list: Vec<MessageEntry>,
}

impl<'a> Handler<'a> for QueryMqttTraceMessageOfClient {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        Ok(Request {
            window: Window::parse(params)?,
            client_id: params.client_id("ClientId")?.to_string(),
            page: PageRequest::parse(params)?,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.window.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        request.window.check(ctx)?;
        let query = TraceQuery::ClientMessages {
            instance_id: request.window.instance_id.clone(),
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
            message_of_client_list: events.into_iter().map(MessageEntry::from).collect(),
        })
    }
}

//! `QueryMqttTraceDevice`: what happened to a device over a time range —
//! its connects (accepted or refused), disconnects and closes, each with
//! its reason — a page at a time.
//!
//! ```text
//! Action=QueryMqttTraceDevice&InstanceId=post-cn-demo&MqttRegionId=cn-hangzhou
//!     &ClientId=GID_test@@@dev&BeginTime=1700000000000&EndTime=1700003600000
//!     &CurrentPage=1&PageSize=20&Reverse=true
//! -> {"RequestId": "...", "Total": 3, "CurrentPage": 1, "PageSize": 20,
//!     "DeviceInfoList": [{"Time": "2026-11-23 17:50:01.254", "ChannelId": "42",
//!                         "Action": "close", "ActionCode": "mqtt.trace.action.close",
//!                         "ActionInfo": "no heart"}, ...]}
//! ```
//!
//! `Action`, `ActionCode` and `ActionInfo` are the Tea SDK's values (see
//! [`crate::trace::events`] for the full table and mqgate's names for
//! what the SDK lists none for); `Time` is UTC. `PageSize` is 1 to 100;
//! a page past the end is empty. The range may not be reversed nor reach
//! further back than the trace store keeps (`[trace] retention_hours`,
//! default 72). RAM: `mq:QueryMqttTraceDevice` on the instance; 500/s;
//! billed (Alibaba's page).
//!
//! In a cluster, every node's events, merged by time (`trace_params::gather`).

use super::trace_params::{PageHeader, PageRequest, Window, gather};
use crate::trace::query::{TraceFound, TraceQuery};
use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct QueryMqttTraceDevice;

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
    pub device_info_list: Vec<Entry>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entry {
    pub time: String,
    pub channel_id: String,
    pub action: &'static str,
    pub action_code: &'static str,
    pub action_info: String,
}

impl<'a> Handler<'a> for QueryMqttTraceDevice {
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
        let query = TraceQuery::Device {
            instance_id: request.window.instance_id.clone(),
            client_id: request.client_id.clone(),
            range: request.window.range(),
            page: request.page.page,
            size: request.page.size,
            reverse: request.page.reverse,
        };
        let TraceFound::Device { total, events } = gather(ctx, query).await? else {
            return Err(ApiError::internal("a device trace query found message events"));
        };
        Ok(Answer {
            page: request.page.header(total),
            device_info_list: events
                .into_iter()
                .map(|event| Entry {
                    time: crate::trace::format_time(event.time_ms),
                    channel_id: event.channel_id.to_string(),
                    action: event.action.label(),
                    action_code: event.action.code(),
                    action_info: event.info,
                })
                .collect(),
        })
    }
}

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

use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct QueryMqttTraceDevice;

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

/// `BeginTime` and `EndTime`: required, in order.
pub(crate) fn time_range(params: &Params) -> Result<(i64, i64), ApiError> {
    params.required("BeginTime")?;
    params.required("EndTime")?;
    let begin = params.integer("BeginTime", 0..=i64::MAX)?.unwrap_or(0);
    let end = params.integer("EndTime", 0..=i64::MAX)?.unwrap_or(0);
    if begin > end {
        return Err(ApiError::invalid(
            "BeginTime",
            format!("{begin} is after EndTime {end}; give the range in order (milliseconds)"),
        ));
    }
    Ok((begin, end))
}

/// `CurrentPage` (from 1) and `PageSize` (1 to 100), required.
pub(crate) fn page(params: &Params) -> Result<(u32, u32), ApiError> {
    params.required("CurrentPage")?;
    params.required("PageSize")?;
    let page = params.integer("CurrentPage", 1..=i64::from(u32::MAX))?.unwrap_or(1);
    let size = params.integer("PageSize", 1..=100)?.unwrap_or(100);
    Ok((page as u32, size as u32))
}

/// `Reverse`: true or false (default false).
pub(crate) fn reverse(params: &Params) -> Result<bool, ApiError> {
    match params.get("Reverse").filter(|r| !r.is_empty()) {
        None => Ok(false),
        Some(r) if r.eq_ignore_ascii_case("true") => Ok(true),
        Some(r) if r.eq_ignore_ascii_case("false") => Ok(false),
        Some(r) => Err(ApiError::invalid("Reverse", format!("\"{r}\" is not true or false"))),
    }
}

/// The range must not start before what the store keeps.
pub(crate) fn within_retention(ctx: &Context<'_>, begin_ms: i64) -> Result<(), ApiError> {
    let oldest = ctx.now.timestamp_millis() - ctx.traces.retention_ms();
    if begin_ms < oldest {
        return Err(ApiError::invalid(
            "BeginTime",
            format!(
                "{begin_ms} is further back than traces are kept ({} hours; the oldest time that can be asked for now is {oldest})",
                ctx.traces.retention_ms() / 3_600_000
            ),
        ));
    }
    Ok(())
}

impl Handler for QueryMqttTraceDevice {
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
            .device_events(
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

//! The parameters the trace queries share, read and checked once here:
//! `BeginTime` <= `EndTime` (epoch ms), not further back than the trace
//! store keeps (`[trace] retention_hours`); `CurrentPage` from 1 and
//! `PageSize` 1 to 100; `Reverse` true or false; `MsgId` as mqgate gives
//! them (32 hex digits).

use super::Context;
use crate::error::ApiError;
use crate::params::Params;

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
    let page = params
        .integer("CurrentPage", 1..=i64::from(u32::MAX))?
        .unwrap_or(1);
    let size = params.integer("PageSize", 1..=100)?.unwrap_or(100);
    Ok((page as u32, size as u32))
}

/// `Reverse`: true or false (default false).
pub(crate) fn reverse(params: &Params) -> Result<bool, ApiError> {
    match params.get("Reverse").filter(|r| !r.is_empty()) {
        None => Ok(false),
        Some(r) if r.eq_ignore_ascii_case("true") => Ok(true),
        Some(r) if r.eq_ignore_ascii_case("false") => Ok(false),
        Some(r) => Err(ApiError::invalid(
            "Reverse",
            format!("\"{r}\" is not true or false"),
        )),
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

/// `MsgId`: required, 32 hex digits (what SendMessage answers and the
/// traces list).
/// Runs `query` on this node's traces and, in a cluster, on every other
/// node's, merging their answers by time ([`crate::trace::query`]). In a
/// cluster a page may reach at most
/// [`MAX_MERGED_EVENTS`](crate::trace::query::MAX_MERGED_EVENTS) events
/// deep; a node that does not answer in time makes the call
/// `ServiceUnavailable`.
pub(crate) async fn gather(
    ctx: &Context<'_>,
    query: crate::trace::query::TraceQuery,
) -> Result<crate::trace::query::TraceFound, ApiError> {
    use crate::trace::query::{MAX_MERGED_EVENTS, merge};
    let read = |query: &crate::trace::query::TraceQuery| {
        query
            .run(ctx.traces)
            .map_err(|e| ApiError::internal(e.to_string()))
    };
    let Some(cluster) = ctx.cluster else {
        return read(&query);
    };
    let (page, size) = query.page();
    let depth = u64::from(page) * u64::from(size);
    if depth > u64::from(MAX_MERGED_EVENTS) {
        return Err(ApiError::invalid(
            "CurrentPage",
            format!(
                "page {page} of {size} reaches {depth} events deep; in a cluster a page may reach at most {MAX_MERGED_EVENTS} (narrow BeginTime and EndTime instead)"
            ),
        ));
    }
    let whole = query.from_the_first(depth as u32);
    let mut found = vec![read(&whole)?];
    found.extend(cluster.traces_elsewhere(&whole).await?);
    Ok(merge(&query, found))
}

pub(crate) fn msg_id(params: &Params) -> Result<String, ApiError> {
    let value = params.required("MsgId")?;
    crate::trace::events::parse_msg_id(value)
        .map(crate::trace::events::msg_id_text)
        .ok_or_else(|| {
            ApiError::invalid(
                "MsgId",
                format!("\"{value}\" is not a MsgId mqgate gives (32 hexadecimal digits)"),
            )
        })
}

/// One message event as the trace answers list it (`MessageTraceLists`,
/// `MessageOfClientList`).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageEntry {
    pub time: String,
    pub msg_id: String,
    pub client_id: String,
    pub action: &'static str,
    pub action_code: &'static str,
    pub action_info: &'static str,
}

impl From<crate::trace::store::MessageTrace> for MessageEntry {
    fn from(event: crate::trace::store::MessageTrace) -> MessageEntry {
        MessageEntry {
            time: crate::trace::format_time(event.time_ms),
            msg_id: event.msg_id,
            client_id: event.client_id,
            action: event.action.label(),
            action_code: event.action.code(),
            action_info: event.action.info(),
        }
    }
}

/// What every trace query names: the instance (with its region, required
/// as the SDK sends it) and the time range.
pub struct Window {
    pub instance_id: String,
    pub begin_ms: i64,
    pub end_ms: i64,
}

impl Window {
    pub fn parse(params: &Params) -> Result<Window, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        params.required("MqttRegionId")?;
        let (begin_ms, end_ms) = time_range(params)?;
        Ok(Window {
            instance_id,
            begin_ms,
            end_ms,
        })
    }

    pub fn range(&self) -> (i64, i64) {
        (self.begin_ms, self.end_ms)
    }

    /// The range must not start before what the store keeps.
    pub fn check(&self, ctx: &Context<'_>) -> Result<(), ApiError> {
        within_retention(ctx, self.begin_ms)
    }
}

/// Which page a paged trace query asks for, and in which order.
pub struct PageRequest {
    pub page: u32,
    pub size: u32,
    pub reverse: bool,
}

impl PageRequest {
    pub fn parse(params: &Params) -> Result<PageRequest, ApiError> {
        let (page, size) = page(params)?;
        Ok(PageRequest {
            page,
            size,
            reverse: reverse(params)?,
        })
    }

    /// The page and size, as the store takes them.
    pub fn bounds(&self) -> (u32, u32) {
        (self.page, self.size)
    }

    /// The fields a paged answer starts with.
    pub fn header(&self, total: u64) -> PageHeader {
        PageHeader {
            total,
            current_page: self.page,
            page_size: self.size,
        }
    }
}

/// `Total`, `CurrentPage` and `PageSize` of a paged trace answer.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PageHeader {
    pub total: u64,
    pub current_page: u32,
    pub page_size: u32,
}

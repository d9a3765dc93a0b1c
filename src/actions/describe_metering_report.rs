//! `DescribeMeteringReport` (mqgate's own action, not in OnsMqtt): the
//! billed transactions of one of the caller's instances, from the metering
//! database, the same rows `mqgate report` prints.
//!
//! ```text
//! Action=DescribeMeteringReport&InstanceId=post-cn-demo
//!   &StartTime=2026-11-21T00:00:00Z&EndTime=2026-11-22T00:00:00Z&GroupBy=action,hour
//! -> {"RequestId": "...", "InstanceId": "post-cn-demo", "StartTime": "...", "EndTime": "...",
//!     "Rows": [{"WindowStart": "...", "WindowEnd": "...", "Action": "QuerySessionByClientId", "Transactions": 12}]}
//! ```
//! `StartTime` is inclusive, `EndTime` exclusive (UTC, RFC 3339 or a date).
//! `GroupBy`: any of `action`, and one of `hour`, `day` (default
//! `action,day`); without a time unit, one window spans the whole range.

use super::{ActionContext, ApiAction, required_param};
use crate::broker::InstanceBroker;
use crate::error::{ApiError, ErrorCode};
use crate::metering::report::{self, Bucket, Kind, Query};
use crate::rpc::params::Params;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

pub struct DescribeMeteringReport;

pub struct Request {
    pub instance_id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub by_action: bool,
    pub bucket: Bucket,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    pub request_id: String,
    pub instance_id: String,
    pub start_time: String,
    pub end_time: String,
    pub rows: Vec<ReportRow>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReportRow {
    pub window_start: String,
    pub window_end: String,
    pub action: String,
    pub transactions: u64,
}

impl ApiAction for DescribeMeteringReport {
    const NAME: &'static str = "DescribeMeteringReport";
    const RAM_ACTION: &'static str = "mq:DescribeMeteringReport";
    type Request = Request;
    type Response = Response;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = required_param(params, "InstanceId")?.to_string();
        let now = Utc::now();
        let time = |name: &str| {
            report::parse_time(required_param(params, name)?, now)
                .map_err(|e| ApiError::invalid(name, e))
        };
        let (start, end) = (time("StartTime")?, time("EndTime")?);
        if end <= start {
            return Err(ApiError::invalid("EndTime", "it must be after StartTime"));
        }
        let (mut by_action, mut bucket) = (false, Bucket::Whole);
        for part in params.get("GroupBy").unwrap_or("action,day").split(',') {
            match part.trim() {
                "action" => by_action = true,
                "hour" => bucket = Bucket::Hour,
                "day" => bucket = Bucket::Day,
                "" => {}
                other => {
                    return Err(ApiError::invalid(
                        "GroupBy",
                        format!("\"{other}\" is not action, hour or day"),
                    ));
                }
            }
        }
        Ok(Request {
            instance_id,
            start,
            end,
            by_action,
            bucket,
        })
    }

    fn instance_id(request: &Request) -> &str {
        &request.instance_id
    }

    async fn handle(
        ctx: &ActionContext<'_>,
        instance: &InstanceBroker,
        request: Request,
        request_id: &str,
    ) -> Result<Response, ApiError> {
        let query = Query {
            kind: Kind::Transactions,
            from: request.start,
            to: request.end,
            account_id: Some(instance.account_id.clone()),
            instance_id: Some(instance.instance_id.clone()),
            by_instance: true,
            by_action: request.by_action,
            bucket: request.bucket,
        };
        let path = ctx.meter.path().to_path_buf();
        let rows = tokio::task::spawn_blocking(move || {
            report::open_read_only(&path).and_then(|c| report::run(&c, &query))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InternalError,
                format!("An error occurred while processing your request. Try again later: {e}"),
            )
        })?;
        Ok(Response {
            request_id: request_id.to_string(),
            instance_id: request.instance_id,
            start_time: request.start.to_rfc3339_opts(SecondsFormat::Secs, true),
            end_time: request.end.to_rfc3339_opts(SecondsFormat::Secs, true),
            rows: rows
                .into_iter()
                .map(|r| ReportRow {
                    window_start: r.window_start,
                    window_end: r.window_end,
                    action: r.item,
                    transactions: r.count,
                })
                .collect(),
        })
    }
}

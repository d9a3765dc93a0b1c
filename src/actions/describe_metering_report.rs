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
//!
//! In a cluster, the cluster's totals: this node's bill and every other
//! node's as it last copied it into Redis (`cluster::bill`, within about
//! half a second); `ServiceUnavailable` if Redis does not answer.

use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::metering::report::{self, GroupBy, Kind, Query};
use crate::params::Params;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

pub struct DescribeMeteringReport;

/// What `GroupBy` may name here (the instance is the one asked for).
const GROUP_BY: &[&str] = &["action", "hour", "day"];

pub struct Request {
    pub instance_id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub group_by: GroupBy,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
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

impl<'a> Handler<'a> for DescribeMeteringReport {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        let now = Utc::now();
        let time = |name: &str| {
            report::parse_time(params.required(name)?, now).map_err(|e| ApiError::invalid(name, e))
        };
        let (start, end) = (time("StartTime")?, time("EndTime")?);
        if end <= start {
            return Err(ApiError::invalid("EndTime", "it must be after StartTime"));
        }
        let group_by = GroupBy::parse(params.get("GroupBy").unwrap_or("action,day"), GROUP_BY)
            .map_err(|e| ApiError::invalid("GroupBy", e))?;
        Ok(Request {
            instance_id,
            start,
            end,
            group_by,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let query = Query {
            kind: Kind::Transactions,
            from: request.start,
            to: request.end,
            account_id: Some(ctx.instance()?.account_id.clone()),
            instance_id: Some(ctx.instance()?.id.clone()),
            group_by: GroupBy {
                instance: true,
                ..request.group_by
            },
        };
        // In a cluster: the other nodes' bills, as they last copied them.
        let elsewhere = match ctx.cluster {
            Some(cluster) => {
                let from = request.start.timestamp().div_euclid(60) * 60;
                cluster
                    .billed_elsewhere(&request.instance_id, from, request.end.timestamp())
                    .await?
            }
            None => Vec::new(),
        };
        let path = ctx.meter.path().to_path_buf();
        let rows = tokio::task::spawn_blocking(move || {
            let connection = report::open_read_only(&path)?;
            report::include_calls(&connection, &elsewhere)?;
            report::run(&connection, &query)
        })
        .await
        .map_err(|e| ApiError::internal(format!("the report task failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("the metering report failed: {e}")))?;
        Ok(Answer {
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

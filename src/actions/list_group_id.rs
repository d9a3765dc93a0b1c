//! `ListGroupId`: the group ids of an instance, oldest first.
//!
//! ```text
//! Action=ListGroupId&InstanceId=post-cn-demo
//! -> {"RequestId": "...", "Data": [{"UpdateTime": 1564577317000, "InstanceId": "post-cn-demo",
//!      "IndependentNaming": true, "GroupId": "GID_test", "CreateTime": 1564577317000}]}
//! ```
//!
//! Times are Unix milliseconds. `IndependentNaming` is always true: every
//! mqgate instance is a namespace of its own (the same group id may exist
//! in two instances). No call changes a group, so `UpdateTime` is its
//! `CreateTime`.

use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct ListGroupId;

pub struct Request {
    pub instance_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub data: Vec<GroupItem>,
}

/// One group id, its fields in the order of Alibaba's example.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GroupItem {
    pub update_time: i64,
    pub instance_id: String,
    pub independent_naming: bool,
    pub group_id: String,
    pub create_time: i64,
}

impl<'a> Handler<'a> for ListGroupId {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        Ok(Request {
            instance_id: params.required("InstanceId")?.to_string(),
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let mut groups = ctx.devices.groups(&request.instance_id);
        groups.sort_by(|a, b| (a.create_time, &a.group_id).cmp(&(b.create_time, &b.group_id)));
        Ok(Answer {
            data: groups
                .into_iter()
                .map(|g| GroupItem {
                    update_time: g.update_time,
                    instance_id: request.instance_id.clone(),
                    independent_naming: true,
                    group_id: g.group_id,
                    create_time: g.create_time,
                })
                .collect(),
        })
    }
}

//! `DeleteGroupId`: deletes a group id of an instance.
//!
//! ```text
//! Action=DeleteGroupId&InstanceId=post-cn-demo&GroupId=GID_test
//! -> {"RequestId": "..."}
//! ```
//!
//! As Alibaba documents, clients of the group that are connected stay
//! connected; on an instance with `require_group_ids`, they are refused
//! when they reconnect. Deleting a group id the instance does not have
//! succeeds (the caller's goal, that the group is gone, holds; Alibaba
//! documents no error for it).

use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct DeleteGroupId;

pub struct Request {
    pub instance_id: String,
    pub group_id: String,
}

#[derive(Debug, Serialize)]
pub struct Answer {}

impl<'a> Handler<'a> for DeleteGroupId {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        Ok(Request {
            instance_id: params.required("InstanceId")?.to_string(),
            group_id: params.required("GroupId")?.to_string(),
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        // Alibaba's page names the instance as the resource of this action.
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        ctx.devices
            .delete_group(&request.instance_id, &request.group_id)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(Answer {})
    }
}

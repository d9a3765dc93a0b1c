//! `CreateGroupId`: creates a group id on an instance. A device's client id
//! is `{GroupId}@@@{DeviceId}`; an instance with `require_group_ids` admits
//! only group ids created here.
//!
//! ```text
//! Action=CreateGroupId&InstanceId=post-cn-demo&GroupId=GID_test
//! -> {"RequestId": "..."}
//! ```
//!
//! A group id starts with `GID_` or `GID-`, is 7 to 64 characters long and
//! holds letters, digits, `-` and `_`; it is unique within its instance
//! (instances are separate namespaces: `IndependentNaming` is true). The
//! group is durable before the answer. An instance holds at most
//! `max_group_ids` group ids (default 10,000: enough for any product line,
//! few enough that a loop of calls cannot grow the database and the memory
//! every CONNECT check reads without bound).

use super::{Context, Handler};
use crate::access::Resource;
use crate::devices::{check_group_id, groups::Created};
use crate::error::{ApiError, ErrorCode};
use crate::params::Params;
use serde::Serialize;

pub struct CreateGroupId;

pub struct Request {
    pub instance_id: String,
    pub group_id: String,
}

#[derive(Debug, Serialize)]
pub struct Answer {}

impl<'a> Handler<'a> for CreateGroupId {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        let group_id = params.required("GroupId")?.to_string();
        check_group_id(&group_id).map_err(|e| ApiError::invalid("GroupId", e))?;
        Ok(Request {
            instance_id,
            group_id,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        // Alibaba's page names the instance as the resource of this action.
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let limit = ctx.instance()?.max_group_ids;
        let created = ctx
            .devices
            .create_group(
                &request.instance_id,
                &request.group_id,
                ctx.now.timestamp_millis(),
                limit,
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match created {
            Created::New(_) => Ok(Answer {}),
            Created::LimitReached => Err(ApiError::new(
                ErrorCode::GroupIdNumExceed,
                format!(
                    "The instance has reached its limit of group ids: instance {} holds {limit} (max_group_ids); delete one (DeleteGroupId) before creating another.",
                    request.instance_id
                ),
            )),
            Created::AlreadyExists => Err(ApiError::new(
                ErrorCode::GroupIdAlreadyExsited,
                format!(
                    "The specified GroupId already exists: {} is a group id of instance {} already.",
                    request.group_id, request.instance_id
                ),
            )),
        }
    }
}

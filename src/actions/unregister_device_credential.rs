//! `UnRegisterDeviceCredential`: removes a client id's device credential.
//!
//! ```text
//! Action=UnRegisterDeviceCredential&InstanceId=post-cn-demo&ClientId=GID_test@@@test
//! -> {"RequestId": "..."}
//! ```
//!
//! As Alibaba documents, a device connected with the credential stays
//! connected; once it disconnects, the credential no longer logs it in.

use super::get_device_credential::not_found;
use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct UnRegisterDeviceCredential;

pub struct Request {
    pub instance_id: String,
    pub client_id: String,
}

#[derive(Debug, Serialize)]
pub struct Answer {}

impl<'a> Handler<'a> for UnRegisterDeviceCredential {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        Ok(Request {
            instance_id: params.required("InstanceId")?.to_string(),
            client_id: params.client_id("ClientId")?.to_string(),
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let removed = ctx
            .devices
            .unregister_credential(&request.instance_id, &request.client_id)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if !removed {
            return Err(not_found(&request.instance_id, &request.client_id));
        }
        Ok(Answer {})
    }
}

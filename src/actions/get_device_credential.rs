//! `GetDeviceCredential`: a client id's device credential, secret included
//! (Alibaba's API hands it back, so mqgate can: the secret is derived from
//! the server key when asked, not stored).
//!
//! ```text
//! Action=GetDeviceCredential&InstanceId=post-cn-demo&ClientId=GID_test@@@test
//! -> {"RequestId": "...", "DeviceCredential": {...as RegisterDeviceCredential...}}
//! ```

use super::register_device_credential::CredentialItem;
use super::{Context, Handler};
use crate::access::Resource;
use crate::error::{ApiError, ErrorCode};
use crate::params::Params;
use serde::Serialize;

pub struct GetDeviceCredential;

pub struct Request {
    pub instance_id: String,
    pub client_id: String,
}

/// `{DeviceCredential}` (no `Debug`: it carries a secret).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub device_credential: CredentialItem,
}

/// `DeviceCredentialNotFound`, naming the client id and the instance.
pub(crate) fn not_found(instance_id: &str, client_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::DeviceCredentialNotFound,
        format!(
            "Device Credential Not Found: client id {client_id} has no device credential on instance {instance_id} (RegisterDeviceCredential)."
        ),
    )
}

impl<'a> Handler<'a> for GetDeviceCredential {
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
        let credential = ctx
            .devices
            .credential(&request.instance_id, &request.client_id)
            .ok_or_else(|| not_found(&request.instance_id, &request.client_id))?;
        Ok(Answer {
            device_credential: CredentialItem::of(ctx.devices, credential),
        })
    }
}

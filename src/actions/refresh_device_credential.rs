//! `RefreshDeviceCredential`: gives a client id's credential a new secret.
//!
//! ```text
//! Action=RefreshDeviceCredential&InstanceId=post-cn-demo&ClientId=GID_test@@@test
//! -> {"RequestId": "...", "DeviceCredential": {...the new secret...}}
//! ```
//!
//! Alibaba's pages say neither whether the key id changes nor what happens
//! to a connected device. mqgate keeps the DeviceAccessKeyId (and
//! CreateTime), issues a new secret, and ends the session of a device
//! connected with this credential (MQTT 5: DISCONNECT 0x98, saying why):
//! its next login must use the new secret, and the old one is refused.

use super::get_device_credential::not_found;
use super::register_device_credential::CredentialItem;
use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct RefreshDeviceCredential;

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

impl<'a> Handler<'a> for RefreshDeviceCredential {
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
        let refreshed = ctx
            .devices
            .refresh_credential(
                &request.instance_id,
                &request.client_id,
                ctx.now.timestamp_millis(),
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| not_found(&request.instance_id, &request.client_id))?;
        // A device logged in with this credential used the old secret.
        let login = format!("DeviceCredential|{}|", refreshed.access_key_id);
        let logged_in_with_it = ctx
            .broker()?
            .sessions
            .get(&request.client_id)
            .is_some_and(|s| s.info.username.as_deref().is_some_and(|u| u.starts_with(&login)));
        if logged_in_with_it {
            ctx.broker()?
                .kick(
                    &request.client_id,
                    "the device credential was refreshed; connect with the new secret",
                )
                .await;
        }
        Ok(Answer {
            device_credential: CredentialItem::of(ctx.devices, refreshed),
        })
    }
}

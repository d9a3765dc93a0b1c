//! `RegisterDeviceCredential`: issues a DeviceAccessKeyId and secret for
//! one client id, for the `DeviceCredential|{DeviceAccessKeyId}|{InstanceId}`
//! login (password `Base64(HMAC-SHA1(DeviceAccessKeySecret, ClientId))`).
//!
//! ```text
//! Action=RegisterDeviceCredential&InstanceId=post-cn-demo&ClientId=GID_test@@@test
//! -> {"RequestId": "...", "DeviceCredential": {"UpdateTime": 1605541382000,
//!      "DeviceAccessKeyId": "DC.Z5f...", "CreateTime": 1605541382000, "InstanceId": "post-cn-demo",
//!      "DeviceAccessKeySecret": "DC.BJM...", "ClientId": "GID_test@@@test"}}
//! ```
//!
//! As Alibaba documents, a client id has one credential: registering it
//! again issues a new one (new key id and secret) and the old one stops
//! working for new connections. Durable before the answer. An instance
//! holds at most `max_device_credentials` (default 100,000).

use super::{Context, Handler, check_group_created, device_client_id};
use crate::access::Resource;
use crate::devices::{Credential, DeviceStore, Registered};
use crate::error::{ApiError, ErrorCode};
use crate::params::Params;
use serde::Serialize;

pub struct RegisterDeviceCredential;

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

/// A device credential as Alibaba's pages show it, secret included.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CredentialItem {
    pub update_time: i64,
    pub device_access_key_id: String,
    pub create_time: i64,
    pub instance_id: String,
    pub device_access_key_secret: String,
    pub client_id: String,
}

impl CredentialItem {
    pub fn of(devices: &DeviceStore, credential: Credential) -> CredentialItem {
        CredentialItem {
            device_access_key_secret: devices.credential_secret(&credential).expose().to_string(),
            update_time: credential.update_time,
            device_access_key_id: credential.access_key_id,
            create_time: credential.create_time,
            instance_id: credential.instance_id,
            client_id: credential.client_id,
        }
    }
}

impl<'a> Handler<'a> for RegisterDeviceCredential {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        Ok(Request {
            instance_id: params.required("InstanceId")?.to_string(),
            client_id: device_client_id(params)?.to_string(),
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        check_group_created(ctx, &request.client_id)?;
        let limit = ctx.instance()?.max_device_credentials;
        let registered = ctx
            .devices
            .register_credential(
                &request.instance_id,
                &request.client_id,
                ctx.now.timestamp_millis(),
                limit,
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match registered {
            Registered::New(credential) => Ok(Answer {
                device_credential: CredentialItem::of(ctx.devices, credential),
            }),
            Registered::LimitReached => Err(ApiError::new(
                ErrorCode::DeviceCredentialNumExceed,
                format!(
                    "The number of device credentials exceeds the limit: instance {} holds {limit} (max_device_credentials); unregister unused ones (UnRegisterDeviceCredential).",
                    request.instance_id
                ),
            )),
        }
    }
}

//! `CloseConnection`: ends a client's connection now. The device may
//! reconnect afterwards, as with ApsaraMQ.
//!
//! ```text
//! Action=CloseConnection&InstanceId=post-cn-demo&ClientId=GID_test@@@test
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true}
//! ```
//!
//! An MQTT 5 client gets DISCONNECT with reason 0x98 (administrative action)
//! before the socket closes; the answer is sent once the connection is gone.
//! Closing a client that is not connected succeeds too: the caller's goal,
//! that the client is not connected, holds (Alibaba's documentation lists
//! no error for it).

use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;

pub struct CloseConnection;

pub struct Request {
    pub instance_id: String,
    pub client_id: String,
}

impl<'a> Handler<'a> for CloseConnection {
    type Params = Request;
    type Answer = OperationSuccess;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        Ok(Request {
            instance_id: params.required("InstanceId")?.to_string(),
            client_id: params.client_id("ClientId")?.to_string(),
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<OperationSuccess, ApiError> {
        const WHY: &str = "connection closed by a CloseConnection call";
        let broker = ctx.broker()?;
        let connected_here = broker.is_online(&request.client_id);
        broker.kick(&request.client_id, WHY).await;
        // In a cluster, a device not connected here may be on another node
        // (a session kept here does not mean it is not connected there).
        if let (false, Some(cluster)) = (connected_here, ctx.cluster) {
            cluster
                .kick_elsewhere(&request.instance_id, &request.client_id, WHY)
                .await?;
        }
        Ok(OperationSuccess::new())
    }
}

//! The API actions. One file per action, each declaring its parameters, its
//! RAM action and resource, and its handler, behind one trait
//! ([`ApiAction`]); [`Action`] is the closed list the RPC endpoint
//! dispatches on.

pub mod batch_query_session_by_client_ids;
pub mod close_connection;
pub mod describe_metering_report;
pub mod query_session_by_client_id;

use crate::access;
use crate::broker::{Brokers, InstanceBroker};
use crate::directory::{Directory, Instance};
use crate::error::{ApiError, ErrorCode};
use crate::rpc::params::Params;
use crate::rpc::response::SuccessBody;
use crate::rpc::verify::{Format, VerifiedRequest};
use batch_query_session_by_client_ids::StatusCache;
use serde::Serialize;
use std::future::Future;

/// The one API version mqgate speaks (OnsMqtt 2020-04-20).
pub const API_VERSION: &str = "2020-04-20";

/// What an action may use while it runs.
pub struct ActionContext<'a> {
    pub directory: &'a Directory,
    pub brokers: &'a Brokers,
    pub status_cache: &'a StatusCache,
    /// The request's RAM condition keys (acs:SourceIp, acs:CurrentTime, ...).
    pub ram_context: &'a access::LazyConditions<'a>,
    pub meter: &'a crate::metering::Meter,
    /// The format the answer is sent in (the body is serialized in it).
    pub format: crate::rpc::verify::Format,
}

/// An API action: its name, its RAM action, its parameters and its handler.
pub trait ApiAction {
    /// The `Action` parameter that selects it.
    const NAME: &'static str;
    /// The RAM action a policy must allow.
    const RAM_ACTION: &'static str;
    type Request;
    type Response: Serialize;

    /// Reads the action's own parameters.
    fn parse(params: &Params) -> Result<Self::Request, ApiError>;

    /// The instance the call is about; its ARN is the RAM resource.
    fn instance_id(request: &Self::Request) -> &str;

    /// The RAM resource: the instance's ARN, `acs:mq:{region}:{account}:{id}`.
    fn resource(instance: &Instance) -> String {
        instance.arn()
    }

    fn handle(
        ctx: &ActionContext<'_>,
        instance: &InstanceBroker,
        request: Self::Request,
        request_id: &str,
    ) -> impl Future<Output = Result<Self::Response, ApiError>> + Send;
}

/// Every action mqgate answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    CloseConnection,
    QuerySessionByClientId,
    BatchQuerySessionByClientIds,
    DescribeMeteringReport,
}

impl Action {
    pub const ALL: &'static [Action] = &[
        Action::CloseConnection,
        Action::QuerySessionByClientId,
        Action::BatchQuerySessionByClientIds,
        Action::DescribeMeteringReport,
    ];

    /// The action named by `Action=` (case-sensitive, as Alibaba's gateway).
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::CloseConnection => close_connection::CloseConnection::NAME,
            Action::QuerySessionByClientId => {
                query_session_by_client_id::QuerySessionByClientId::NAME
            }
            Action::BatchQuerySessionByClientIds => {
                batch_query_session_by_client_ids::BatchQuerySessionByClientIds::NAME
            }
            Action::DescribeMeteringReport => {
                describe_metering_report::DescribeMeteringReport::NAME
            }
        }
    }

    pub fn ram_action(self) -> &'static str {
        match self {
            Action::CloseConnection => close_connection::CloseConnection::RAM_ACTION,
            Action::QuerySessionByClientId => {
                query_session_by_client_id::QuerySessionByClientId::RAM_ACTION
            }
            Action::BatchQuerySessionByClientIds => {
                batch_query_session_by_client_ids::BatchQuerySessionByClientIds::RAM_ACTION
            }
            Action::DescribeMeteringReport => {
                describe_metering_report::DescribeMeteringReport::RAM_ACTION
            }
        }
    }

    /// Parses, authorizes and runs the action; the answer serialized in
    /// `ctx.format`, its fields in the order of the API documentation.
    pub async fn perform(
        self,
        request: &VerifiedRequest,
        ctx: &ActionContext<'_>,
        request_id: &str,
    ) -> Result<SuccessBody, ApiError> {
        match self {
            Action::CloseConnection => {
                run::<close_connection::CloseConnection>(request, ctx, request_id).await
            }
            Action::QuerySessionByClientId => {
                run::<query_session_by_client_id::QuerySessionByClientId>(request, ctx, request_id)
                    .await
            }
            Action::BatchQuerySessionByClientIds => {
                run::<batch_query_session_by_client_ids::BatchQuerySessionByClientIds>(
                    request, ctx, request_id,
                )
                .await
            }
            Action::DescribeMeteringReport => {
                run::<describe_metering_report::DescribeMeteringReport>(request, ctx, request_id)
                    .await
            }
        }
    }
}

async fn run<A: ApiAction>(
    request: &VerifiedRequest,
    ctx: &ActionContext<'_>,
    request_id: &str,
) -> Result<SuccessBody, ApiError> {
    let parsed = A::parse(&request.params)?;
    let instance = access::authorize(
        ctx.directory,
        &request.user,
        A::RAM_ACTION,
        A::instance_id(&parsed),
        ctx.ram_context,
    )?;
    let Some(broker) = ctx.brokers.instance(&instance.id) else {
        return Err(ApiError::new(
            ErrorCode::InternalError,
            format!(
                "An error occurred while processing your request: instance \"{}\" has no running broker. Try again later.",
                instance.id
            ),
        ));
    };
    // Quota, then the action, then the bill: a call is answered only once
    // its transaction is durable, and a refused or failed call is not billed.
    let admission = ctx
        .meter
        .admit(&instance.id, instance.monthly_transaction_quota)?;
    let response = A::handle(ctx, &broker, parsed, request_id).await?;
    let body = match ctx.format {
        Format::Json => serde_json::to_string(&response).map(SuccessBody::Json),
        Format::Xml => serde_json::to_value(response).map(SuccessBody::Xml),
    }
    .map_err(|e| {
        ApiError::new(
            ErrorCode::InternalError,
            format!("An error occurred while processing your request: {e}"),
        )
    })?;
    ctx.meter
        .commit(admission, &request.user.account_id, A::NAME)
        .await?;
    Ok(body)
}

/// A parameter the action requires: present and not empty.
pub fn required_param<'a>(params: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    match params.get(name) {
        None => Err(ApiError::invalid(
            name,
            "it is missing; this action requires it",
        )),
        Some("") => Err(ApiError::invalid(name, "it is empty")),
        Some(value) => Ok(value),
    }
}

/// A client id as MQTT allows it: not empty, at most 65535 bytes.
pub fn check_client_id(name: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(
            name,
            "it is empty; give the client id of a device",
        ));
    }
    if value.len() > 65535 {
        return Err(ApiError::invalid(
            name,
            "it is longer than the 65535 bytes an MQTT client id can have",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ram_actions_are_the_documented_ones() {
        for action in Action::ALL {
            assert_eq!(Action::from_name(action.name()), Some(*action));
        }
        assert_eq!(Action::from_name("closeconnection"), None);
        assert_eq!(Action::CloseConnection.ram_action(), "mq:CloseConnection");
        assert_eq!(
            Action::QuerySessionByClientId.ram_action(),
            "mq:MqttInstanceAccess"
        );
        assert_eq!(
            Action::BatchQuerySessionByClientIds.ram_action(),
            "mq:BatchQuerySessionByClientIds"
        );
    }
}

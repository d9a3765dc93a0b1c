//! The API actions, one file each. A file declares its action's typed
//! parameters (and how they are read from the call's [`Params`]), the
//! resource the call acts on, its typed answer, and its handler, by
//! implementing [`Handler`]. The action's name, RAM action, limit and
//! billing are its row in [`crate::api`]; the same rows generate the
//! dispatch here ([`Call`], [`Reply`]).
//!
//! A handler sees what [`Context`] gives it and nothing of HTTP: it never
//! learns the request id, the signature scheme or the answer format (the
//! RPC endpoint's respond stage adds those).

pub(crate) mod custom_auth_params;
pub(crate) mod tag_params;
pub(crate) mod trace_params;

use crate::access::Resource;
use crate::api::Action;
use crate::broker::InstanceBroker;
use crate::devices::DeviceStore;
use crate::directory::Instance;
use crate::error::ApiError;
use crate::metering::Meter;
use crate::params::Params;
use crate::principal::Principal;
use serde::{Serialize, Serializer};
use std::future::Future;
use std::sync::Arc;

/// What an action may use while it runs: what the caller was authorized
/// on (an instance and its broker, or its account's instances), the bill,
/// the device-side state, who is calling, and the time the call is made
/// (one clock read per call).
pub struct Context<'a> {
    pub scope: Scope<'a>,
    pub meter: &'a Meter,
    pub devices: &'a DeviceStore,
    /// The trace store, for the trace queries, and where a message sent
    /// through the API is traced.
    pub traces: &'a crate::trace::TraceStore,
    pub tracer: &'a crate::trace::Tracer,
    pub principal: &'a Principal<'a>,
    pub now: chrono::DateTime<chrono::Utc>,
    /// In a cluster: where to ask about devices on other nodes.
    pub cluster: Option<&'a crate::cluster::Cluster>,
}

/// What a call was authorized on, as its action's resource named it.
pub enum Scope<'a> {
    /// One instance (most actions).
    Instance {
        instance: &'a Instance,
        broker: &'a InstanceBroker,
    },
    /// The caller's account: its instances, sorted by id (ListInstances,
    /// the tag actions).
    Account { instances: Vec<Arc<Instance>> },
}

impl<'a> Context<'a> {
    /// The instance of an instance-scoped call.
    pub fn instance(&self) -> Result<&'a Instance, ApiError> {
        match self.scope {
            Scope::Instance { instance, .. } => Ok(instance),
            Scope::Account { .. } => Err(ApiError::internal(
                "an account-scoped action asked for an instance",
            )),
        }
    }

    /// The broker of an instance-scoped call.
    pub fn broker(&self) -> Result<&'a InstanceBroker, ApiError> {
        match self.scope {
            Scope::Instance { broker, .. } => Ok(broker),
            Scope::Account { .. } => Err(ApiError::internal(
                "an account-scoped action asked for a broker",
            )),
        }
    }

    /// The caller's instances, for an account-scoped call (empty for an
    /// instance-scoped one).
    pub fn account_instances(&self) -> &[Arc<Instance>] {
        match &self.scope {
            Scope::Account { instances } => instances,
            Scope::Instance { .. } => &[],
        }
    }
}

/// Where an answer's `RequestId` goes among its fields, as the action's
/// documentation lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestIdAt {
    First,
    /// Pages that list fields alphabetically (`QuerySessionByClientId`:
    /// `OnlineStatus`, `RequestId`).
    Last,
}

/// One API action: its typed parameters, its resource, its answer and its
/// handler. `'a` is the life of the call's parameters, which the typed ones
/// may borrow (no copy per call).
pub trait Handler<'a> {
    /// The action's own parameters, checked.
    type Params: Send;
    /// The answer's fields, in the documentation's order (without
    /// `RequestId`, which the respond stage adds).
    type Answer: Serialize + Send;

    const REQUEST_ID_AT: RequestIdAt = RequestIdAt::First;

    /// Reads and checks the parameters; a refusal names the parameter.
    fn parse(params: &'a Params) -> Result<Self::Params, ApiError>;

    /// What the call acts on: the RAM resource its policy must allow, in
    /// the instance whose owner must be the caller.
    fn resource(params: &Self::Params) -> Resource<'_>;

    /// Runs the action.
    fn handle(
        ctx: &Context<'_>,
        params: Self::Params,
    ) -> impl Future<Output = Result<Self::Answer, ApiError>> + Send;
}

/// A device's client id, `{GroupId}@@@{DeviceId}`, as the device-credential
/// actions take it: at most 64 characters (Alibaba's limit), with a valid
/// group id and a device id.
pub(crate) fn device_client_id(params: &Params) -> Result<&str, ApiError> {
    let client_id = params.client_id("ClientId")?;
    if client_id.chars().count() > 64 {
        return Err(ApiError::invalid(
            "ClientId",
            "it is longer than the 64 characters of an ApsaraMQ client id",
        ));
    }
    let Some((group, device)) = client_id.split_once("@@@") else {
        return Err(ApiError::invalid(
            "ClientId",
            format!("\"{client_id}\" is not GroupId@@@DeviceId"),
        ));
    };
    crate::devices::check_group_id(group)
        .map_err(|e| ApiError::invalid("ClientId", format!("its group id {group}: {e}")))?;
    if device.is_empty() {
        return Err(ApiError::invalid(
            "ClientId",
            "its device id (after @@@) is empty",
        ));
    }
    Ok(client_id)
}

/// On an instance with `require_group_ids`, a client id's group id must
/// have been created.
pub(crate) fn check_group_created(ctx: &Context<'_>, client_id: &str) -> Result<(), ApiError> {
    let instance = ctx.instance()?;
    if !instance.require_group_ids {
        return Ok(());
    }
    let group = crate::devices::group_of(client_id).unwrap_or_default();
    if ctx.devices.has_group(&instance.id, group) {
        return Ok(());
    }
    Err(ApiError::invalid(
        "ClientId",
        format!(
            "its group id {group} has not been created on instance {}, which requires created group ids (CreateGroupId)",
            instance.id
        ),
    ))
}

/// The answer of actions that only say they did it: `{Code: 200, Message:
/// "operation success.", Success: true}` (CloseConnection, the blacklist).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OperationSuccess {
    pub code: u16,
    pub message: &'static str,
    pub success: bool,
}

impl OperationSuccess {
    pub fn new() -> OperationSuccess {
        OperationSuccess {
            code: 200,
            message: "operation success.",
            success: true,
        }
    }
}

impl Default for OperationSuccess {
    fn default() -> Self {
        OperationSuccess::new()
    }
}

/// Builds the dispatch from the action table's rows: a module per row, and
/// [`Call`] and [`Reply`] with one variant per action.
macro_rules! define_dispatch {
    ($( $name:ident ($module:ident) { $($metadata:tt)* } ),* $(,)?) => {
        $( pub mod $module; )*

        /// A call's checked parameters, for the action it names.
        pub enum Call<'a> {
            $( $name(<$module::$name as Handler<'a>>::Params), )*
        }

        /// An action's answer.
        pub enum Reply {
            $( $name(<$module::$name as Handler<'static>>::Answer), )*
        }

        impl<'a> Call<'a> {
            /// Reads `params` as `action`'s parameters.
            pub fn parse(action: Action, params: &'a Params) -> Result<Call<'a>, ApiError> {
                match action {
                    $( Action::$name => {
                        <$module::$name as Handler<'a>>::parse(params).map(Call::$name)
                    } )*
                }
            }

            /// The resource the call acts on, as its action states it.
            pub fn resource(&self) -> Resource<'_> {
                match self {
                    $( Call::$name(params) => <$module::$name as Handler<'a>>::resource(params), )*
                }
            }

            /// Runs the action.
            pub async fn handle(self, ctx: &Context<'_>) -> Result<Reply, ApiError> {
                match self {
                    $( Call::$name(params) => {
                        <$module::$name as Handler<'a>>::handle(ctx, params).await.map(Reply::$name)
                    } )*
                }
            }
        }

        impl Reply {
            pub fn request_id_at(&self) -> RequestIdAt {
                match self {
                    $( Reply::$name(_) => <$module::$name as Handler<'static>>::REQUEST_ID_AT, )*
                }
            }
        }

        impl Serialize for Reply {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $( Reply::$name(answer) => answer.serialize(serializer), )*
                }
            }
        }
    };
}
crate::api::with_action_table!(define_dispatch);

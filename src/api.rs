//! The action table: every action mqgate answers, one row each, with what
//! the rest of the service needs to know about it and nothing else — its
//! name, its RAM action, its default calls-per-second limit, whether a
//! success is billed, and how a throttled call is answered.
//!
//! This module is a leaf: it imports nothing of mqgate but the error table,
//! so that `config`, `throttle` and `directory` can read it without pulling
//! in the code that runs the actions. The handlers live in `actions/`, one
//! file per action, named by the row's module; `actions/mod.rs` turns the
//! same rows into its dispatch, so a row without a file, or a file without
//! a row, does not compile.
//!
//! # Adding an action
//!
//! 1. Add its row below (Alibaba's page gives the RAM action, the QPS limit
//!    and whether a call is billed; a page that names no RAM action means
//!    `mq:{ActionName}`).
//! 2. Write `src/actions/{module}.rs`: its parameters, its resource, its
//!    answer and its handler (see [`crate::actions::Handler`]).
//! 3. Describe it in `openapi/mqgate.yaml` and in the README's action
//!    table; `tests/action_table.rs` checks that both list the same actions
//!    with the same RAM actions as this table.

use crate::error::{ApiError, ErrorCode};

/// The one API version mqgate speaks (OnsMqtt 2020-04-20).
pub const API_VERSION: &str = "2020-04-20";

/// Calls `$then! { rows }` with every row of the table. A row reads
///
/// ```text
/// Name (module) { ram_action: "mq:...", qps: N, billed: bool, throttled: ErrorCode variant },
/// ```
///
/// `qps` is the default limit per account (Alibaba's figure; 100 where the
/// page gives none), `throttled` the error a call over it gets
/// (`SystemOverFlow`, 403, or `SystemOverFlowServer`, the same code with
/// 500, where Alibaba's page lists it so).
macro_rules! with_action_table {
    ($then:ident) => {
        $then! {
            CloseConnection (close_connection) {
                ram_action: "mq:CloseConnection",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            QuerySessionByClientId (query_session_by_client_id) {
                ram_action: "mq:MqttInstanceAccess",
                qps: 500,
                billed: true,
                throttled: SystemOverFlow,
            },
            BatchQuerySessionByClientIds (batch_query_session_by_client_ids) {
                ram_action: "mq:BatchQuerySessionByClientIds",
                qps: 100,
                billed: true,
                throttled: SystemOverFlowServer,
            },
            CreateGroupId (create_group_id) {
                ram_action: "mq:CreateMqttGroupId",
                qps: 10,
                billed: true,
                throttled: SystemOverFlow,
            },
            DeleteGroupId (delete_group_id) {
                ram_action: "mq:DeleteMqttGroupId",
                qps: 10,
                billed: true,
                throttled: SystemOverFlow,
            },
            ListGroupId (list_group_id) {
                ram_action: "mq:ListMqttGroupId",
                qps: 10,
                billed: true,
                throttled: SystemOverFlow,
            },
            RegisterDeviceCredential (register_device_credential) {
                ram_action: "mq:RegisterDeviceCredential",
                qps: 500,
                billed: true,
                throttled: SystemOverFlow,
            },
            GetDeviceCredential (get_device_credential) {
                ram_action: "mq:GetDeviceCredential",
                qps: 500,
                billed: true,
                throttled: SystemOverFlow,
            },
            RefreshDeviceCredential (refresh_device_credential) {
                ram_action: "mq:RefreshDeviceCredential",
                qps: 500,
                billed: true,
                throttled: SystemOverFlow,
            },
            // Alibaba's page names mq:MqttInstanceAccess, not an action of its own.
            UnRegisterDeviceCredential (unregister_device_credential) {
                ram_action: "mq:MqttInstanceAccess",
                qps: 500,
                billed: true,
                throttled: SystemOverFlow,
            },
            // The page gives no limit (100, as for CloseConnection) and does
            // not say whether a call is billed (billed, as every other call).
            ListDeviceCredentialClientId (list_device_credential_client_id) {
                ram_action: "mq:MqttInstanceAccess",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            ApplyToken (apply_token) {
                ram_action: "mq:ApplyToken",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            QueryToken (query_token) {
                ram_action: "mq:QueryToken",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            RevokeToken (revoke_token) {
                ram_action: "mq:RevokeToken",
                qps: 5,
                billed: true,
                throttled: SystemOverFlow,
            },
            // The custom-auth pages give no limit (100, as for
            // CloseConnection) and do not say whether a call is billed
            // (billed, as every other call).
            AddCustomAuthConnectBlack (add_custom_auth_connect_black) {
                ram_action: "mq:AddCustomAuthConnectBlack",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            DeleteCustomAuthConnectBlack (delete_custom_auth_connect_black) {
                ram_action: "mq:DeleteCustomAuthConnectBlack",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            QueryCustomAuthConnectBlack (query_custom_auth_connect_black) {
                ram_action: "mq:QueryCustomAuthConnectBlack",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            AddCustomAuthIdentity (add_custom_auth_identity) {
                ram_action: "mq:AddCustomAuthIdentity",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            UpdateCustomAuthIdentity (update_custom_auth_identity) {
                ram_action: "mq:UpdateCustomAuthIdentity",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            DeleteCustomAuthIdentity (delete_custom_auth_identity) {
                ram_action: "mq:DeleteCustomAuthIdentity",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            QueryCustomAuthIdentity (query_custom_auth_identity) {
                ram_action: "mq:QueryCustomAuthIdentity",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            AddCustomAuthPermission (add_custom_auth_permission) {
                ram_action: "mq:AddCustomAuthPermission",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            UpdateCustomAuthPermission (update_custom_auth_permission) {
                ram_action: "mq:UpdateCustomAuthPermission",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            DeleteCustomAuthPermission (delete_custom_auth_permission) {
                ram_action: "mq:DeleteCustomAuthPermission",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            QueryCustomAuthPermission (query_custom_auth_permission) {
                ram_action: "mq:QueryCustomAuthPermission",
                qps: 100,
                billed: true,
                throttled: SystemOverFlow,
            },
            SendMessage (send_message) {
                ram_action: "mq:SendMessage",
                qps: 1000,
                billed: true,
                throttled: SystemOverFlow,
            },
            QueryMqttTraceDevice (query_mqtt_trace_device) {
                ram_action: "mq:QueryMqttTraceDevice",
                qps: 500,
                billed: true,
                throttled: SystemOverFlow,
            },
            QueryMqttTraceMessagePublish (query_mqtt_trace_message_publish) {
                ram_action: "mq:QueryMqttTraceMessagePublish",
                qps: 500,
                billed: true,
                throttled: SystemOverFlow,
            },
            QueryMqttTraceMessageSubscribe (query_mqtt_trace_message_subscribe) {
                ram_action: "mq:QueryMqttTraceMessageSubscribe",
                qps: 500,
                billed: true,
                throttled: SystemOverFlow,
            },
            QueryMqttTraceMessageOfClient (query_mqtt_trace_message_of_client) {
                ram_action: "mq:QueryMqttTraceMessageOfClient",
                qps: 500,
                billed: true,
                throttled: SystemOverFlow,
            },
            // The account's instances and their tags: authorized on the
            // account as a whole, billed to no instance; the pages give no
            // limit (100, as for the other management calls).
            ListInstances (list_instances) {
                ram_action: "mq:ListInstances",
                qps: 100,
                billed: false,
                throttled: SystemOverFlow,
            },
            TagResources (tag_resources) {
                ram_action: "mq:TagResources",
                qps: 100,
                billed: false,
                throttled: SystemOverFlow,
            },
            UntagResources (untag_resources) {
                ram_action: "mq:UntagResources",
                qps: 100,
                billed: false,
                throttled: SystemOverFlow,
            },
            ListTagResources (list_tag_resources) {
                ram_action: "mq:ListTagResources",
                qps: 100,
                billed: false,
                throttled: SystemOverFlow,
            },
            // mqgate's own: the bill of one of the caller's instances.
            DescribeMeteringReport (describe_metering_report) {
                ram_action: "mq:DescribeMeteringReport",
                qps: 10,
                billed: true,
                throttled: SystemOverFlow,
            },
        }
    };
}
pub(crate) use with_action_table;

/// Builds [`Action`] and its metadata from the rows.
macro_rules! define_actions {
    ($(
        $name:ident ($module:ident) {
            ram_action: $ram:literal,
            qps: $qps:literal,
            billed: $billed:literal,
            throttled: $throttled:ident $(,)?
        }
    ),* $(,)?) => {
        /// Every action mqgate answers.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Action { $($name),* }

        impl Action {
            /// Every action, in the order of the table.
            pub const ALL: &'static [Action] = &[$(Action::$name),*];

            /// The `Action` parameter (V1) or `x-acs-action` header (V3)
            /// that selects it.
            pub const fn name(self) -> &'static str {
                match self { $(Action::$name => stringify!($name)),* }
            }

            /// The RAM action a policy must allow.
            pub const fn ram_action(self) -> &'static str {
                match self { $(Action::$name => $ram),* }
            }

            /// Calls per second per account unless the configuration says
            /// otherwise.
            pub const fn default_qps(self) -> u32 {
                match self { $(Action::$name => $qps),* }
            }

            /// Whether a successful call is one transaction on the bill
            /// (and counts toward the instance's monthly quota).
            pub const fn billed(self) -> bool {
                match self { $(Action::$name => $billed),* }
            }

            /// The error a call over the limit gets.
            pub const fn throttled(self) -> ErrorCode {
                match self { $(Action::$name => ErrorCode::$throttled),* }
            }
        }
    };
}
with_action_table!(define_actions);

impl Action {
    /// The action named `name` (case-sensitive, as Alibaba's gateway).
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.name() == name)
    }

    /// The action a request asks for: `version` must be [`API_VERSION`] and
    /// `name` a row of the table.
    pub fn route(version: &str, name: &str) -> Result<Action, ApiError> {
        if version != API_VERSION {
            return Err(ApiError::new(
                ErrorCode::InvalidVersion,
                format!(
                    "Specified parameter Version is not valid: \"{version}\"; mqgate serves OnsMqtt {API_VERSION}."
                ),
            ));
        }
        Action::from_name(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidActionNotFound,
                format!(
                    "Specified api is not found, please check your url and method: \"{name}\" is not an action of OnsMqtt {API_VERSION} that mqgate serves."
                ),
            )
        })
    }
}

/// Something with a calls-per-second limit per account: an RPC action, or
/// the EMQX client-management API as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    Action(Action),
    /// Every call of the EMQX API (`/instances/{id}/api/v5/...`).
    EmqxApi,
}

impl Limit {
    /// The name used in `[limits]` and `[accounts.limits]`.
    pub const EMQX_API: &'static str = "EmqxApi";

    /// Every limit: the actions in table order, then the EMQX API.
    pub fn all() -> impl Iterator<Item = Limit> {
        Action::ALL
            .iter()
            .map(|a| Limit::Action(*a))
            .chain([Limit::EmqxApi])
    }

    pub fn name(self) -> &'static str {
        match self {
            Limit::Action(action) => action.name(),
            Limit::EmqxApi => Limit::EMQX_API,
        }
    }

    pub fn from_name(name: &str) -> Option<Limit> {
        if name == Limit::EMQX_API {
            return Some(Limit::EmqxApi);
        }
        Action::from_name(name).map(Limit::Action)
    }

    /// Calls per second per account unless the configuration says otherwise.
    pub fn default_rate(self) -> u32 {
        match self {
            Limit::Action(action) => action.default_qps(),
            Limit::EmqxApi => 100,
        }
    }

    /// A dense index, for tables indexed by limit.
    pub fn index(self) -> usize {
        match self {
            Limit::Action(action) => action as usize,
            Limit::EmqxApi => Action::ALL.len(),
        }
    }

    /// How many limits there are ([`Limit::index`] is below this).
    pub const COUNT: usize = Action::ALL.len() + 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ram_actions_are_the_documented_ones() {
        for action in Action::ALL {
            assert_eq!(Action::from_name(action.name()), Some(*action));
            assert!(action.ram_action().starts_with("mq:"), "{action:?}");
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
        assert_eq!(Action::QuerySessionByClientId.default_qps(), 500);
        assert_eq!(
            Action::BatchQuerySessionByClientIds.throttled().status(),
            500
        );
    }

    #[test]
    fn limits_have_distinct_dense_indexes_and_names() {
        let limits: Vec<Limit> = Limit::all().collect();
        assert_eq!(limits.len(), Limit::COUNT);
        for (i, limit) in limits.iter().enumerate() {
            assert_eq!(limit.index(), i);
            assert_eq!(Limit::from_name(limit.name()), Some(*limit));
        }
        assert_eq!(Limit::from_name("EmqxApi"), Some(Limit::EmqxApi));
        assert_eq!(Limit::EmqxApi.default_rate(), 100);
    }
}

//! Authorization: may this user perform this RAM action on this instance?
//!
//! Two checks, in Alibaba's order:
//! 1. the instance must exist and belong to the caller's account, else
//!    `InstancePermissionCheckFailed` (the same answer whether the instance
//!    is another account's or does not exist, so ids cannot be probed), and
//!    no policy can reach across accounts, not even `"Resource": "*"`;
//! 2. the account's root key may do anything on its own instances; any other
//!    user needs a RAM policy that allows the action on the instance's ARN
//!    ([`crate::ram::evaluate`]): an explicit or implicit deny is
//!    `Forbidden.RAM` with the `AccessDeniedDetail` Alibaba sends.

use crate::directory::{Directory, Instance, User};
use crate::error::{AccessDeniedDetail, ApiError, ErrorCode};
use crate::ram::{self, Context, DecisionKind};
use base64::Engine;
use std::sync::Arc;

/// Where a request's RAM condition keys come from: a [`Context`] built
/// beforehand, or a [`LazyConditions`] that builds it on first use.
pub trait Conditions {
    fn context(&self) -> &Context;
}

impl Conditions for Context {
    fn context(&self) -> &Context {
        self
    }
}

/// The condition keys of a call, built only when a policy is evaluated: a
/// root key's calls evaluate none, and building them (a time and an address
/// formatted, a map filled) would be most of what authorizing them costs.
pub struct LazyConditions<'a> {
    access_key_id: &'a str,
    source_ip: Option<std::net::IpAddr>,
    now: chrono::DateTime<chrono::Utc>,
    built: std::sync::OnceLock<Context>,
}

impl<'a> LazyConditions<'a> {
    pub fn new(
        access_key_id: &'a str,
        source_ip: Option<std::net::IpAddr>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> LazyConditions<'a> {
        LazyConditions {
            access_key_id,
            source_ip,
            now,
            built: std::sync::OnceLock::new(),
        }
    }
}

impl Conditions for LazyConditions<'_> {
    fn context(&self) -> &Context {
        self.built
            .get_or_init(|| crate::rpc::ram_context(self.access_key_id, self.source_ip, self.now))
    }
}

/// The instance the call is about, once the caller may act on it.
pub fn authorize(
    directory: &Directory,
    user: &User,
    ram_action: &str,
    instance_id: &str,
    conditions: &impl Conditions,
) -> Result<Arc<Instance>, ApiError> {
    let Some(instance) = directory
        .instance(instance_id)
        .filter(|i| i.account_id == user.account_id)
    else {
        return Err(ApiError::new(
            ErrorCode::InstancePermissionCheckFailed,
            format!(
                "An error occurred while validating the permissions of the instance. Please verify the account that created the instance and its permissions settings: instance \"{instance_id}\" is not an instance of account {}.",
                user.account_id
            ),
        ));
    };
    if user.root {
        return Ok(instance.clone());
    }
    let resource = instance.arn();
    let decision = ram::evaluate(&user.policies, ram_action, &resource, conditions.context());
    if decision.kind == DecisionKind::Allow {
        return Ok(instance.clone());
    }
    let explanation = decision.explain();
    let diagnostic = serde_json::json!({
        "AuthAction": ram_action,
        "AuthResource": resource,
        "AuthPrincipalDisplayName": user.name,
        "NoPermissionType": decision.kind.as_str(),
        "Policy": decision.policy.map(|p| p.name.as_str()),
        "Statement": decision.statement,
        "Explanation": explanation,
    });
    let mut error = ApiError::new(
        ErrorCode::ForbiddenRam,
        format!(
            "User not authorized to operate on the specified resource: {ram_action} on {resource} is {} for user \"{}\" ({explanation}).",
            decision.kind.as_str(),
            user.name
        ),
    );
    error.access_denied = Some(Box::new(AccessDeniedDetail {
        auth_action: ram_action.to_string(),
        auth_principal_type: "SubUser".to_string(),
        auth_principal_owner_id: user.account_id.clone(),
        auth_principal_display_name: user.name.clone(),
        policy_type: "AccountLevelIdentityBasedPolicy".to_string(),
        no_permission_type: decision.kind.as_str().to_string(),
        encoded_diagnostic_message: base64::engine::general_purpose::STANDARD
            .encode(diagnostic.to_string()),
    }));
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn directory() -> Directory {
        let text = r#"
            [[accounts]]
            id = "111"
              [[accounts.instances]]
              id = "a1"
              region = "cn-shanghai"
              [[accounts.users]]
              name = "root"
              access_key_id = "ka"
              access_key_secret = "sa"
              root = true
              [[accounts.users]]
              name = "ops"
              access_key_id = "kops"
              access_key_secret = "sops"
              [[accounts.users]]
              name = "reader"
              access_key_id = "kr"
              access_key_secret = "sr"
              policies = ["AliyunMQReadOnlyAccess"]
              [[accounts.users]]
              name = "all-but-close"
              access_key_id = "kc"
              access_key_secret = "sc"
              policies = ["AliyunMQFullAccess", "ExampleAllButCloseConnection"]
            [[accounts]]
            id = "222"
              [[accounts.instances]]
              id = "b1"
              [[accounts.users]]
              name = "root"
              access_key_id = "kb"
              access_key_secret = "sb"
              root = true
        "#;
        Directory::from_config(&Config::parse(text, "t.toml").unwrap())
    }

    #[test]
    fn root_may_act_on_its_own_instances_only() {
        let d = directory();
        let root = d.user("ka").unwrap();
        let ctx = Context::new();
        let instance = authorize(&d, root, "mq:CloseConnection", "a1", &ctx).unwrap();
        assert_eq!(instance.arn(), "acs:mq:cn-shanghai:111:a1");
        for other in ["b1", "missing"] {
            let e = authorize(&d, root, "mq:CloseConnection", other, &ctx).unwrap_err();
            assert_eq!(e.code(), "InstancePermissionCheckFailed");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn a_user_without_policies_is_implicitly_denied_with_the_detail() {
        let d = directory();
        let ops = d.user("kops").unwrap();
        let e = authorize(&d, ops, "mq:MqttInstanceAccess", "a1", &Context::new()).unwrap_err();
        assert_eq!((e.code().as_str(), e.status()), ("Forbidden.RAM", 403));
        assert!(e.message.contains("mq:MqttInstanceAccess"));
        assert!(e.message.contains("acs:mq:cn-shanghai:111:a1"));
        let detail = e.access_denied.unwrap();
        assert_eq!(detail.no_permission_type, "ImplicitDeny");
        assert_eq!(detail.auth_principal_owner_id, "111");
        assert_eq!(detail.auth_principal_display_name, "ops");
        assert_eq!(detail.auth_action, "mq:MqttInstanceAccess");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&detail.encoded_diagnostic_message)
            .unwrap();
        let decoded: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(decoded["AuthResource"], "acs:mq:cn-shanghai:111:a1");
    }

    #[test]
    fn policies_decide_for_other_users_but_never_across_accounts() {
        let d = directory();
        let ctx = Context::new();
        let reader = d.user("kr").unwrap();
        assert!(authorize(&d, reader, "mq:MqttInstanceAccess", "a1", &ctx).is_ok());
        let e = authorize(&d, reader, "mq:CloseConnection", "a1", &ctx).unwrap_err();
        assert_eq!(e.access_denied.unwrap().no_permission_type, "ImplicitDeny");
        // "Resource": "*" does not reach another account's instance.
        let e = authorize(&d, reader, "mq:MqttInstanceAccess", "b1", &ctx).unwrap_err();
        assert_eq!(e.code(), "InstancePermissionCheckFailed");
        let closer = d.user("kc").unwrap();
        let e = authorize(&d, closer, "mq:CloseConnection", "a1", &ctx).unwrap_err();
        assert!(
            e.message
                .contains("Statement[1] of ExampleAllButCloseConnection"),
            "{}",
            e.message
        );
        assert_eq!(e.access_denied.unwrap().no_permission_type, "ExplicitDeny");
    }
}

//! Authorization: may this principal perform this RAM action on this
//! resource?
//!
//! Two checks, in Alibaba's order:
//! 1. the resource's instance must exist and belong to the caller's
//!    account, else `InstancePermissionCheckFailed` (the same answer whether
//!    the instance is another account's or does not exist, so ids cannot be
//!    probed), and no policy can reach across accounts, not even
//!    `"Resource": "*"`;
//! 2. the account's root key may do anything on its own instances; any other
//!    user needs a RAM policy that allows the action on the resource's ARN
//!    ([`Resource::arn`], [`crate::ram::evaluate`]): an explicit or implicit
//!    deny is `Forbidden.RAM` with the `AccessDeniedDetail` Alibaba sends.
//!
//! The condition keys a policy may test are built in [`conditions`].

pub mod conditions;
pub mod resource;

pub use conditions::{Conditions, LazyConditions, source_ip};
pub use resource::Resource;

use crate::directory::{Directory, Instance};
use crate::error::{AccessDeniedDetail, ApiError, ErrorCode};
use crate::principal::{Principal, PrincipalKind};
use crate::ram::{self, DecisionKind};
use base64::Engine;
use std::sync::Arc;

/// The instance of `resource`, once `principal` may perform `ram_action`
/// on it.
pub fn authorize(
    directory: &Directory,
    principal: &Principal<'_>,
    ram_action: &str,
    resource: Resource<'_>,
    conditions: &impl Conditions,
) -> Result<Arc<Instance>, ApiError> {
    let Some(instance_id) = resource.instance_id() else {
        // The account as a whole has no instance to give back: see
        // `authorize_account`.
        return Err(ApiError::internal(format!(
            "{ram_action} names the account, not an instance; it is authorized by authorize_account"
        )));
    };
    let Some(instance) = directory
        .instance(instance_id)
        .filter(|i| i.account_id == principal.account_id)
    else {
        return Err(ApiError::new(
            ErrorCode::InstancePermissionCheckFailed,
            format!(
                "An error occurred while validating the permissions of the instance. Please verify the account that created the instance and its permissions settings: instance \"{instance_id}\" is not an instance of account {}.",
                principal.account_id
            ),
        ));
    };
    let policies = match principal.kind {
        PrincipalKind::Root => return Ok(instance.clone()),
        PrincipalKind::RamUser { policies } => policies,
    };
    let arn = resource.arn(instance);
    ram_allows(policies, principal, ram_action, &arn, conditions)?;
    Ok(instance.clone())
}

/// The caller's instances (sorted by id), once `principal` may perform
/// `ram_action` on its account as a whole (`acs:mq:*:{account}:*`; a policy
/// naming only some instances does not grant it, as Alibaba's "All
/// Resources" actions want `*`).
pub fn authorize_account(
    directory: &Directory,
    principal: &Principal<'_>,
    ram_action: &str,
    conditions: &impl Conditions,
) -> Result<Vec<Arc<Instance>>, ApiError> {
    if let PrincipalKind::RamUser { policies } = principal.kind {
        let arn = Resource::account_arn(principal.account_id);
        ram_allows(policies, principal, ram_action, &arn, conditions)?;
    }
    let mut instances: Vec<Arc<Instance>> = directory
        .instances()
        .filter(|i| i.account_id == principal.account_id)
        .cloned()
        .collect();
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(instances)
}

/// `Ok` if the RAM user's policies allow `ram_action` on `arn`; else the
/// `Forbidden.RAM` answer Alibaba gives, with its diagnostic.
fn ram_allows(
    policies: &[Arc<crate::ram::Policy>],
    principal: &Principal<'_>,
    ram_action: &str,
    arn: &str,
    conditions: &impl Conditions,
) -> Result<(), ApiError> {
    let decision = ram::evaluate(policies, ram_action, arn, conditions.context());
    if decision.kind == DecisionKind::Allow {
        return Ok(());
    }
    let explanation = decision.explain();
    let diagnostic = serde_json::json!({
        "AuthAction": ram_action,
        "AuthResource": arn,
        "AuthPrincipalDisplayName": principal.display_name,
        "NoPermissionType": decision.kind.as_str(),
        "Policy": decision.policy.map(|p| p.name.as_str()),
        "Statement": decision.statement,
        "Explanation": explanation,
    });
    let mut error = ApiError::new(
        ErrorCode::ForbiddenRam,
        format!(
            "User not authorized to operate on the specified resource: {ram_action} on {arn} is {} for user \"{}\" ({explanation}).",
            decision.kind.as_str(),
            principal.display_name
        ),
    );
    error.access_denied = Some(Box::new(AccessDeniedDetail {
        auth_action: ram_action.to_string(),
        auth_principal_type: "SubUser".to_string(),
        auth_principal_owner_id: principal.account_id.to_string(),
        auth_principal_display_name: principal.display_name.to_string(),
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
    use crate::ram::Context;

    fn as_principal<'a>(d: &'a Directory, key: &str) -> Principal<'a> {
        Principal::of(d.user(key).unwrap())
    }

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
        let root = as_principal(&d, "ka");
        let ctx = Context::new();
        let instance = authorize(
            &d,
            &root,
            "mq:CloseConnection",
            Resource::Instance("a1"),
            &ctx,
        )
        .unwrap();
        assert_eq!(instance.arn(), "acs:mq:cn-shanghai:111:a1");
        for other in ["b1", "missing"] {
            let e = authorize(
                &d,
                &root,
                "mq:CloseConnection",
                Resource::Instance(other),
                &ctx,
            )
            .unwrap_err();
            assert_eq!(e.code(), "InstancePermissionCheckFailed");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn a_user_without_policies_is_implicitly_denied_with_the_detail() {
        let d = directory();
        let ops = as_principal(&d, "kops");
        let e = authorize(
            &d,
            &ops,
            "mq:MqttInstanceAccess",
            Resource::Instance("a1"),
            &Context::new(),
        )
        .unwrap_err();
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
        let reader = as_principal(&d, "kr");
        let a1 = Resource::Instance("a1");
        assert!(authorize(&d, &reader, "mq:MqttInstanceAccess", a1, &ctx).is_ok());
        let e = authorize(&d, &reader, "mq:CloseConnection", a1, &ctx).unwrap_err();
        assert_eq!(e.access_denied.unwrap().no_permission_type, "ImplicitDeny");
        // "Resource": "*" does not reach another account's instance.
        let e = authorize(
            &d,
            &reader,
            "mq:MqttInstanceAccess",
            Resource::Instance("b1"),
            &ctx,
        )
        .unwrap_err();
        assert_eq!(e.code(), "InstancePermissionCheckFailed");
        let closer = as_principal(&d, "kc");
        let e = authorize(&d, &closer, "mq:CloseConnection", a1, &ctx).unwrap_err();
        assert!(
            e.message
                .contains("Statement[1] of ExampleAllButCloseConnection"),
            "{}",
            e.message
        );
        assert_eq!(e.access_denied.unwrap().no_permission_type, "ExplicitDeny");
    }

    /// The resource an action states is the one policies are matched
    /// against: a policy on one group id allows that group and nothing else
    /// of the instance.
    #[test]
    fn the_stated_resource_is_what_policies_see() {
        let policy = crate::ram::Policy::parse(
            "group-only",
            r#"{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "mq:*",
                "Resource": "acs:mq:cn-shanghai:111:a1%GID_ok"}]}"#,
        )
        .unwrap();
        let d = directory();
        let user = d.user("kops").unwrap();
        let policies = [Arc::new(policy)];
        let principal = Principal {
            kind: PrincipalKind::RamUser {
                policies: &policies,
            },
            ..Principal::of(user)
        };
        let ctx = Context::new();
        let group = |group| Resource::Group {
            instance: "a1",
            group,
        };
        assert!(authorize(&d, &principal, "mq:CreateGroupId", group("GID_ok"), &ctx).is_ok());
        let e =
            authorize(&d, &principal, "mq:CreateGroupId", group("GID_other"), &ctx).unwrap_err();
        assert!(
            e.message.contains("acs:mq:cn-shanghai:111:a1%GID_other"),
            "{}",
            e.message
        );
        let e = authorize(
            &d,
            &principal,
            "mq:CreateGroupId",
            Resource::Instance("a1"),
            &ctx,
        )
        .unwrap_err();
        assert_eq!(e.code(), "Forbidden.RAM");
        let topic = Resource::Topic {
            instance: "a1",
            topic: "GID_ok",
        };
        assert!(authorize(&d, &principal, "mq:SendMessage", topic, &ctx).is_ok());
    }
}

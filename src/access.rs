//! Authorization: may this user perform this RAM action on this instance?
//!
//! Two checks, in Alibaba's order:
//! 1. the instance must exist and belong to the caller's account, else
//!    `InstancePermissionCheckFailed` (the same answer whether the instance
//!    is another account's or does not exist, so ids cannot be probed);
//! 2. the account's root key may do anything on its own instances; any other
//!    user needs a RAM policy that allows the action on the instance's ARN.
//!    No policies are attached to users yet, so for them the decision is
//!    RAM's default, an implicit deny (`Forbidden.RAM`).

use crate::directory::{Directory, Instance, User};
use crate::error::{ApiError, ErrorCode};
use std::sync::Arc;

/// The instance the call is about, once the caller may act on it.
pub fn authorize(
    directory: &Directory,
    user: &User,
    ram_action: &str,
    instance_id: &str,
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
    Err(ApiError::new(
        ErrorCode::ForbiddenRam,
        format!(
            "User not authorized to operate on the specified resource: no policy of user \"{}\" allows {ram_action} on {} (ImplicitDeny).",
            user.name,
            instance.arn()
        ),
    ))
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
        assert_eq!(
            authorize(&d, root, "mq:CloseConnection", "a1")
                .unwrap()
                .arn(),
            "acs:mq:cn-shanghai:111:a1"
        );
        for other in ["b1", "missing"] {
            let e = authorize(&d, root, "mq:CloseConnection", other).unwrap_err();
            assert_eq!(e.code(), "InstancePermissionCheckFailed");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn a_user_without_policies_is_implicitly_denied() {
        let d = directory();
        let e = authorize(&d, d.user("kops").unwrap(), "mq:MqttInstanceAccess", "a1").unwrap_err();
        assert_eq!((e.code().as_str(), e.status()), ("Forbidden.RAM", 403));
        assert!(
            e.message.contains("mq:MqttInstanceAccess")
                && e.message.contains("acs:mq:cn-shanghai:111:a1")
        );
    }
}

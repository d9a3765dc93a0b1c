//! What a call acts on, and its ARN: the resource a RAM policy names.

use crate::directory::Instance;

/// The resource of a call. Every action states its own
/// ([`crate::actions::Handler::resource`]); each lives in one instance,
/// whose owner must be the caller's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// An instance: `acs:mq:{region}:{account}:{instanceId}`.
    Instance(&'a str),
    /// A group id of an instance:
    /// `acs:mq:{region}:{account}:{instanceId}%{groupId}` (Alibaba's form
    /// for resources inside an instance with a namespace).
    Group { instance: &'a str, group: &'a str },
    /// A topic of an instance: `acs:mq:{region}:{account}:{instanceId}%{topic}`.
    Topic { instance: &'a str, topic: &'a str },
    /// The caller's account as a whole (ListInstances, the tag actions:
    /// Alibaba's "All Resources"): `acs:mq:*:{account}:*`.
    Account,
}

impl<'a> Resource<'a> {
    /// The instance the resource lives in (`None`: the account).
    pub fn instance_id(&self) -> Option<&'a str> {
        match *self {
            Resource::Instance(instance)
            | Resource::Group { instance, .. }
            | Resource::Topic { instance, .. } => Some(instance),
            Resource::Account => None,
        }
    }

    /// The ARN of an account as a whole.
    pub fn account_arn(account_id: &str) -> String {
        format!("acs:mq:*:{account_id}:*")
    }

    /// The ARN a policy's `Resource` is matched against, once the instance
    /// is known.
    pub fn arn(&self, instance: &Instance) -> String {
        match self {
            Resource::Instance(_) => instance.arn(),
            Resource::Account => Resource::account_arn(&instance.account_id),
            Resource::Group { group: inner, .. } | Resource::Topic { topic: inner, .. } => {
                format!("{}%{inner}", instance.arn())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_follow_alibabas_format() {
        let instance = Instance {
            id: "post-cn-1".into(),
            region: "cn-shanghai".into(),
            account_id: "111".into(),
            monthly_transaction_quota: None,
            require_group_ids: false,
            max_group_ids: 10,
            max_device_credentials: 10,
            max_tokens: 10,
            max_blacklisted_clients: 10,
            max_custom_auth_identities: 10,
            max_custom_auth_permissions: 10,
        };
        let cases = [
            (
                Resource::Instance("post-cn-1"),
                "acs:mq:cn-shanghai:111:post-cn-1",
            ),
            (
                Resource::Group {
                    instance: "post-cn-1",
                    group: "GID_a",
                },
                "acs:mq:cn-shanghai:111:post-cn-1%GID_a",
            ),
            (
                Resource::Topic {
                    instance: "post-cn-1",
                    topic: "alerts",
                },
                "acs:mq:cn-shanghai:111:post-cn-1%alerts",
            ),
        ];
        for (resource, arn) in cases {
            assert_eq!(resource.instance_id(), Some("post-cn-1"));
            assert_eq!(resource.arn(&instance), arn, "{resource:?}");
        }
    }
}

//! Who is who: accounts, their instances and their users' AccessKeys, as
//! looked up on every call. Built from the configuration; immutable once
//! built (a reload builds a new one).

use crate::api::Limit;
use crate::config::Config;
use crate::ram::Policy;
use crate::secret::Secret;
use std::collections::HashMap;
use std::sync::Arc;

/// A user's AccessKey and what it belongs to.
#[derive(Debug)]
pub struct User {
    pub account_id: String,
    pub name: String,
    pub access_key_id: String,
    pub access_key_secret: Secret,
    /// HMAC keyed with the secret for signature V1, made once.
    pub v1_key: crate::rpc::signature_v1::V1Key,
    /// The account's own key: full access to the account's own instances.
    pub root: bool,
    pub disabled: bool,
    /// The user's RAM policies, compiled (unused for a root key).
    pub policies: Vec<Arc<Policy>>,
}

/// An ApsaraMQ for MQTT instance: a broker of its own, with its own clients.
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    pub region: String,
    pub account_id: String,
    /// Billed transactions allowed per UTC month; `None`: no limit.
    pub monthly_transaction_quota: Option<u64>,
    /// Clients must use a group id created on the instance.
    pub require_group_ids: bool,
    /// Most group ids the instance holds.
    pub max_group_ids: usize,
    /// Most device credentials the instance holds.
    pub max_device_credentials: usize,
    /// Most unexpired tokens the instance holds.
    pub max_tokens: usize,
    /// Most client ids on the instance's connection blacklist.
    pub max_blacklisted_clients: usize,
    /// Most custom-auth identities the instance holds.
    pub max_custom_auth_identities: usize,
    /// Most custom-auth permission rules the instance holds.
    pub max_custom_auth_permissions: usize,
}

impl Instance {
    /// The resource ARN RAM policies name: `acs:mq:{region}:{account}:{instance}`.
    pub fn arn(&self) -> String {
        format!("acs:mq:{}:{}:{}", self.region, self.account_id, self.id)
    }
}

#[derive(Debug, Default)]
pub struct Directory {
    users_by_key: HashMap<String, Arc<User>>,
    /// Calls per second by (account, limit).
    limits: Vec<(String, Limit, u32)>,
    instances: HashMap<String, Arc<Instance>>,
    anonymous_instance: Option<String>,
    trusted_proxies: Vec<ipnet::IpNet>,
}

impl Directory {
    /// Builds the directory from a configuration that has been validated
    /// (ids unique, anonymous instance defined).
    pub fn from_config(config: &Config) -> Directory {
        let mut directory = Directory {
            anonymous_instance: config.mqtt.anonymous_instance.clone(),
            trusted_proxies: config.http.trusted_proxies.clone(),
            ..Directory::default()
        };
        for account in &config.accounts {
            for instance in &account.instances {
                directory.instances.insert(
                    instance.id.clone(),
                    Arc::new(Instance {
                        id: instance.id.clone(),
                        region: instance.region.clone(),
                        account_id: account.id.clone(),
                        monthly_transaction_quota: instance.monthly_transaction_quota,
                        require_group_ids: instance.require_group_ids,
                        max_group_ids: instance.max_group_ids,
                        max_device_credentials: instance.max_device_credentials,
                        max_tokens: instance.max_tokens,
                        max_blacklisted_clients: instance.max_blacklisted_clients,
                        max_custom_auth_identities: instance.max_custom_auth_identities,
                        max_custom_auth_permissions: instance.max_custom_auth_permissions,
                    }),
                );
            }
            for limit in Limit::all() {
                let rate = account
                    .limits
                    .get(limit.name())
                    .or_else(|| config.limits.get(limit.name()))
                    .copied()
                    .unwrap_or_else(|| limit.default_rate());
                directory.limits.push((account.id.clone(), limit, rate));
            }
            for user in &account.users {
                directory.users_by_key.insert(
                    user.access_key_id.clone(),
                    Arc::new(User {
                        account_id: account.id.clone(),
                        name: user.name.clone(),
                        access_key_id: user.access_key_id.clone(),
                        access_key_secret: user.access_key_secret.clone(),
                        v1_key: crate::rpc::signature_v1::V1Key::new(
                            user.access_key_secret.expose(),
                        ),
                        root: user.root,
                        disabled: user.disabled,
                        policies: user.compiled_policies.clone(),
                    }),
                );
            }
        }
        directory
    }

    pub fn user(&self, access_key_id: &str) -> Option<&Arc<User>> {
        self.users_by_key.get(access_key_id)
    }

    pub fn instance(&self, instance_id: &str) -> Option<&Arc<Instance>> {
        self.instances.get(instance_id)
    }

    pub fn instances(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.instances.values()
    }

    /// Calls per second allowed, by (account, limit).
    pub fn limits(&self) -> &[(String, Limit, u32)] {
        &self.limits
    }

    /// Whether `X-Forwarded-For` from this peer is believed.
    pub fn is_trusted_proxy(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    /// Where MQTT clients without a username land, if anywhere.
    pub fn anonymous_instance(&self) -> Option<&Arc<Instance>> {
        self.anonymous_instance
            .as_deref()
            .and_then(|id| self.instances.get(id))
    }
}

/// The directory in force, swappable as a whole (a reload builds a new one;
/// calls in flight keep the one they started with).
#[derive(Debug)]
pub struct DirectoryHandle {
    current: std::sync::RwLock<Arc<Directory>>,
}

impl DirectoryHandle {
    pub fn new(directory: Directory) -> Arc<DirectoryHandle> {
        Arc::new(DirectoryHandle {
            current: std::sync::RwLock::new(Arc::new(directory)),
        })
    }

    pub fn current(&self) -> Arc<Directory> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace(&self, directory: Directory) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(directory);
    }
}

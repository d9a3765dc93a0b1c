//! Who is calling: the principal behind a verified AccessKey.
//!
//! Both APIs resolve one (the RPC endpoint from a checked signature, the
//! EMQX API from checked Basic credentials), and authorization only ever
//! sees this: an account's root key, which may do anything on the account's
//! own instances, or a RAM user, whose policies decide. A principal carries
//! no secret.

use crate::directory::User;
use crate::ram::Policy;
use std::sync::Arc;

/// The caller of one request, borrowed from the directory's entry for its
/// key (no allocation per call).
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The AccessKeyId the request was signed with.
    pub access_key_id: &'a str,
    /// The account the key belongs to: the owner of every instance the
    /// caller may reach.
    pub account_id: &'a str,
    /// The user's name (`AuthPrincipalDisplayName` in a RAM denial).
    pub display_name: &'a str,
    pub kind: PrincipalKind<'a>,
}

/// What decides a principal's permissions.
#[derive(Debug, Clone, Copy)]
pub enum PrincipalKind<'a> {
    /// The account's own key: everything on the account's own instances.
    Root,
    /// A RAM user: its policies, evaluated per call.
    RamUser { policies: &'a [Arc<Policy>] },
}

impl<'a> Principal<'a> {
    /// The principal of a key that verification has accepted (known, not
    /// disabled, signature or secret checked).
    pub fn of(key: &'a User) -> Principal<'a> {
        Principal {
            access_key_id: &key.access_key_id,
            account_id: &key.account_id,
            display_name: &key.name,
            kind: if key.root {
                PrincipalKind::Root
            } else {
                PrincipalKind::RamUser {
                    policies: &key.policies,
                }
            },
        }
    }

    pub fn is_root(&self) -> bool {
        matches!(self.kind, PrincipalKind::Root)
    }
}

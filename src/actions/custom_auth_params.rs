//! The parameters the custom-auth actions share, each read and checked
//! once here, so that every action answers a bad one the same way.
//!
//! Limits (Alibaba's where its pages give one, else written down here):
//! - `Username`: 1 to 64 characters (Alibaba's page); no `|` at all, so
//!   that it can never be read as a `Signature|`, `Token|` or
//!   `DeviceCredential|` login.
//! - `Secret`: 1 to 128 bytes.
//! - `Identity`: a username as above (`USER`) or a client id (`CLIENT`).
//! - `Topic`: a valid MQTT topic filter (`#` only last and alone, `+` a
//!   whole level), at most 1,024 bytes.
//! - No text parameter may hold a NUL (MQTT strings cannot).

use crate::devices::custom_auth::{IdentityKey, PermissionKey, parse_page_key};
use crate::devices::topics::check_filter;
use crate::devices::{Effect, IdentityType, PermitAction, SignMode};
use crate::error::ApiError;
use crate::params::{Params, check_client_id};
use crate::secret::Secret;

pub const MAX_USERNAME_CHARS: usize = 64;
pub const MAX_SECRET_BYTES: usize = 128;
pub const MAX_TOPIC_BYTES: usize = 1024;

fn no_nul<'a>(name: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.contains('\0') {
        return Err(ApiError::invalid(name, "it contains a NUL character"));
    }
    Ok(value)
}

/// `IdentityType`: USER or CLIENT.
pub fn identity_type(params: &Params, name: &str) -> Result<IdentityType, ApiError> {
    let value = params.required(name)?;
    IdentityType::from_label(value)
        .ok_or_else(|| ApiError::invalid(name, format!("\"{value}\" is not USER or CLIENT")))
}

/// An optional `IdentityType` (queries).
pub fn optional_identity_type(
    params: &Params,
    name: &str,
) -> Result<Option<IdentityType>, ApiError> {
    match params.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(_) => identity_type(params, name).map(Some),
    }
}

/// A custom-auth username (see the module's limits).
pub fn check_username(name: &str, value: &str) -> Result<(), ApiError> {
    no_nul(name, value)?;
    if value.chars().count() > MAX_USERNAME_CHARS {
        return Err(ApiError::invalid(
            name,
            format!("it is longer than {MAX_USERNAME_CHARS} characters"),
        ));
    }
    if value.contains('|') {
        return Err(ApiError::invalid(
            name,
            "it contains '|', which device logins reserve for Signature|, Token| and DeviceCredential| usernames",
        ));
    }
    Ok(())
}

/// `Username`, required.
pub fn username(params: &Params) -> Result<String, ApiError> {
    let value = params.required("Username")?;
    check_username("Username", value)?;
    Ok(value.to_string())
}

/// The `ClientId` of an identity: required for CLIENT, absent (or empty)
/// for USER; empty for USER in what is stored.
pub fn identity_client_id(params: &Params, kind: IdentityType) -> Result<String, ApiError> {
    let given = params.get("ClientId").filter(|c| !c.is_empty());
    match (kind, given) {
        (IdentityType::Client, None) => Err(ApiError::invalid(
            "ClientId",
            "it is missing; an identity of IdentityType CLIENT is bound to one client id",
        )),
        (IdentityType::Client, Some(client_id)) => {
            check_client_id("ClientId", client_id)?;
            no_nul("ClientId", client_id)?;
            Ok(client_id.to_string())
        }
        (IdentityType::User, Some(_)) => Err(ApiError::invalid(
            "ClientId",
            "an identity of IdentityType USER has no client id; leave ClientId out, or use IdentityType CLIENT",
        )),
        (IdentityType::User, None) => Ok(String::new()),
    }
}

/// `SignMode`: ORIGIN or SIGNED.
pub fn sign_mode(params: &Params) -> Result<SignMode, ApiError> {
    let value = params.required("SignMode")?;
    SignMode::from_label(value).ok_or_else(|| {
        ApiError::invalid("SignMode", format!("\"{value}\" is not ORIGIN or SIGNED"))
    })
}

/// `Secret`, required.
pub fn secret(params: &Params) -> Result<Secret, ApiError> {
    let value = params.required("Secret")?;
    no_nul("Secret", value)?;
    if value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::invalid(
            "Secret",
            format!("it is longer than {MAX_SECRET_BYTES} bytes"),
        ));
    }
    Ok(Secret::new(value))
}

/// `Identity` of a permission: a username (USER) or a client id (CLIENT).
pub fn identity(params: &Params, kind: IdentityType) -> Result<String, ApiError> {
    let value = params.required("Identity")?;
    match kind {
        IdentityType::User => check_username("Identity", value)?,
        IdentityType::Client => {
            check_client_id("Identity", value)?;
            no_nul("Identity", value)?;
        }
    }
    Ok(value.to_string())
}

/// `Topic`: a valid MQTT topic filter.
pub fn topic(params: &Params) -> Result<String, ApiError> {
    let value = params.required("Topic")?;
    check_topic(value)?;
    Ok(value.to_string())
}

pub fn check_topic(value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_TOPIC_BYTES {
        return Err(ApiError::invalid(
            "Topic",
            format!("it is longer than {MAX_TOPIC_BYTES} bytes"),
        ));
    }
    check_filter(value).map_err(|e| ApiError::invalid("Topic", e))
}

/// `Effect`: ALLOW or DENY.
pub fn effect(params: &Params) -> Result<Effect, ApiError> {
    let value = params.required("Effect")?;
    Effect::from_label(value)
        .ok_or_else(|| ApiError::invalid("Effect", format!("\"{value}\" is not ALLOW or DENY")))
}

/// `PermitAction`: PUB, SUB or PUB_SUB.
pub fn permit_action(params: &Params) -> Result<PermitAction, ApiError> {
    let value = params.required("PermitAction")?;
    PermitAction::from_label(value).ok_or_else(|| {
        ApiError::invalid(
            "PermitAction",
            format!("\"{value}\" is not PUB, SUB or PUB_SUB"),
        )
    })
}

/// `Size` of a query page: 1 to 100, required (the SDK always sends it).
pub fn page_size(params: &Params) -> Result<usize, ApiError> {
    params.required("Size")?;
    Ok(params.integer("Size", 1..=100)?.unwrap_or(100) as usize)
}

/// `NextToken` of a query page: where the previous page ended.
pub fn page_after(params: &Params) -> Result<Option<IdentityKey>, ApiError> {
    let Some(text) = params.next_token("NextToken")? else {
        return Ok(None);
    };
    parse_page_key(&text).map(Some).ok_or_else(|| {
        ApiError::invalid(
            "NextToken",
            "it is not a NextToken this API gave; send the one from the previous page",
        )
    })
}

/// The NextToken that continues after `key`.
pub fn next_token(key: &PermissionKey) -> String {
    crate::params::next_token_after(&crate::devices::custom_auth::page_key(key))
}

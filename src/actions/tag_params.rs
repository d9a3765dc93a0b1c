//! The parameters the tag actions share (TagResources, UntagResources,
//! ListTagResources), read and checked once here.
//!
//! - `ResourceType`: `instance` (the only type Alibaba tags here; any
//!   letter case).
//! - `ResourceId.N`: instance ids of the caller's account, N from 1 to 50.
//! - `Tag.N.Key` / `Tag.N.Value`, N from 1 to 20: a key is 1 to 128
//!   characters and does not start with `aliyun` or `acs:` (Alibaba's tag
//!   rules reserve them); a value is at most 128 characters.
//! - `TagKey.N`: keys, N from 1 to 20.

use super::Context;
use crate::error::{ApiError, ErrorCode};
use crate::params::Params;

pub const MAX_RESOURCE_IDS: usize = 50;
pub const MAX_TAGS_PER_CALL: usize = 20;
pub const MAX_TAG_CHARS: usize = 128;

/// `ResourceType`, required: `instance`.
pub fn resource_type(params: &Params) -> Result<(), ApiError> {
    let value = params.required("ResourceType")?;
    if !value.eq_ignore_ascii_case("instance") {
        return Err(ApiError::invalid(
            "ResourceType",
            format!("\"{value}\" is not a type mqgate tags; use instance"),
        ));
    }
    Ok(())
}

/// `ResourceId.N`: required unless `optional`.
pub fn resource_ids(params: &Params, optional: bool) -> Result<Vec<String>, ApiError> {
    if optional && !params.iter().any(|(k, _)| k.starts_with("ResourceId")) {
        return Ok(Vec::new());
    }
    let mut ids: Vec<String> = Vec::new();
    for (key, value) in params.list("ResourceId", MAX_RESOURCE_IDS)? {
        if value.is_empty() {
            return Err(ApiError::invalid(key, "it is empty; give an instance id"));
        }
        if !ids.iter().any(|i| i == value) {
            ids.push(value.to_string());
        }
    }
    Ok(ids)
}

/// `Tag.N.Key` and `Tag.N.Value`, in the order of N; required unless
/// `optional`. A value may be left out (an empty value; as a filter: any
/// value).
pub fn tags(params: &Params, optional: bool) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let mut numbered: std::collections::BTreeMap<usize, (Option<&str>, Option<&str>)> =
        std::collections::BTreeMap::new();
    for (key, value) in params.iter() {
        let Some(rest) = key.strip_prefix("Tag.") else {
            continue;
        };
        let (n, field) = rest.split_once('.').unwrap_or((rest, ""));
        let index = n
            .parse::<usize>()
            .ok()
            .filter(|i| (1..=MAX_TAGS_PER_CALL).contains(i) && i.to_string() == n);
        let Some(index) = index else {
            return Err(ApiError::invalid(
                "Tag",
                format!(
                    "{key}: send tags as Tag.N.Key and Tag.N.Value, N from 1 to {MAX_TAGS_PER_CALL}"
                ),
            ));
        };
        let entry = numbered.entry(index).or_default();
        match field {
            "Key" => entry.0 = Some(value),
            "Value" => entry.1 = Some(value),
            _ => {
                return Err(ApiError::invalid(
                    "Tag",
                    format!("{key}: a tag has a Key and a Value, nothing else"),
                ));
            }
        }
    }
    if numbered.is_empty() && !optional {
        return Err(ApiError::invalid(
            "Tag",
            "it is missing; send Tag.1.Key=...&Tag.1.Value=...",
        ));
    }
    let mut tags = Vec::with_capacity(numbered.len());
    for (n, (key, value)) in numbered {
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Err(ApiError::invalid(
                "Tag",
                format!("Tag.{n}.Key is missing or empty"),
            ));
        };
        check_key(&format!("Tag.{n}.Key"), key)?;
        if let Some(value) = value
            && value.chars().count() > MAX_TAG_CHARS
        {
            return Err(ApiError::invalid(
                "Tag",
                format!("Tag.{n}.Value is longer than {MAX_TAG_CHARS} characters"),
            ));
        }
        if tags.iter().any(|(k, _)| k == key) {
            return Err(ApiError::invalid(
                "Tag",
                format!("Tag.{n}.Key \"{key}\" is given twice"),
            ));
        }
        tags.push((key.to_string(), value.map(str::to_string)));
    }
    Ok(tags)
}

/// A tag key as Alibaba's tag rules allow it.
pub fn check_key(name: &str, key: &str) -> Result<(), ApiError> {
    if key.chars().count() > MAX_TAG_CHARS {
        return Err(ApiError::invalid(
            "Tag",
            format!("{name} is longer than {MAX_TAG_CHARS} characters"),
        ));
    }
    let lower = key.to_ascii_lowercase();
    if lower.starts_with("aliyun") || lower.starts_with("acs:") {
        return Err(ApiError::invalid(
            "Tag",
            format!("{name} \"{key}\" starts with aliyun or acs:, which are reserved"),
        ));
    }
    Ok(())
}

/// Every id must be an instance of the caller's account (Alibaba's
/// `MqttOwnerCheckError`, whether the instance is another account's or
/// does not exist, so that instance ids cannot be probed).
pub fn check_owned(ctx: &Context<'_>, ids: &[String]) -> Result<(), ApiError> {
    for id in ids {
        if !ctx.account_instances().iter().any(|i| &i.id == id) {
            return Err(ApiError::new(
                ErrorCode::MqttOwnerCheckError,
                format!(
                    "Failed to validate the instance permission: \"{id}\" is not an instance of account {}.",
                    ctx.principal.account_id
                ),
            ));
        }
    }
    Ok(())
}

/// The answer of TagResources and UntagResources: `{Code: "200", Data:
/// true, Message}` (Alibaba's fields, `Code` a string).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagAnswer {
    pub code: &'static str,
    pub data: bool,
    pub message: &'static str,
}

impl TagAnswer {
    pub fn done() -> TagAnswer {
        TagAnswer {
            code: "200",
            data: true,
            message: "operation success.",
        }
    }
}

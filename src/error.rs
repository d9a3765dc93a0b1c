//! Every error code the RPC endpoint can answer, with its HTTP status and the
//! message a caller sees, in one table.
//!
//! Codes and statuses follow Alibaba's gateway and the ApsaraMQ for MQTT API
//! pages; messages keep Alibaba's wording
//! where the SDKs or users match on it, and add what to fix.

use std::fmt;

macro_rules! error_table {
    ($( $variant:ident => ($status:literal, $code:literal, $message:literal) ),* $(,)?) => {
        /// One row of the error table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            /// Every row, for tests and documentation.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The HTTP status this code is answered with.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status),* }
            }

            /// The `Code` field. `InvalidParameter` is a family: the answer's
            /// code is `InvalidParameter.<Name>` (see [`ApiError::code`]).
            pub fn code(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),* }
            }

            /// The message when the call site has nothing more specific.
            pub fn default_message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message),* }
            }
        }
    };
}

error_table! {
    // The request itself.
    MissingParameter => (400, "MissingParameter",
        "A parameter that is mandatory for processing this request is not supplied."),
    InvalidParameter => (400, "InvalidParameter",
        "An error occurred while validating the parameter. The parameter may be missing or invalid."),
    MalformedRequest => (400, "MalformedRequest",
        "The request could not be parsed."),
    // Signature and replay.
    IncompleteSignature => (400, "IncompleteSignature",
        "The request signature does not conform to Aliyun standards."),
    SignatureDoesNotMatch => (400, "SignatureDoesNotMatch",
        "Specified signature is not matched with our calculation."),
    InvalidSignatureMethod => (400, "InvalidSignatureMethod",
        "Specified signature method is not supported."),
    InvalidAccessKeyIdNotFound => (404, "InvalidAccessKeyId.NotFound",
        "Specified access key is not found."),
    InvalidAccessKeyIdInactive => (400, "InvalidAccessKeyId.Inactive",
        "Specified access key is disabled."),
    InvalidSecurityToken => (400, "InvalidSecurityToken",
        "The security token is not accepted."),
    InvalidTimeStampFormat => (400, "InvalidTimeStamp.Format",
        "Specified time stamp or date value is not well formatted."),
    InvalidTimeStampExpired => (400, "InvalidTimeStamp.Expired",
        "Specified time stamp or date value is expired."),
    SignatureNonceUsed => (400, "SignatureNonceUsed",
        "Specified signature nonce was used already."),
    // Routing.
    InvalidActionNotFound => (404, "InvalidAction.NotFound",
        "Specified api is not found, please check your url and method."),
    InvalidVersion => (400, "InvalidVersion",
        "Specified parameter Version is not valid."),
    // Access.
    InstancePermissionCheckFailed => (400, "InstancePermissionCheckFailed",
        "An error occurred while validating the permissions of the instance. Please verify the account that created the instance and its permissions settings."),
    ForbiddenRam => (403, "Forbidden.RAM",
        "User not authorized to operate on the specified resource."),
    // Flow control and quotas. The seeds answer SystemOverFlow with 403 for
    // QuerySessionByClientId and 500 for BatchQuerySessionByClientIds; the
    // other actions use the 403 form.
    SystemOverFlow => (403, "SystemOverFlow",
        "An error occurred while processing your request. Please try again."),
    SystemOverFlowServer => (500, "SystemOverFlow",
        "An error occurred while processing your request. Please try again."),
    InstanceQuotaExceeded => (403, "InstanceQuotaExceeded",
        "The instance's monthly transaction quota is used up."),
    // Device-side state.
    GroupIdAlreadyExsited => (400, "GroupIdAlreadyExsited",
        "The specified GroupId already exists."),
    GroupIdNumExceed => (400, "GroupIdNumExceed",
        "The instance has reached its limit of group ids."),
    DeviceCredentialNotFound => (400, "DeviceCredentialNotFound",
        "Device Credential Not Found. Check if the device certificate is registered."),
    DeviceCredentialNumExceed => (400, "DeviceCredentialNumExceed",
        "The number of device credentials exceeds the limit. Please revoke unused device certificates."),
    CustomauthOverCapacity => (400, "Customauth.over.capacity",
        "Over custom auth capacity."),
    MqttOwnerCheckError => (400, "MqttOwnerCheckError",
        "Failed to validate the instance permission."),
    TokenNumExceed => (400, "TokenNumExceed",
        "The number of tokens exceeds the limit. Please revoke unused tokens."),
    // The service.
    ServiceUnavailable => (503, "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server."),
    InternalError => (500, "InternalError",
        "An error occurred while processing your request. Try again later."),
}

/// An error answer: a row of the table plus what this call got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorCode,
    /// For `InvalidParameter`: the parameter, which becomes the code's suffix.
    pub parameter: Option<String>,
    pub message: String,
    /// For `Forbidden.RAM`: what Alibaba tells a denied caller.
    pub access_denied: Option<Box<AccessDeniedDetail>>,
    /// For flow control: milliseconds until a retry can succeed, sent as
    /// `x-acs-retry-after` (the Tea SDK then raises its ThrottlingException).
    pub retry_after_ms: Option<u64>,
    /// For an internal failure: what went wrong inside (a database error,
    /// a path), for the log only. The caller gets the table's message.
    pub internal: Option<String>,
}

/// Why RAM denied a call, as Alibaba's gateway reports it (the Tea SDK reads
/// it into `access_denied_detail`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccessDeniedDetail {
    pub auth_action: String,
    /// `SubUser`: a RAM user of the account.
    pub auth_principal_type: String,
    pub auth_principal_owner_id: String,
    pub auth_principal_display_name: String,
    /// `AccountLevelIdentityBasedPolicy`: policies attached to the user.
    pub policy_type: String,
    /// `ImplicitDeny` or `ExplicitDeny`.
    pub no_permission_type: String,
    /// Base64 of a JSON document saying which statement of which policy
    /// decided (`base64 -d` reads it).
    pub encoded_diagnostic_message: String,
}

/// Where a `SignatureDoesNotMatch` message starts quoting the call.
pub const STRING_TO_SIGN_MARK: &str = "server string to sign is:";

impl ApiError {
    pub fn new(kind: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            parameter: None,
            message: message.into(),
            access_denied: None,
            retry_after_ms: None,
            internal: None,
        }
    }

    /// `InternalError` with the table's message; `cause` is kept for the
    /// log (the endpoint writes it with the request id) and never sent.
    pub fn internal(cause: impl Into<String>) -> Self {
        ApiError {
            internal: Some(cause.into()),
            ..ApiError::of(ErrorCode::InternalError)
        }
    }

    /// The row's own message.
    pub fn of(kind: ErrorCode) -> Self {
        ApiError::new(kind, kind.default_message())
    }

    /// `MissingParameter`, naming the parameter.
    pub fn missing(name: &str) -> Self {
        ApiError::new(
            ErrorCode::MissingParameter,
            format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }

    /// `InvalidParameter.<name>`, saying what is wrong with it.
    pub fn invalid(name: &str, what: impl fmt::Display) -> Self {
        ApiError {
            kind: ErrorCode::InvalidParameter,
            parameter: Some(name.to_string()),
            message: format!("The parameter \"{name}\" is invalid: {what}"),
            access_denied: None,
            retry_after_ms: None,
            internal: None,
        }
    }

    /// The message as the log may hold it: without the string to sign a
    /// `SignatureDoesNotMatch` answer carries back to its caller, which
    /// holds every parameter of the call, a `Token` or a `Secret` among
    /// them.
    pub fn loggable_message(&self) -> &str {
        match self.message.split_once(STRING_TO_SIGN_MARK) {
            Some((before, _)) => before.trim_end(),
            None => &self.message,
        }
    }

    /// The `Code` field of the answer.
    pub fn code(&self) -> String {
        match &self.parameter {
            Some(p) => format!("{}.{p}", self.kind.code()),
            None => self.kind.code().to_string(),
        }
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_log_never_sees_the_string_to_sign() {
        let e = ApiError::new(
            ErrorCode::SignatureDoesNotMatch,
            format!(
                "Specified signature is not matched with our calculation. {STRING_TO_SIGN_MARK}POST&%2F&Action%3DRevokeToken%26Token%3Dsecret-token"
            ),
        );
        assert_eq!(
            e.loggable_message(),
            "Specified signature is not matched with our calculation."
        );
        assert!(
            e.message.contains("secret-token"),
            "the caller still gets it"
        );
        let plain = ApiError::invalid("Size", "it is 0");
        assert_eq!(plain.loggable_message(), plain.message);
    }

    #[test]
    fn table_rows_are_distinct_and_well_formed() {
        let mut codes = HashSet::new();
        for row in ErrorCode::ALL {
            assert!(
                codes.insert((row.code(), row.status())),
                "duplicate row {}",
                row.code()
            );
            assert!((400..600).contains(&row.status()), "{row:?}");
            assert!(row.default_message().ends_with('.'), "{row:?}");
            assert!(!row.code().contains(' '), "{row:?}");
        }
    }

    #[test]
    fn invalid_parameter_names_the_parameter_in_code_and_message() {
        let e = ApiError::invalid("ClientIdList", "at most 10 ids");
        assert_eq!(e.code(), "InvalidParameter.ClientIdList");
        assert_eq!(e.status(), 400);
        assert!(e.message.contains("ClientIdList"));
        let m = ApiError::missing("ClientId");
        assert_eq!(m.code(), "MissingParameter");
        assert!(m.message.contains("\"ClientId\""));
    }

    #[test]
    fn an_internal_error_answers_the_table_message_only() {
        let e = ApiError::internal(
            "/var/lib/mqgate/metering.sqlite3: database disk image is malformed",
        );
        assert_eq!((e.code().as_str(), e.status()), ("InternalError", 500));
        assert_eq!(e.message, ErrorCode::InternalError.default_message());
        assert!(e.internal.unwrap().contains("malformed"));
    }
}

//! A secret string that never shows itself in logs, errors or `Debug` output.

use serde::Deserialize;
use std::fmt;

/// An AccessKeySecret or any other credential.
///
/// `Debug` and `Display` print a fixed placeholder; the value is reachable
/// only through [`Secret::expose`], so every place that reads it is greppable.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for signing and verification only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("testsecret");
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        assert_eq!(format!("{s}"), "[REDACTED]");
        assert!(!format!("{:?}", Some(&s)).contains("testsecret"));
        assert_eq!(s.expose(), "testsecret");
    }
}

//! A secret string that never shows itself in logs, errors or `Debug`
//! output, and is wiped from memory when dropped.

use serde::Deserialize;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// An AccessKeySecret or any other credential.
///
/// `Debug` and `Display` print a fixed placeholder; the value is reachable
/// only through [`Secret::expose`], so every place that reads it is
/// greppable. Dropped, its bytes are overwritten with zeros (each clone's
/// own), so a secret removed by a reload does not linger in freed memory.
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

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for Secret {}

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

    #[test]
    fn a_secret_is_wiped_when_dropped() {
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<Secret>();
        // What drop does, seen from inside: every byte zero, then freed.
        let mut s = Secret::new("testsecret");
        s.0.zeroize();
        assert!(s.0.is_empty());
    }
}

//! RAM wildcards: `*` is any run of characters (it may cross `:`), `?` is
//! exactly one character, and a pattern is anchored at both ends.
//!
//! Patterns are compiled once, when a policy is loaded: the common shapes
//! (exact, `*`, `prefix*`) are answered without the general matcher.

/// A compiled wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// As written in the policy (for explanations).
    pub source: String,
    kind: Kind,
    case_insensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Any,
    Exact(String),
    Prefix(String),
    /// The general case, as characters (`?` matches one character, not one
    /// byte).
    Glob(Vec<char>),
}

impl Pattern {
    /// Compiles `source`. Actions match case-insensitively, resources and
    /// `StringLike` values case-sensitively.
    pub fn new(source: &str, case_insensitive: bool) -> Pattern {
        let folded = if case_insensitive {
            source.to_lowercase()
        } else {
            source.to_string()
        };
        let wildcards = folded.chars().filter(|c| *c == '*' || *c == '?').count();
        let kind = if folded == "*" {
            Kind::Any
        } else if wildcards == 0 {
            Kind::Exact(folded)
        } else if wildcards == 1 && folded.ends_with('*') {
            Kind::Prefix(folded[..folded.len() - 1].to_string())
        } else {
            Kind::Glob(folded.chars().collect())
        };
        Pattern {
            source: source.to_string(),
            kind,
            case_insensitive,
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Exact(exact) => {
                if self.case_insensitive {
                    exact.chars().eq(text.chars().flat_map(char::to_lowercase))
                } else {
                    exact == text
                }
            }
            Kind::Prefix(prefix) => {
                if self.case_insensitive {
                    let mut folded = text.chars().flat_map(char::to_lowercase);
                    prefix.chars().all(|p| folded.next() == Some(p))
                } else {
                    text.starts_with(prefix.as_str())
                }
            }
            // ASCII on both sides (every ARN and action in practice): match
            // bytes in place, no allocation.
            Kind::Glob(pattern) if text.is_ascii() && pattern.iter().all(char::is_ascii) => {
                glob_by(pattern, text.as_bytes(), |p, t| {
                    let t = if self.case_insensitive {
                        t.to_ascii_lowercase()
                    } else {
                        t
                    };
                    *p == '?' || *p as u32 == t as u32
                })
            }
            Kind::Glob(pattern) => {
                let text: Vec<char> = if self.case_insensitive {
                    text.chars().flat_map(char::to_lowercase).collect()
                } else {
                    text.chars().collect()
                };
                glob(pattern, &text)
            }
        }
    }
}

fn glob(pattern: &[char], text: &[char]) -> bool {
    glob_by(pattern, text, |p, t| *p == '?' || *p == t)
}

/// Iterative wildcard matching with one backtrack point: linear in the
/// common case, O(n*m) at worst, never exponential. `same(p, t)` says
/// whether pattern character `p` (not `*`) accepts text element `t`.
fn glob_by<T: Copy>(pattern: &[char], text: &[T], same: impl Fn(&char, T) -> bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] != '*' && same(&pattern[p], text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("*", "anything at:all", false, true),
            ("mq:CloseConnection", "mq:closeconnection", true, true),
            ("mq:CloseConnection", "mq:closeconnection", false, false),
            (
                "mq:BatchQuery*",
                "mq:BatchQuerySessionByClientIds",
                true,
                true,
            ),
            ("mq:batchquery*", "MQ:BATCHQUERYX", true, true),
            ("mq:CloseConnectio?", "mq:CloseConnection", true, true),
            ("mq:CloseConnectio?", "mq:CloseConnectionX", true, false),
            ("acs:mq:*", "acs:mq:cn-hangzhou:123:post-1", false, true),
            (
                "acs:mq:*:*:post-cn-0pp12gl****",
                "acs:mq:cn-hangzhou:1:post-cn-0pp12gl0001",
                false,
                true,
            ),
            (
                "acs:mq:*:*:post-cn-0pp12gl000?",
                "acs:mq:cn-hangzhou:1:post-cn-0pp12gl0001",
                false,
                true,
            ),
            (
                "acs:mq:*:*:post-cn-0pp12gl000?",
                "acs:mq:cn-hangzhou:1:post-cn-0pp12gl00011",
                false,
                false,
            ),
            (
                "acs:mq:cn-shanghai:*:*",
                "acs:mq:cn-hangzhou:1:x",
                false,
                false,
            ),
            ("iam:*Report", "iam:CreatePolicy", true, false),
            ("iam:*Report", "iam:GetCredentialReport", true, true),
            ("a*b*c", "aXbYbZc", false, true),
            ("a*b*c", "aXbYbZ", false, false),
            ("é?", "éx", false, true),
            ("", "", false, true),
            ("", "x", false, false),
        ];
        for (pattern, text, insensitive, expected) in cases {
            assert_eq!(
                Pattern::new(pattern, insensitive).matches(text),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let pattern = Pattern::new(&"*a".repeat(50), false);
        let text = "a".repeat(2000) + "b";
        assert!(!pattern.matches(&text));
    }
}

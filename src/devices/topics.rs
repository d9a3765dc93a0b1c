//! A set of MQTT topic filters compiled once into a trie, so that checking a
//! PUBLISH topic or a SUBSCRIBE filter against a token's resources walks the
//! topic's levels once instead of matching every resource.
//!
//! - [`TopicSet::allows_topic`]: a topic name (no wildcards) matches some
//!   filter of the set (MQTT matching: `+` one level, `#` the rest,
//!   including the parent level itself).
//! - [`TopicSet::covers_filter`]: every topic the filter can match is
//!   allowed, i.e. some filter of the set is at least as wide at each level
//!   (`a/+` covers `a/b`; `a/b` does not cover `a/+`; only `#` covers `#`).
//! - [`TopicSet::overlaps_filter`]: some topic the filter can match is
//!   matched by a filter of the set (`a/+` overlaps `a/secret`); a DENY
//!   rule refuses a SUBSCRIBE whose filter it overlaps.
//!
//! As in MQTT, a filter starting with a wildcard does not match topics
//! starting with `$` (`$SYS/...`).

use std::collections::HashMap;

/// One level of the trie.
#[derive(Debug, Default, Clone)]
struct Node {
    /// A filter of the set ends at this level.
    end: bool,
    /// `#` follows at this level: it matches this level's parent and
    /// anything below.
    rest: bool,
    /// `+` at this level.
    any: Option<Box<Node>>,
    literal: HashMap<String, Node>,
}

/// Topic filters, compiled.
#[derive(Debug, Default, Clone)]
pub struct TopicSet {
    root: Node,
    filters: Vec<String>,
}

/// Why a string is not a valid topic filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("topic filter is empty")]
    Empty,
    #[error("'#' must be the last level of a topic filter, alone: {0:?}")]
    MisplacedHash(String),
    #[error("'+' must fill a whole level of a topic filter: {0:?}")]
    MisplacedPlus(String),
    #[error("topic filter contains a NUL character: {0:?}")]
    Nul(String),
}

/// Checks one topic filter the MQTT way (without allocating: this runs on
/// every SUBSCRIBE of a bound client).
pub fn check_filter(filter: &str) -> Result<(), FilterError> {
    if filter.is_empty() {
        return Err(FilterError::Empty);
    }
    if filter.contains('\0') {
        return Err(FilterError::Nul(filter.to_string()));
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(FilterError::MisplacedHash(filter.to_string()));
        }
        if level.contains('+') && level != "+" {
            return Err(FilterError::MisplacedPlus(filter.to_string()));
        }
    }
    Ok(())
}

/// A valid topic filter split into its levels once, for checking it
/// against several sets.
#[derive(Debug)]
pub struct SplitFilter<'a> {
    levels: Vec<&'a str>,
}

impl<'a> SplitFilter<'a> {
    pub fn new(filter: &'a str) -> Result<SplitFilter<'a>, FilterError> {
        check_filter(filter)?;
        Ok(SplitFilter {
            levels: filter.split('/').collect(),
        })
    }
}

impl TopicSet {
    /// Compiles valid filters (see [`check_filter`]).
    pub fn new<I, S>(filters: I) -> Result<TopicSet, FilterError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut set = TopicSet::default();
        for filter in filters {
            let filter = filter.into();
            check_filter(&filter)?;
            let mut node = &mut set.root;
            for level in filter.split('/') {
                match level {
                    "#" => {
                        node.rest = true;
                        break;
                    }
                    "+" => node = node.any.get_or_insert_with(Box::default),
                    literal => node = node.literal.entry(literal.to_string()).or_default(),
                }
            }
            if !filter.ends_with('#') {
                node.end = true;
            }
            set.filters.push(filter);
        }
        Ok(set)
    }

    /// The filters, as given.
    pub fn filters(&self) -> &[String] {
        &self.filters
    }

    /// Whether a topic name (no wildcards) matches a filter of the set.
    pub fn allows_topic(&self, topic: &str) -> bool {
        allows(&self.root, topic.split('/'), topic.starts_with('$'))
    }

    /// Whether every topic `filter` matches is allowed by the set.
    pub fn covers_filter(&self, filter: &str) -> bool {
        SplitFilter::new(filter).is_ok_and(|f| self.covers(&f))
    }

    /// [`TopicSet::covers_filter`] of a filter split already.
    pub fn covers(&self, filter: &SplitFilter<'_>) -> bool {
        let dollar = filter.levels.first().is_some_and(|l| l.starts_with('$'));
        covers(&self.root, &filter.levels, dollar)
    }

    /// Whether some topic `filter` matches is also matched by a filter of
    /// the set. A malformed filter overlaps nothing (it is refused before
    /// it gets here).
    pub fn overlaps_filter(&self, filter: &str) -> bool {
        SplitFilter::new(filter).is_ok_and(|f| self.overlaps(&f))
    }

    /// [`TopicSet::overlaps_filter`] of a filter split already.
    pub fn overlaps(&self, filter: &SplitFilter<'_>) -> bool {
        overlaps(&self.root, &filter.levels, true)
    }

    /// Whether the set holds no filter.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

/// `dollar_first`: the walk is at the first level of a topic starting with
/// `$`, which wildcards do not match.
/// (Walks a cloned `Split` rather than a collected `Vec`: this runs on
/// every PUBLISH of a token-holding client, and allocates nothing.)
fn allows(node: &Node, mut levels: std::str::Split<'_, char>, dollar_first: bool) -> bool {
    if node.rest && !dollar_first {
        return true;
    }
    let Some(level) = levels.next() else {
        return node.end;
    };
    if let Some(next) = node.literal.get(level)
        && allows(next, levels.clone(), false)
    {
        return true;
    }
    match &node.any {
        Some(next) if !dollar_first => allows(next, levels, false),
        _ => false,
    }
}

fn covers(node: &Node, levels: &[&str], dollar_first: bool) -> bool {
    if node.rest && !dollar_first {
        return true;
    }
    let Some((level, rest)) = levels.split_first() else {
        return node.end;
    };
    match *level {
        // Only `#` (handled above) covers `#`.
        "#" => false,
        // `+` is covered by `+` (or `#`), not by any one literal.
        "+" => match &node.any {
            Some(next) if !dollar_first => covers(next, rest, false),
            _ => false,
        },
        literal => {
            if let Some(next) = node.literal.get(literal)
                && covers(next, rest, false)
            {
                return true;
            }
            match &node.any {
                Some(next) if !dollar_first => covers(next, rest, false),
                _ => false,
            }
        }
    }
}

/// `first`: the walk is at the first level, where wildcards (of either
/// side) do not match a level starting with `$`.
fn overlaps(node: &Node, levels: &[&str], first: bool) -> bool {
    let dollar_topic = first && levels.first().is_some_and(|l| l.starts_with('$'));
    if node.rest && !dollar_topic {
        return true;
    }
    let visible = |name: &String| !(first && name.starts_with('$'));
    let Some((level, rest)) = levels.split_first() else {
        return node.end;
    };
    match *level {
        // Matches the parent level and everything below: any filter of the
        // set that goes on from here (nodes exist only on filters' paths).
        "#" => (!first && node.end) || node.any.is_some() || node.literal.keys().any(visible),
        "+" => {
            node.any.as_ref().is_some_and(|n| overlaps(n, rest, false))
                || node
                    .literal
                    .iter()
                    .any(|(name, n)| visible(name) && overlaps(n, rest, false))
        }
        literal => {
            node.literal
                .get(literal)
                .is_some_and(|n| overlaps(n, rest, false))
                || (!dollar_topic && node.any.as_ref().is_some_and(|n| overlaps(n, rest, false)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(filters: &[&str]) -> TopicSet {
        TopicSet::new(filters.iter().copied()).unwrap()
    }

    #[test]
    fn topics_match_the_mqtt_way() {
        let s = set(&["a/b", "c/+", "d/#", "e/+/f"]);
        for allowed in ["a/b", "c/x", "c/", "d", "d/x", "d/x/y", "e/1/f"] {
            assert!(s.allows_topic(allowed), "{allowed}");
        }
        for refused in ["a", "a/b/c", "a/x", "c", "c/x/y", "e/1", "e/1/g", "x", "dd"] {
            assert!(!s.allows_topic(refused), "{refused}");
        }
    }

    #[test]
    fn a_filter_is_covered_only_by_a_wider_one() {
        let s = set(&["a/b", "c/+", "d/#", "e/+/f"]);
        for covered in ["a/b", "c/x", "c/+", "d", "d/#", "d/+/x", "e/+/f", "e/x/f"] {
            assert!(s.covers_filter(covered), "{covered}");
        }
        for uncovered in [
            "a/+", "a/#", "#", "+/b", "c/#", "e/#", "e/+/+", "x/y", "a/b/#",
        ] {
            assert!(!s.covers_filter(uncovered), "{uncovered}");
        }
    }

    #[test]
    fn a_filter_overlaps_a_set_when_one_topic_matches_both() {
        let s = set(&["a/secret", "b/+/x", "c/#"]);
        for overlapping in [
            "a/secret", "a/+", "a/#", "#", "+/secret", "+/+", "b/1/x", "b/+/+", "b/#", "c",
            "c/d/e", "+/d", "c/+",
        ] {
            assert!(s.overlaps_filter(overlapping), "{overlapping}");
        }
        // (`+` overlaps: it matches the topic "c", which c/# matches.)
        for apart in [
            "a/public",
            "a",
            "a/secret/x",
            "b/1/y",
            "b/+",
            "d/+",
            "d/#",
            "a/+/+",
        ] {
            assert!(!s.overlaps_filter(apart), "{apart}");
        }
        // `#` matches its parent level: a/# overlaps the topic "a".
        assert!(set(&["a"]).overlaps_filter("a/#"));
        assert!(!set(&["a"]).overlaps_filter("a/+"));
        // `$` topics are out of reach of wildcards, on both sides.
        assert!(!set(&["$SYS/x"]).overlaps_filter("#"));
        assert!(!set(&["$SYS/x"]).overlaps_filter("+/x"));
        assert!(!set(&["#"]).overlaps_filter("$SYS/x"));
        assert!(set(&["$SYS/#"]).overlaps_filter("$SYS/x"));
        assert!(!set(&[]).overlaps_filter("#"));
    }

    #[test]
    fn wildcards_do_not_reach_dollar_topics() {
        let s = set(&["#", "+/x"]);
        assert!(s.allows_topic("a/x"));
        assert!(!s.allows_topic("$SYS/x"));
        assert!(!s.covers_filter("$SYS/#"));
        assert!(set(&["$SYS/#"]).allows_topic("$SYS/x"));
    }

    #[test]
    fn malformed_filters_are_named() {
        assert_eq!(
            TopicSet::new(["a/#/b"]).unwrap_err(),
            FilterError::MisplacedHash("a/#/b".into())
        );
        assert_eq!(
            TopicSet::new(["a/b#"]).unwrap_err(),
            FilterError::MisplacedHash("a/b#".into())
        );
        assert_eq!(
            TopicSet::new(["a+/b"]).unwrap_err(),
            FilterError::MisplacedPlus("a+/b".into())
        );
        assert_eq!(TopicSet::new([""]).unwrap_err(), FilterError::Empty);
        assert!(!set(&["a/#"]).covers_filter("a/#/b"));
    }
}

//! The parameters of an RPC call: the query string and, for
//! `application/x-www-form-urlencoded` bodies, the body, decoded as form data
//! into one map sorted by key in byte order (the order V1 signs in); and the
//! typed reads actions make of them ([`Params::required`],
//! [`Params::client_id`], [`Params::list`]), each refusal naming the
//! parameter.
//!
//! The parser is strict where a lenient one would let two parties read one
//! request differently: a key that appears twice, bytes that are not UTF-8,
//! and too many parameters are refused, each with a code and a message.

use crate::error::{ApiError, ErrorCode};
use percent_encoding::percent_decode;

/// Most parameters one call may carry (ClientIdList.1..10 plus the common
/// ones fit many times over).
pub const MAX_PARAMS: usize = 256;

/// Parameters of one call, sorted by key (byte order).
///
/// A sorted vector rather than a map: a call has a dozen parameters, which
/// a vector holds in one allocation and searches by bisection, and which
/// SDKs mostly send already sorted, so that inserting is appending.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `raw` (a query string or a form body) and adds its parameters.
    /// `origin` ("query" or "body") is named in errors.
    pub fn add_form(&mut self, raw: &[u8], origin: &str) -> Result<(), ApiError> {
        for pair in raw.split(|b| *b == b'&') {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            let key = decode_component(key, origin)?;
            let value = decode_component(value, origin)?;
            if key.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!(
                        "The {origin} has a parameter with an empty name; send name=value pairs."
                    ),
                ));
            }
            self.insert(key, value)?;
        }
        Ok(())
    }

    /// Adds one parameter; a second value for the same key is refused, since
    /// a signer and this server could otherwise disagree on which one counts.
    pub fn insert(&mut self, key: String, value: String) -> Result<(), ApiError> {
        if self.0.len() >= MAX_PARAMS {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("The request has more than {MAX_PARAMS} parameters."),
            ));
        }
        match self.position(&key) {
            Ok(_) => Err(ApiError::invalid(
                &key,
                "it appears more than once; send each parameter once, in the query or in the body",
            )),
            Err(at) => {
                self.0.insert(at, (key, value));
                Ok(())
            }
        }
    }

    /// Where `key` is, or where it would go.
    fn position(&self, key: &str) -> Result<usize, usize> {
        // Most calls arrive sorted: check the end before bisecting.
        match self.0.last() {
            Some((last, _)) if last.as_str() < key => Err(self.0.len()),
            None => Err(0),
            _ => self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let at = self.position(key).ok()?;
        Some(self.0[at].1.as_str())
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.position(key).ok()?;
        Some(self.0.remove(at).1)
    }

    /// Removes every parameter whose key is in `keys`.
    pub fn remove_all(&mut self, keys: &[&str]) {
        self.0.retain(|(k, _)| !keys.contains(&k.as_str()));
    }

    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// All parameters in byte order of their keys.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A parameter the action requires: present and not empty, else
    /// `InvalidParameter.<name>`.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            None => Err(ApiError::invalid(
                name,
                "it is missing; this action requires it",
            )),
            Some("") => Err(ApiError::invalid(name, "it is empty")),
            Some(value) => Ok(value),
        }
    }

    /// An optional whole number within `range` (SDKs send numbers as
    /// decimal text).
    pub fn integer(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        match text.trim().parse::<i64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::invalid(
                name,
                format!(
                    "\"{text}\" is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// A page token this API gave (`NextToken`): where the previous page
    /// ended. `None` when absent or empty (the first page).
    pub fn next_token(&self, name: &str) -> Result<Option<String>, ApiError> {
        let Some(token) = self.get(name).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        hex::decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    name,
                    "it is not a NextToken this API gave; send the one from the previous page",
                )
            })
    }

    /// A required client id (see [`check_client_id`]).
    pub fn client_id(&self, name: &str) -> Result<&str, ApiError> {
        let value = self.required(name)?;
        check_client_id(name, value)?;
        Ok(value)
    }

    /// A list flattened the way every SDK sends one: `name.1`, `name.2`, ...
    /// up to `name.{max}`, each number written without leading zeros; the
    /// items come back as (key, value) in the order of their numbers. At
    /// least one item is required.
    pub fn list(&self, name: &str, max: usize) -> Result<Vec<(&str, &str)>, ApiError> {
        let mut numbered: Vec<(usize, &str, &str)> = Vec::new();
        for (key, value) in self.iter() {
            let Some(rest) = key.strip_prefix(name) else {
                continue;
            };
            let Some(n) = rest.strip_prefix('.') else {
                return Err(ApiError::invalid(
                    key,
                    format!("send the list as {name}.1=...&{name}.2=... (N from 1 to {max})"),
                ));
            };
            let index = n
                .parse::<usize>()
                .ok()
                .filter(|i| (1..=max).contains(i) && i.to_string() == n);
            let Some(index) = index else {
                return Err(ApiError::invalid(
                    name,
                    format!(
                        "{key} is out of range: N of {name}.N runs from 1 to {max}, so at most {max} items fit in one call"
                    ),
                ));
            };
            numbered.push((index, key, value));
        }
        if numbered.is_empty() {
            return Err(ApiError::invalid(
                name,
                format!("it is missing; send {name}.1=... (up to {name}.{max})"),
            ));
        }
        numbered.sort_by_key(|(index, _, _)| *index);
        Ok(numbered
            .into_iter()
            .map(|(_, key, value)| (key, value))
            .collect())
    }
}

/// The page token that continues after `last` (the last key of a page),
/// read back by [`Params::next_token`].
pub fn next_token_after(last: &str) -> String {
    hex::encode(last.as_bytes())
}

/// A client id as MQTT allows it: not empty, at most 65535 bytes.
pub fn check_client_id(name: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(
            name,
            "it is empty; give the client id of a device",
        ));
    }
    if value.len() > 65535 {
        return Err(ApiError::invalid(
            name,
            "it is longer than the 65535 bytes an MQTT client id can have",
        ));
    }
    Ok(())
}

/// Form decoding: `+` is a space, `%XX` a byte; the result must be UTF-8.
fn decode_component(raw: &[u8], origin: &str) -> Result<String, ApiError> {
    // Most names and values need no decoding: copy them once.
    let bytes = if raw.contains(&b'+') {
        let plus_as_space: Vec<u8> = raw
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        percent_decode(&plus_as_space).collect()
    } else if raw.contains(&b'%') {
        percent_decode(raw).collect()
    } else {
        raw.to_vec()
    };
    String::from_utf8(bytes).map_err(|_| {
        ApiError::new(
            ErrorCode::MalformedRequest,
            format!(
                "The {origin} is not valid UTF-8 after percent-decoding; encode text as UTF-8 before percent-encoding it."
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Params, ApiError> {
        let mut p = Params::default();
        p.add_form(raw.as_bytes(), "query")?;
        Ok(p)
    }

    #[test]
    fn decodes_form_data_and_sorts_by_byte_order() {
        let p =
            parse("b=1&A=x+y&a=%40%2A~&SignatureType=&Timestamp=2026-11-22T02%3A48%3A57Z").unwrap();
        let keys: Vec<_> = p.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["A", "SignatureType", "Timestamp", "a", "b"]);
        assert_eq!(p.get("A"), Some("x y"));
        assert_eq!(p.get("a"), Some("@*~"));
        assert_eq!(p.get("SignatureType"), Some(""));
        assert_eq!(p.get("Timestamp"), Some("2026-11-22T02:48:57Z"));
    }

    #[test]
    fn key_without_equals_has_an_empty_value_and_empty_pairs_are_skipped() {
        let p = parse("&&a&b=2&").unwrap();
        assert_eq!(p.get("a"), Some(""));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn duplicates_are_refused_naming_the_key() {
        let e = parse("ClientId=a&ClientId=b").unwrap_err();
        assert_eq!(e.code(), "InvalidParameter.ClientId");
        let mut p = parse("ClientId=a").unwrap();
        let e = p.add_form(b"ClientId=a", "body").unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn invalid_utf8_and_empty_names_are_refused() {
        assert_eq!(parse("a=%FF%FE").unwrap_err().code(), "MalformedRequest");
        assert_eq!(parse("=x").unwrap_err().code(), "MalformedRequest");
    }

    #[test]
    fn integers_are_read_within_their_range() {
        let p = parse("PageSize=100&PageNo=0&Big=99999999999999999999&Text=ten").unwrap();
        assert_eq!(p.integer("PageSize", 1..=100).unwrap(), Some(100));
        assert_eq!(p.integer("Missing", 1..=100).unwrap(), None);
        for name in ["PageNo", "Big", "Text"] {
            let e = p.integer(name, 1..=100).unwrap_err();
            assert_eq!(e.code(), format!("InvalidParameter.{name}"));
            assert!(e.message.contains("1 to 100"), "{}", e.message);
        }
    }

    #[test]
    fn too_many_parameters_are_refused() {
        let raw: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("k{i}=v")).collect();
        let e = parse(&raw.join("&")).unwrap_err();
        assert!(e.message.contains("more than"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes at all: an answer, never a panic.
        #[test]
        fn parsing_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut params = Params::default();
            let _ = params.add_form(&raw, "query");
        }

        /// In any order of arrival, the parameters read back sorted by key in
        /// byte order, as a map would hold them; a key sent twice is refused.
        #[test]
        fn any_arrival_order_reads_back_sorted(
            pairs in proptest::collection::vec(("[a-zA-Z.]{1,4}", "[a-z]{0,3}"), 0..40)
        ) {
            let mut params = Params::default();
            let mut map = std::collections::BTreeMap::new();
            for (k, v) in &pairs {
                let inserted = params.insert(k.clone(), v.clone());
                prop_assert_eq!(inserted.is_ok(), !map.contains_key(k));
                map.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let read: Vec<(&str, &str)> = params.iter().collect();
            let expected: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(read, expected);
            for (k, v) in &map {
                prop_assert_eq!(params.get(k), Some(v.as_str()));
            }
            if let Some(k) = map.keys().next() {
                prop_assert_eq!(params.remove(k), map.get(k).cloned());
                prop_assert!(!params.contains(k));
            }
        }
    }
}

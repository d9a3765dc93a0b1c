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
use smallvec::SmallVec;

/// Most parameters one call may carry (ClientIdList.1..10 plus the common
/// ones fit many times over).
pub const MAX_PARAMS: usize = 256;

/// Parameters held without a heap allocation of their own (an SDK's call
/// has about 13).
const INLINE_ENTRIES: usize = 16;

/// Parameters of one call, sorted by key (byte order).
///
/// Every name and value, decoded, is copied once into one text buffer; the
/// entries are pairs of [`Span`]s into it, in a vector sorted by key that
/// is inline up to `INLINE_ENTRIES` (16). A call has a dozen parameters, which
/// a sorted vector searches by bisection, and SDKs mostly send them already
/// sorted, so that inserting is appending. The text buffer comes from a
/// per-thread pool and goes back to it when the parameters are dropped
/// ([`text_pool`]): no heap allocation per call once the pool is warm, and
/// a small value (the pipeline's futures, which hold it, are moved whole).
#[derive(Default)]
pub struct Params {
    text: String,
    entries: SmallVec<[Entry; INLINE_ENTRIES]>,
}

/// Where a name or value is in its [`Params`]' text. A span stays valid
/// when its entry is removed (the text is never compacted), so a stage can
/// take a value out of the parameters and still read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Span,
    value: Span,
}

/// Text buffers of parameters that were dropped, kept for the next call
/// on the same thread.
pub mod text_pool {
    use std::cell::RefCell;

    /// Buffers kept per thread: more than the calls a worker has in hand
    /// at once on an ordinary load.
    const KEPT: usize = 256;
    /// A buffer grown past this (a SendMessage's payload) is let go.
    const KEPT_CAPACITY: usize = 16 << 10;
    /// What a new buffer starts with: an SDK's call fits.
    pub const FIRST_CAPACITY: usize = 512;

    thread_local! {
        static POOL: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer: a kept one, or a new one.
    pub fn take() -> String {
        POOL.try_with(|pool| pool.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| String::with_capacity(FIRST_CAPACITY))
    }

    /// Keeps `text` for a later call, if there is room and it is not large.
    pub fn give_back(mut text: String) {
        if text.capacity() == 0 || text.capacity() > KEPT_CAPACITY {
            return;
        }
        text.clear();
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < KEPT {
                pool.push(text);
            }
        });
    }
}

impl Drop for Params {
    fn drop(&mut self) {
        text_pool::give_back(std::mem::take(&mut self.text));
    }
}

impl Clone for Params {
    fn clone(&self) -> Params {
        Params {
            text: self.text.clone(),
            entries: self.entries.clone(),
        }
    }
}

/// Appends `piece` to `text`; where it is.
fn push_text(text: &mut String, piece: &str) -> Result<Span, ApiError> {
    if text.capacity() == 0 {
        *text = text_pool::take();
    }
    let start = text.len();
    text.push_str(piece);
    match (u32::try_from(start), u32::try_from(text.len())) {
        (Ok(start), Ok(end)) => Ok(Span { start, end }),
        _ => Err(ApiError::new(
            ErrorCode::MalformedRequest,
            "The request's parameters are too long.",
        )),
    }
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PartialEq for Params {
    fn eq(&self, other: &Params) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Params {}

impl Params {
    /// Parses `raw` (a query string or a form body) and adds its parameters.
    /// `origin` ("query" or "body") is named in errors.
    pub fn add_form(&mut self, raw: &[u8], origin: &str) -> Result<(), ApiError> {
        for pair in raw.split(|b| *b == b'&') {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = match memchr::memchr(b'=', pair) {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            if key.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!(
                        "The {origin} has a parameter with an empty name; send name=value pairs."
                    ),
                ));
            }
            let key = self.push_decoded(key, origin)?;
            let value = self.push_decoded(value, origin)?;
            self.insert_entry(Entry { key, value })?;
        }
        Ok(())
    }

    /// Adds one parameter; a second value for the same key is refused, since
    /// a signer and this server could otherwise disagree on which one counts.
    pub fn insert(&mut self, key: String, value: String) -> Result<(), ApiError> {
        let key = push_text(&mut self.text, &key)?;
        let value = push_text(&mut self.text, &value)?;
        self.insert_entry(Entry { key, value })
    }

    /// Keeps `text` beside the parameters (not as one of them): a value
    /// the pipeline reads from elsewhere (a V3 header) held like those it
    /// takes out of them.
    pub fn keep(&mut self, text: &str) -> Result<Span, ApiError> {
        push_text(&mut self.text, text)
    }

    /// The text at `span`.
    pub fn text(&self, span: Span) -> &str {
        self.text
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }

    fn insert_entry(&mut self, entry: Entry) -> Result<(), ApiError> {
        if self.entries.len() >= MAX_PARAMS {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("The request has more than {MAX_PARAMS} parameters."),
            ));
        }
        let key = self.text(entry.key);
        match self.position(key) {
            Ok(_) => Err(ApiError::invalid(
                key,
                "it appears more than once; send each parameter once, in the query or in the body",
            )),
            Err(at) => {
                self.entries.insert(at, entry);
                Ok(())
            }
        }
    }

    /// Form decoding of `raw` into the text: `+` is a space, `%XX` a byte
    /// (a `%` not followed by two hex digits stays as it is); the result
    /// must be UTF-8.
    fn push_decoded(&mut self, raw: &[u8], origin: &str) -> Result<Span, ApiError> {
        let not_utf8 = || {
            ApiError::new(
                ErrorCode::MalformedRequest,
                format!(
                    "The {origin} is not valid UTF-8 after percent-decoding; encode text as UTF-8 before percent-encoding it."
                ),
            )
        };
        // Most names and values need no decoding: copied as they are.
        if memchr::memchr2(b'%', b'+', raw).is_none() {
            let text = std::str::from_utf8(raw).map_err(|_| not_utf8())?;
            return push_text(&mut self.text, text);
        }
        // Decoded bytes are never more than the raw ones: a short value is
        // decoded on the stack. Runs without `%` or `+` are copied whole.
        let mut decoded: SmallVec<[u8; 256]> = SmallVec::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(at) = memchr::memchr2(b'%', b'+', rest) {
            decoded.extend_from_slice(&rest[..at]);
            let escaped = match (rest[at], rest.get(at + 1), rest.get(at + 2)) {
                (b'+', _, _) => None,
                (_, Some(&high), Some(&low)) => match (hex_digit(high), hex_digit(low)) {
                    (Some(high), Some(low)) => Some(high << 4 | low),
                    _ => None,
                },
                _ => None,
            };
            match (rest[at], escaped) {
                (b'+', _) => {
                    decoded.push(b' ');
                    rest = &rest[at + 1..];
                }
                (_, Some(byte)) => {
                    decoded.push(byte);
                    rest = &rest[at + 3..];
                }
                // A `%` not followed by two hex digits stays.
                (_, None) => {
                    decoded.push(b'%');
                    rest = &rest[at + 1..];
                }
            }
        }
        decoded.extend_from_slice(rest);
        let text = std::str::from_utf8(&decoded).map_err(|_| not_utf8())?;
        push_text(&mut self.text, text)
    }

    /// The bytes at `span` (comparing bytes orders as comparing the text,
    /// without checking character boundaries again).
    fn bytes(&self, span: Span) -> &[u8] {
        self.text
            .as_bytes()
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }

    /// Where `key` is, or where it would go.
    fn position(&self, key: &str) -> Result<usize, usize> {
        let key = key.as_bytes();
        // Most calls arrive sorted: check the end before bisecting.
        match self.entries.last() {
            Some(last) if self.bytes(last.key) < key => Err(self.entries.len()),
            None => Err(0),
            _ => self
                .entries
                .binary_search_by(|entry| self.bytes(entry.key).cmp(key)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let at = self.position(key).ok()?;
        Some(self.text(self.entries[at].value))
    }

    /// Takes `key` out of the parameters; its value stays readable through
    /// [`Params::text`].
    pub fn remove(&mut self, key: &str) -> Option<Span> {
        let at = self.position(key).ok()?;
        Some(self.entries.remove(at).value)
    }

    /// Keeps the parameters whose key `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let text = &self.text;
        self.entries.retain(|entry| {
            keep(
                text.get(entry.key.start as usize..entry.key.end as usize)
                    .unwrap_or_default(),
            )
        });
    }

    /// Every parameter's key, with where its value is.
    pub fn spans(&self) -> impl Iterator<Item = (&str, Span)> {
        self.entries
            .iter()
            .map(|entry| (self.text(entry.key), entry.value))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// All parameters in byte order of their keys.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|entry| (self.text(entry.key), self.text(entry.value)))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
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
        /// Decoding agrees with the `percent-encoding` crate's, `+` read as a
        /// space first (what the parser did before it decoded in place).
        #[test]
        fn decoding_agrees_with_percent_encoding(raw in proptest::collection::vec(
            proptest::sample::select(b"aZ09%+2BfFgG&=\xC3\xA9\xFF".to_vec()), 0..64)
        ) {
            let raw: Vec<u8> = raw.into_iter().filter(|b| *b != b'&' && *b != b'=').collect();
            let plus_as_space: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
            let expected = String::from_utf8(percent_encoding::percent_decode(&plus_as_space).collect()).ok();
            let mut query = b"k=".to_vec();
            query.extend_from_slice(&raw);
            let mut params = Params::default();
            let decoded = params.add_form(&query, "query").ok().map(|()| params.get("k").unwrap_or_default().to_string());
            prop_assert_eq!(decoded, expected);
        }

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
                let removed = params.remove(k).map(|span| params.text(span).to_string());
                prop_assert_eq!(removed, map.get(k).cloned());
                prop_assert!(!params.contains(k));
            }
        }
    }
}

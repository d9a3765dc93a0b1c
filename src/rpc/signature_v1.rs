//! Signature V1 (`SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`): pure
//! functions of plain values, no I/O, tested against Alibaba's published
//! vectors.
//!
//! ```text
//! StringToSign = METHOD "&" "%2F" "&" percentEncode(k1=v1&k2=v2...)
//! Signature    = Base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))
//! ```
//! Parameters are every query and form-body parameter except `Signature`,
//! sorted by key in byte order, each key and value percent-encoded.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;

/// Alibaba's encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`
/// (uppercase hex), so a space is `%20`, `*` is `%2A` and `~` stays.
const ALIBABA_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a key or value the way both signature versions need.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, ALIBABA_UNRESERVED).to_string()
}

/// `k=v&k=v...` over the parameters, which must already be sorted by key in
/// byte order and must not include `Signature`.
pub fn canonical_query<'a>(sorted: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    // Encoded straight into one string: this runs on every call.
    let mut out = String::with_capacity(512);
    for (k, v) in sorted {
        if !out.is_empty() {
            out.push('&');
        }
        out.extend(utf8_percent_encode(k, ALIBABA_UNRESERVED));
        out.push('=');
        out.extend(utf8_percent_encode(v, ALIBABA_UNRESERVED));
    }
    out
}

/// The string V1 signs: the real HTTP method, the encoded path `/`, and the
/// encoded canonical query.
pub fn string_to_sign(method: &str, canonical_query: &str) -> String {
    let mut out = String::with_capacity(method.len() + 5 + canonical_query.len() * 5 / 4);
    out.push_str(method);
    out.push_str("&%2F&");
    out.extend(utf8_percent_encode(canonical_query, ALIBABA_UNRESERVED));
    out
}

/// HMAC-SHA1 keyed with `secret + "&"`.
fn mac_for(secret: &str) -> Hmac<Sha1> {
    let mut key = zeroize::Zeroizing::new(Vec::with_capacity(secret.len() + 1));
    key.extend_from_slice(secret.as_bytes());
    key.push(b'&');
    Hmac::<Sha1>::new_from_slice(&key).expect("HMAC accepts keys of any length")
}

fn mac(secret: &str, string_to_sign: &str) -> Hmac<Sha1> {
    let mut mac = mac_for(secret);
    mac.update(string_to_sign.as_bytes());
    mac
}

/// Base64(HMAC-SHA1(secret + "&", string_to_sign)).
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    BASE64.encode(mac(secret, string_to_sign).finalize().into_bytes())
}

/// Whether `provided` is the signature of `string_to_sign` under `secret`.
/// The comparison is in constant time (`Mac::verify_slice`), so a caller
/// cannot learn the expected signature byte by byte from response times.
pub fn verify(secret: &str, string_to_sign: &str, provided: &str) -> bool {
    let Ok(provided) = BASE64.decode(provided.as_bytes()) else {
        return false;
    };
    mac(secret, string_to_sign).verify_slice(&provided).is_ok()
}

/// HMAC-SHA1 keyed with an AccessKey's `secret + "&"`, made once per key
/// (when the directory is built) rather than per call: keying HMAC hashes
/// two padded blocks, and a clone of the keyed state is a copy.
///
/// The state is as good as the secret for signing: it is never printed
/// (`Debug` shows nothing of it) and is overwritten when dropped.
#[derive(Clone)]
pub struct V1Key(Hmac<Sha1>);

impl V1Key {
    pub fn new(secret: &str) -> V1Key {
        V1Key(mac_for(secret))
    }

    /// Whether `provided` is the signature of the call: `method` and its
    /// parameters (sorted by key, without `Signature`), streamed into the
    /// HMAC as [`string_to_sign`] would spell them, without building the
    /// string. Compared in constant time.
    pub fn verify<'a>(
        &self,
        method: &str,
        sorted: impl IntoIterator<Item = (&'a str, &'a str)>,
        provided: &str,
    ) -> bool {
        // A SHA-1 is 20 bytes: its Base64 is 28 characters.
        let mut decoded = [0u8; 21];
        match BASE64.decode_slice(provided.as_bytes(), &mut decoded) {
            Ok(20) => {}
            _ => return false,
        }
        let mut stream = SigningStream {
            mac: self.0.clone(),
            buffer: [0; 256],
            filled: 0,
        };
        stream.bytes(method.as_bytes());
        stream.bytes(b"&%2F&");
        for (i, (k, v)) in sorted.into_iter().enumerate() {
            if i > 0 {
                stream.bytes(b"%26");
            }
            stream.twice_encoded(k.as_bytes());
            stream.bytes(b"%3D");
            stream.twice_encoded(v.as_bytes());
        }
        stream.finish().verify_slice(&decoded[..20]).is_ok()
    }
}

impl std::fmt::Debug for V1Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("V1Key(<keyed HMAC state, not shown>)")
    }
}

impl Drop for V1Key {
    fn drop(&mut self) {
        // Overwritten with a state keyed by nothing; `black_box` keeps the
        // store from being dropped as dead (hmac and sha1 0.10 have no
        // zeroize support, and this crate writes no unsafe for it).
        self.0 = mac_for("");
        std::hint::black_box(&self.0);
    }
}

/// What goes into the HMAC, in chunks of a small buffer on the stack.
struct SigningStream {
    mac: Hmac<Sha1>,
    buffer: [u8; 256],
    filled: usize,
}

/// Whether Alibaba's encoding leaves each byte as it is (`A-Z a-z 0-9 - _
/// . ~`), by byte value.
const UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        byte += 1;
    }
    table
};

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

impl SigningStream {
    /// Appends `bytes` as they are, a buffer's worth at a time.
    fn bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.filled == self.buffer.len() {
                self.mac.update(&self.buffer);
                self.filled = 0;
            }
            let n = bytes.len().min(self.buffer.len() - self.filled);
            self.buffer[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
        }
    }

    /// `bytes` percent-encoded, then encoded again as the string to sign
    /// does with the canonical query: an unreserved byte stays, any other
    /// becomes `%XX` and then `%25XX`. Runs of unreserved bytes are copied
    /// whole.
    fn twice_encoded(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let run = rest
                .iter()
                .position(|&b| !UNRESERVED[usize::from(b)])
                .unwrap_or(rest.len());
            self.bytes(&rest[..run]);
            let Some(&b) = rest.get(run) else { break };
            self.bytes(&[
                b'%',
                b'2',
                b'5',
                HEX_UPPER[usize::from(b >> 4)],
                HEX_UPPER[usize::from(b & 15)],
            ]);
            rest = &rest[run + 1..];
        }
    }

    fn finish(mut self) -> Hmac<Sha1> {
        self.mac.update(&self.buffer[..self.filled]);
        self.mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut p = vec![
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Version", "2014-05-26"),
        ];
        p.extend_from_slice(extra);
        p.sort();
        p
    }

    fn signature_of(p: Vec<(&str, &str)>) -> String {
        let sts = string_to_sign("GET", &canonical_query(p.iter().copied()));
        let signature = sign("testsecret", &sts);
        // The streamed check agrees on every published vector.
        assert!(V1Key::new("testsecret").verify("GET", p, &signature));
        signature
    }

    /// Alibaba's published ECS DescribeRegions vector.
    #[test]
    fn published_vector_describe_regions() {
        let p = params(&[("Timestamp", "2016-02-23T12:46:24Z")]);
        assert_eq!(signature_of(p), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
    }

    /// The same request with the key spelled `TimeStamp`: it sorts before
    /// `Version` but after `SignatureVersion` differently, and the published
    /// signature depends on byte-order sorting.
    #[test]
    fn published_vector_timestamp_spelling() {
        let p = params(&[("TimeStamp", "2016-02-23T12:46:24Z")]);
        assert_eq!(signature_of(p), "CT9X0VtwR86fNWSnsc6v8YGOjuE=");
    }

    /// Alibaba's published ECS DescribeDedicatedHosts vector.
    #[test]
    fn published_vector_describe_dedicated_hosts() {
        let mut p = vec![
            ("AccessKeyId", "testid"),
            ("Action", "DescribeDedicatedHosts"),
            ("Format", "JSON"),
            ("RegionId", "cn-beijing"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "edb2b34af0af9a6d14deaf7c1a5315eb"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2023-03-13T08:34:30Z"),
            ("Version", "2014-05-26"),
        ];
        p.sort();
        assert_eq!(signature_of(p), "9NaGiOspFP5UPcwX8Iwt2YJXXuk=");
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("a b*c~d-e_f.g"), "a%20b%2Ac~d-e_f.g");
        assert_eq!(
            percent_encode("GID_x@@@dev 1+/é"),
            "GID_x%40%40%40dev%201%2B%2F%C3%A9"
        );
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn verify_accepts_the_signature_and_rejects_anything_else() {
        let sts = "GET&%2F&A%3D1";
        let good = sign("s", sts);
        assert!(verify("s", sts, &good));
        assert!(!verify("t", sts, &good));
        assert!(!verify("s", "GET&%2F&A%3D2", &good));
        assert!(!verify("s", sts, "not base64!"));
        assert!(!verify("s", sts, ""));
        assert!(!verify("s", sts, &good[..good.len() - 4]));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A signature verifies under its secret and string, and a change
        /// to either makes it fail.
        #[test]
        fn sign_then_verify(
            secret in "\\PC{1,40}",
            params in proptest::collection::btree_map("[A-Za-z.]{1,12}", "\\PC{0,30}", 1..12),
            tamper in any::<proptest::sample::Index>(),
        ) {
            let canonical = canonical_query(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let sts = string_to_sign("POST", &canonical);
            let signature = sign(&secret, &sts);
            prop_assert!(verify(&secret, &sts, &signature));
            let other_secret = format!("{}x", secret);
            prop_assert!(!verify(&other_secret, &sts, &signature));
            let mut changed = params.clone();
            let key = changed.keys().nth(tamper.index(changed.len())).unwrap().clone();
            changed.get_mut(&key).unwrap().push('!');
            let other = string_to_sign("POST", &canonical_query(changed.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
            prop_assert!(!verify(&secret, &other, &signature));
        }

        /// The key's streamed check agrees with the string to sign, for
        /// any parameters (multi-byte text included) and method.
        #[test]
        fn streamed_check_agrees_with_the_string_to_sign(
            secret in "\\PC{1,40}",
            params in proptest::collection::btree_map("\\PC{1,12}", "\\PC{0,300}", 0..12),
            post in any::<bool>(),
        ) {
            let method = if post { "POST" } else { "GET" };
            let pairs = || params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            let sts = string_to_sign(method, &canonical_query(pairs()));
            let signature = sign(&secret, &sts);
            let key = V1Key::new(&secret);
            prop_assert!(key.verify(method, pairs(), &signature));
            let other = V1Key::new(&format!("{secret}x"));
            prop_assert!(!other.verify(method, pairs(), &signature));
            let other_method = if post { "GET" } else { "POST" };
            prop_assert!(!key.verify(other_method, pairs(), &signature));
        }

        /// Arbitrary text as a provided signature: false, never a panic.
        #[test]
        fn verify_arbitrary_signatures(provided in "\\PC{0,60}") {
            let _ = verify("secret", "GET&%2F&", &provided);
        }

        /// What the signer encodes, the parameter parser reads back exactly.
        #[test]
        fn encoding_then_parsing_round_trips(
            map in proptest::collection::btree_map("\\PC{1,12}", "\\PC{0,24}", 0..20)
        ) {
            let encoded = canonical_query(map.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let mut params = crate::params::Params::default();
            params.add_form(encoded.as_bytes(), "query").unwrap();
            let decoded: Vec<(&str, &str)> = params.iter().collect();
            let expected: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(decoded, expected);
        }
    }
}

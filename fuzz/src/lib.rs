//! What the fuzz targets share: a lenient reader of raw HTTP requests (the
//! form the SDK captures in `tests/data/sdk-captures/` have, so that they
//! seed the RPC targets as they are) and the directory the signature
//! targets verify against.

use mqgate::config::Config;
use mqgate::directory::Directory;
use std::sync::OnceLock;

/// A request as the HTTP layer hands it to the parse stage.
pub struct RawRequest<'a> {
    pub method: &'a str,
    /// The request-target (`/?a=b`).
    pub target: &'a str,
    /// Names as sent; values as sent (trimmed).
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub body: &'a [u8],
}

impl RawRequest<'_> {
    /// The query string of the request-target, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Header names in lower case and values decoded as the HTTP layer
    /// does (`read_request`: lossy UTF-8), the parse stage's input.
    pub fn lower_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_ascii_lowercase(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }
}

/// Splits `data` into request line, header lines and body, leniently: any
/// bytes give a request (a mutated capture still reaches the parser).
/// `None` only if the head is not UTF-8.
pub fn split_request(data: &[u8]) -> Option<RawRequest<'_>> {
    let (head, body) = match find(data, b"\r\n\r\n") {
        Some(i) => (&data[..i], &data[i + 4..]),
        None => match find(data, b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        },
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let mut words = first.split(' ');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim().as_bytes()))
        .collect();
    Some(RawRequest {
        method,
        target,
        headers,
        body,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The AccessKeys the SDK captures were signed with (as in
/// tests/sdk_captures.rs), one disabled key, and a second account.
pub const CONFIG: &str = r#"
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "mqtt-cn-test0001"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
  [[accounts.users]]
  name = "off"
  access_key_id = "offid"
  access_key_secret = "offsecret"
  disabled = true
  [[accounts.users]]
  name = "reader"
  access_key_id = "readerid"
  access_key_secret = "readersecret"
  policies = ["AliyunMQReadOnlyAccess"]
"#;

/// The directory, built once (not per input).
pub fn directory() -> &'static Directory {
    static DIRECTORY: OnceLock<Directory> = OnceLock::new();
    DIRECTORY.get_or_init(|| {
        Directory::from_config(&Config::parse(CONFIG, "fuzz.toml").expect("the fuzz config"))
    })
}

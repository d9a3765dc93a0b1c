//! Query strings longer than a URI may be: an I/O adapter between the
//! accepted socket and hyper.
//!
//! Why it exists: `SendMessage` takes payloads up to 64 KB, and the Tea SDK
//! sends every parameter in the query string, percent-encoded (up to three
//! bytes per byte: about 200 KB of query for the largest payload). The
//! `http` crate refuses a URI over 65,534 bytes, and hyper answers
//! `414 URI Too Long` (no body) before mqgate sees the request; neither
//! limit can be raised. So the request head is read here, before hyper:
//! when a request for the RPC endpoint (`/`) has a request-target over
//! that limit, its request line keeps only the path and the query string
//! moves, bytes unchanged, into an [`QUERY_HEADER`] header, which the
//! parse stage ([`crate::rpc::parse`]) reads as the query.
//!
//! Every other head reaches hyper byte for byte as it was sent. To find
//! each head of a keep-alive (or pipelined) connection the adapter follows
//! the messages' framing: a `Content-Length` body is passed on by count,
//! straight into hyper's buffer; a request with neither `Content-Length`
//! nor `Transfer-Encoding` has no body. For anything it does not follow
//! (`Transfer-Encoding`, `Upgrade`, `CONNECT`, a head it cannot parse or
//! larger than hyper's buffer, the end of the stream in the middle of a
//! head) it stops looking: from there on, every byte of the connection goes
//! to hyper unchanged, and hyper answers as it would have without it.
//! Writes go straight to the socket.

use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The header a long request-target's query string is moved into.
pub use crate::rpc::parse::QUERY_HEADER;

/// Most headers hyper will parse before answering 431 by itself; below it,
/// the RPC endpoint's own limit ([`crate::rpc::parse::MAX_HEADERS`]) answers
/// a 400 with a code and message. It is hyper's default, left unset (`server::http`): with
/// a limit set, hyper allocates and fills that many slots on the heap for
/// every request it parses (two vectors); with its default, they are on the
/// stack and left uninitialized.
pub const HTTP_MAX_HEADERS: usize = 100;

/// The longest request-target the HTTP stack takes (the `http` crate's
/// limit on a URI; hyper answers 414 above it).
///
/// Only targets over it are moved: a request that the HTTP stack takes
/// today reaches it untouched, so the rewrite can change nothing but what
/// was refused before.
pub const MAX_TARGET_BYTES: usize = 65_534;
/// The path whose long targets are moved: the RPC endpoint's, the only
/// route that reads [`QUERY_HEADER`]. Any other route keeps hyper's 414
/// rather than answering as if it had no query.
const RPC_PATH: &[u8] = b"/";
/// How much is read from the socket at once while a head is incomplete.
const READ_CHUNK: usize = 8 * 1024;

/// The socket as hyper reads it: long query strings moved into a header.
pub struct LongQuery<S> {
    io: S,
    mode: Mode,
    /// Bytes read from `io` and not yet handed on (a head being gathered,
    /// or what came after one).
    input: BytesMut,
    /// Bytes ready to hand on, before `input`: a head (as sent or
    /// rewritten), or empty lines before one.
    output: Bytes,
    /// Where the search for the end of the head in `input` resumes.
    scanned: usize,
    /// The largest head to gather: hyper's read buffer (a head over it is
    /// hyper's to refuse, with 431).
    max_head: usize,
}

/// Where the adapter is in the connection's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// At (or in) a request head.
    Head,
    /// In a `Content-Length` body: this many bytes left (never 0).
    Body(u64),
    /// Not looking any more: every byte goes on unchanged.
    Passthrough,
}

impl<S> LongQuery<S> {
    /// Wraps `io`; `max_head` is hyper's `max_buf_size`.
    pub fn new(io: S, max_head: usize) -> Self {
        LongQuery {
            io,
            mode: Mode::Head,
            input: BytesMut::new(),
            output: Bytes::new(),
            scanned: 0,
            max_head,
        }
    }

    /// Takes the next complete head (or the empty lines before one) from
    /// `input` into `output`, and sets the mode for what follows it.
    /// False when `input` holds no complete head yet.
    fn take_head(&mut self) -> bool {
        // Empty lines before a request line: hyper skips them; so does
        // the search below, by handing them on first.
        let blank = self
            .input
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        if blank > 0 {
            self.output = self.input.split_to(blank).freeze();
            self.scanned = 0;
            return true;
        }
        let end = match head_end(&self.input, self.scanned) {
            Ok(end) => end,
            Err(resume) => {
                self.scanned = resume;
                if self.input.len() >= self.max_head {
                    self.mode = Mode::Passthrough;
                    return true;
                }
                return false;
            }
        };
        let head = self.input.split_to(end);
        self.scanned = 0;
        let (rewritten, framing) = if head.len() >= self.max_head {
            (None, None)
        } else {
            examine(&head, self.max_head)
        };
        self.mode = match framing {
            Some(0) => Mode::Head,
            Some(length) => Mode::Body(length),
            None => Mode::Passthrough,
        };
        self.output = match rewritten {
            Some(rewritten) => Bytes::from(rewritten),
            None => head.freeze(),
        };
        true
    }
}

impl<S: AsyncRead + Unpin> LongQuery<S> {
    /// Reads more bytes from the socket into `input` (at least
    /// [`READ_CHUNK`] of room), straight into its spare capacity: every
    /// request's head passes here, so the room is not zeroed first.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.input.is_empty() && self.input.capacity() > 4 * READ_CHUNK {
            // What a long head left: an idle connection does not keep it.
            self.input = BytesMut::new();
        }
        self.input.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.input)
    }
}

/// Where the head at the start of `buf` ends (just past its empty line),
/// searching from `from`; `Err` with where to resume once more bytes come.
/// The head must not start with an empty line (see [`LongQuery::take_head`]).
fn head_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut at = from;
    while let Some(found) = buf[at..].iter().position(|&b| b == b'\n') {
        let newline = at + found;
        match (buf.get(newline + 1), buf.get(newline + 2)) {
            (Some(b'\n'), _) => return Ok(newline + 2),
            (Some(b'\r'), Some(b'\n')) => return Ok(newline + 3),
            (None, _) | (Some(b'\r'), None) => return Err(newline),
            _ => at = newline + 1,
        }
    }
    Err(buf.len())
}

/// Reads one complete head: the head to hand on instead of it, if its
/// query string moves into a header, and the length of its body (`None`:
/// framing the adapter does not follow, or a head it cannot parse).
fn examine(head: &[u8], max_head: usize) -> (Option<Vec<u8>>, Option<u64>) {
    // hyper's own parser and settings (strict, up to HTTP_MAX_HEADERS
    // headers): a head it parses, hyper parses alike; one it refuses,
    // hyper refuses too, and answers for.
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); HTTP_MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        head,
        &mut headers,
    );
    if !matches!(parsed, Ok(httparse::Status::Complete(n)) if n == head.len()) {
        return (None, None);
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return (None, None);
    };
    let framing = framing(method, request.headers);
    let room_for_one_more = request.headers.len() < HTTP_MAX_HEADERS;
    let rewritten = moved_query(head, target)
        .filter(|rewritten| room_for_one_more && rewritten.len() < max_head);
    (rewritten, framing)
}

/// The length of the body after a head, as hyper reads it: its one
/// `Content-Length`, or none. `None` for what the adapter does not follow:
/// `Transfer-Encoding`, `Upgrade`, `CONNECT`, a `Content-Length` that is
/// not one plain number (hyper takes some such, e.g. a repeated equal
/// value, and refuses others; either way it is hyper's to read).
fn framing(method: &str, headers: &[httparse::Header<'_>]) -> Option<u64> {
    if method == "CONNECT" {
        return None;
    }
    let mut length = None;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") || name.eq_ignore_ascii_case("upgrade") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return None;
            }
            length = Some(digits(header.value)?);
        }
    }
    Some(length.unwrap_or(0))
}

/// A plain decimal number, as hyper reads a `Content-Length` (no sign, no
/// space, no overflow).
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The head with its query string moved into [`QUERY_HEADER`], when its
/// request-target is too long for a URI and names the RPC endpoint.
/// `target` is the request-target, a slice of `head`.
fn moved_query(head: &[u8], target: &str) -> Option<Vec<u8>> {
    if target.len() <= MAX_TARGET_BYTES {
        return None;
    }
    // As the `http` crate reads a target: a fragment (`#...`) is dropped,
    // the query runs from the first `?` to the end.
    let bytes = target.as_bytes();
    let without_fragment = &bytes[..bytes.iter().position(|&b| b == b'#').unwrap_or(bytes.len())];
    let question = without_fragment.iter().position(|&b| b == b'?')?;
    let (path, query) = (&bytes[..question], &without_fragment[question + 1..]);
    if path != RPC_PATH {
        return None;
    }
    // Where the target sits in the head, and where the request line ends.
    let start = target.as_ptr() as usize - head.as_ptr() as usize;
    let end = start + bytes.len();
    let line_end = end + head[end..].iter().position(|&b| b == b'\n')? + 1;
    let mut rewritten = Vec::with_capacity(head.len() + QUERY_HEADER.len() + 4);
    rewritten.extend_from_slice(&head[..start]);
    rewritten.extend_from_slice(path);
    rewritten.extend_from_slice(&head[end..line_end]);
    rewritten.extend_from_slice(QUERY_HEADER.as_bytes());
    rewritten.extend_from_slice(b": ");
    rewritten.extend_from_slice(query);
    rewritten.extend_from_slice(b"\r\n");
    rewritten.extend_from_slice(&head[line_end..]);
    Some(rewritten)
}

/// Copies as much of `from` as fits into `to`, and drops it from `from`.
fn hand_on(from: &mut impl Buf, to: &mut ReadBuf<'_>, most: usize) {
    let n = from.remaining().min(to.remaining()).min(most);
    to.put_slice(&from.chunk()[..n]);
    from.advance(n);
}

impl<S: AsyncRead + Unpin> AsyncRead for LongQuery<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if dst.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.output.is_empty() {
                hand_on(&mut this.output, dst, usize::MAX);
                if this.output.is_empty() {
                    // Handed on: its memory (a long head's) is let go.
                    this.output = Bytes::new();
                }
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                Mode::Passthrough => {
                    if !this.input.is_empty() {
                        hand_on(&mut this.input, dst, usize::MAX);
                        return Poll::Ready(Ok(()));
                    }
                    return Pin::new(&mut this.io).poll_read(cx, dst);
                }
                Mode::Body(left) => {
                    if !this.input.is_empty() {
                        let most = usize::try_from(left).unwrap_or(usize::MAX);
                        let before = this.input.len();
                        hand_on(&mut this.input, dst, most);
                        this.mode = after_body(left, (before - this.input.len()) as u64);
                        return Poll::Ready(Ok(()));
                    }
                    // Straight into hyper's buffer; what came past the
                    // body (the next head) is taken back.
                    let before = dst.filled().len();
                    ready!(Pin::new(&mut this.io).poll_read(cx, dst))?;
                    let got = (dst.filled().len() - before) as u64;
                    if got > left {
                        let end = before + left as usize;
                        this.input.extend_from_slice(&dst.filled()[end..]);
                        dst.set_filled(end);
                    }
                    // Nothing read: the end of the stream, for hyper to see.
                    if got > 0 {
                        this.mode = after_body(left, got.min(left));
                    }
                    return Poll::Ready(Ok(()));
                }
                Mode::Head => {
                    if this.take_head() {
                        continue;
                    }
                    let read = ready!(this.poll_read_more(cx))?;
                    if read == 0 {
                        if this.input.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        // The stream ended inside a head: hyper gets the
                        // part that came, and the end.
                        this.mode = Mode::Passthrough;
                    }
                }
            }
        }
    }
}

/// The mode once `taken` bytes of a body with `left` to go are handed on.
fn after_body(left: u64, taken: u64) -> Mode {
    match left - taken {
        0 => Mode::Head,
        left => Mode::Body(left),
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LongQuery<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::io::AsyncReadExt;

    const MAX_HEAD: usize = super::super::http::HTTP_MAX_BUF_BYTES;

    /// A socket that hands its bytes out in the given pieces, answering
    /// "not yet" before each one when `pending` (as a slow peer would).
    struct Pieces {
        pieces: VecDeque<Vec<u8>>,
        pending: bool,
        ready: bool,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.pending && !self.ready {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.ready = false;
            if let Some(mut piece) = self.pieces.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    self.pieces.push_front(piece.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// What hyper would read through the adapter: `input` in one piece, in
    /// pieces of one byte (with a "not yet" before each), and through reads
    /// of 1, 7 and 64 KiB bytes; all must agree.
    async fn through(input: &[u8]) -> Vec<u8> {
        let mut outputs = Vec::new();
        for (pieces, pending, read_size) in [
            (vec![input.to_vec()], false, 512 * 1024),
            (
                input.chunks(1).map(<[u8]>::to_vec).collect(),
                true,
                64 * 1024,
            ),
            (vec![input.to_vec()], false, 1),
            (input.chunks(1000).map(<[u8]>::to_vec).collect(), true, 7),
        ] {
            let io = Pieces {
                pieces: pieces.into(),
                pending,
                ready: false,
            };
            let mut adapter = LongQuery::new(io, MAX_HEAD);
            let mut out = Vec::new();
            let mut buf = vec![0; read_size];
            loop {
                let n = adapter.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            outputs.push(out);
        }
        for other in &outputs[1..] {
            assert!(other == &outputs[0], "the way the bytes came changed them");
        }
        outputs.swap_remove(0)
    }

    /// A query too long for a URI: `Payload=xxx...`.
    fn long_query(fill: u8) -> String {
        format!(
            "Action=SendMessage&Payload={}",
            (fill as char).to_string().repeat(70_000)
        )
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[tokio::test]
    async fn short_requests_pass_byte_for_byte() {
        let input = b"GET /?Action=Query&a=%20 HTTP/1.1\r\nHost: h\r\n\r\n\
            POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\na=b&c\
            \r\nGET /metrics HTTP/1.0\nhost: h\n\n";
        assert_eq!(text(&through(input).await), text(input));
    }

    #[tokio::test]
    async fn a_long_target_has_its_query_moved_into_a_header() {
        let query = long_query(b'x');
        let input = format!("GET /?{query} HTTP/1.1\r\nHost: h\r\nX-Other: 1\r\n\r\n");
        let expected =
            format!("GET / HTTP/1.1\r\n{QUERY_HEADER}: {query}\r\nHost: h\r\nX-Other: 1\r\n\r\n");
        assert_eq!(text(&through(input.as_bytes()).await), expected);
        // A fragment is dropped, as the URI parser drops it; an empty query
        // moves too.
        let input = format!("POST /?{query}#frag HTTP/1.1\r\n\r\n");
        let expected = format!("POST / HTTP/1.1\r\n{QUERY_HEADER}: {query}\r\n\r\n");
        assert_eq!(text(&through(input.as_bytes()).await), expected);
    }

    #[tokio::test]
    async fn long_targets_it_does_not_move_pass_unchanged() {
        let query = long_query(b'y');
        for input in [
            // Another route than the RPC endpoint: hyper's 414 stands.
            format!("GET /metrics?{query} HTTP/1.1\r\n\r\n"),
            // A long path, no query.
            format!("GET /{} HTTP/1.1\r\n\r\n", "p".repeat(70_000)),
            // The query only after a fragment: no query at all.
            format!("GET /#?{query} HTTP/1.1\r\n\r\n"),
            // A head larger than hyper's buffer: hyper's 431.
            format!(
                "GET /?{query} HTTP/1.1\r\nBig: {}\r\n\r\n",
                "b".repeat(MAX_HEAD)
            ),
            // Not HTTP/1: not parsed.
            format!("GET /?{query} HTTP/2.0\r\n\r\n"),
        ] {
            assert_eq!(through(input.as_bytes()).await, input.as_bytes());
        }
    }

    #[tokio::test]
    async fn pipelined_heads_are_each_read() {
        let (a, b) = (long_query(b'a'), long_query(b'b'));
        let input = format!(
            "GET /?{a} HTTP/1.1\r\n\r\nGET /?short HTTP/1.1\r\n\r\n\r\nGET /?{b} HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        let expected = format!(
            "GET / HTTP/1.1\r\n{QUERY_HEADER}: {a}\r\n\r\nGET /?short HTTP/1.1\r\n\r\n\r\n\
             GET / HTTP/1.1\r\n{QUERY_HEADER}: {b}\r\nHost: h\r\n\r\n"
        );
        assert_eq!(text(&through(input.as_bytes()).await), expected);
    }

    #[tokio::test]
    async fn a_body_is_passed_by_count_and_the_next_head_found_after_it() {
        let (a, b) = (long_query(b'a'), long_query(b'b'));
        // The body looks like a long request: it is a body, left alone.
        let body = format!("GET /?{a} HTTP/1.1\r\n\r\n");
        let input = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}GET /?{b} HTTP/1.1\r\n\r\n\
             POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\nGET /?{a} HTTP/1.1\r\n\r\n",
            body.len()
        );
        let expected = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}\
             GET / HTTP/1.1\r\n{QUERY_HEADER}: {b}\r\n\r\n\
             POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n\
             GET / HTTP/1.1\r\n{QUERY_HEADER}: {a}\r\n\r\n",
            body.len()
        );
        assert_eq!(text(&through(input.as_bytes()).await), expected);
    }

    #[tokio::test]
    async fn framing_it_does_not_follow_stops_it_looking() {
        let query = long_query(b'z');
        let next = format!("GET /?{query} HTTP/1.1\r\n\r\n");
        for head in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "CONNECT h:443 HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            let input = format!("{head}{next}");
            assert_eq!(text(&through(input.as_bytes()).await), input, "{head}");
        }
    }

    #[tokio::test]
    async fn the_end_of_the_stream_inside_a_head_passes_what_came() {
        let query = long_query(b'e');
        for input in [
            format!("GET /?{query} HTTP/1.1\r\nHost: h\r\n"),
            "GET / HTTP/1.1\r\n\r\nGET /?a=1 HTT".to_string(),
            "\r\n".to_string(),
        ] {
            assert_eq!(text(&through(input.as_bytes()).await), input);
        }
        // And inside a body.
        let input = "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(text(&through(input.as_bytes()).await), input);
    }

    #[test]
    fn the_end_of_a_head_is_its_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Ok(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest", 0), Ok(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), Err(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r", 0), Err(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b", 0), Err(20));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\n", 21), Ok(24));
    }

    #[test]
    fn content_length_is_read_as_hyper_reads_it() {
        assert_eq!(digits(b"0"), Some(0));
        assert_eq!(digits(b"262144"), Some(262_144));
        assert_eq!(digits(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+1",
            b"-1",
            b" 1",
            b"1,1",
            b"0x1",
        ] {
            assert_eq!(digits(bad), None, "{}", text(bad));
        }
    }
}

//! The bill journal: where a batch of calls becomes durable before its
//! callers are answered, in `storage.dir/metering.journal`.
//!
//! Why not SQLite's own commit: a WAL commit of a few counters writes a
//! 4 KiB page frame (which straddles two disk pages), takes six `fcntl`
//! locks and walks the B-tree, about 80 µs of CPU per commit on the
//! benchmark machine before its fsync; a journal block is one `pwrite` of
//! about a hundred bytes, with `O_DSYNC` (a write and an `fdatasync` in one
//! system call), to a file whose blocks were written once when it was
//! made, so that the sync carries no metadata.
//! The writer folds the journal into the SQLite tables off the hot path
//! (every [`FOLD_EVERY`], when the journal is half full, with broker
//! counts, and at shutdown): one SQLite transaction for thousands of
//! batches, which also records the last sequence number folded. Then the
//! journal starts again from its first byte.
//!
//! A block on disk:
//!
//! ```text
//! magic "MQBJ" (4) | payload length u32 | sequence u64 | CRC-32 of sequence and payload (4) | payload
//! payload: entries u32, then per entry: minute i64 | calls u64 | account, instance, action (u16 length + UTF-8 each)
//! ```
//!
//! Integers are little-endian. Sequence numbers grow by one per block for
//! the life of the store and are never reused. Reading starts at byte 0
//! and stops at the first block that is not valid (magic, length, CRC) or
//! whose sequence is not the previous one plus one: what follows is a torn
//! write (its callers were never answered) or an older pass over the file
//! (every block of which was folded before the file started again).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

/// File name of the journal inside `storage.dir`.
pub const FILE: &str = "metering.journal";
/// Size the journal file is made with (its bytes written once, so that a
/// later `fdatasync` has no block allocation to record). It grows, in the
/// same way, only for a batch larger than half of it.
pub const INITIAL_BYTES: u64 = 4 << 20;
/// How long calls may sit in the journal before they are folded into the
/// SQLite tables when calls keep coming.
pub const FOLD_EVERY: Duration = Duration::from_secs(1);

const MAGIC: &[u8; 4] = b"MQBJ";
const HEADER_BYTES: usize = 4 + 4 + 8 + 4;
/// No batch writes more: [`super::MAX_BATCH`] calls of distinct keys with
/// names of at most 64 KiB each stay far below it.
const MAX_PAYLOAD_BYTES: u32 = 1 << 30;

/// Calls billed to one (minute, account, instance, action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub minute: i64,
    pub account_id: String,
    pub instance_id: String,
    pub action: String,
    pub calls: u64,
}

/// A block read back: its sequence number and entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub sequence: u64,
    pub entries: Vec<Entry>,
}

/// The journal file, open for appending blocks.
pub struct Journal {
    /// For reading, making and clearing the file.
    file: File,
    /// The same file opened with `O_DSYNC`: a block's write returns once
    /// it is on disk, one system call instead of a write and an
    /// `fdatasync` (measured here: 110 against 117 µs on average).
    appender: File,
    /// Where the next block goes.
    offset: u64,
    capacity: u64,
    next_sequence: u64,
    /// The block being encoded, kept to reuse its allocation.
    buffer: Vec<u8>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("offset", &self.offset)
            .field("capacity", &self.capacity)
            .field("next_sequence", &self.next_sequence)
            .finish()
    }
}

impl Journal {
    /// Opens (making it if needed) the journal at `path` and reads every
    /// valid block in it. Blocks already folded (sequence at most `folded`)
    /// are left out of the answer. Fold what it returns, then call
    /// [`Journal::clear`] before the first append.
    pub fn open(path: &Path, folded: u64) -> io::Result<(Journal, Vec<Block>)> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let blocks = read_blocks(&file)?;
        let last = blocks.last().map_or(0, |b| b.sequence);
        let unfolded = blocks.into_iter().filter(|b| b.sequence > folded).collect();
        let capacity = file.metadata()?.len().max(INITIAL_BYTES);
        fill_with_zeros(&file, capacity)?;
        let appender = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DSYNC)
                .open(path)?
        };
        let journal = Journal {
            file,
            appender,
            offset: 0,
            capacity,
            next_sequence: last.max(folded) + 1,
            buffer: Vec::with_capacity(512),
        };
        Ok((journal, unfolded))
    }

    /// The sequence number the next block will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Whether the journal holds blocks not folded yet.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Whether it is time to fold: the journal is half full.
    pub fn half_full(&self) -> bool {
        self.offset >= self.capacity / 2
    }

    /// Writes one block of `entries` and waits until it is on disk. Returns
    /// its sequence number. On an error nothing moves: the next block is
    /// written at the same place under the same number.
    pub fn append<'a>(
        &mut self,
        entries: impl ExactSizeIterator<Item = (i64, &'a str, &'a str, &'a str, u64)>,
    ) -> io::Result<u64> {
        let sequence = self.next_sequence;
        encode_block(&mut self.buffer, sequence, entries)?;
        let end = self.offset + self.buffer.len() as u64;
        if end > self.capacity {
            // Only a batch larger than half the journal gets here (the
            // writer folds at half): make room for it, bytes written.
            let capacity = (end * 2).max(self.capacity);
            fill_with_zeros(&self.file, capacity)?;
            self.capacity = capacity;
        }
        // O_DSYNC: on disk when this returns. The file's blocks exist
        // already, so only data goes (no metadata to record).
        self.appender.write_all_at(&self.buffer, self.offset)?;
        self.offset = end;
        self.next_sequence += 1;
        Ok(sequence)
    }

    /// Starts again from the first byte, once every block written so far
    /// is folded (and that fold is durable). The old blocks stay behind the
    /// new ones; their sequence numbers are all lower, so reading stops at
    /// them.
    pub fn restart(&mut self) {
        self.offset = 0;
    }

    /// Overwrites the whole file with zeros and starts from its first byte:
    /// at start, once the blocks [`Journal::open`] returned are folded. A
    /// crash can leave blocks of an earlier run past the last valid one (a
    /// torn block, then older passes); whatever their numbers, none of them
    /// can then follow a block written from now on.
    pub fn clear(&mut self) -> io::Result<()> {
        // Reading the file at open cached it in large folios (readahead);
        // rewritten over them, each block's sync would write a whole folio
        // back. Dropped (they are clean), the pages come back in 4 KiB.
        rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed)?;
        write_zeros(&self.file, 0, self.capacity)?;
        self.file.sync_all()?;
        self.offset = 0;
        Ok(())
    }
}

/// Every valid block of the journal at `path`, in order (for a reader
/// beside the writer: the report). A missing file has none.
pub fn read(path: &Path) -> io::Result<Vec<Block>> {
    match File::open(path) {
        Ok(file) => read_blocks(&file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn read_blocks(file: &File) -> io::Result<Vec<Block>> {
    let length = file.metadata()?.len();
    let mut bytes = vec![0; usize::try_from(length).unwrap_or(usize::MAX)];
    let read = read_at_most(file, &mut bytes)?;
    bytes.truncate(read);
    Ok(decode_blocks(&bytes))
}

fn read_at_most(file: &File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buffer.len() {
        match file.read_at(&mut buffer[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The valid blocks at the start of `bytes` (see the module's docs for
/// where reading stops).
pub fn decode_blocks(bytes: &[u8]) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut at = 0;
    while let Some((block, length)) = decode_block(&bytes[at..]) {
        if let Some(previous) = blocks.last()
            && block.sequence != previous.sequence + 1
        {
            break;
        }
        blocks.push(block);
        at += length;
    }
    blocks
}

fn decode_block(bytes: &[u8]) -> Option<(Block, usize)> {
    let header = bytes.get(..HEADER_BYTES)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let payload_length = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if payload_length > MAX_PAYLOAD_BYTES {
        return None;
    }
    let sequence_bytes = &header[8..16];
    let crc = u32::from_le_bytes(header[16..20].try_into().ok()?);
    let payload = bytes.get(HEADER_BYTES..HEADER_BYTES + payload_length as usize)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(sequence_bytes);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return None;
    }
    let entries = decode_entries(payload)?;
    let sequence = u64::from_le_bytes(sequence_bytes.try_into().ok()?);
    Some((Block { sequence, entries }, HEADER_BYTES + payload.len()))
}

fn decode_entries(payload: &[u8]) -> Option<Vec<Entry>> {
    let mut reader = Reader(payload);
    let count = u32::from_le_bytes(reader.take(4)?.try_into().ok()?);
    let mut entries = Vec::with_capacity((count as usize).min(payload.len() / 22));
    for _ in 0..count {
        let minute = i64::from_le_bytes(reader.take(8)?.try_into().ok()?);
        let calls = u64::from_le_bytes(reader.take(8)?.try_into().ok()?);
        let account_id = reader.text()?;
        let instance_id = reader.text()?;
        let action = reader.text()?;
        entries.push(Entry {
            minute,
            account_id,
            instance_id,
            action,
            calls,
        });
    }
    reader.0.is_empty().then_some(entries)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(taken)
    }

    fn text(&mut self) -> Option<String> {
        let length = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        let bytes = self.take(length as usize)?;
        String::from_utf8(bytes.to_vec()).ok()
    }
}

fn encode_block<'a>(
    out: &mut Vec<u8>,
    sequence: u64,
    entries: impl ExactSizeIterator<Item = (i64, &'a str, &'a str, &'a str, u64)>,
) -> io::Result<()> {
    out.clear();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 4]); // payload length, below
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, below
    let count = u32::try_from(entries.len()).map_err(|_| too_long("entries"))?;
    out.extend_from_slice(&count.to_le_bytes());
    for (minute, account, instance, action, calls) in entries {
        out.extend_from_slice(&minute.to_le_bytes());
        out.extend_from_slice(&calls.to_le_bytes());
        for text in [account, instance, action] {
            let length = u16::try_from(text.len()).map_err(|_| too_long("a name"))?;
            out.extend_from_slice(&length.to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    let payload_length = out.len() - HEADER_BYTES;
    if payload_length > MAX_PAYLOAD_BYTES as usize {
        return Err(too_long("the batch"));
    }
    out[4..8].copy_from_slice(&(payload_length as u32).to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(&out[HEADER_BYTES..]);
    out[16..20].copy_from_slice(&hasher.finalize().to_le_bytes());
    Ok(())
}

fn too_long(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} is too long for a bill journal block"),
    )
}

/// Makes the file `size` bytes long with every byte written (zeros past
/// its current end), and durable: a block written later over them changes
/// no metadata but the modification time, which `fdatasync` skips.
/// (`fallocate` would leave unwritten extents, whose first write is a
/// metadata change.)
fn fill_with_zeros(file: &File, size: u64) -> io::Result<()> {
    let length = file.metadata()?.len();
    if length >= size {
        return Ok(());
    }
    write_zeros(file, length, size)?;
    file.sync_all()
}

/// Writes zeros over `[from, to)` in 4 KiB writes, so that the page cache
/// holds the file in 4 KiB pages: a block's write then dirties one page
/// (or two), and its sync writes 4 KiB back. Written in larger pieces, the
/// kernel caches the file in large folios, and every sync wrote 64 KiB
/// back (measured on the benchmark machine: 65,634 bytes per sync against
/// 4,192, and 96-117 µs against 83-93 µs per sync).
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    const PAGE: usize = 4096;
    let zeros = [0u8; PAGE];
    let mut at = from;
    while at < to {
        let n = PAGE.min((to - at) as usize);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str, calls: u64) -> (i64, &'static str, &'static str, &str, u64) {
        (60, "acct", "inst", action, calls)
    }

    #[test]
    fn blocks_read_back_in_order_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (mut journal, none) = Journal::open(&path, 0).unwrap();
        assert!(none.is_empty());
        assert_eq!(journal.append([entry("A", 3)].into_iter()).unwrap(), 1);
        assert_eq!(
            journal
                .append([entry("A", 1), entry("B", 2)].into_iter())
                .unwrap(),
            2
        );
        drop(journal);
        let (journal, blocks) = Journal::open(&path, 0).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].entries[1].action, "B");
        assert_eq!(blocks[1].entries[1].calls, 2);
        assert_eq!(journal.next_sequence(), 3);
        // Folded up to 1: only block 2 is returned.
        drop(journal);
        let (_, blocks) = Journal::open(&path, 1).unwrap();
        assert_eq!(blocks.iter().map(|b| b.sequence).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_torn_block_and_what_follows_it_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (mut journal, _) = Journal::open(&path, 0).unwrap();
        journal.append([entry("A", 1)].into_iter()).unwrap();
        let second_at = journal.offset;
        journal.append([entry("B", 1)].into_iter()).unwrap();
        journal.append([entry("C", 1)].into_iter()).unwrap();
        drop(journal);
        // One byte of the second block's payload lost.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xFF], second_at + HEADER_BYTES as u64 + 5)
            .unwrap();
        let (journal, blocks) = Journal::open(&path, 0).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].entries[0].action, "A");
        // The next block follows the last valid one; once the file is
        // cleared, the valid block behind the torn one is gone, so it
        // cannot pass for the block after the next.
        assert_eq!(journal.next_sequence(), 2);
        let mut journal = journal;
        journal.clear().unwrap();
        journal.append([entry("D", 1)].into_iter()).unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
    }

    #[test]
    fn after_a_restart_the_older_pass_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (mut journal, _) = Journal::open(&path, 0).unwrap();
        for action in ["A", "B", "C", "D"] {
            journal.append([entry(action, 1)].into_iter()).unwrap();
        }
        // Folded through 4; the file starts again, over the old blocks.
        journal.restart();
        assert_eq!(journal.append([entry("E", 7)].into_iter()).unwrap(), 5);
        drop(journal);
        let (journal, blocks) = Journal::open(&path, 4).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!((blocks[0].sequence, blocks[0].entries[0].calls), (5, 7));
        assert_eq!(journal.next_sequence(), 6);
        // Unfolded, a reader sees the new block only, not the old pass
        // behind it (sequence 2 does not follow 5).
        assert_eq!(read(&path).unwrap().len(), 1);
    }

    #[test]
    fn a_batch_larger_than_the_file_grows_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (mut journal, _) = Journal::open(&path, 0).unwrap();
        let long = "x".repeat(60_000);
        let entries: Vec<_> = (0..100)
            .map(|i| (i, long.as_str(), "inst", "A", 1))
            .collect();
        journal.append(entries.into_iter()).unwrap();
        assert!(journal.capacity > INITIAL_BYTES);
        assert_eq!(read(&path).unwrap()[0].entries.len(), 100);
    }

    #[test]
    fn the_file_is_written_through_when_made() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let _ = Journal::open(&path, 0).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), INITIAL_BYTES);
        // Zeros are no block: an empty journal reads as none.
        assert!(read(&path).unwrap().is_empty());
    }
}

//! The recorder's spool: an append-only log on local disk that holds batches
//! while PostgreSQL is unreachable, replayed in order once it answers again.
//!
//! Billing depends on it, so the two rules are: nothing acknowledged is ever
//! lost, and nothing that fails validation is ever replayed.
//!
//! # Layout
//!
//! The spool is a directory of segment files named `{seq:020}.spool`: `seq`
//! is a decimal sequence number padded to 20 digits, so the lexical order of
//! the names is the append order. On open the sequence continues after the
//! highest number present (counting `.corrupt` files, so a new segment never
//! takes the name of one kept for an operator). Every other file in the
//! directory (the batcher's dead-letter file, an operator's notes) is left
//! alone.
//!
//! A segment is a plain sequence of records, with no file header:
//!
//! ```text
//! +-------------------+-------------------+---------------------------+
//! | length: u32 LE    | crc: u32 LE       | payload: `length` bytes   |
//! +-------------------+-------------------+---------------------------+
//! ```
//!
//! `crc` is the CRC-32 (IEEE, as `crc32fast` computes it) of the four length
//! bytes followed by the payload, so a damaged length is caught as surely as
//! a damaged payload. `length` is at most [`MAX_RECORD_BYTES`].
//!
//! # Durability
//!
//! When [`Spool::append`] returns `Ok`, its records are on stable storage:
//! the group is framed into one buffer, written with one `write` and made
//! durable with one `sync_data` (group commit), and the segment's name was
//! made durable by fsyncing the directory when the segment was created. A
//! failed append is cut back off the file (best effort; a tail that could not
//! be cut off is skipped as damage when read, and its segment takes no further
//! appends). Appends never continue a segment left by an earlier run, whose
//! tail may have been torn by the crash that ended it: each run starts a new
//! segment.
//!
//! # Ordering and replay
//!
//! [`Spool::read`] returns records in append order; [`Spool::consume`] marks
//! them done. Replay is at-least-once: the read cursor lives only in memory,
//! and only fully consumed segments are deleted, so after a restart replay
//! starts at the beginning of the oldest remaining segment and the records of
//! a partly consumed segment are replayed again (so are those of a segment
//! whose deletion a crash undid). The database writes are idempotent, so a
//! second replay is harmless; what was appended is never skipped.
//!
//! # Corruption
//!
//! Every record is validated when read. A torn record (its header or payload
//! runs past the end of the file) or a corrupt one (checksum mismatch, or a
//! length over [`MAX_RECORD_BYTES`]) means nothing after it in that segment
//! can be trusted, since record boundaries can no longer be followed. The rest
//! of the segment is skipped: logged once with `tracing::error!` (segment
//! name, byte offset, bytes skipped), counted once in
//! `switchboard_recorder_spool_corrupt_total`, and reading goes on with the
//! next segment. Once the valid records before the damage are consumed, the
//! file is renamed to `<name>.corrupt` for an operator instead of being
//! deleted, and stops counting in [`Spool::bytes`].
//!
//! The usual cause is a crash in the middle of an append: the tail of the
//! segment being written is then torn, or filled with zeros by the file
//! system (a zero header fails the check: the CRC of four zero bytes is not
//! zero). Those records were never acknowledged, so skipping them loses
//! nothing that was promised. A CRC-32 lets random damage through with a
//! probability of about 2^-32 per record.
//!
//! # Metrics
//!
//! * `switchboard_recorder_spool_bytes` (gauge): [`Spool::bytes`], kept up to
//!   date after every operation.
//! * `switchboard_recorder_spool_corrupt_total` (counter): segment tails
//!   skipped as torn or corrupt.

mod dir;
mod format;
mod replay;
mod space;
#[cfg(test)]
mod test_support;
mod writer;

use std::{collections::VecDeque, fs::File, io, path::PathBuf};

pub use format::MAX_RECORD_BYTES;

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// Directory holding the segment files (created if missing).
    pub dir: PathBuf,
    /// Most bytes the spool may hold on disk; an append that would exceed it
    /// fails with [`SpoolError::Full`].
    pub max_bytes: u64,
    /// A segment is closed and a new one started once it would grow past
    /// this.
    pub segment_bytes: u64,
}

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The append would take the spool past `max_bytes`; nothing was written.
    #[error("spool is full: {held} bytes held, {needed} more needed, limit {max_bytes}")]
    Full {
        /// Bytes the spool holds on disk.
        held: u64,
        /// Bytes the refused append would have added.
        needed: u64,
        /// The configured limit.
        max_bytes: u64,
    },
    /// One of the records to append is over [`MAX_RECORD_BYTES`] (its size is
    /// given); nothing was written.
    #[error("record of {0} bytes is larger than the {MAX_RECORD_BYTES}-byte limit")]
    RecordTooLarge(usize),
    /// The file system failed.
    #[error("{context}: {source}")]
    Io {
        /// What the spool was doing, naming the file involved.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl SpoolError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// One segment file that still holds records not consumed.
#[derive(Debug)]
struct Segment {
    seq: u64,
    name: String,
    /// Bytes on disk, which is also where reading stops: for the segment
    /// being appended to, the file can only be longer in the middle of a
    /// failed append.
    len: u64,
    /// Where validation failed, once a read found it; nothing from here on
    /// is read.
    damaged_at: Option<u64>,
}

impl Segment {
    fn readable_end(&self) -> u64 {
        self.damaged_at.unwrap_or(self.len)
    }
}

/// A place between records. Ordered as the records are: by segment, then
/// offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    seq: u64,
    offset: u64,
}

/// The on-disk spool. One owner, no internal locking; all IO is blocking
/// `std::fs`, so call it from a blocking thread.
#[derive(Debug)]
pub struct Spool {
    settings: SpoolSettings,
    /// Oldest first; the last one is the segment being appended to when
    /// `active` is set.
    segments: VecDeque<Segment>,
    /// Kept open so a group commit costs one write and one sync. Cleared
    /// whenever the last segment must take no more appends (rolled over,
    /// failed append, damage found, fully consumed).
    active: Option<File>,
    next_seq: u64,
    /// Everything before it is consumed. Segments with a lower `seq` are
    /// wholly consumed, so only the segment it names is read from an offset.
    cursor: Position,
    /// The position after each record the last `read` returned and not yet
    /// consumed, so `consume` knows where the cursor goes.
    pending: VecDeque<Position>,
    /// Held (locked) for as long as the spool is open: two processes
    /// appending to and replaying the same files would interleave records
    /// and delete each other's segments.
    _lock: File,
}

impl Spool {
    /// Opens (or creates) the spool in `settings.dir`. Existing segments are
    /// kept for replay; appends always start a NEW segment (never append after
    /// an existing file's tail, which may be torn by a crash).
    ///
    /// Empty segments at the front (left by a crash between creating a
    /// segment and writing to it) are removed.
    pub fn open(settings: SpoolSettings) -> Result<Spool, SpoolError> {
        dir::ensure_dir(&settings.dir)?;
        let lock = dir::lock_dir(&settings.dir)?;
        let (segments, highest_seq) = dir::scan_segments(&settings.dir)?;
        if !segments.is_empty() {
            tracing::debug!(
                dir = %settings.dir.display(),
                segments = segments.len(),
                "spool segments from an earlier run kept for replay"
            );
        }

        let mut spool = Spool {
            settings,
            segments: segments.into(),
            active: None,
            next_seq: highest_seq.saturating_add(1),
            cursor: Position { seq: 0, offset: 0 },
            pending: VecDeque::new(),
            _lock: lock,
        };
        // empty files left by a crash between creating a segment and writing
        // to it hold nothing to replay
        if let Err(error) = spool.release_consumed() {
            tracing::warn!(%error, "cannot remove an empty spool segment; retried later");
        }
        spool.publish();
        Ok(spool)
    }

    /// Appends `records` (opaque payloads) as one group: all framed into one
    /// buffer, one write, one `sync_data` (group commit). All-or-nothing: on
    /// `Full` or `RecordTooLarge` nothing is written; on an IO error mid-write
    /// the file is truncated back to its previous length (best effort) so no
    /// partial record stays, and the error is returned. When it returns Ok,
    /// the records are durable.
    ///
    /// An empty `records` is a no-op.
    pub fn append(&mut self, records: &[Vec<u8>]) -> Result<(), SpoolError> {
        let result = self.append_group(records);
        self.publish();
        result
    }

    /// Bytes held on disk by segments not yet fully consumed.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.len).sum()
    }

    /// True when every appended record has been consumed.
    ///
    /// Damage found by [`read`](Self::read) counts as consumed: a spool whose
    /// remaining records all fail validation is empty once read.
    pub fn is_empty(&self) -> bool {
        self.segments
            .iter()
            .all(|segment| self.start_of(segment) >= segment.readable_end())
    }

    /// Up to `max_records` of the oldest unconsumed records, in append order,
    /// without consuming them (calling read again without consume returns the
    /// same records).
    ///
    /// Segments left with nothing to read (all consumed, or the rest found
    /// damaged) are retired on the way, as `consume` would.
    pub fn read(&mut self, max_records: usize) -> Result<Vec<Vec<u8>>, SpoolError> {
        let result = self.read_records(max_records);
        self.publish();
        result
    }

    /// Marks the first `n` records returned by the last `read` as done. Fully
    /// consumed segments are deleted (the active one too, if everything is
    /// consumed: the spool is then empty and the next append starts a fresh
    /// segment).
    ///
    /// Consuming again without a new read marks the records after those
    /// already consumed; `n` beyond what the read returned is capped (and
    /// logged). A deletion that fails returns the error and is retried by the
    /// next `read` or `consume`; the records stay consumed.
    pub fn consume(&mut self, n: usize) -> Result<(), SpoolError> {
        let result = self.consume_records(n);
        self.publish();
        result
    }
}

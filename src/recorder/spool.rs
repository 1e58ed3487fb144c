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

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

/// Largest payload one record may carry; a length above it in a segment is
/// taken as corruption rather than trusted for an allocation.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Length and checksum in front of every payload.
const HEADER_BYTES: u64 = 8;
const SEGMENT_SUFFIX: &str = ".spool";
const CORRUPT_SUFFIX: &str = ".corrupt";
const SEQ_DIGITS: usize = 20;
/// Large enough that replaying a segment costs few system calls, small
/// enough not to matter next to a batch.
const READ_BUFFER_BYTES: usize = 64 * 1024;

const BYTES_GAUGE: &str = "switchboard_recorder_spool_bytes";
const CORRUPT_COUNTER: &str = "switchboard_recorder_spool_corrupt_total";

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

/// Name of the lock file in the spool directory.
const LOCK_FILE: &str = ".lock";

/// Takes the spool directory's exclusive lock, or says who has it. The lock
/// goes with the process, so a crashed owner never leaves it behind.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SpoolError::io(format!("opening {}", path.display()), source))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(SpoolError::io(
            format!(
                "spool directory {} is in use by another process (each replica needs its own)",
                dir.display()
            ),
            io::Error::from(io::ErrorKind::WouldBlock),
        )),
        Err(fs::TryLockError::Error(source)) => Err(SpoolError::io(
            format!("locking {}", path.display()),
            source,
        )),
    }
}

impl Spool {
    /// Opens (or creates) the spool in `settings.dir`. Existing segments are
    /// kept for replay; appends always start a NEW segment (never append after
    /// an existing file's tail, which may be torn by a crash).
    ///
    /// Empty segments at the front (left by a crash between creating a
    /// segment and writing to it) are removed.
    pub fn open(settings: SpoolSettings) -> Result<Spool, SpoolError> {
        let dir = settings.dir.clone();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|source| {
                SpoolError::io(
                    format!("creating spool directory {}", dir.display()),
                    source,
                )
            })?;
            // the directory's own name must survive a power loss, or every
            // segment in it goes with it
            let parent = match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            sync_dir(parent)?;
        }

        let lock = lock_dir(&dir)?;
        let entries = fs::read_dir(&dir).map_err(|source| {
            SpoolError::io(format!("listing spool directory {}", dir.display()), source)
        })?;
        let mut segments = Vec::new();
        let mut highest_seq = 0;
        for entry in entries {
            let entry = entry.map_err(|source| {
                SpoolError::io(format!("listing spool directory {}", dir.display()), source)
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some((seq, corrupt)) = parse_segment_name(&name) else {
                continue;
            };
            // even names that are not live segments reserve their number, so
            // no new segment (or its `.corrupt` rename) collides with them
            highest_seq = highest_seq.max(seq);
            if corrupt {
                continue;
            }
            let metadata = entry.metadata().map_err(|source| {
                SpoolError::io(format!("reading spool segment {name}"), source)
            })?;
            if !metadata.is_file() {
                continue;
            }
            segments.push(Segment {
                seq,
                name,
                len: metadata.len(),
                damaged_at: None,
            });
        }
        segments.sort_by_key(|segment| segment.seq);
        if !segments.is_empty() {
            tracing::debug!(
                dir = %dir.display(),
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

    fn append_group(&mut self, records: &[Vec<u8>]) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(record) = records.iter().find(|r| r.len() > MAX_RECORD_BYTES) {
            return Err(SpoolError::RecordTooLarge(record.len()));
        }
        let needed: u64 = records
            .iter()
            .map(|record| HEADER_BYTES + record.len() as u64)
            .sum();
        let held = self.bytes();
        if held.saturating_add(needed) > self.settings.max_bytes {
            return Err(SpoolError::Full {
                held,
                needed,
                max_bytes: self.settings.max_bytes,
            });
        }
        let buffer = frame(records, needed)?;

        let fits = self.active.is_some()
            && self.segments.back().is_some_and(|segment| {
                segment.len.saturating_add(needed) <= self.settings.segment_bytes
            });
        // a batch too big for any segment still gets one of its own, which
        // then takes nothing more
        let mut file = match self.active.take() {
            Some(file) if fits => file,
            _ => self.start_segment()?,
        };
        let previous_len = self.segments.back().map_or(0, |segment| segment.len);
        let written = file.write_all(&buffer).and_then(|()| file.sync_data());
        let Some(segment) = self.segments.back_mut() else {
            // start_segment always leaves the segment it opened last
            return Err(SpoolError::io(
                "appending to the spool",
                io::Error::other("no segment to append to"),
            ));
        };
        match written {
            Ok(()) => {
                segment.len += needed;
                self.active = Some(file);
                Ok(())
            }
            Err(source) => {
                // not put back in `active`: whatever happened to this file,
                // the next append starts a clean one
                segment.len = cut_back(&file, &segment.name, previous_len, needed);
                Err(SpoolError::io(
                    format!(
                        "appending {} records to spool segment {}",
                        records.len(),
                        segment.name
                    ),
                    source,
                ))
            }
        }
    }

    /// Creates the next segment (its name made durable) and returns it open
    /// for appending.
    fn start_segment(&mut self) -> Result<File, SpoolError> {
        let seq = self.next_seq;
        self.next_seq = seq.saturating_add(1);
        let name = segment_name(seq);
        let path = self.settings.dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| {
                SpoolError::io(format!("creating spool segment {}", path.display()), source)
            })?;
        if let Err(error) = sync_dir(&self.settings.dir) {
            // records synced into a file whose name may vanish would be an
            // empty promise; an empty file left behind is harmless
            if let Err(remove_error) = fs::remove_file(&path) {
                tracing::warn!(
                    error = %remove_error,
                    path = %path.display(),
                    "cannot remove a spool segment that was never used"
                );
            }
            return Err(error);
        }
        self.segments.push_back(Segment {
            seq,
            name,
            len: 0,
            damaged_at: None,
        });
        Ok(file)
    }

    fn read_records(&mut self, max_records: usize) -> Result<Vec<Vec<u8>>, SpoolError> {
        self.pending.clear();
        self.release_consumed()?;
        let mut records = Vec::new();
        let mut positions = VecDeque::new();
        let mut index = 0;
        while records.len() < max_records && index < self.segments.len() {
            self.read_segment(index, max_records, &mut records, &mut positions)?;
            index += 1;
        }
        self.pending = positions;
        if let Err(error) = self.release_consumed() {
            tracing::warn!(%error, "cannot retire a spool segment; retried later");
        }
        Ok(records)
    }

    /// Reads the valid records of one segment from where the cursor leaves
    /// it, until `max_records` are gathered or the segment ends; damage ends
    /// it for good.
    fn read_segment(
        &mut self,
        index: usize,
        max_records: usize,
        records: &mut Vec<Vec<u8>>,
        positions: &mut VecDeque<Position>,
    ) -> Result<(), SpoolError> {
        let segment = &self.segments[index];
        let (seq, start, end) = (segment.seq, self.start_of(segment), segment.readable_end());
        if start >= end {
            return Ok(());
        }
        let path = self.settings.dir.join(&segment.name);
        let context = || format!("reading spool segment {}", path.display());
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                // removed behind our back: what it held is gone, and waiting
                // would block everything behind it forever
                self.mark_damaged(index, start, "segment file is missing");
                return Ok(());
            }
            Err(source) => return Err(SpoolError::io(context(), source)),
        };
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        reader
            .seek(SeekFrom::Start(start))
            .map_err(|source| SpoolError::io(context(), source))?;

        let mut offset = start;
        let mut damage = None;
        while offset < end && records.len() < max_records {
            match read_record(&mut reader, end - offset) {
                Ok(Ok(payload)) => {
                    offset += HEADER_BYTES + payload.len() as u64;
                    records.push(payload);
                    positions.push_back(Position { seq, offset });
                }
                Ok(Err(reason)) => {
                    damage = Some(reason);
                    break;
                }
                Err(source) => return Err(SpoolError::io(context(), source)),
            }
        }
        if let Some(reason) = damage {
            self.mark_damaged(index, offset, reason);
        }
        Ok(())
    }

    /// Records that the segment at `index` cannot be trusted from `offset`
    /// on.
    fn mark_damaged(&mut self, index: usize, offset: u64, reason: &'static str) {
        let is_last = index + 1 == self.segments.len();
        let segment = &mut self.segments[index];
        segment.damaged_at = Some(offset);
        tracing::error!(
            segment = %segment.name,
            offset,
            skipped = segment.len.saturating_sub(offset),
            reason,
            "spool segment damaged; skipping the rest of it"
        );
        metrics::counter!(CORRUPT_COUNTER).increment(1);
        if is_last {
            // records appended behind the damage would be skipped with it
            self.active = None;
        }
    }

    fn consume_records(&mut self, n: usize) -> Result<(), SpoolError> {
        if n > self.pending.len() {
            tracing::warn!(
                requested = n,
                available = self.pending.len(),
                "asked to consume more spool records than were read; consuming those read"
            );
        }
        let n = n.min(self.pending.len());
        if let Some(&last) = n.checked_sub(1).and_then(|i| self.pending.get(i)) {
            self.pending.drain(..n);
            self.cursor = self.cursor.max(last);
        }
        self.release_consumed()
    }

    /// Retires the oldest segments while nothing in them is left to read:
    /// deleted, or renamed to `.corrupt` if damage was found in them.
    fn release_consumed(&mut self) -> Result<(), SpoolError> {
        let mut retired = false;
        let mut result = Ok(());
        while let Some(segment) = self.segments.front() {
            if self.start_of(segment) < segment.readable_end() {
                break;
            }
            if self.segments.len() == 1 {
                // the spool is empty; the next append starts afresh
                self.active = None;
            }
            if let Err(error) = self.retire(segment) {
                result = Err(error);
                break;
            }
            self.segments.pop_front();
            retired = true;
        }
        if retired {
            if let Err(error) = sync_dir(&self.settings.dir) {
                // a retired segment may come back after a crash and be
                // replayed again, which the idempotent writes absorb
                tracing::warn!(%error, "cannot make the removal of spool segments durable");
            }
        }
        result
    }

    fn retire(&self, segment: &Segment) -> Result<(), SpoolError> {
        let path = self.settings.dir.join(&segment.name);
        let Some(damaged_at) = segment.damaged_at else {
            return match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(SpoolError::io(
                    format!("deleting consumed spool segment {}", path.display()),
                    source,
                )),
            };
        };
        let kept = self
            .settings
            .dir
            .join(format!("{}{CORRUPT_SUFFIX}", segment.name));
        match fs::rename(&path, &kept) {
            Ok(()) => {
                tracing::error!(
                    path = %kept.display(),
                    damaged_at,
                    "damaged spool segment consumed up to the damage; kept for inspection"
                );
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SpoolError::io(
                format!(
                    "renaming damaged spool segment {} to {}",
                    path.display(),
                    kept.display()
                ),
                source,
            )),
        }
    }

    /// Where reading of `segment` resumes.
    fn start_of(&self, segment: &Segment) -> u64 {
        match segment.seq.cmp(&self.cursor.seq) {
            std::cmp::Ordering::Less => segment.readable_end(),
            std::cmp::Ordering::Equal => self.cursor.offset,
            std::cmp::Ordering::Greater => 0,
        }
    }

    fn publish(&self) {
        metrics::gauge!(BYTES_GAUGE).set(self.bytes() as f64);
    }
}

/// Frames `records` into one buffer of `len` bytes, ready for one write.
fn frame(records: &[Vec<u8>], len: u64) -> Result<Vec<u8>, SpoolError> {
    let mut buffer = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    for record in records {
        let length = u32::try_from(record.len())
            .map_err(|_| SpoolError::RecordTooLarge(record.len()))?
            .to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&length);
        crc.update(record);
        buffer.extend_from_slice(&length);
        buffer.extend_from_slice(&crc.finalize().to_le_bytes());
        buffer.extend_from_slice(record);
    }
    Ok(buffer)
}

/// Reads and validates one record with `remaining` bytes left in the
/// segment. The inner error names the damage that ends the segment; the
/// outer one is the file system failing.
fn read_record(
    reader: &mut impl Read,
    remaining: u64,
) -> io::Result<Result<Vec<u8>, &'static str>> {
    if remaining < HEADER_BYTES {
        return Ok(Err("torn record header"));
    }
    let mut header = [0; HEADER_BYTES as usize];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        // shorter than the length we knew: cut behind our back
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(Err("torn record header"))
        }
        Err(error) => return Err(error),
    }
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    let length = u32::from_le_bytes([l0, l1, l2, l3]);
    let stored_crc = u32::from_le_bytes([c0, c1, c2, c3]);
    if u64::from(length) > MAX_RECORD_BYTES as u64 {
        return Ok(Err("record length over the limit"));
    }
    if HEADER_BYTES + u64::from(length) > remaining {
        return Ok(Err("torn record payload"));
    }
    let mut payload = vec![0; length as usize];
    match reader.read_exact(&mut payload) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(Err("torn record payload"))
        }
        Err(error) => return Err(error),
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[..4]);
    crc.update(&payload);
    if crc.finalize() != stored_crc {
        return Ok(Err("record checksum mismatch"));
    }
    Ok(Ok(payload))
}

/// Cuts a failed append back off `file` and returns the segment's length
/// afterwards. If the cut fails, the partial tail stays and is skipped as
/// damage when read.
fn cut_back(file: &File, name: &str, previous_len: u64, attempted: u64) -> u64 {
    match file.set_len(previous_len).and_then(|()| file.sync_data()) {
        Ok(()) => previous_len,
        Err(error) => {
            tracing::error!(
                %error,
                segment = name,
                "cannot cut a failed append off the spool segment; its tail will be skipped as damaged"
            );
            // the length is only used to account and to bound reads; an
            // overestimate is caught as a torn record
            file.metadata()
                .map_or(previous_len + attempted, |metadata| metadata.len())
        }
    }
}

fn segment_name(seq: u64) -> String {
    format!("{seq:0width$}{SEGMENT_SUFFIX}", width = SEQ_DIGITS)
}

/// The sequence number of a segment name, and whether it is a kept
/// `.corrupt` one; `None` for files that are not the spool's.
fn parse_segment_name(name: &str) -> Option<(u64, bool)> {
    let (stem, corrupt) = match name.strip_suffix(CORRUPT_SUFFIX) {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    let digits = stem.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(|seq| (seq, corrupt))
}

/// Makes the creation, removal or renaming of names in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| SpoolError::io(format!("syncing directory {}", dir.display()), source))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame size of every `record(i)` for i < 10_000.
    const FRAME: u64 = HEADER_BYTES + 11;

    fn settings(dir: &Path, max_bytes: u64, segment_bytes: u64) -> SpoolSettings {
        SpoolSettings {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
        }
    }

    /// Three frames per segment: appending batches of three puts each batch
    /// in a segment of its own.
    fn three_per_segment(dir: &Path) -> SpoolSettings {
        settings(dir, 1 << 20, 3 * FRAME)
    }

    fn record(i: usize) -> Vec<u8> {
        format!("record {i:04}").into_bytes()
    }

    fn records(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
        range.map(record).collect()
    }

    fn concat(parts: &[Vec<Vec<u8>>]) -> Vec<Vec<u8>> {
        parts.concat()
    }

    fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(suffix))
            .collect();
        names.sort();
        names
    }

    /// Live segments only, not the unrelated files some tests add.
    fn segment_files(dir: &Path) -> Vec<String> {
        let mut names = files_ending(dir, SEGMENT_SUFFIX);
        names.retain(|name| parse_segment_name(name).is_some());
        names
    }

    fn corrupt_files(dir: &Path) -> Vec<String> {
        files_ending(dir, CORRUPT_SUFFIX)
    }

    /// Decodes a segment file independently of the spool's reader.
    fn decode_file(path: &Path) -> Vec<Vec<u8>> {
        let bytes = fs::read(path).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
            let payload = &bytes[at + 8..at + 8 + length];
            let mut checked = bytes[at..at + 4].to_vec();
            checked.extend_from_slice(payload);
            assert_eq!(
                crc32fast::hash(&checked),
                crc,
                "bad crc at {at} in {path:?}"
            );
            out.push(payload.to_vec());
            at += 8 + length;
        }
        out
    }

    fn read_all(spool: &mut Spool) -> Vec<Vec<u8>> {
        spool.read(usize::MAX).unwrap()
    }

    /// Three segments holding records 0..3, 3..6 and 6..9.
    fn three_segments(dir: &Path) -> Spool {
        let mut spool = Spool::open(three_per_segment(dir)).unwrap();
        for batch in [0..3, 3..6, 6..9] {
            spool.append(&records(batch)).unwrap();
        }
        assert_eq!(segment_files(dir).len(), 3);
        spool
    }

    fn flip_byte(path: &Path, offset: usize) {
        let mut bytes = fs::read(path).unwrap();
        bytes[offset] ^= 0x01;
        fs::write(path, bytes).unwrap();
    }

    fn truncate(path: &Path, len: u64) {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    #[test]
    fn on_disk_format_is_length_crc_payload() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(settings(dir.path(), 1 << 20, 1 << 20)).unwrap();
        spool.append(&[b"hi".to_vec(), Vec::new()]).unwrap();

        let files = segment_files(dir.path());
        assert_eq!(files, vec!["00000000000000000001.spool"]);
        let mut expected = vec![2, 0, 0, 0];
        expected.extend_from_slice(&crc32fast::hash(&[2, 0, 0, 0, b'h', b'i']).to_le_bytes());
        expected.extend_from_slice(b"hi");
        expected.extend_from_slice(&[0, 0, 0, 0]);
        expected.extend_from_slice(&crc32fast::hash(&[0, 0, 0, 0]).to_le_bytes());
        assert_eq!(fs::read(dir.path().join(&files[0])).unwrap(), expected);
        assert_eq!(spool.bytes(), expected.len() as u64);
        assert_eq!(read_all(&mut spool), vec![b"hi".to_vec(), Vec::new()]);
    }

    #[test]
    fn round_trip_in_order_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = three_segments(dir.path());
        spool.append(&records(9..11)).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 4);
        assert_eq!(read_all(&mut spool), records(0..11));
        assert_eq!(spool.read(4).unwrap(), records(0..4));
        assert!(!spool.is_empty());
        drop(spool);

        let mut spool = Spool::open(three_per_segment(dir.path())).unwrap();
        assert!(!spool.is_empty());
        assert_eq!(spool.bytes(), 11 * FRAME);
        assert_eq!(read_all(&mut spool), records(0..11));
        // a new run never appends to an old segment, however much room it has
        spool.append(&records(11..12)).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 5);
        assert_eq!(read_all(&mut spool), records(0..12));
    }

    #[test]
    fn read_without_consume_returns_the_same_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = three_segments(dir.path());
        let first = spool.read(5).unwrap();
        assert_eq!(first, records(0..5));
        assert_eq!(spool.read(5).unwrap(), first);
        assert_eq!(spool.read(0).unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(spool.read(5).unwrap(), first);
        assert_eq!(spool.bytes(), 9 * FRAME);
    }

    #[test]
    fn reads_see_appends_made_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(settings(dir.path(), 1 << 20, 1 << 20)).unwrap();
        spool.append(&records(0..2)).unwrap();
        assert_eq!(read_all(&mut spool), records(0..2));
        spool.append(&records(2..4)).unwrap();
        assert_eq!(read_all(&mut spool), records(0..4));
        spool.consume(2).unwrap();
        assert_eq!(read_all(&mut spool), records(2..4));
    }

    #[test]
    fn consume_deletes_finished_segments_and_an_empty_spool_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = three_segments(dir.path());
        let before = segment_files(dir.path());

        assert_eq!(spool.read(4).unwrap(), records(0..4));
        spool.consume(4).unwrap();
        assert_eq!(segment_files(dir.path()), before[1..]);
        assert_eq!(spool.bytes(), 6 * FRAME);
        assert_eq!(read_all(&mut spool), records(4..9));

        spool.consume(5).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(segment_files(dir.path()), Vec::<String>::new());
        assert_eq!(read_all(&mut spool), Vec::<Vec<u8>>::new());

        // a fresh segment, numbered after the deleted ones
        spool.append(&records(9..10)).unwrap();
        assert_eq!(
            segment_files(dir.path()),
            vec!["00000000000000000004.spool"]
        );
        assert_eq!(read_all(&mut spool), records(9..10));
    }

    #[test]
    fn consume_is_relative_to_the_last_read_and_capped_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = three_segments(dir.path());
        assert_eq!(spool.read(5).unwrap(), records(0..5));
        spool.consume(1).unwrap();
        spool.consume(2).unwrap();
        assert_eq!(spool.read(2).unwrap(), records(3..5));
        spool.consume(100).unwrap();
        assert_eq!(read_all(&mut spool), records(5..9));
        // nothing read since the last consume
        spool.consume(0).unwrap();
        assert_eq!(read_all(&mut spool), records(5..9));
    }

    #[test]
    fn batch_larger_than_a_segment_gets_a_segment_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(settings(dir.path(), 1 << 20, 2 * FRAME + 2)).unwrap();
        spool.append(&records(0..1)).unwrap();
        spool.append(&records(1..5)).unwrap();
        spool.append(&records(5..6)).unwrap();
        spool.append(&records(6..7)).unwrap();
        spool.append(&records(7..8)).unwrap();

        let files = segment_files(dir.path());
        let contents: Vec<_> = files
            .iter()
            .map(|name| decode_file(&dir.path().join(name)))
            .collect();
        assert_eq!(
            contents,
            vec![records(0..1), records(1..5), records(5..7), records(7..8)]
        );
        assert_eq!(read_all(&mut spool), records(0..8));
    }

    #[test]
    fn full_leaves_the_spool_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(settings(dir.path(), 5 * FRAME, 2 * FRAME)).unwrap();
        spool.append(&records(0..3)).unwrap();
        let files = segment_files(dir.path());
        let sizes: Vec<u64> = files
            .iter()
            .map(|name| fs::metadata(dir.path().join(name)).unwrap().len())
            .collect();

        match spool.append(&records(3..6)) {
            Err(SpoolError::Full {
                held,
                needed,
                max_bytes,
            }) => assert_eq!((held, needed, max_bytes), (3 * FRAME, 3 * FRAME, 5 * FRAME)),
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(spool.bytes(), 3 * FRAME);
        assert_eq!(segment_files(dir.path()), files);
        let sizes_after: Vec<u64> = files
            .iter()
            .map(|name| fs::metadata(dir.path().join(name)).unwrap().len())
            .collect();
        assert_eq!(sizes_after, sizes);
        assert_eq!(read_all(&mut spool), records(0..3));

        // exactly up to the limit is allowed
        spool.append(&records(3..5)).unwrap();
        assert_eq!(spool.bytes(), 5 * FRAME);
        assert!(matches!(
            spool.append(&records(5..6)),
            Err(SpoolError::Full { .. })
        ));
        assert_eq!(read_all(&mut spool), records(0..5));

        // consuming frees the room
        spool.consume(5).unwrap();
        spool.append(&records(5..8)).unwrap();
        assert_eq!(read_all(&mut spool), records(5..8));
    }

    #[test]
    fn record_too_large_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(settings(dir.path(), 4 << 20, 4 << 20)).unwrap();
        let too_large = vec![7; MAX_RECORD_BYTES + 1];
        match spool.append(&[record(0), too_large]) {
            Err(SpoolError::RecordTooLarge(size)) => assert_eq!(size, MAX_RECORD_BYTES + 1),
            other => panic!("expected RecordTooLarge, got {other:?}"),
        }
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(segment_files(dir.path()), Vec::<String>::new());

        let largest = vec![9; MAX_RECORD_BYTES];
        spool.append(&[record(1), largest.clone()]).unwrap();
        assert_eq!(read_all(&mut spool), vec![record(1), largest]);
    }

    #[test]
    fn torn_last_segment_keeps_good_records_and_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let spool = three_segments(dir.path());
        drop(spool);
        let last = dir.path().join(&segment_files(dir.path())[2]);
        // cut in the middle of the second record's payload: record 7
        truncate(&last, FRAME + HEADER_BYTES + 5);

        let mut spool = Spool::open(three_per_segment(dir.path())).unwrap();
        spool.append(&records(9..12)).unwrap();
        let expected = concat(&[records(0..7), records(9..12)]);
        assert_eq!(read_all(&mut spool), expected);
        // the damage is remembered, not reported again, and still skipped
        assert_eq!(read_all(&mut spool), expected);

        spool.consume(expected.len()).unwrap();
        assert!(spool.is_empty());
        assert_eq!(segment_files(dir.path()), Vec::<String>::new());
        assert_eq!(
            corrupt_files(dir.path()),
            vec!["00000000000000000003.spool.corrupt"]
        );
    }

    #[test]
    fn torn_middle_segment_skips_its_tail_and_reads_the_next() {
        // cut inside the second record's header, then inside its payload
        for cut in [FRAME + 5, FRAME + HEADER_BYTES + 3] {
            let dir = tempfile::tempdir().unwrap();
            drop(three_segments(dir.path()));
            let middle = dir.path().join(&segment_files(dir.path())[1]);
            truncate(&middle, cut);

            let mut spool = Spool::open(three_per_segment(dir.path())).unwrap();
            let expected = concat(&[records(0..4), records(6..9)]);
            assert_eq!(read_all(&mut spool), expected, "cut at {cut}");
            assert_eq!(spool.bytes(), 3 * FRAME + cut + 3 * FRAME);
            spool.consume(expected.len()).unwrap();
            assert!(spool.is_empty());
            assert_eq!(spool.bytes(), 0);
            assert_eq!(
                corrupt_files(dir.path()),
                vec!["00000000000000000002.spool.corrupt"]
            );
        }
    }

    #[test]
    fn flipped_byte_hides_the_rest_of_its_segment_only() {
        // the second record's length, checksum and payload
        for offset in [FRAME, FRAME + 5, FRAME + HEADER_BYTES + 4] {
            let dir = tempfile::tempdir().unwrap();
            let mut spool = three_segments(dir.path());
            let first = dir.path().join(&segment_files(dir.path())[0]);
            let original_len = fs::metadata(&first).unwrap().len();
            flip_byte(&first, offset as usize);

            let expected = concat(&[records(0..1), records(3..9)]);
            assert_eq!(read_all(&mut spool), expected, "flip at {offset}");
            assert_eq!(
                spool.read(2).unwrap(),
                concat(&[records(0..1), records(3..4)])
            );

            // still there until the good record before the damage is consumed
            spool.consume(1).unwrap();
            assert_eq!(
                corrupt_files(dir.path()),
                vec!["00000000000000000001.spool.corrupt"]
            );
            assert_eq!(segment_files(dir.path()).len(), 2);
            assert_eq!(spool.bytes(), 6 * FRAME);
            let kept = dir.path().join("00000000000000000001.spool.corrupt");
            assert_eq!(fs::metadata(kept).unwrap().len(), original_len);

            assert_eq!(read_all(&mut spool), records(3..9));
            spool.consume(6).unwrap();
            assert!(spool.is_empty());
            assert_eq!(segment_files(dir.path()), Vec::<String>::new());
        }
    }

    #[test]
    fn damage_in_the_active_segment_sends_appends_to_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(settings(dir.path(), 1 << 20, 1 << 20)).unwrap();
        spool.append(&records(0..3)).unwrap();
        let active = dir.path().join(&segment_files(dir.path())[0]);
        flip_byte(&active, (FRAME + HEADER_BYTES) as usize);

        assert_eq!(read_all(&mut spool), records(0..1));
        spool.append(&records(3..5)).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 2);
        assert_eq!(
            read_all(&mut spool),
            concat(&[records(0..1), records(3..5)])
        );
    }

    #[test]
    fn zero_filled_tail_after_a_crash_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(settings(dir.path(), 1 << 20, 1 << 20)).unwrap();
        spool.append(&records(0..2)).unwrap();
        drop(spool);
        let segment = dir.path().join(&segment_files(dir.path())[0]);
        truncate(&segment, 2 * FRAME + 4096);

        let mut spool = Spool::open(settings(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert_eq!(read_all(&mut spool), records(0..2));
        spool.consume(2).unwrap();
        assert!(spool.is_empty());
        assert_eq!(corrupt_files(dir.path()).len(), 1);
    }

    #[test]
    fn record_over_the_limit_is_refused_even_with_a_valid_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(settings(dir.path(), 4 << 20, 1 << 20)).unwrap();
        spool.append(&records(0..1)).unwrap();
        drop(spool);
        // frame a record the spool itself would refuse, checksum and all
        let oversized = vec![5; MAX_RECORD_BYTES + 1];
        let length = u32::try_from(oversized.len()).unwrap().to_le_bytes();
        let mut checked = length.to_vec();
        checked.extend_from_slice(&oversized);
        let mut bytes = fs::read(dir.path().join("00000000000000000001.spool")).unwrap();
        bytes.extend_from_slice(&length);
        bytes.extend_from_slice(&crc32fast::hash(&checked).to_le_bytes());
        bytes.extend_from_slice(&oversized);
        bytes.extend_from_slice(&frame(&records(1..2), FRAME).unwrap());
        fs::write(dir.path().join("00000000000000000001.spool"), bytes).unwrap();

        let mut spool = Spool::open(settings(dir.path(), 4 << 20, 1 << 20)).unwrap();
        assert_eq!(read_all(&mut spool), records(0..1));
    }

    #[test]
    fn segment_of_nothing_but_garbage_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("00000000000000000001.spool"), [0xab; 30]).unwrap();
        let mut spool = Spool::open(settings(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert!(!spool.is_empty(), "unknown until read");
        assert_eq!(spool.bytes(), 30);
        assert_eq!(read_all(&mut spool), Vec::<Vec<u8>>::new());
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(segment_files(dir.path()), Vec::<String>::new());
        assert_eq!(
            corrupt_files(dir.path()),
            vec!["00000000000000000001.spool.corrupt"]
        );
    }

    #[test]
    fn reopen_after_partial_consume_replays_the_partly_consumed_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = three_segments(dir.path());
        assert_eq!(spool.read(5).unwrap(), records(0..5));
        spool.consume(5).unwrap();
        assert_eq!(read_all(&mut spool), records(5..9));
        drop(spool);

        let mut spool = Spool::open(three_per_segment(dir.path())).unwrap();
        // records 3 and 4 again (at-least-once), never 0..3
        assert_eq!(read_all(&mut spool), records(3..9));
        assert_eq!(spool.bytes(), 6 * FRAME);
    }

    #[test]
    fn open_continues_numbering_and_ignores_unrelated_files() {
        let dir = tempfile::tempdir().unwrap();
        let unrelated = [
            "dead-letter.jsonl",
            "notes.spool",
            "123.spool",
            "00000000000000000009.spool.tmp",
        ];
        for name in unrelated {
            fs::write(dir.path().join(name), b"not a segment").unwrap();
        }
        fs::write(
            dir.path().join("00000000000000000007.spool.corrupt"),
            b"kept",
        )
        .unwrap();
        fs::write(dir.path().join("00000000000000000003.spool"), b"").unwrap();

        let mut spool = Spool::open(settings(dir.path(), 1 << 20, 1 << 20)).unwrap();
        // the empty segment a crash can leave holds nothing and is removed
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        spool.append(&records(0..2)).unwrap();
        assert_eq!(
            segment_files(dir.path()),
            vec!["00000000000000000008.spool"]
        );
        assert_eq!(read_all(&mut spool), records(0..2));
        spool.consume(2).unwrap();
        assert!(spool.is_empty());

        for name in unrelated {
            assert_eq!(fs::read(dir.path().join(name)).unwrap(), b"not a segment");
        }
        assert_eq!(
            fs::read(dir.path().join("00000000000000000007.spool.corrupt")).unwrap(),
            b"kept"
        );
    }

    #[test]
    fn open_creates_a_missing_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool").join("nested");
        let mut spool = Spool::open(settings(&dir, 1 << 20, 1 << 20)).unwrap();
        assert!(spool.is_empty());
        spool.append(&records(0..1)).unwrap();
        drop(spool);
        let mut spool = Spool::open(settings(&dir, 1 << 20, 1 << 20)).unwrap();
        assert_eq!(read_all(&mut spool), records(0..1));
    }

    #[test]
    fn one_process_at_a_time_owns_a_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(settings(dir.path(), 1 << 20, 1 << 20)).unwrap();
        let error = Spool::open(settings(dir.path(), 1 << 20, 1 << 20)).unwrap_err();
        assert!(
            error.to_string().contains("in use by another process"),
            "{error}"
        );
        drop(spool);
        Spool::open(settings(dir.path(), 1 << 20, 1 << 20)).expect("free once closed");
    }

    /// Captures the spool's two metrics; everything else goes nowhere.
    #[derive(Default)]
    struct TestRecorder {
        corrupt: std::sync::Arc<std::sync::atomic::AtomicU64>,
        bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }

    impl TestRecorder {
        fn corrupt(&self) -> u64 {
            self.corrupt.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn bytes(&self) -> f64 {
            f64::from_bits(self.bytes.load(std::sync::atomic::Ordering::Relaxed))
        }
    }

    impl metrics::Recorder for TestRecorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }

        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            if key.name() == CORRUPT_COUNTER {
                metrics::Counter::from_arc(self.corrupt.clone())
            } else {
                metrics::Counter::noop()
            }
        }

        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            if key.name() == BYTES_GAUGE {
                metrics::Gauge::from_arc(self.bytes.clone())
            } else {
                metrics::Gauge::noop()
            }
        }

        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn metrics_track_bytes_and_count_each_damaged_segment_once() {
        let recorder = TestRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            let dir = tempfile::tempdir().unwrap();
            let spool = three_segments(dir.path());
            assert_eq!(recorder.bytes(), (9 * FRAME) as f64);
            drop(spool);
            let files = segment_files(dir.path());
            flip_byte(&dir.path().join(&files[0]), (FRAME + HEADER_BYTES) as usize);
            truncate(&dir.path().join(&files[1]), FRAME + 3);

            let mut spool = Spool::open(three_per_segment(dir.path())).unwrap();
            assert_eq!(recorder.bytes(), (7 * FRAME + 3) as f64);
            let expected = concat(&[records(0..1), records(3..4), records(6..9)]);
            assert_eq!(read_all(&mut spool), expected);
            assert_eq!(read_all(&mut spool), expected);
            assert_eq!(recorder.corrupt(), 2);

            spool.consume(2).unwrap();
            assert_eq!(recorder.bytes(), (3 * FRAME) as f64);
            spool.append(&records(9..10)).unwrap();
            assert_eq!(recorder.bytes(), (4 * FRAME) as f64);
            assert_eq!(read_all(&mut spool), records(6..10));
            spool.consume(4).unwrap();
            assert_eq!(recorder.bytes(), 0.0);
            assert_eq!(recorder.corrupt(), 2);
        });
    }

    #[test]
    fn failed_write_returns_the_error_and_appends_go_to_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(settings(dir.path(), 1 << 20, 1 << 20)).unwrap();
        spool.append(&records(0..2)).unwrap();
        let name = segment_files(dir.path())[0].clone();
        // a handle that cannot write (nor be cut back) stands in for a
        // failing disk
        spool.active = Some(File::open(dir.path().join(&name)).unwrap());

        match spool.append(&records(2..4)) {
            Err(SpoolError::Io { context, .. }) => assert!(context.contains(&name), "{context}"),
            other => panic!("expected Io, got {other:?}"),
        }
        assert_eq!(spool.bytes(), 2 * FRAME);
        assert_eq!(read_all(&mut spool), records(0..2));

        spool.append(&records(4..5)).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 2);
        assert_eq!(
            read_all(&mut spool),
            concat(&[records(0..2), records(4..5)])
        );
    }

    #[test]
    fn cut_back_removes_a_partial_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let mut file = File::create(&path).unwrap();
        file.write_all(&frame(&records(0..1), FRAME).unwrap())
            .unwrap();
        file.write_all(b"half a rec").unwrap();
        assert_eq!(cut_back(&file, "segment", FRAME, 10), FRAME);
        assert_eq!(decode_file(&path), records(0..1));
    }

    #[test]
    fn empty_append_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(settings(dir.path(), 0, 0)).unwrap();
        spool.append(&[]).unwrap();
        assert!(spool.is_empty());
        assert_eq!(segment_files(dir.path()), Vec::<String>::new());
    }
}

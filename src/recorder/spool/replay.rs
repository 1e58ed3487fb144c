//! Replay: records read back in append order, each validated, the rest of
//! a segment skipped from the first damage on; and consuming what the
//! caller is done with, which moves the cursor that reading resumes from.

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, BufReader, Seek, SeekFrom},
};

use super::{
    format::{read_record, Record, HEADER_BYTES},
    space::CORRUPT_COUNTER,
    Position, Spool, SpoolError,
};

/// Large enough that replaying a segment costs few system calls, small
/// enough not to matter next to a batch.
const READ_BUFFER_BYTES: usize = 64 * 1024;

impl Spool {
    /// [`Spool::read`] but for the gauge it publishes afterwards.
    pub(super) fn read_records(&mut self, max_records: usize) -> Result<Vec<Vec<u8>>, SpoolError> {
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
                Ok(Record::Valid(payload)) => {
                    offset += HEADER_BYTES + payload.len() as u64;
                    records.push(payload);
                    positions.push_back(Position { seq, offset });
                }
                Ok(Record::Damaged(reason)) => {
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

    /// [`Spool::consume`] but for the gauge it publishes afterwards.
    pub(super) fn consume_records(&mut self, n: usize) -> Result<(), SpoolError> {
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
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::recorder::spool::test_support::*;

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
}

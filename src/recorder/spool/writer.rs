//! Appending: a group of records framed into one buffer, written with one
//! `write` and made durable with one `sync_data`, into the active segment
//! or a new one whose name is made durable first. A failed append is cut
//! back off its segment.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
};

use super::{
    dir::sync_dir,
    format::{frame, segment_name, HEADER_BYTES, MAX_RECORD_BYTES},
    Segment, Spool, SpoolError,
};

impl Spool {
    /// [`Spool::append`] but for the gauge it publishes afterwards.
    pub(super) fn append_group(&mut self, records: &[Vec<u8>]) -> Result<(), SpoolError> {
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
        self.check_room(needed)?;
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

#[cfg(test)]
mod tests {
    use std::{fs::File, io::Write};

    use super::*;
    use crate::recorder::spool::test_support::*;

    #[test]
    fn empty_append_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(settings(dir.path(), 0, 0)).unwrap();
        spool.append(&[]).unwrap();
        assert!(spool.is_empty());
        assert_eq!(segment_files(dir.path()), Vec::<String>::new());
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
}

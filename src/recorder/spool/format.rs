//! The on-disk format: how segment files are named, and how records are
//! framed in them and validated when read back (see the spool's
//! documentation for the layout).

use std::io::{self, Read};

use super::SpoolError;

/// Largest payload one record may carry; a length above it in a segment is
/// taken as corruption rather than trusted for an allocation.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Length and checksum in front of every payload.
pub(super) const HEADER_BYTES: u64 = 8;
pub(super) const SEGMENT_SUFFIX: &str = ".spool";
pub(super) const CORRUPT_SUFFIX: &str = ".corrupt";
const SEQ_DIGITS: usize = 20;

/// Frames `records` into one buffer of `len` bytes, ready for one write.
pub(super) fn frame(records: &[Vec<u8>], len: u64) -> Result<Vec<u8>, SpoolError> {
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

/// One record as read back.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Record {
    /// Whole, and its checksum matches.
    Valid(Vec<u8>),
    /// The damage that ends the segment here.
    Damaged(&'static str),
}

/// Reads and validates one record with `remaining` bytes left in the
/// segment. An error is the file system failing.
pub(super) fn read_record(reader: &mut impl Read, remaining: u64) -> io::Result<Record> {
    if remaining < HEADER_BYTES {
        return Ok(Record::Damaged("torn record header"));
    }
    let mut header = [0; HEADER_BYTES as usize];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        // shorter than the length we knew: cut behind our back
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(Record::Damaged("torn record header"))
        }
        Err(error) => return Err(error),
    }
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    let length = u32::from_le_bytes([l0, l1, l2, l3]);
    let stored_crc = u32::from_le_bytes([c0, c1, c2, c3]);
    if u64::from(length) > MAX_RECORD_BYTES as u64 {
        return Ok(Record::Damaged("record length over the limit"));
    }
    if HEADER_BYTES + u64::from(length) > remaining {
        return Ok(Record::Damaged("torn record payload"));
    }
    let mut payload = vec![0; length as usize];
    match reader.read_exact(&mut payload) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(Record::Damaged("torn record payload"))
        }
        Err(error) => return Err(error),
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[..4]);
    crc.update(&payload);
    if crc.finalize() != stored_crc {
        return Ok(Record::Damaged("record checksum mismatch"));
    }
    Ok(Record::Valid(payload))
}

pub(super) fn segment_name(seq: u64) -> String {
    format!("{seq:0width$}{SEGMENT_SUFFIX}", width = SEQ_DIGITS)
}

/// The sequence number of a segment name, and whether it is a kept
/// `.corrupt` one; `None` for files that are not the spool's.
pub(super) fn parse_segment_name(name: &str) -> Option<(u64, bool)> {
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

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::recorder::spool::{test_support::*, Spool};

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
}

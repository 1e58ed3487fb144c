//! Helpers shared by the spool's unit tests.

use std::{
    fs::{self, OpenOptions},
    path::Path,
};

use super::{
    format::{parse_segment_name, CORRUPT_SUFFIX, HEADER_BYTES, SEGMENT_SUFFIX},
    Spool, SpoolSettings,
};

/// Frame size of every `record(i)` for i < 10_000.
pub(super) const FRAME: u64 = HEADER_BYTES + 11;

pub(super) fn settings(dir: &Path, max_bytes: u64, segment_bytes: u64) -> SpoolSettings {
    SpoolSettings {
        dir: dir.to_path_buf(),
        max_bytes,
        segment_bytes,
    }
}

/// Three frames per segment: appending batches of three puts each batch
/// in a segment of its own.
pub(super) fn three_per_segment(dir: &Path) -> SpoolSettings {
    settings(dir, 1 << 20, 3 * FRAME)
}

pub(super) fn record(i: usize) -> Vec<u8> {
    format!("record {i:04}").into_bytes()
}

pub(super) fn records(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(record).collect()
}

pub(super) fn concat(parts: &[Vec<Vec<u8>>]) -> Vec<Vec<u8>> {
    parts.concat()
}

pub(super) fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Live segments only, not the unrelated files some tests add.
pub(super) fn segment_files(dir: &Path) -> Vec<String> {
    let mut names = files_ending(dir, SEGMENT_SUFFIX);
    names.retain(|name| parse_segment_name(name).is_some());
    names
}

pub(super) fn corrupt_files(dir: &Path) -> Vec<String> {
    files_ending(dir, CORRUPT_SUFFIX)
}

/// Decodes a segment file independently of the spool's reader.
pub(super) fn decode_file(path: &Path) -> Vec<Vec<u8>> {
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

pub(super) fn read_all(spool: &mut Spool) -> Vec<Vec<u8>> {
    spool.read(usize::MAX).unwrap()
}

/// Three segments holding records 0..3, 3..6 and 6..9.
pub(super) fn three_segments(dir: &Path) -> Spool {
    let mut spool = Spool::open(three_per_segment(dir)).unwrap();
    for batch in [0..3, 3..6, 6..9] {
        spool.append(&records(batch)).unwrap();
    }
    assert_eq!(segment_files(dir).len(), 3);
    spool
}

pub(super) fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

pub(super) fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

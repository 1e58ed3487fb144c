//! The spool's directory: created if missing (its name made durable),
//! locked by one process at a time, listed for the segments an earlier run
//! left, and synced so that the names created, removed or renamed in it
//! survive a power loss.

use std::{
    fs::{self, File, OpenOptions},
    io,
    path::Path,
};

use super::{format::parse_segment_name, Segment, SpoolError};

/// Name of the lock file in the spool directory.
const LOCK_FILE: &str = ".lock";

/// Creates `dir` if it is missing, and makes its name durable.
pub(super) fn ensure_dir(dir: &Path) -> Result<(), SpoolError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|source| {
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
    sync_dir(parent)
}

/// Takes the spool directory's exclusive lock, or says who has it. The lock
/// goes with the process, so a crashed owner never leaves it behind.
pub(super) fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
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

/// The live segments in `dir`, oldest first, and the highest sequence
/// number any segment name there takes, `.corrupt` ones included.
pub(super) fn scan_segments(dir: &Path) -> Result<(Vec<Segment>, u64), SpoolError> {
    let listing = |source: io::Error| {
        SpoolError::io(format!("listing spool directory {}", dir.display()), source)
    };
    let entries = fs::read_dir(dir).map_err(listing)?;
    let mut segments = Vec::new();
    let mut highest_seq = 0;
    for entry in entries {
        let entry = entry.map_err(listing)?;
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
        let metadata = entry
            .metadata()
            .map_err(|source| SpoolError::io(format!("reading spool segment {name}"), source))?;
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
    Ok((segments, highest_seq))
}

/// Makes the creation, removal or renaming of names in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| SpoolError::io(format!("syncing directory {}", dir.display()), source))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::recorder::spool::{test_support::*, Spool};

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
}

//! Space: the limit an append is checked against, the retirement of the
//! segments nothing is left to read in (deleted, or kept as `.corrupt`),
//! and the metrics that report what the spool holds.

use std::{fs, io};

use super::{dir::sync_dir, format::CORRUPT_SUFFIX, Segment, Spool, SpoolError};

pub(super) const BYTES_GAUGE: &str = "switchboard_recorder_spool_bytes";
pub(super) const CORRUPT_COUNTER: &str = "switchboard_recorder_spool_corrupt_total";

impl Spool {
    /// Refuses an append of `needed` bytes that would take the spool past
    /// its limit.
    pub(super) fn check_room(&self, needed: u64) -> Result<(), SpoolError> {
        let held = self.bytes();
        if held.saturating_add(needed) > self.settings.max_bytes {
            return Err(SpoolError::Full {
                held,
                needed,
                max_bytes: self.settings.max_bytes,
            });
        }
        Ok(())
    }

    /// Retires the oldest segments while nothing in them is left to read:
    /// deleted, or renamed to `.corrupt` if damage was found in them.
    pub(super) fn release_consumed(&mut self) -> Result<(), SpoolError> {
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
    pub(super) fn start_of(&self, segment: &Segment) -> u64 {
        match segment.seq.cmp(&self.cursor.seq) {
            std::cmp::Ordering::Less => segment.readable_end(),
            std::cmp::Ordering::Equal => self.cursor.offset,
            std::cmp::Ordering::Greater => 0,
        }
    }

    pub(super) fn publish(&self) {
        metrics::gauge!(BYTES_GAUGE).set(self.bytes() as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::recorder::spool::{format::HEADER_BYTES, test_support::*};

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
}

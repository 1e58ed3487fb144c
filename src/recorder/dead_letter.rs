//! The dead-letter file: events the database refuses, and spool records
//! that no longer decode, kept for an operator next to the spool, one JSON
//! object a line (see [`dead_letter_path`]).
//!
//! The file is opened, appended to and synced on a blocking thread, never
//! on a runtime worker. [`keep`] returns once the sync did: the batcher
//! awaits it, so a batch is acknowledged, or a spool record consumed, only
//! once what went to the dead letters from it is durable, as before.

use std::{
    fs::OpenOptions,
    io::{self, Write},
    path::Path,
    sync::{Mutex, PoisonError},
    time::SystemTime,
};

use super::{dead_letter_path, event::Event};

/// A dead letter for an event the database refuses.
pub(super) fn refused(event: &Event, reason: &str) -> serde_json::Value {
    serde_json::json!({ "reason": reason, "event": event })
}

/// A dead letter for a spool record that does not decode, kept in hex.
pub(super) fn undecodable(record: &[u8], reason: &str) -> serde_json::Value {
    let hex: String = record.iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({ "reason": reason, "record_hex": hex })
}

/// Appends `letters` to the dead-letter file in `spool_dir`, stamped with
/// the time, and syncs it. Returns once they are durable, or once writing
/// them failed; either way each is logged at error (a letter that could
/// not be written is logged whole, the only place it is then kept).
///
/// If the caller stops waiting (a write cut short), the blocking thread
/// still finishes and logs; nothing is left half-written.
pub(super) async fn keep(spool_dir: &Path, letters: Vec<serde_json::Value>) {
    if letters.is_empty() {
        return;
    }
    let at = serde_json::json!(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
    let lines: Vec<String> = letters
        .into_iter()
        .map(|mut letter| {
            letter["at"] = at.clone();
            letter.to_string()
        })
        .collect();
    let letters = lines.len();
    let path = dead_letter_path(spool_dir);
    let written = tokio::task::spawn_blocking(move || write_and_log(&path, &lines)).await;
    if let Err(error) = written {
        tracing::error!(
            %error,
            letters,
            "the dead-letter file's writer failed; events refused by the database may be lost"
        );
    }
}

fn write_and_log(path: &Path, lines: &[String]) {
    match append_synced(path, lines) {
        Ok(()) => {
            for _ in lines {
                tracing::error!(path = %path.display(), "event refused by the database, kept in the dead-letter file");
            }
        }
        Err(error) => {
            for line in lines {
                tracing::error!(%error, %line, "event refused by the database and the dead-letter file cannot be written");
            }
        }
    }
}

/// Appends `lines` with one write and makes them durable with one sync.
/// One writer at a time: a writer whose caller stopped waiting may still
/// be running when the next one starts, and their lines must not mix.
fn append_synced(path: &Path, lines: &[String]) -> io::Result<()> {
    static WRITER: Mutex<()> = Mutex::new(());
    let _writing = WRITER.lock().unwrap_or_else(PoisonError::into_inner);
    let mut buffer = String::new();
    for line in lines {
        buffer.push_str(line);
        buffer.push('\n');
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(buffer.as_bytes())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(dir: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dead_letter_path(dir))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
            .collect()
    }

    #[tokio::test]
    async fn letters_are_in_the_file_when_keep_returns() {
        let dir = tempfile::tempdir().unwrap();
        keep(dir.path(), vec![undecodable(&[0xde, 0xad], "bad record")]).await;
        keep(dir.path(), Vec::new()).await;
        keep(
            dir.path(),
            vec![undecodable(&[1], "first"), undecodable(&[2], "second")],
        )
        .await;

        let kept = letters(dir.path());
        let reasons: Vec<&str> = kept.iter().map(|l| l["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, ["bad record", "first", "second"]);
        assert_eq!(kept[0]["record_hex"], "dead");
        assert!(kept.iter().all(|l| l["at"].is_string()), "{kept:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_at_once_never_mix_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let dir = dir.path().to_path_buf();
                tokio::spawn(async move {
                    let batch = (0..50)
                        .map(|i| undecodable(&[0xab; 512], &format!("writer {writer} letter {i}")))
                        .collect();
                    keep(&dir, batch).await;
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        assert_eq!(letters(dir.path()).len(), 8 * 50);
    }
}

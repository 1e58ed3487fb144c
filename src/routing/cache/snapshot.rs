//! Last-known-good routes: what L1 holds, written to a file on the spool's
//! volume, so that a replica restarted while the database cannot be read
//! serves what it served before instead of `UNAVAILABLE` for everything.
//!
//! * **What is kept**: every number L1 holds a route for, with its agent
//!   and organization (each part once), each with the time it was read
//!   from the database. Unknown numbers are not kept, nor are numbers
//!   answered through a number range (which stale-if-error does not serve
//!   either: a range's agent and organization are read fresh).
//! * **When it is written**: every interval while the invalidation feed
//!   confirms L1 (and something changed), and at shutdown; atomically (a
//!   temporary file, synced, renamed over the last one, the directory
//!   synced), so a crash leaves the old copy or the new one.
//! * **Checked when read**: a magic word naming the format's version, the
//!   length and a CRC-32 of the contents. A file of another version, torn,
//!   or corrupt is set aside (renamed `*.corrupt`) and not used.
//! * **Versioned against the change log**: the copy names the last change
//!   the feed had applied when it was taken. A replica that restores it
//!   replays the log from there when the database answers again (or, when
//!   the log no longer reaches back that far, flushes L1), exactly as after
//!   any reconnect.
//! * **Bounded like stale-if-error**: restored entries keep their age. They
//!   are served only while the database cannot be read, and only up to the
//!   cache's `max_stale` after they were read; a copy older than that is
//!   not restored at all.

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{storage::Binding, Entry, RouteCache};
use crate::domain::{Agent, AgentId, OrgId, Organization, Provisioned, Resolver, Route, E164};

/// The file's name in the spool directory.
pub const FILE_NAME: &str = "routes.lkg";
/// The first bytes of the file; the digit is the format's version.
const MAGIC: &[u8; 8] = b"SBROUTE1";
/// Magic, length (u64) and CRC-32 (u32), little-endian.
const HEADER_BYTES: usize = 8 + 8 + 4;

/// A copy of L1's routes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the copy was taken, ms since the Unix epoch.
    pub written_at_ms: u64,
    /// The last change of the change log applied to L1 when it was taken.
    pub change_id: Option<i64>,
    organizations: Vec<Saved<Organization>>,
    agents: Vec<Saved<Agent>>,
    numbers: Vec<Saved<SavedBinding>>,
}

/// A value and when it was read from the database (ms since the epoch).
#[derive(Debug, Serialize, Deserialize)]
struct Saved<T> {
    value: T,
    read_at_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedBinding {
    number: String,
    number_active: bool,
    org_id: OrgId,
    agent_id: AgentId,
    /// `phone_numbers.id` or `number_ranges.id`.
    provisioned_id: Uuid,
    /// The range's prefix, for a number of a range.
    range_prefix: Option<String>,
    concurrency_limit: Option<u32>,
}

/// Why a file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a route copy of this version, or is torn or corrupt: {why}")]
    Unusable { path: PathBuf, why: String },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `at` (an instant of this process) as ms since the epoch.
fn epoch_ms(at: Instant) -> u64 {
    now_ms().saturating_sub(at.elapsed().as_millis() as u64)
}

/// An instant of this process as long ago as `ms` (since the epoch) is;
/// `None` when it is further back than the process's clock reaches.
fn instant_of(ms: u64) -> Option<Instant> {
    let age = Duration::from_millis(now_ms().saturating_sub(ms));
    Instant::now().checked_sub(age)
}

impl<T> Saved<T> {
    fn of(value: T, entry_loaded_at: Instant) -> Self {
        Self {
            value,
            read_at_ms: epoch_ms(entry_loaded_at),
        }
    }
}

impl Snapshot {
    /// How old the copy is.
    pub fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.written_at_ms))
    }

    /// Numbers in the copy.
    pub fn numbers(&self) -> usize {
        self.numbers.len()
    }
}

impl<R: Resolver> RouteCache<R> {
    /// What L1 holds now, with `change_id`, the last change applied to it.
    pub fn last_known_good(&self, change_id: Option<i64>) -> Snapshot {
        let organizations = (self.organizations.iter())
            .map(|(_, entry)| Saved::of((*entry.value).clone(), entry.loaded_at))
            .collect();
        let agents = (self.agents.iter())
            .map(|(_, entry)| Saved::of((*entry.value).clone(), entry.loaded_at))
            .collect();
        let numbers = (self.numbers.iter())
            .filter_map(|(number, entry)| {
                let binding = entry.value.as_ref()?;
                let (provisioned_id, range_prefix) = match &binding.provisioned {
                    Provisioned::Number { id, .. } => (*id, None),
                    Provisioned::Range { id, prefix, .. } => (*id, Some(prefix.to_string())),
                };
                Some(Saved::of(
                    SavedBinding {
                        number: number.as_str().to_owned(),
                        number_active: binding.number_active,
                        org_id: binding.org_id,
                        agent_id: binding.agent_id,
                        provisioned_id,
                        range_prefix,
                        concurrency_limit: binding.provisioned.concurrency_limit(),
                    },
                    entry.loaded_at,
                ))
            })
            .collect();
        Snapshot {
            written_at_ms: now_ms(),
            change_id,
            organizations,
            agents,
            numbers,
        }
    }

    /// Whether L1 holds a route for any number (a "no such number" is no
    /// route).
    pub fn holds_routes(&self) -> bool {
        self.numbers.iter().any(|(_, entry)| entry.value.is_some())
    }

    /// Changes to what L1 holds since it was made: evictions, and the count
    /// of what it holds. Equal readings mean no copy is needed.
    pub fn contents_version(&self) -> (u64, u64) {
        (
            self.generation.load(Ordering::Acquire),
            self.numbers.entry_count(),
        )
    }

    /// Puts a copy's routes back in L1, each as old as it was when read
    /// (none older than `max_stale`). Returns how many numbers it restored.
    pub async fn restore(&self, snapshot: Snapshot) -> usize {
        if !self.enabled() {
            return 0;
        }
        let max_stale = self.settings.max_stale;
        let young = |ms: u64| instant_of(ms).filter(|at| at.elapsed() < max_stale);
        let mut organizations = std::collections::HashMap::new();
        for saved in snapshot.organizations {
            if let Some(at) = young(saved.read_at_ms) {
                organizations.insert(saved.value.id, (Arc::new(saved.value), at));
            }
        }
        let mut agents = std::collections::HashMap::new();
        for saved in snapshot.agents {
            if let Some(at) = young(saved.read_at_ms) {
                agents.insert(saved.value.id, (Arc::new(saved.value), at));
            }
        }
        let generation = self.generation.load(Ordering::Acquire);
        let mut restored = 0;
        for saved in snapshot.numbers {
            let binding = saved.value;
            let (Some(read_at), Ok(number)) = (
                young(saved.read_at_ms),
                E164::from_canonical(&binding.number),
            ) else {
                continue;
            };
            let (Some((organization, org_at)), Some((agent, agent_at))) = (
                organizations.get(&binding.org_id),
                agents.get(&binding.agent_id),
            ) else {
                continue;
            };
            let provisioned = match binding.range_prefix {
                None => Provisioned::Number {
                    id: binding.provisioned_id,
                    concurrency_limit: binding.concurrency_limit,
                },
                Some(prefix) => Provisioned::Range {
                    id: binding.provisioned_id,
                    prefix: prefix.into(),
                    concurrency_limit: binding.concurrency_limit,
                },
            };
            // a route is as old as its oldest part
            let loaded_at = read_at.min(*org_at).min(*agent_at);
            let route = Route {
                number,
                number_active: binding.number_active,
                provisioned,
                organization: organization.clone(),
                agent: agent.clone(),
            };
            self.keep_restored(route, loaded_at).await;
            restored += 1;
        }
        if self.generation.load(Ordering::Acquire) != generation {
            // a change arrived meanwhile: the copy may predate it
            self.flush();
            return 0;
        }
        restored
    }

    /// Caches a restored route read at `loaded_at`, its parts first.
    async fn keep_restored(&self, route: Route, loaded_at: Instant) {
        let binding = Binding::of(&route);
        self.agents
            .insert(binding.agent_id, Entry::new(route.agent, loaded_at))
            .await;
        self.organizations
            .insert(binding.org_id, Entry::new(route.organization, loaded_at))
            .await;
        self.numbers
            .insert(route.number, Entry::new(Some(binding), loaded_at))
            .await;
    }
}

/// Writes `snapshot` to `dir`/[`FILE_NAME`], atomically and durably.
/// Blocking: run it off the async threads.
pub fn write(dir: &Path, snapshot: &Snapshot) -> io::Result<u64> {
    let contents = rmp_serde::to_vec(snapshot).map_err(io::Error::other)?;
    let mut file_bytes = Vec::with_capacity(HEADER_BYTES + contents.len());
    file_bytes.extend_from_slice(MAGIC);
    file_bytes.extend_from_slice(&(contents.len() as u64).to_le_bytes());
    file_bytes.extend_from_slice(&crc32fast::hash(&contents).to_le_bytes());
    file_bytes.extend_from_slice(&contents);
    let path = dir.join(FILE_NAME);
    let temporary = dir.join(format!("{FILE_NAME}.tmp"));
    {
        let mut file = File::create(&temporary)?;
        file.write_all(&file_bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temporary, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(file_bytes.len() as u64)
}

/// Reads `dir`/[`FILE_NAME`]: `None` when there is none. An unusable file
/// (another version, torn, corrupt) is renamed `*.corrupt`, kept for a
/// look, and reported. Blocking.
pub fn read(dir: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    let path = dir.join(FILE_NAME);
    let mut bytes = Vec::new();
    match File::open(&path).and_then(|mut file| file.read_to_end(&mut bytes)) {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path, source }),
    }
    match decode(&bytes) {
        Ok(snapshot) => Ok(Some(snapshot)),
        Err(why) => {
            let _ = fs::rename(&path, dir.join(format!("{FILE_NAME}.corrupt")));
            Err(SnapshotError::Unusable { path, why })
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err("not this format".into());
    }
    let length = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let contents = &bytes[HEADER_BYTES..];
    if contents.len() as u64 != length {
        return Err(format!(
            "{} bytes of contents, {length} announced",
            contents.len()
        ));
    }
    if crc32fast::hash(contents) != crc {
        return Err("checksum mismatch".into());
    }
    rmp_serde::from_slice(contents).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;

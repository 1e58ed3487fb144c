//! The outage window: a shell command that starts an outage at a time into
//! the measured window, and one that ends it, and the phases RouteCall's
//! latency is split into.

use std::time::{Duration, Instant};

/// When the outage began (its start command was run) and when it was over
/// (its end command had finished).
#[derive(Clone, Copy, Debug)]
pub struct Outage {
    pub began: Instant,
    pub over: Instant,
}

/// The phases, as named in the results' labels.
pub const PHASES: [&str; 3] = ["before", "during", "after"];

impl Outage {
    /// The phase of a call due at `due`: an index into [`PHASES`].
    pub fn phase(&self, due: Instant) -> usize {
        if due < self.began {
            0
        } else if due < self.over {
            1
        } else {
            2
        }
    }

    /// How long each phase lasted within `(from, until)`.
    pub fn spans(&self, (from, until): (Instant, Instant)) -> [Duration; 3] {
        let clamp = |t: Instant| t.clamp(from, until);
        let (began, over) = (clamp(self.began), clamp(self.over));
        [began - from, over - began, until - over]
    }
}

/// Runs `start` at `at`, then `end` once `lasting` has passed since (and
/// `start` has finished); each through `sh -c`, waited for, and required to
/// succeed.
pub async fn window(
    at: Instant,
    lasting: Duration,
    start: String,
    end: String,
) -> anyhow::Result<Outage> {
    tokio::time::sleep_until(at.into()).await;
    let began = Instant::now();
    shell(start).await?;
    tokio::time::sleep_until((began + lasting).into()).await;
    shell(end).await?;
    Ok(Outage {
        began,
        over: Instant::now(),
    })
}

async fn shell(command: String) -> anyhow::Result<()> {
    eprintln!("lifecycle: outage: running {command:?}");
    let status = tokio::task::spawn_blocking({
        let command = command.clone();
        move || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .status()
        }
    })
    .await??;
    anyhow::ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

//! Opening hours: weekly windows in an IANA time zone, and dated exceptions
//! that replace a day's windows.
//!
//! Windows are local wall-clock times, read at the instant of the call in
//! the schedule's zone: "Monday 09:00–17:00" is open from 09:00 local
//! whatever the UTC offset that Monday, so a DST change moves the window in
//! UTC and never in local time. An instant is converted with the time zone
//! database (`jiff`), never by adding a fixed offset.

use std::collections::BTreeMap;

use jiff::{civil, tz::TimeZone, Timestamp};

/// Seconds in a day; a window may close at `24:00` (86 400).
pub const DAY_SECONDS: u32 = 86_400;

/// A window of one day: seconds since local midnight, `[opens, closes)`.
pub type Window = (u32, u32);

/// A schedule, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    /// The IANA name, as written.
    pub time_zone_name: String,
    /// `None` when this daemon's time zone database does not know the name
    /// (a zone newer than its copy): the schedule cannot be evaluated.
    time_zone: Option<TimeZone>,
    /// Windows by ISO weekday (index 0 = Monday).
    weekly: [Vec<Window>; 7],
    /// Local dates whose windows replace the weekly ones (an empty list:
    /// closed all day).
    exceptions: BTreeMap<civil::Date, Vec<Window>>,
}

/// What a schedule says at one instant.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleState {
    /// Read in the schedule's time zone: whether it is open, and the local
    /// time used (for explanations).
    Known {
        open: bool,
        local: civil::DateTime,
        /// The day's windows come from a dated exception.
        exception: bool,
    },
    /// The time zone is unknown to this daemon.
    UnknownTimeZone,
}

impl Schedule {
    /// Builds a schedule from stored windows (`(weekday 1–7, opens, closes)`)
    /// and exceptions (`(date, opens, closes)`, no hours: closed all day).
    pub fn new(
        name: String,
        time_zone_name: String,
        windows: &[(u8, u32, u32)],
        exceptions: &[(civil::Date, Option<u32>, Option<u32>)],
    ) -> Self {
        let time_zone = TimeZone::get(&time_zone_name).ok();
        let mut weekly: [Vec<Window>; 7] = Default::default();
        for &(weekday, opens, closes) in windows {
            if let Some(day) = weekly.get_mut(usize::from(weekday.clamp(1, 7) - 1)) {
                day.push((opens, closes.min(DAY_SECONDS)));
            }
        }
        let mut by_date: BTreeMap<civil::Date, Vec<Window>> = BTreeMap::new();
        for &(date, opens, closes) in exceptions {
            let day = by_date.entry(date).or_default();
            if let (Some(opens), Some(closes)) = (opens, closes) {
                day.push((opens, closes.min(DAY_SECONDS)));
            }
        }
        Self {
            name,
            time_zone_name,
            time_zone,
            weekly,
            exceptions: by_date,
        }
    }

    /// Whether the time zone is known to this daemon.
    pub fn time_zone_known(&self) -> bool {
        self.time_zone.is_some()
    }

    /// What the schedule says at `now`.
    pub fn state_at(&self, now: Timestamp) -> ScheduleState {
        let Some(time_zone) = &self.time_zone else {
            return ScheduleState::UnknownTimeZone;
        };
        let local = now.to_zoned(time_zone.clone()).datetime();
        let second = u32::from(local.hour().unsigned_abs()) * 3600
            + u32::from(local.minute().unsigned_abs()) * 60
            + u32::from(local.second().unsigned_abs());
        let (windows, exception) = match self.exceptions.get(&local.date()) {
            Some(windows) => (windows.as_slice(), true),
            None => {
                let weekday = local.weekday().to_monday_one_offset();
                (
                    self.weekly[usize::from(weekday.unsigned_abs()) - 1].as_slice(),
                    false,
                )
            }
        };
        let open = windows
            .iter()
            .any(|&(opens, closes)| opens <= second && second < closes);
        ScheduleState::Known {
            open,
            local,
            exception,
        }
    }
}

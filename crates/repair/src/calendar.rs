//! The secretary's calendar of repair bays: working hours every day (UTC), cut into slots; a bay holds one job per
//! slot; a job takes consecutive slots of one day, as many as its repair type needs. A ticket gets the first free
//! slot at or after the time it was opened, in any bay (the earliest start wins; ties go to the lowest bay).
//!
//! The state is one row per (day, bay) with a bitmask of used slots, plus a cursor per job length: the first day
//! that may still have room for a job that long. Days before it are full for that length for good (slots are only
//! ever taken), so a busy shop never rescans its booked-out weeks. A [`Calendar`] holds the rows one secretary batch
//! reads and writes inside its transaction; on PostgreSQL the batch first locks the cursors, so secretaries in
//! several processes book one at a time and never give one slot twice.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;
use weir_runtime::sql::{Dialect, SqlTx};

const DAY_US: i64 = 86_400_000_000;
const MINUTE_US: i64 = 60_000_000;

/// The shop's bays and hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hours {
    pub bays: u32,
    pub opens_hour: u32,
    pub closes_hour: u32,
    pub slot_minutes: u32,
}

impl Default for Hours {
    fn default() -> Self {
        Hours { bays: 3, opens_hour: 8, closes_hour: 18, slot_minutes: 30 }
    }
}

impl Hours {
    /// Checks the hours make a calendar (a day of at most 64 slots).
    pub fn check(&self) -> Result<(), String> {
        if self.bays == 0 || self.bays > 1000 {
            return Err(format!("bays must be from 1 to 1000, got {}", self.bays));
        }
        if self.opens_hour >= self.closes_hour || self.closes_hour > 24 {
            return Err(format!("opening hours {}–{} are not a day", self.opens_hour, self.closes_hour));
        }
        if self.slot_minutes == 0 || !((self.closes_hour - self.opens_hour) * 60).is_multiple_of(self.slot_minutes) {
            return Err(format!("slots of {} minutes do not divide the opening hours", self.slot_minutes));
        }
        if self.slots_per_day() > 64 {
            return Err(format!("{} slots a day; at most 64", self.slots_per_day()));
        }
        Ok(())
    }

    pub fn slots_per_day(&self) -> u32 {
        (self.closes_hour - self.opens_hour) * 60 / self.slot_minutes
    }

    /// Slots a job of `minutes` takes (at least one, at most a day).
    pub fn slots_for(&self, minutes: i64) -> u32 {
        let n = (minutes.max(1) as u32).div_ceil(self.slot_minutes);
        n.min(self.slots_per_day())
    }

    fn open_us(&self, day: i64) -> i64 {
        day * DAY_US + i64::from(self.opens_hour) * 60 * MINUTE_US
    }

    /// When slot `slot` of `day` starts.
    pub fn slot_start_us(&self, day: i64, slot: u32) -> i64 {
        self.open_us(day) + i64::from(slot) * i64::from(self.slot_minutes) * MINUTE_US
    }

    /// The first slot of `day` starting at or after `at_us` (`slots_per_day` when none does).
    fn first_slot_from(&self, day: i64, at_us: i64) -> u32 {
        let from_open = at_us - self.open_us(day);
        if from_open <= 0 {
            return 0;
        }
        let slot_us = i64::from(self.slot_minutes) * MINUTE_US;
        ((from_open + slot_us - 1) / slot_us).min(i64::from(self.slots_per_day())) as u32
    }
}

/// A booking: which bay, when it starts and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Booking {
    pub bay: u32,
    pub starts_us: i64,
    pub ends_us: i64,
}

/// The calendar rows one transaction works on.
#[derive(Debug)]
pub struct Calendar {
    hours: Hours,
    /// (day, bay) → used slots; loaded a day at a time.
    used: HashMap<(i64, u32), u64>,
    loaded_days: std::collections::HashSet<i64>,
    dirty: BTreeMap<(i64, u32), u64>,
    cursors: HashMap<u32, i64>,
    dirty_cursors: BTreeMap<u32, i64>,
}

impl Calendar {
    /// An empty calendar (for tests and the in-memory check).
    pub fn empty(hours: Hours) -> Calendar {
        Calendar {
            hours,
            used: HashMap::new(),
            loaded_days: Default::default(),
            dirty: BTreeMap::new(),
            cursors: HashMap::new(),
            dirty_cursors: BTreeMap::new(),
        }
    }

    /// The cursors, locked on PostgreSQL until `tx` ends: one secretary books at a time.
    pub async fn open(tx: &mut SqlTx, dialect: Dialect, hours: Hours) -> Result<Calendar, sqlx::Error> {
        let lock = if dialect == Dialect::Postgres { " FOR UPDATE" } else { "" };
        let mut calendar = Calendar::empty(hours);
        // The row that always exists, locked first: secretaries queue on it even before any cursor row is written.
        sqlx::query(&format!("SELECT slots FROM repair_calendar_cursor WHERE slots = 0{lock}"))
            .fetch_all(&mut **tx)
            .await?;
        for row in
            sqlx::query(&format!("SELECT slots, day FROM repair_calendar_cursor{lock}")).fetch_all(&mut **tx).await?
        {
            let slots: i64 = row.try_get(0)?;
            calendar.cursors.insert(slots as u32, row.try_get(1)?);
        }
        Ok(calendar)
    }

    async fn load_day(&mut self, tx: Option<&mut SqlTx>, day: i64) -> Result<(), sqlx::Error> {
        if !self.loaded_days.insert(day) {
            return Ok(());
        }
        let Some(tx) = tx else { return Ok(()) };
        for row in
            sqlx::query("SELECT bay, used FROM repair_calendar WHERE day = $1").bind(day).fetch_all(&mut **tx).await?
        {
            let bay: i64 = row.try_get(0)?;
            let used: i64 = row.try_get(1)?;
            self.used.insert((day, bay as u32), used as u64);
        }
        Ok(())
    }

    /// Books the first free run of `slots` slots at or after `at_us`.
    pub async fn book(&mut self, mut tx: Option<&mut SqlTx>, at_us: i64, slots: u32) -> Result<Booking, sqlx::Error> {
        let h = self.hours;
        let per_day = h.slots_per_day();
        let slots = slots.clamp(1, per_day);
        let first_day = at_us.div_euclid(DAY_US);
        let cursor = self.cursors.get(&slots).copied().unwrap_or(i64::MIN);
        let mut day = first_day.max(cursor);
        let mut from = if day == first_day { h.first_slot_from(day, at_us) } else { 0 };
        let run = if slots == 64 { u64::MAX } else { (1u64 << slots) - 1 };
        loop {
            self.load_day(tx.as_deref_mut(), day).await?;
            let mut best: Option<(u32, u32)> = None;
            for bay in 0..h.bays {
                let used = self.used.get(&(day, bay)).copied().unwrap_or(0);
                let mut s = from;
                while s + slots <= per_day {
                    if used & (run << s) == 0 {
                        if best.is_none_or(|(bs, _)| s < bs) {
                            best = Some((s, bay));
                        }
                        break;
                    }
                    s += 1;
                }
            }
            if let Some((slot, bay)) = best {
                let used = self.used.entry((day, bay)).or_insert(0);
                *used |= run << slot;
                self.dirty.insert((day, bay), *used);
                let starts_us = h.slot_start_us(day, slot);
                let ends_us = starts_us + i64::from(slots) * i64::from(h.slot_minutes) * MINUTE_US;
                return Ok(Booking { bay, starts_us, ends_us });
            }
            if from == 0 {
                // The whole day was looked at: no room for this length there, now or ever.
                self.cursors.insert(slots, day + 1);
                self.dirty_cursors.insert(slots, day + 1);
            }
            day += 1;
            from = 0;
        }
    }

    /// Writes the rows this calendar changed.
    pub async fn save(&mut self, tx: &mut SqlTx, dialect: Dialect) -> Result<(), sqlx::Error> {
        let dirty: Vec<((i64, u32), u64)> = std::mem::take(&mut self.dirty).into_iter().collect();
        for chunk in dirty.chunks(crate::services::ROWS_PER_STATEMENT) {
            let rows: Vec<String> = (0..chunk.len()).map(|i| dialect.param_row(i * 3 + 1, 3)).collect();
            let sql = format!(
                "INSERT INTO repair_calendar (day, bay, used) VALUES {} ON CONFLICT (day, bay) DO UPDATE SET used = excluded.used",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for ((day, bay), used) in chunk {
                q = q.bind(*day).bind(i64::from(*bay)).bind(*used as i64);
            }
            q.execute(&mut **tx).await?;
        }
        for (slots, day) in std::mem::take(&mut self.dirty_cursors) {
            sqlx::query(
                "INSERT INTO repair_calendar_cursor (slots, day) VALUES ($1, $2) ON CONFLICT (slots) DO UPDATE SET day = excluded.day",
            )
            .bind(i64::from(slots))
            .bind(day)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64, hour: i64, minute: i64) -> i64 {
        day * DAY_US + hour * 60 * MINUTE_US + minute * MINUTE_US
    }

    #[tokio::test]
    async fn jobs_take_the_first_free_slot_within_working_hours_one_per_bay() {
        let hours = Hours { bays: 2, ..Hours::default() };
        let mut c = Calendar::empty(hours);
        let day = 20_000;
        // Before opening: the first slot of the day, bay 0 then bay 1.
        let a = c.book(None, at(day, 6, 0), 8).await.unwrap();
        assert_eq!((a.bay, a.starts_us, a.ends_us), (0, at(day, 8, 0), at(day, 12, 0)));
        let b = c.book(None, at(day, 6, 0), 2).await.unwrap();
        assert_eq!((b.bay, b.starts_us), (1, at(day, 8, 0)));
        // Bay 1 frees at 9:00, earlier than bay 0's 12:00.
        let d = c.book(None, at(day, 7, 0), 2).await.unwrap();
        assert_eq!((d.bay, d.starts_us), (1, at(day, 9, 0)));
        // Rounded up to the next slot boundary.
        let e = c.book(None, at(day, 10, 10), 2).await.unwrap();
        assert_eq!((e.bay, e.starts_us), (1, at(day, 10, 30)));
        // A job that no longer fits today goes to tomorrow's opening.
        let f = c.book(None, at(day, 17, 0), 8).await.unwrap();
        assert_eq!(f.starts_us, at(day + 1, 8, 0));
        // A short job still fills today's gap after a long one moved on.
        let g = c.book(None, at(day, 16, 59), 2).await.unwrap();
        assert_eq!(g.starts_us, at(day, 17, 0));
    }

    #[tokio::test]
    async fn a_full_shop_never_gives_a_slot_twice() {
        let hours = Hours { bays: 3, ..Hours::default() };
        let mut c = Calendar::empty(hours);
        let mut taken = std::collections::HashSet::new();
        for i in 0..500 {
            let slots = [2, 4, 8][i % 3];
            let b = c.book(None, at(20_000, 8, 0), slots).await.unwrap();
            for s in 0..slots {
                let start = b.starts_us + i64::from(s) * 30 * MINUTE_US;
                assert!(taken.insert((b.bay, start)), "slot given twice: {b:?}");
                let in_day = start.rem_euclid(DAY_US);
                assert!((8 * 60 * MINUTE_US..18 * 60 * MINUTE_US).contains(&in_day), "outside hours: {b:?}");
            }
        }
        assert!(Hours { bays: 0, ..Hours::default() }.check().is_err());
        assert!(Hours { slot_minutes: 7, ..Hours::default() }.check().is_err());
    }
}

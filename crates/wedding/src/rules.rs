//! The exercise's rules, each a setting with the exercise's default: event types and the teams they go to,
//! priorities and their time frames, the 3-second handling, and the teams' routines (busy first, from 00:00).

use std::fmt;

/// Milliseconds since 00:00, the start of the wedding.
pub type Ms = i64;

pub const SECOND: Ms = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Team {
    Security,
    CleanUp,
    Catering,
    Officiant,
    Waiters,
}

impl Team {
    pub const ALL: [Team; 5] = [Team::Security, Team::CleanUp, Team::Catering, Team::Officiant, Team::Waiters];

    pub fn name(self) -> &'static str {
        match self {
            Team::Security => "security",
            Team::CleanUp => "clean_up",
            Team::Catering => "catering",
            Team::Officiant => "officiant",
            Team::Waiters => "waiters",
        }
    }

    /// The exercise's default routine for the team.
    pub fn default_routine(self) -> Routine {
        match self {
            Team::Security | Team::Waiters => Routine::STANDARD,
            Team::CleanUp => Routine::INTERMITTENT,
            Team::Catering | Team::Officiant => Routine::CONCENTRATED,
        }
    }
}

impl fmt::Display for Team {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    Medium,
    Low,
}

impl Priority {
    /// `High|Medium|Low`, any case.
    pub fn parse(s: &str) -> Option<Priority> {
        match s.trim().to_ascii_lowercase().as_str() {
            "high" => Some(Priority::High),
            "medium" => Some(Priority::Medium),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }

    /// How long after it happens an event may still be handled: 5, 10 or 15 s.
    pub fn time_frame(self) -> Ms {
        match self {
            Priority::High => 5 * SECOND,
            Priority::Medium => 10 * SECOND,
            Priority::Low => 15 * SECOND,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }
}

/// The canonical event types, with the teams that may handle each.
const ROUTES: &[(&str, &[Team])] = &[
    ("brawl", &[Team::Security]),
    ("not_on_list", &[Team::Security]),
    ("person_fell", &[Team::Security]),
    ("injured_kid", &[Team::Security]),
    ("accident", &[Team::Security, Team::Waiters]),
    ("dirty_table", &[Team::CleanUp]),
    ("dirty_floor", &[Team::CleanUp]),
    ("broken_items", &[Team::CleanUp, Team::Waiters]),
    ("bad_food", &[Team::Catering, Team::Waiters]),
    ("feeling_ill", &[Team::Catering, Team::Waiters]),
    ("music", &[Team::Catering]),
    ("bride", &[Team::Officiant]),
    ("groom", &[Team::Officiant]),
    ("missing_rings", &[Team::Officiant]),
];

/// Older names (seed 000, the exercise's datasets) and what they mean now.
const ALIASES: &[(&str, &str)] = &[
    ("broken_itens", "broken_items"),
    ("broken_glass", "broken_items"),
    ("music_too_loud", "music"),
    ("music_too_low", "music"),
    ("missing_bride", "bride"),
    ("missing_groom", "groom"),
];

/// The canonical name of an event type (case-insensitive; `-`, `_` and spaces alike), or `None` if unknown.
pub fn canonical_type(raw: &str) -> Option<&'static str> {
    let norm: String =
        raw.trim().chars().map(|c| if c == '-' || c == ' ' { '_' } else { c.to_ascii_lowercase() }).collect();
    let name = ALIASES.iter().find(|(a, _)| *a == norm).map_or(norm.as_str(), |(_, c)| c);
    ROUTES.iter().find(|(t, _)| *t == name).map(|(t, _)| *t)
}

/// The teams that may handle a canonical type.
pub fn teams_for(canonical: &str) -> &'static [Team] {
    ROUTES.iter().find(|(t, _)| *t == canonical).map_or(&[], |(_, teams)| teams)
}

pub fn all_types() -> impl Iterator<Item = &'static str> {
    ROUTES.iter().map(|(t, _)| *t)
}

/// A worker's repeating routine: `busy` then `available`, starting busy at 00:00.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Routine {
    pub busy: Ms,
    pub available: Ms,
}

impl Routine {
    pub const STANDARD: Routine = Routine { busy: 20 * SECOND, available: 5 * SECOND };
    pub const INTERMITTENT: Routine = Routine { busy: 5 * SECOND, available: 5 * SECOND };
    pub const CONCENTRATED: Routine = Routine { busy: 60 * SECOND, available: 60 * SECOND };

    pub fn parse(s: &str) -> Option<Routine> {
        match s.trim().to_ascii_lowercase().as_str() {
            "standard" => Some(Routine::STANDARD),
            "intermittent" => Some(Routine::INTERMITTENT),
            "concentrated" => Some(Routine::CONCENTRATED),
            _ => None,
        }
    }

    fn period(self) -> Ms {
        self.busy + self.available
    }

    /// The available phase containing `t`, as `[start, end)`, or `None` while busy.
    pub fn available_phase_at(self, t: Ms) -> Option<(Ms, Ms)> {
        let period_start = t.div_euclid(self.period()) * self.period();
        let start = period_start + self.busy;
        (t >= start).then_some((start, start + self.available))
    }

    /// The first available phase starting at or after `t`, or the one containing `t`.
    pub fn phase_from(self, t: Ms) -> (Ms, Ms) {
        match self.available_phase_at(t) {
            Some(p) => p,
            None => {
                let start = t.div_euclid(self.period()) * self.period() + self.busy;
                (start, start + self.available)
            }
        }
    }

    /// The start of the first available phase that begins after `t`.
    pub fn next_start_after(self, t: Ms) -> Ms {
        let (start, end) = self.phase_from(t + 1);
        if start > t {
            start
        } else {
            self.phase_from(end).0
        }
    }

    /// Every available phase overlapping `[0, until)`.
    pub fn phases_until(self, until: Ms) -> Vec<(Ms, Ms)> {
        let mut out = Vec::new();
        let mut p = self.phase_from(0);
        while p.0 < until {
            out.push(p);
            p = self.phase_from(p.1);
        }
        out
    }
}

/// Every rule as one value: the settings a run uses.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Rules {
    pub handling: Ms,
    pub workers_per_team: usize,
    /// One routine per team, in [`Team::ALL`] order.
    pub routines: [Routine; 5],
    /// Let a handling run past the end of an available phase (the exercise says it may not).
    pub allow_overrun: bool,
    pub wedding_length: Ms,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            handling: 3 * SECOND,
            workers_per_team: 2,
            routines: Team::ALL.map(Team::default_routine),
            allow_overrun: false,
            wedding_length: 360 * SECOND,
        }
    }
}

impl Rules {
    pub fn routine(&self, team: Team) -> Routine {
        self.routines[Team::ALL.iter().position(|t| *t == team).unwrap_or(0)]
    }

    /// Sets routines from `TEAM=ROUTINE,...` (e.g. `security=concentrated,clean-up=standard`).
    pub fn set_routines(&mut self, spec: &str) -> Result<(), String> {
        for pair in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (team, routine) =
                pair.split_once('=').ok_or_else(|| format!("routines take TEAM=ROUTINE, got {pair:?}"))?;
            let name = team.trim().to_ascii_lowercase().replace('-', "_");
            let i = Team::ALL.iter().position(|t| t.name() == name).ok_or_else(|| format!("unknown team {team:?}"))?;
            self.routines[i] = Routine::parse(routine)
                .ok_or_else(|| format!("unknown routine {routine:?}: standard, intermittent or concentrated"))?;
        }
        Ok(())
    }

    /// Whether a worker of `team` may start a handling at `t`.
    pub fn can_start(&self, team: Team, t: Ms) -> bool {
        match self.routine(team).available_phase_at(t) {
            Some((_, end)) => self.allow_overrun || t + self.handling <= end,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_found_by_any_spelling() {
        assert_eq!(canonical_type("Broken-Itens"), Some("broken_items"));
        assert_eq!(canonical_type("music too loud"), Some("music"));
        assert_eq!(canonical_type("missing_bride"), Some("bride"));
        assert_eq!(canonical_type("NOT-ON-LIST"), Some("not_on_list"));
        assert_eq!(canonical_type("karaoke"), None);
        assert_eq!(teams_for("feeling_ill"), &[Team::Catering, Team::Waiters]);
    }

    #[test]
    fn routines_start_busy() {
        let s = Routine::STANDARD;
        assert_eq!(s.available_phase_at(0), None);
        assert_eq!(s.available_phase_at(19_999), None);
        assert_eq!(s.available_phase_at(20_000), Some((20_000, 25_000)));
        assert_eq!(s.available_phase_at(25_000), None);
        assert_eq!(s.phase_from(26_000), (45_000, 50_000));
        assert_eq!(
            (s.next_start_after(-1), s.next_start_after(20_000), s.next_start_after(44_999)),
            (20_000, 45_000, 45_000)
        );
        let rules = Rules::default();
        assert!(rules.can_start(Team::Security, 22_000));
        assert!(!rules.can_start(Team::Security, 22_001), "would run past 25 s");
        assert_eq!(Routine::CONCENTRATED.phases_until(360_000).len(), 3);
    }
}

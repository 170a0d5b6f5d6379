//! The run's report: events, happy, stress (missed events) and the upper bound, then the same per team, priority and
//! type, response times (happening to handled) and each team's utilisation of its available time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::optimum::best_possible;
use crate::rules::{Rules, Team};
use crate::schedule::{Event, Outcome, Policy};

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tally {
    pub events: usize,
    pub happy: usize,
    pub stress: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The service's run this report is of (none for an in-process model run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
    pub events: usize,
    pub happy: usize,
    pub stress: usize,
    /// The most events any schedule could keep happy: the exact optimum where it can be had (see `optimum.rs`),
    /// else the max-flow bound; `upper_bound_kind` says which.
    pub upper_bound: usize,
    pub upper_bound_kind: String,
    pub policy: Policy,
    pub by_team: BTreeMap<String, Tally>,
    pub by_priority: BTreeMap<String, Tally>,
    pub by_type: BTreeMap<String, Tally>,
    pub response_ms_p50: Option<i64>,
    pub response_ms_p99: Option<i64>,
    /// Share of each team's available time spent handling.
    pub utilisation: BTreeMap<String, f64>,
}

/// Counts one event: happy, a stress mark once it has been missed, or neither while it is still open (a run in
/// progress).
fn add(t: &mut Tally, o: &Outcome) {
    t.events += 1;
    if o.happy {
        t.happy += 1;
    } else if o.missed_at.is_some() {
        t.stress += 1;
    }
}

pub fn report(rules: &Rules, events: &[Event], outcomes: &[Outcome], policy: Policy) -> Report {
    let mut by_team: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_priority: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_type: BTreeMap<String, Tally> = BTreeMap::new();
    let mut responses = Vec::new();
    let mut busy: BTreeMap<Team, i64> = BTreeMap::new();
    for (e, o) in events.iter().zip(outcomes) {
        // An event nobody took counts against the first team it was routed to.
        let team = o.team.or_else(|| crate::rules::teams_for(e.event_type).first().copied());
        if let Some(t) = team {
            add(by_team.entry(t.name().into()).or_default(), o);
        }
        add(by_priority.entry(e.priority.name().into()).or_default(), o);
        add(by_type.entry(e.event_type.into()).or_default(), o);
        if let (Some(t), Some(done)) = (o.team, o.completed) {
            *busy.entry(t).or_default() += rules.handling;
            if o.happy {
                responses.push(done - e.happened);
            }
        }
    }
    responses.sort_unstable();
    let pct = |p: f64| (!responses.is_empty()).then(|| responses[((responses.len() - 1) as f64 * p).round() as usize]);
    let horizon = events.iter().map(Event::deadline).max().unwrap_or(0);
    let utilisation = Team::ALL
        .iter()
        .map(|&t| {
            let available: i64 = rules
                .routine(t)
                .phases_until(horizon)
                .iter()
                .map(|(s, e)| e.min(&horizon) - s)
                .filter(|d| *d > 0)
                .sum::<i64>()
                * rules.workers_per_team as i64;
            let used = busy.get(&t).copied().unwrap_or(0);
            (t.name().to_string(), if available > 0 { used as f64 / available as f64 } else { 0.0 })
        })
        .collect();
    let happy = outcomes.iter().filter(|o| o.happy).count();
    let (upper_bound, upper_bound_kind) = best_possible(rules, events);
    Report {
        run: None,
        events: events.len(),
        happy,
        stress: outcomes.iter().filter(|o| !o.happy && o.missed_at.is_some()).count(),
        upper_bound,
        upper_bound_kind: upper_bound_kind.into(),
        policy,
        by_team,
        by_priority,
        by_type,
        response_ms_p50: pct(0.5),
        response_ms_p99: pct(0.99),
        utilisation,
    }
}

impl Report {
    /// The human report.
    pub fn text(&self) -> String {
        let mut out = format!(
            "policy {}: {} events, {} happy, stress level {} (best possible: {} happy, {}; {:.1}% of it reached)\n",
            self.policy.name(),
            self.events,
            self.happy,
            self.stress,
            self.upper_bound,
            self.upper_bound_kind,
            100.0 * self.happy as f64 / self.upper_bound.max(1) as f64
        );
        out += &format!(
            "response time p50 {} ms, p99 {} ms\n",
            self.response_ms_p50.map_or("-".into(), |v| v.to_string()),
            self.response_ms_p99.map_or("-".into(), |v| v.to_string())
        );
        for (title, map) in [("team", &self.by_team), ("priority", &self.by_priority), ("type", &self.by_type)] {
            out += &format!("by {title}:\n");
            for (k, t) in map {
                let util = if title == "team" {
                    self.utilisation.get(k).map(|u| format!(", busy {:.0}% of available time", u * 100.0))
                } else {
                    None
                };
                out += &format!(
                    "  {k:<14} {:>5} events {:>5} happy {:>5} stress{}\n",
                    t.events,
                    t.happy,
                    t.stress,
                    util.unwrap_or_default()
                );
            }
        }
        out
    }
}

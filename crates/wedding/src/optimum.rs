//! The exact optimum: the most events any schedule could keep happy under the rules, found by an integer program and
//! checked by replaying the schedule it returns.
//!
//! Why a time-indexed program is exact: when every arrival, phase boundary, time frame and the handling are
//! multiples of one unit `g`, any schedule can be shifted left, handling by handling (each to the latest of its
//! event's arrival, its phase's start and the worker's previous end), without missing anything; so some optimal
//! schedule starts every handling on a multiple of `g`. A team's `W` identical workers can carry a set of handlings
//! exactly when no more than `W` overlap at any moment (interval graphs are perfect), and the most overlap at a start.
//! So: one binary per (event, team, start), at most one per event, at most `W` covering each candidate start.
//!
//! Events interact only through shared constraints, so the program splits into independent components (typically a
//! team's phase, or a standard phase joined to a concentrated one by a shared type), each small. The solver
//! (microlp's branch and bound) must prove each component optimal within the time limit; the schedule it returns is
//! replayed against the rules, and the answer is the exact optimum only if both hold. Otherwise the caller falls back
//! to the max-flow bound (see [`crate::schedule::upper_bound`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use microlp::{ComparisonOp, LinearExpr, OptimizationDirection, Problem};

use crate::rules::{teams_for, Ms, Rules, Team};
use crate::schedule::Event;

/// An optimal schedule: for each event, the team and start of its handling, or `None` if it is left to expire.
#[derive(Clone, Debug)]
pub struct Optimum {
    pub happy: usize,
    pub schedule: Vec<Option<(Team, Ms)>>,
}

/// Why no exact optimum came back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotExact {
    #[error("times share no common unit small enough for a time-indexed program")]
    TooFine,
    #[error("the solver did not prove a component optimal within its time limit")]
    TimeLimit,
    #[error("the solver failed: {0}")]
    Solver(String),
    #[error("the solver's schedule broke a rule: {0}")]
    Invalid(String),
}

/// A handling the program may choose.
#[derive(Clone, Copy, Debug)]
struct Choice {
    event: usize,
    team: Team,
    start: Ms,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// The exact optimum, or why it could not be had within `limit` (spread over the components).
pub fn optimum(rules: &Rules, events: &[Event], limit: Duration) -> Result<Optimum, NotExact> {
    let mut unit = rules.handling;
    for team in Team::ALL {
        let r = rules.routine(team);
        unit = gcd(gcd(unit, r.busy), r.available);
    }
    for e in events {
        unit = gcd(gcd(unit, e.happened), e.deadline() - e.happened);
    }
    if unit <= 0 || unit * 50 < rules.handling {
        return Err(NotExact::TooFine);
    }
    let choices = choices(rules, events, unit);
    // Constraints: one per event (at most one handling), one per (team, candidate start) (at most W overlapping).
    let mut cover: BTreeMap<(Team, Ms), Vec<usize>> =
        choices.iter().map(|ch| ((ch.team, ch.start), Vec::new())).collect();
    let keys: Vec<(Team, Ms)> = cover.keys().copied().collect();
    for (c, ch) in choices.iter().enumerate() {
        // Every candidate start of the team inside [start, start + handling) is covered by this handling.
        let from = keys.partition_point(|k| *k < (ch.team, ch.start));
        for k in &keys[from..] {
            if k.0 != ch.team || k.1 >= ch.start + rules.handling {
                break;
            }
            if let Some(v) = cover.get_mut(k) {
                v.push(c);
            }
        }
    }
    let mut by_event: Vec<Vec<usize>> = vec![Vec::new(); events.len()];
    for (c, ch) in choices.iter().enumerate() {
        by_event[ch.event].push(c);
    }
    let rows: Vec<(Vec<usize>, f64)> = by_event
        .into_iter()
        .filter(|v| v.len() > 1)
        .map(|v| (v, 1.0))
        .chain(
            cover
                .into_values()
                .filter(|v| v.len() > rules.workers_per_team)
                .map(|v| (v, rules.workers_per_team as f64)),
        )
        .collect();
    // Components of choices joined by rows.
    let mut parent: Vec<usize> = (0..choices.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for (row, _) in &rows {
        for w in row.windows(2) {
            let (a, b) = (find(&mut parent, w[0]), find(&mut parent, w[1]));
            parent[a] = b;
        }
    }
    let mut components: BTreeMap<usize, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for c in 0..choices.len() {
        let root = find(&mut parent, c);
        components.entry(root).or_default().0.push(c);
    }
    for (r, (row, _)) in rows.iter().enumerate() {
        let root = find(&mut parent, row[0]);
        components.entry(root).or_default().1.push(r);
    }
    let deadline = Instant::now() + limit;
    let mut chosen = vec![false; choices.len()];
    for (vars, cons) in components.values() {
        if cons.is_empty() {
            // A lone choice nothing competes with.
            chosen[vars[0]] = true;
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NotExact::TimeLimit);
        }
        let mut p = Problem::new(OptimizationDirection::Maximize);
        p.set_time_limit(left);
        let index: BTreeMap<usize, usize> = vars.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        let x: Vec<_> = vars.iter().map(|_| p.add_binary_var(1.0)).collect();
        for &r in cons {
            let (row, rhs) = &rows[r];
            let mut expr = LinearExpr::empty();
            for c in row {
                expr.add(x[index[c]], 1.0);
            }
            p.add_constraint(expr, ComparisonOp::Le, *rhs);
        }
        let outcome = p.solve().map_err(|e| NotExact::Solver(e.to_string()))?;
        if !outcome.is_optimal() {
            return Err(NotExact::TimeLimit);
        }
        let Some(solution) = outcome.solution() else { return Err(NotExact::TimeLimit) };
        for (i, &c) in vars.iter().enumerate() {
            chosen[c] = solution.var_value(x[i]) > 0.5;
        }
    }
    let mut schedule = vec![None; events.len()];
    for (c, ch) in choices.iter().enumerate() {
        if chosen[c] {
            if schedule[ch.event].is_some() {
                return Err(NotExact::Invalid(format!("event {} handled twice", events[ch.event].id)));
            }
            schedule[ch.event] = Some((ch.team, ch.start));
        }
    }
    check(rules, events, &schedule)?;
    Ok(Optimum { happy: schedule.iter().flatten().count(), schedule })
}

/// Every handling the rules allow: an eligible team, a start on the unit grid at which a worker is available and
/// the handling ends by the deadline (and inside the phase unless overrun is allowed).
fn choices(rules: &Rules, events: &[Event], unit: Ms) -> Vec<Choice> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        for &team in teams_for(e.event_type) {
            let mut s = e.happened;
            while s + rules.handling <= e.deadline() {
                if rules.can_start(team, s) {
                    out.push(Choice { event: i, team, start: s });
                }
                s += unit;
            }
        }
    }
    out
}

/// Replays a schedule against the rules: each handling eligible, started while available and fitting its phase,
/// ended by its deadline, and no team ever running more handlings at once than it has workers.
pub fn check(rules: &Rules, events: &[Event], schedule: &[Option<(Team, Ms)>]) -> Result<(), NotExact> {
    let mut by_team: BTreeMap<Team, Vec<Ms>> = BTreeMap::new();
    for (e, s) in events.iter().zip(schedule) {
        let Some((team, start)) = *s else { continue };
        if !teams_for(e.event_type).contains(&team) {
            return Err(NotExact::Invalid(format!("{} is not {team}'s", e.id)));
        }
        if start < e.happened || start + rules.handling > e.deadline() || !rules.can_start(team, start) {
            return Err(NotExact::Invalid(format!("{} cannot start at {start} ms", e.id)));
        }
        by_team.entry(team).or_default().push(start);
    }
    for (team, mut starts) in by_team {
        starts.sort_unstable();
        // At each start, the handlings still running (started within one handling before) must fit the workers.
        for (i, &s) in starts.iter().enumerate() {
            let running = starts[..=i].iter().rev().take_while(|&&p| p + rules.handling > s).count();
            if running > rules.workers_per_team {
                return Err(NotExact::Invalid(format!("{team} runs {running} handlings at {s} ms")));
            }
        }
    }
    Ok(())
}

/// Weddings larger than this get the max-flow bound without trying the program (its size grows with the events).
const EXACT_MAX_EVENTS: usize = 50_000;

/// The most events any schedule could keep happy, and how it is known: `"exact"` (the optimum, proven and replayed)
/// or `"max-flow bound"` (a valid upper bound that may exceed the optimum).
pub fn best_possible(rules: &Rules, events: &[Event]) -> (usize, &'static str) {
    if events.len() <= EXACT_MAX_EVENTS {
        match optimum(rules, events, Duration::from_secs(10)) {
            Ok(o) => return (o.happy, "exact"),
            Err(e) => tracing::debug!(error = %e, "no exact optimum; reporting the max-flow bound"),
        }
    }
    (crate::schedule::upper_bound(rules, events), "max-flow bound")
}

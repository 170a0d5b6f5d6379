//! The teams at work, on a virtual clock: a deterministic discrete-event simulation of the exercise's rules under a
//! scheduling policy, and the upper bound on what any schedule could achieve.
//!
//! Decisions happen only when something changes: an event arrives, a worker finishes, an available phase begins. At
//! each such moment every free worker that may start (available, and the handling fits the phase) takes an event of
//! its team's types by the policy (ties to the smaller id); workers decide in team order, then by index, so a run is
//! reproducible. An event
//! routed to two teams sits in both queues and is taken once.

use crate::rules::{teams_for, Ms, Priority, Rules, Team};

/// An incident at the wedding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    /// Canonical type (see [`crate::rules::canonical_type`]).
    pub event_type: &'static str,
    pub priority: Priority,
    pub description: String,
    /// When it happened, from 00:00.
    pub happened: Ms,
}

impl Event {
    /// The last moment a handling may end for the event's guests to stay happy.
    pub fn deadline(&self) -> Ms {
        self.happened + self.priority.time_frame()
    }
}

/// How a team chooses among its pending events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The oldest pending event, even one that can no longer be finished in time (the naive solution).
    Fifo,
    /// The earliest deadline among events that can still be finished in time; hopeless ones are left to expire.
    Edf,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fifo" => Some(Policy::Fifo),
            "edf" => Some(Policy::Edf),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Policy::Fifo => "fifo",
            Policy::Edf => "edf",
        }
    }
}

impl Policy {
    /// Which of `candidates` (a team's pending events that have happened, with a caller's index) one of its workers
    /// free at `now` takes, if any; ties go to the smaller id. The model and the service both decide with this.
    pub fn choose<'a>(
        self,
        rules: &Rules,
        now: Ms,
        candidates: impl Iterator<Item = (usize, &'a Event)>,
    ) -> Option<usize> {
        let best = match self {
            Policy::Fifo => candidates.min_by(|(_, a), (_, b)| (a.happened, &a.id).cmp(&(b.happened, &b.id))),
            Policy::Edf => candidates
                .filter(|(_, e)| now + rules.handling <= e.deadline())
                .min_by(|(_, a), (_, b)| (a.deadline(), a.happened, &a.id).cmp(&(b.deadline(), b.happened, &b.id))),
        };
        best.map(|(i, _)| i)
    }
}

/// What became of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub team: Option<Team>,
    pub worker: Option<usize>,
    pub started: Option<Ms>,
    pub completed: Option<Ms>,
    /// Handled by its deadline.
    pub happy: bool,
    /// When the event counted as a stress mark: its deadline (`None` when happy).
    pub missed_at: Option<Ms>,
}

struct Worker {
    team: Team,
    index: usize,
    free_at: Ms,
}

/// Runs the wedding: one outcome per event, in the order given.
pub fn simulate(rules: &Rules, events: &[Event], policy: Policy) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = events
        .iter()
        .map(|e| Outcome {
            team: None,
            worker: None,
            started: None,
            completed: None,
            happy: false,
            missed_at: Some(e.deadline()),
        })
        .collect();
    let mut workers: Vec<Worker> = Team::ALL
        .iter()
        .flat_map(|&team| (0..rules.workers_per_team).map(move |index| Worker { team, index, free_at: 0 }))
        .collect();
    let horizon = events.iter().map(Event::deadline).max().unwrap_or(0);
    // Every moment something changes: arrivals and phase starts now, completions as they are scheduled.
    let mut moments: std::collections::BTreeSet<Ms> = events.iter().map(|e| e.happened).collect();
    for team in Team::ALL {
        moments.extend(rules.routine(team).phases_until(horizon + 1).into_iter().map(|(start, _)| start));
    }
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| (events[i].happened, i));
    let mut arrived = 0;
    let mut pending: Vec<usize> = Vec::new();
    while let Some(t) = moments.pop_first() {
        if t > horizon {
            break;
        }
        while arrived < order.len() && events[order[arrived]].happened <= t {
            pending.push(order[arrived]);
            arrived += 1;
        }
        // Past its deadline nothing can be done for an event: it is discarded (a stress mark).
        pending.retain(|&i| events[i].deadline() > t);
        for w in workers.iter_mut() {
            if w.free_at > t || !rules.can_start(w.team, t) {
                continue;
            }
            let ours = pending
                .iter()
                .enumerate()
                .filter(|(_, &i)| teams_for(events[i].event_type).contains(&w.team))
                .map(|(slot, &i)| (slot, &events[i]));
            let Some(slot) = policy.choose(rules, t, ours) else { continue };
            let i = pending[slot];
            pending.swap_remove(slot);
            let done = t + rules.handling;
            outcomes[i] = Outcome {
                team: Some(w.team),
                worker: Some(w.index),
                started: Some(t),
                completed: Some(done),
                happy: done <= events[i].deadline(),
                missed_at: (done > events[i].deadline()).then(|| events[i].deadline()),
            };
            w.free_at = done;
            moments.insert(done);
        }
    }
    outcomes
}

/// The most events any schedule could keep happy, as a maximum flow: each event may go to any available phase of an
/// eligible team's worker in which a whole handling fits between its arrival and its deadline, and a phase of length
/// L takes at most ⌊L / handling⌋ events. Every real schedule is such a flow, so no policy can beat the bound; it can
/// exceed the true optimum when events sharing a phase cannot all be ordered within their own times.
///
/// Events with the same teams, arrival and deadline are interchangeable, so they enter the flow as one node carrying
/// their count: a million-event wedding has a few thousand such classes.
pub fn upper_bound(rules: &Rules, events: &[Event]) -> usize {
    let horizon = events.iter().map(Event::deadline).max().unwrap_or(0) + rules.handling;
    let mut classes: std::collections::BTreeMap<(&'static [Team], Ms, Ms), i64> = std::collections::BTreeMap::new();
    for e in events {
        *classes.entry((teams_for(e.event_type), e.happened, e.deadline())).or_default() += 1;
    }
    // Nodes: source, classes, phases (per team, worker, phase), sink.
    let mut phases: Vec<(Team, Ms, Ms)> = Vec::new();
    for team in Team::ALL {
        for _ in 0..rules.workers_per_team {
            for (start, end) in rules.routine(team).phases_until(horizon) {
                phases.push((team, start, if rules.allow_overrun { end + rules.handling } else { end }));
            }
        }
    }
    let (source, sink) = (0, 1 + classes.len() + phases.len());
    let mut g = Flow::new(sink + 1);
    for (i, (&(teams, happened, deadline), &count)) in classes.iter().enumerate() {
        g.edge(source, 1 + i, count);
        for (p, &(team, start, end)) in phases.iter().enumerate() {
            let earliest = happened.max(start);
            if teams.contains(&team) && earliest + rules.handling <= end.min(deadline) {
                g.edge(1 + i, 1 + classes.len() + p, count);
            }
        }
    }
    for (p, &(_, start, end)) in phases.iter().enumerate() {
        g.edge(1 + classes.len() + p, sink, (end - start) / rules.handling);
    }
    g.max_flow(source, sink) as usize
}

/// Dinic's maximum flow on a small graph.
struct Flow {
    adj: Vec<Vec<usize>>,
    to: Vec<usize>,
    cap: Vec<i64>,
}

impl Flow {
    fn new(n: usize) -> Self {
        Flow { adj: vec![Vec::new(); n], to: Vec::new(), cap: Vec::new() }
    }

    fn edge(&mut self, a: usize, b: usize, c: i64) {
        self.adj[a].push(self.to.len());
        self.to.push(b);
        self.cap.push(c);
        self.adj[b].push(self.to.len());
        self.to.push(a);
        self.cap.push(0);
    }

    fn max_flow(&mut self, s: usize, t: usize) -> i64 {
        let n = self.adj.len();
        let mut total = 0;
        loop {
            let mut level = vec![-1i64; n];
            level[s] = 0;
            let mut queue = std::collections::VecDeque::from([s]);
            while let Some(v) = queue.pop_front() {
                for &e in &self.adj[v] {
                    if self.cap[e] > 0 && level[self.to[e]] < 0 {
                        level[self.to[e]] = level[v] + 1;
                        queue.push_back(self.to[e]);
                    }
                }
            }
            if level[t] < 0 {
                return total;
            }
            let mut next = vec![0usize; n];
            loop {
                let pushed = self.push(s, t, i64::MAX, &level, &mut next);
                if pushed == 0 {
                    break;
                }
                total += pushed;
            }
        }
    }

    fn push(&mut self, v: usize, t: usize, limit: i64, level: &[i64], next: &mut [usize]) -> i64 {
        if v == t {
            return limit;
        }
        while next[v] < self.adj[v].len() {
            let e = self.adj[v][next[v]];
            let u = self.to[e];
            if self.cap[e] > 0 && level[u] == level[v] + 1 {
                let got = self.push(u, t, limit.min(self.cap[e]), level, next);
                if got > 0 {
                    self.cap[e] -= got;
                    self.cap[e ^ 1] += got;
                    return got;
                }
            }
            next[v] += 1;
        }
        0
    }
}

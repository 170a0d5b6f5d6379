//! One team's desk: its workers, the events waiting for them, and the decisions, on the run's clock. On a real
//! clock it acts every few milliseconds; on a virtual one, at each moment `advance` gives it, once it has every event
//! sent so far. A database error never reads as a decision: a claim that failed puts the event back in the queue, a
//! completion that failed is recorded again at the next act.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::Row;

use tokio::sync::mpsc;

use super::clock::{Setup, Step};
use super::{store, Shared};
use crate::rules::{Ms, Team};
use crate::schedule::Event;

/// A handling under way: run, event id, when it ends, the event's deadline.
type Handling = (i64, String, Ms, Ms);

/// One team's workers and the events waiting for them.
pub(super) struct Desk {
    s: Shared,
    team: Team,
    pending: Vec<(i64, Event)>,
    /// Per worker: the run and the moment it is free again.
    workers: Vec<(i64, Ms)>,
    finishing: Vec<Handling>,
    received: HashMap<i64, u64>,
    /// The open run's events this desk read from the database when it started ([`Desk::resume`]): their messages,
    /// redelivered by the team's group, are not taken again.
    known: (HashSet<String>, i64),
}

impl Desk {
    pub fn new(s: Shared, team: Team) -> Desk {
        Desk {
            workers: Vec::new(),
            s,
            team,
            pending: Vec::new(),
            finishing: Vec::new(),
            received: HashMap::new(),
            known: (HashSet::new(), 0),
        }
    }

    fn absorb(&mut self, run: i64, e: Event) {
        if self.known.1 == run && self.known.0.contains(&e.id) {
            return;
        }
        *self.received.entry(run).or_default() += 1;
        self.pending.push((run, e));
    }

    /// Picks the open run up where the database has it, as a desk starting on an instance that takes the desks over
    /// (or restarts) must: the events still waiting go back in the queue (the group's committed offsets may be past
    /// them: the desk before had them in memory), the handlings under way keep their workers busy until they end,
    /// and every event already stored counts as received. Nothing to do when no run is open.
    pub async fn resume(&mut self) {
        let Some((run, setup)) = self.s.run.lock().as_ref().map(|r| (r.id, r.setup.clone())) else { return };
        let types: Vec<&str> =
            crate::rules::all_types().filter(|t| crate::rules::teams_for(t).contains(&self.team)).collect();
        let rows = loop {
            match store::run_events_of_types(&self.s.store, run, &types).await {
                Ok(rows) => break rows,
                Err(e) => {
                    store::db_error("resume", &e);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        self.workers = vec![(0, 0); setup.rules.workers_per_team];
        for r in &rows {
            let (Some(event_type), Some(priority)) = (
                crate::rules::canonical_type(&r.get::<String, _>(1)),
                crate::rules::Priority::parse(&r.get::<String, _>(2)),
            ) else {
                continue;
            };
            let e = Event { id: r.get(0), event_type, priority, description: r.get(3), happened: r.get(4) };
            let status: String = r.get(5);
            let mine = r.get::<Option<String>, _>(6).as_deref() == Some(self.team.name());
            match (status.as_str(), r.get::<Option<i32>, _>(7), r.get::<Option<i64>, _>(8)) {
                ("pending", _, _) => self.pending.push((run, e.clone())),
                ("in_progress", Some(w), Some(started)) if mine && (w as usize) < self.workers.len() => {
                    let done = started + setup.rules.handling;
                    self.workers[w as usize] = (run, done);
                    self.finishing.push((run, e.id.clone(), done, e.deadline()));
                }
                _ => {}
            }
            self.known.0.insert(e.id);
        }
        self.known.1 = run;
        self.received.insert(run, rows.len() as u64);
        if !rows.is_empty() {
            tracing::info!(team = %self.team, run, events = rows.len(), waiting = self.pending.len(),
                under_way = self.finishing.len(), "a wedding desk resumed its run from the database");
        }
    }

    /// Runs until its consumer stops (the event channel closes): the consumer stops first, so no event it took is
    /// dropped on the way.
    pub async fn run(mut self, mut events: mpsc::Receiver<(i64, Event)>, mut steps: mpsc::Receiver<Step>) {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Some((run, e)) => self.absorb(run, e),
                    None => return,
                },
                Some(step) = steps.recv() => {
                    let result = self.step(&mut events, &step).await;
                    let _ = step.reply.send(result);
                }
                _ = tick.tick() => {
                    if let Some((run, now, setup)) = self.s.real_now() {
                        self.act(run, now, &setup).await;
                    }
                }
            }
        }
    }

    /// A virtual moment: every event sent so far first, then the decisions.
    async fn step(&mut self, events: &mut mpsc::Receiver<(i64, Event)>, step: &Step) -> Result<Vec<Ms>, String> {
        let (run, expect) = (step.run, step.expect);
        let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.received.get(&run).copied().unwrap_or(0) < expect {
            match tokio::time::timeout_at(give_up, events.recv()).await {
                Ok(Some((r, e))) => self.absorb(r, e),
                Ok(None) => return Err(format!("{}'s consumer has stopped", self.team)),
                Err(_) => {
                    return Err(format!(
                        "{} has {} of the {expect} events sent to it after 30 s (is another process in its group?)",
                        self.team,
                        self.received.get(&run).copied().unwrap_or(0)
                    ))
                }
            }
        }
        Ok(self.act(run, step.now, &step.setup).await)
    }

    /// Everything due at `now`: handlings that have ended recorded, expired events dropped (the sweep marks them),
    /// free available workers given events by the policy. Returns when the handlings it started will end.
    async fn act(&mut self, run: i64, now: Ms, setup: &Setup) -> Vec<Ms> {
        let rules = &setup.rules;
        if self.workers.len() != rules.workers_per_team || self.workers.iter().any(|(r, _)| *r != run && *r != 0) {
            // A new run (or new rules): every worker starts free.
            self.workers = vec![(0, 0); rules.workers_per_team];
        }
        self.record_ended(run, now).await;
        self.pending.retain(|(r, e)| *r == run && e.deadline() > now);
        self.received.retain(|r, _| *r == run);
        let mut ends = Vec::new();
        for w in 0..self.workers.len() {
            let (r, free_at) = self.workers[w];
            if (r == run && free_at > now) || !rules.can_start(self.team, now) {
                continue;
            }
            match self.assign(w, now, setup).await {
                Ok(Some(done)) => ends.push(done),
                Ok(None) => {}
                // The database is away: the rest of this moment's choices wait for the next act.
                Err(()) => break,
            }
        }
        ends
    }

    /// Records the handlings that have ended by `now` (or belong to an older run); one whose update fails stays to
    /// be recorded at the next act.
    async fn record_ended(&mut self, run: i64, now: Ms) {
        let mut still = Vec::new();
        for (r, id, done, deadline) in std::mem::take(&mut self.finishing) {
            if done > now && r == run {
                still.push((r, id, done, deadline));
                continue;
            }
            let status = if done <= deadline { "handled" } else { "missed" };
            if let Err(e) = store::complete(&self.s.store, r, &id, status, done).await {
                store::db_error("complete", &e);
                still.push((r, id, done, deadline));
            }
        }
        self.finishing = still;
    }

    /// Gives worker `w` the event the policy picks; returns when its handling ends, `None` if nothing is left to
    /// pick. Shared types sit in two teams' queues: the database decides who has an event, and a worker that loses
    /// one to the other team picks again. `Err` when the database failed: the event goes back in the queue.
    async fn assign(&mut self, w: usize, now: Ms, setup: &Setup) -> Result<Option<Ms>, ()> {
        while let Some(i) = self.pick(now, setup) {
            let (r, e) = self.pending.swap_remove(i);
            match store::claim(&self.s.store, r, &e.id, self.team.name(), w, now).await {
                Ok(true) => {
                    let done = now + setup.rules.handling;
                    self.workers[w] = (r, done);
                    self.finishing.push((r, e.id.clone(), done, e.deadline()));
                    return Ok(Some(done));
                }
                Ok(false) => {}
                Err(err) => {
                    store::db_error("claim", &err);
                    self.pending.push((r, e));
                    return Err(());
                }
            }
        }
        Ok(None)
    }

    /// The pending event the policy hands a worker free at `now`, if any: only what has happened by now counts (a
    /// dataset may be sent ahead of its times), and the choice is `Policy::choose`, the model's own.
    fn pick(&self, now: Ms, setup: &Setup) -> Option<usize> {
        let candidates =
            self.pending.iter().enumerate().filter(|(_, (_, e))| e.happened <= now).map(|(i, (_, e))| (i, e));
        setup.policy.choose(&setup.rules, now, candidates)
    }
}

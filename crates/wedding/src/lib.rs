//! Wedding operations (seed 000, "Marry Me"): incidents at a wedding handled by teams on the exercise's rules,
//! scheduled to keep guests happy, with a report that compares the stress level to the best any schedule could do.
//!
//! - `rules.rs`: types and routing, priorities, routines, every rule as a setting with the exercise's default.
//! - `schedule.rs`: the deterministic simulation under a policy (`fifo`, `edf`) and the max-flow upper bound.
//! - `optimum.rs`: the exact optimum by an integer program over handling starts, checked by replaying it.
//! - `dataset.rs`: the exercise's dataset files and seeded random weddings.
//! - `report.rs`: stress, happiness and response times in total, per team, priority and type.
//! - `service/`: the services on the bus: HTTP ingest (each event stored with its outbox row), a topic per type,
//!   one consumer group per team, statuses in `wedding_events`, the run's report.
//! - `system.rs`: the wedding as a weir system (settings, topics, tables, routes, tasks, metrics, commands).
//! - `drive.rs`: driving a run over the HTTP API as the seed's simulator does (the CLI's and the console's).
//! - `cli.rs`: `weir wedding simulate` (the seed's simulator, over HTTP or in-process) and `weir wedding dataset`.
//!
//! The model on its own: a seeded wedding, scheduled by both policies, reported and compared with the bound.
//!
//! ```
//! use weir_wedding::rules::Rules;
//! use weir_wedding::schedule::{simulate, Policy};
//! use weir_wedding::{dataset, report};
//!
//! let rules = Rules::default();
//! let events = dataset::generate(200, rules.wedding_length, 7);
//! let stress = |policy| {
//!     let outcomes = simulate(&rules, &events, policy);
//!     assert_eq!(outcomes.len(), events.len(), "every event has an outcome");
//!     report::report(&rules, &events, &outcomes, policy).stress
//! };
//! // Earliest feasible deadline first never does worse than oldest first on the exercise's rules.
//! assert!(stress(Policy::Edf) <= stress(Policy::Fifo));
//! ```

pub mod cli;
pub mod dataset;
pub mod drive;
pub mod optimum;
pub mod report;
pub mod rules;
pub mod schedule;
pub mod service;
pub mod system;

pub use system::{WeddingSettings, WeddingSystem};

//! A detection event: what a CCTV rule saw, where, and how bad it is; and the origin's generator of them
//! (`scripts/generateEvents.js`), with its value sets.
//!
//! On the wire (`events.outbound`) an event is the origin's camelCase JSON, `{eventId, state, ruleType, region,
//! location, severity, deviceId, cameraId, frameReference, createdAt}`, `createdAt` in RFC 3339; tools written
//! against the origin's queue read it unchanged.

use rand::Rng;
use weir_runtime::time::format_rfc3339;

/// The origin's regions (its generator's; its web app used others, which matched none of them).
pub const REGIONS: [&str; 4] = ["NA", "EU", "APAC", "LATAM"];
pub const RULE_TYPES: [&str; 4] = ["motion_detection", "object_detection", "face_detection", "intrusion_detection"];
pub const LOCATIONS: [&str; 5] = ["entrance", "parking_lot", "lobby", "warehouse", "office"];
/// Devices `device_0` to `device_99`, cameras `camera_0` to `camera_49`.
pub const DEVICES: u32 = 100;
pub const CAMERAS: u32 = 50;

/// Where an event is in its review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum State {
    /// Waiting for a reviewer (the origin's default).
    #[serde(rename = "Not Viewed")]
    NotViewed,
    /// Given to a reviewer, not settled yet.
    Assigned,
    Approved,
    Rejected,
    Completed,
}

impl State {
    pub const ALL: [State; 5] = [State::NotViewed, State::Assigned, State::Approved, State::Rejected, State::Completed];

    /// The name the table and the messages use.
    pub fn as_str(self) -> &'static str {
        match self {
            State::NotViewed => "Not Viewed",
            State::Assigned => "Assigned",
            State::Approved => "Approved",
            State::Rejected => "Rejected",
            State::Completed => "Completed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// A detection event, as `detection_events` holds it. Times are milliseconds since the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectionEvent {
    pub event_id: uuid::Uuid,
    pub region: String,
    pub rule_type: String,
    pub location: Option<String>,
    /// 1 (lowest) to 5.
    pub severity: i32,
    pub device_id: Option<String>,
    pub camera_id: Option<String>,
    pub frame_reference: Option<String>,
    pub state: State,
    pub created_at_ms: i64,
}

/// The message `events.outbound` carries: the origin's field names.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundEvent {
    pub event_id: uuid::Uuid,
    pub state: State,
    pub rule_type: String,
    pub region: String,
    pub location: Option<String>,
    pub severity: i32,
    pub device_id: Option<String>,
    pub camera_id: Option<String>,
    pub frame_reference: Option<String>,
    pub created_at: String,
}

impl DetectionEvent {
    pub fn outbound(&self) -> OutboundEvent {
        OutboundEvent {
            event_id: self.event_id,
            state: self.state,
            rule_type: self.rule_type.clone(),
            region: self.region.clone(),
            location: self.location.clone(),
            severity: self.severity,
            device_id: self.device_id.clone(),
            camera_id: self.camera_id.clone(),
            frame_reference: self.frame_reference.clone(),
            created_at: format_rfc3339(self.created_at_ms),
        }
    }

    /// What the generator prints for each event (one line, as the origin's logged each one).
    pub fn line(&self) -> String {
        format!(
            "event {} region={} rule={} location={} severity={} device={} camera={} frame={}",
            self.event_id,
            self.region,
            self.rule_type,
            self.location.as_deref().unwrap_or("-"),
            self.severity,
            self.device_id.as_deref().unwrap_or("-"),
            self.camera_id.as_deref().unwrap_or("-"),
            self.frame_reference.as_deref().unwrap_or("-"),
        )
    }
}

/// What happened to an event in the assignment service, as `events.inbound` carries it back to the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    /// Given to a reviewer.
    Assigned,
    /// Taken back (the session ended, it was not settled in time, or it was rejected to go to another reviewer):
    /// it waits for a reviewer again.
    Reassigned,
    Completed,
    Rejected,
    Approved,
}

impl ResultStatus {
    /// The event's review state once the relay has applied this.
    pub fn state(self) -> State {
        match self {
            ResultStatus::Assigned => State::Assigned,
            ResultStatus::Reassigned => State::NotViewed,
            ResultStatus::Completed => State::Completed,
            ResultStatus::Rejected => State::Rejected,
            ResultStatus::Approved => State::Approved,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Assigned => "assigned",
            ResultStatus::Reassigned => "reassigned",
            ResultStatus::Completed => "completed",
            ResultStatus::Rejected => "rejected",
            ResultStatus::Approved => "approved",
        }
    }
}

/// A message of `events.inbound`: the origin's `{assignmentId, eventId}` with what happened, to whom and when
/// (`occurredAt`, RFC 3339), and the event's `version` after it (its changes counted by the assignment service): the
/// relay applies a result only over an older one, so a re-published or late message changes nothing. Keyed by the
/// event id, so one event's results stay in order on one partition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultMessage {
    pub assignment_id: String,
    pub event_id: String,
    pub user_id: String,
    pub status: ResultStatus,
    pub occurred_at: String,
    #[serde(default)]
    pub version: i64,
}

/// `n` random events created at `now_ms`, each with the origin's value sets. Their ids are time-ordered UUIDs
/// (version 7: the creation time, then random bits) where the origin drew version 4: every index keyed by event id
/// (the events', the assignment service's queue, the outbox's) then grows at its end, a few pages touched by each
/// commit, rather than a random page of the whole index for every row (on SQLite, 1.3 times the events assigned a
/// second end to end; docs/BENCHMARKS.md). Events posted with their own ids, of any version, are kept as given.
/// Frame references are
/// `frame_<now_ms>_<i>`: the origin drew `<i>` from 0–999 at random, so two events of one run could share one; here
/// `<i>` counts the run's events, unique within it and, with the time, across runs.
pub fn generate(n: usize, now_ms: i64, rng: &mut impl Rng) -> Vec<DetectionEvent> {
    (0..n)
        .map(|i| DetectionEvent {
            event_id: uuid::Builder::from_unix_timestamp_millis(now_ms as u64, &rng.gen()).into_uuid(),
            region: REGIONS[rng.gen_range(0..REGIONS.len())].to_string(),
            rule_type: RULE_TYPES[rng.gen_range(0..RULE_TYPES.len())].to_string(),
            location: Some(LOCATIONS[rng.gen_range(0..LOCATIONS.len())].to_string()),
            severity: rng.gen_range(1..=5),
            device_id: Some(format!("device_{}", rng.gen_range(0..DEVICES))),
            camera_id: Some(format!("camera_{}", rng.gen_range(0..CAMERAS))),
            frame_reference: Some(format!("frame_{now_ms}_{i}")),
            state: State::NotViewed,
            created_at_ms: now_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::SeedableRng;

    use super::*;

    #[test]
    fn generated_events_use_the_origins_value_sets_with_unique_ids_and_frames() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let events = generate(2000, 1_764_576_000_000, &mut rng);
        assert_eq!(events.len(), 2000);
        let ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
        let frames: HashSet<_> = events.iter().map(|e| e.frame_reference.clone()).collect();
        assert_eq!((ids.len(), frames.len()), (2000, 2000));
        for e in &events {
            assert_eq!(e.event_id.get_version_num(), 7, "{}", e.event_id);
            assert_eq!(e.event_id.get_timestamp().map(|t| t.to_unix().0), Some(1_764_576_000), "{}", e.event_id);
            assert!(REGIONS.contains(&e.region.as_str()));
            assert!(RULE_TYPES.contains(&e.rule_type.as_str()));
            assert!(LOCATIONS.contains(&e.location.as_deref().unwrap()));
            assert!((1..=5).contains(&e.severity));
            let device: u32 = e.device_id.as_deref().unwrap().strip_prefix("device_").unwrap().parse().unwrap();
            let camera: u32 = e.camera_id.as_deref().unwrap().strip_prefix("camera_").unwrap().parse().unwrap();
            assert!(device < DEVICES && camera < CAMERAS);
            assert_eq!(e.state, State::NotViewed);
        }
        // Every value of each set turns up in 2,000 draws.
        let regions: HashSet<_> = events.iter().map(|e| e.region.as_str()).collect();
        let severities: HashSet<_> = events.iter().map(|e| e.severity).collect();
        assert_eq!((regions.len(), severities.len()), (REGIONS.len(), 5));
    }

    #[test]
    fn the_outbound_message_has_the_origins_field_names() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let e = generate(1, 1_764_576_000_000, &mut rng).remove(0);
        let json = serde_json::to_value(e.outbound()).unwrap();
        let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "cameraId",
                "createdAt",
                "deviceId",
                "eventId",
                "frameReference",
                "location",
                "region",
                "ruleType",
                "severity",
                "state"
            ]
        );
        assert_eq!(json["state"], "Not Viewed");
        assert_eq!(json["createdAt"], "2025-12-01T08:00:00.000Z");
        let back: OutboundEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e.outbound());
        assert_eq!(State::parse("Not Viewed"), Some(State::NotViewed));
        assert_eq!(State::parse("Viewed"), None);
    }
}

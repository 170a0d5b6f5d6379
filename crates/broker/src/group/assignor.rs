//! Partition assignors with the semantics of Kafka's Java `RangeAssignor` and `RoundRobinAssignor`, run by the group
//! leader (in-process members) so that assignments match what a Kafka client would compute.

use std::collections::{BTreeMap, BTreeSet};

/// member id → topic → partitions.
pub type Assignments = BTreeMap<String, BTreeMap<String, Vec<i32>>>;

pub const RANGE: &str = "range";
pub const ROUND_ROBIN: &str = "roundrobin";

/// Runs the named assignor; `None` for an unknown name.
pub fn assign(
    name: &str,
    members: &[(String, Vec<String>)],
    partitions_per_topic: &dyn Fn(&str) -> Option<i32>,
) -> Option<Assignments> {
    match name {
        RANGE => Some(range(members, partitions_per_topic)),
        ROUND_ROBIN => Some(round_robin(members, partitions_per_topic)),
        _ => None,
    }
}

fn empty(members: &[(String, Vec<String>)]) -> Assignments {
    members.iter().map(|(m, _)| (m.clone(), BTreeMap::new())).collect()
}

/// Per topic: the subscribed members in id order each get a contiguous range; the first `partitions % members`
/// members get one extra.
pub fn range(members: &[(String, Vec<String>)], partitions_per_topic: &dyn Fn(&str) -> Option<i32>) -> Assignments {
    let mut out = empty(members);
    let topics: BTreeSet<&String> = members.iter().flat_map(|(_, t)| t).collect();
    for topic in topics {
        let Some(n) = partitions_per_topic(topic) else {
            continue;
        };
        let mut subscribers: Vec<&String> = members.iter().filter(|(_, t)| t.contains(topic)).map(|(m, _)| m).collect();
        subscribers.sort();
        let per = n / subscribers.len() as i32;
        let extra = n % subscribers.len() as i32;
        for (i, m) in subscribers.iter().enumerate() {
            let i = i as i32;
            let start = per * i + i.min(extra);
            let len = per + i32::from(i < extra);
            if len > 0 {
                out.get_mut(*m).expect("member present").insert(topic.clone(), (start..start + len).collect());
            }
        }
    }
    out
}

/// All topic-partitions in order, dealt to the members in id order, skipping members not subscribed to the topic.
pub fn round_robin(
    members: &[(String, Vec<String>)],
    partitions_per_topic: &dyn Fn(&str) -> Option<i32>,
) -> Assignments {
    let mut out = empty(members);
    let mut sorted: Vec<&(String, Vec<String>)> = members.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if sorted.is_empty() {
        return out;
    }
    let topics: BTreeSet<&String> = members.iter().flat_map(|(_, t)| t).collect();
    let mut next = 0usize;
    for topic in topics {
        let Some(n) = partitions_per_topic(topic) else {
            continue;
        };
        for p in 0..n {
            // Find the next member (cyclically) subscribed to this topic.
            for _ in 0..sorted.len() {
                let (m, subs) = sorted[next % sorted.len()];
                next += 1;
                if subs.contains(topic) {
                    out.get_mut(m).expect("member present").entry(topic.clone()).or_default().push(p);
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(spec: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        spec.iter().map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect())).collect()
    }

    fn counts(t: &str) -> Option<i32> {
        match t {
            "t0" | "t1" => Some(3),
            "t2" => Some(2),
            _ => None,
        }
    }

    /// RangeAssignor javadoc: C0, C1 on t0, t1 with 3 partitions each → C0 [t0p0, t0p1, t1p0, t1p1], C1 [t0p2, t1p2].
    #[test]
    fn range_matches_kafkas_example() {
        let a = range(&members(&[("C1", &["t0", "t1"]), ("C0", &["t0", "t1"])]), &counts);
        assert_eq!(a["C0"]["t0"], vec![0, 1]);
        assert_eq!(a["C0"]["t1"], vec![0, 1]);
        assert_eq!(a["C1"]["t0"], vec![2]);
        assert_eq!(a["C1"]["t1"], vec![2]);
    }

    /// RoundRobinAssignor javadoc: same setup → C0 [t0p0, t0p2, t1p1], C1 [t0p1, t1p0, t1p2].
    #[test]
    fn round_robin_matches_kafkas_example() {
        let a = round_robin(&members(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]), &counts);
        assert_eq!(a["C0"]["t0"], vec![0, 2]);
        assert_eq!(a["C0"]["t1"], vec![1]);
        assert_eq!(a["C1"]["t0"], vec![1]);
        assert_eq!(a["C1"]["t1"], vec![0, 2]);
    }

    /// Javadoc's unequal subscriptions: C0 [t0], C1 [t0, t1], C2 [t0, t1, t2] with t0 1, t1 2, t2 3 partitions →
    /// C0 [t0p0], C1 [t1p0], C2 [t1p1, t2p0, t2p1, t2p2].
    #[test]
    fn round_robin_skips_unsubscribed_members() {
        let c = |t: &str| match t {
            "t0" => Some(1),
            "t1" => Some(2),
            "t2" => Some(3),
            _ => None,
        };
        let a = round_robin(&members(&[("C0", &["t0"]), ("C1", &["t0", "t1"]), ("C2", &["t0", "t1", "t2"])]), &c);
        assert_eq!(a["C0"]["t0"], vec![0]);
        assert_eq!(a["C1"].get("t1"), Some(&vec![0]));
        assert_eq!(a["C2"]["t1"], vec![1]);
        assert_eq!(a["C2"]["t2"], vec![0, 1, 2]);
    }

    #[test]
    fn every_partition_is_assigned_exactly_once() {
        for n_members in 1..6 {
            let ms: Vec<(String, Vec<String>)> =
                (0..n_members).map(|i| (format!("m{i}"), vec!["t0".to_string(), "t2".to_string()])).collect();
            for name in [RANGE, ROUND_ROBIN] {
                let a = assign(name, &ms, &counts).unwrap();
                let mut all: Vec<(String, i32)> = a
                    .values()
                    .flat_map(|t| t.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p))))
                    .collect();
                all.sort();
                assert_eq!(all.len(), 5, "{name} with {n_members} members");
                all.dedup();
                assert_eq!(all.len(), 5);
            }
        }
    }
}

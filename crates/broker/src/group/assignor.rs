//! Partition assignors with the exact semantics of Kafka's Java `RangeAssignor` and `RoundRobinAssignor`. The group
//! leader runs one of them (in-process members here; Kafka clients run their own copy), so an assignment is the same
//! whichever kind of member leads, and a Kafka user finds partitions where they expect them.

use std::collections::{BTreeMap, BTreeSet};

/// The result of an assignor: member id → topic → partitions. Every member given appears, possibly with nothing.
pub type Assignments = BTreeMap<String, BTreeMap<String, Vec<i32>>>;

/// The protocol name of [`range`], as Kafka clients spell it.
pub const RANGE: &str = "range";
/// The protocol name of [`round_robin`], as Kafka clients spell it.
pub const ROUND_ROBIN: &str = "roundrobin";

/// The assignors this module implements, by protocol name.
pub const SUPPORTED: [&str; 2] = [RANGE, ROUND_ROBIN];

/// Runs the named assignor over `(member id, subscribed topics)`; `None` for an assignor this module does not have.
/// Topics for which `partitions_per_topic` answers `None` (unknown to the broker) are left unassigned.
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

/// Every subscribed topic with its partition count, in name order.
fn subscribed_topics<'a>(
    members: &'a [(String, Vec<String>)],
    partitions_per_topic: &dyn Fn(&str) -> Option<i32>,
) -> Vec<(&'a String, i32)> {
    let topics: BTreeSet<&String> = members.iter().flat_map(|(_, topics)| topics).collect();
    topics.into_iter().filter_map(|t| partitions_per_topic(t).map(|n| (t, n.max(0)))).collect()
}

/// Kafka's `RangeAssignor`: per topic, the subscribed members in member-id order each take a contiguous range of
/// partitions, and the first `partitions % members` of them take one extra. With several topics of equal size the
/// first members therefore get more in total; that is Kafka's behaviour, kept so assignments match.
pub fn range(members: &[(String, Vec<String>)], partitions_per_topic: &dyn Fn(&str) -> Option<i32>) -> Assignments {
    let mut out = empty(members);
    for (topic, n) in subscribed_topics(members, partitions_per_topic) {
        let subscribers: BTreeSet<&String> =
            members.iter().filter(|(_, topics)| topics.contains(topic)).map(|(m, _)| m).collect();
        // Non-empty, since the topic came from a subscription; the max only keeps the division obviously safe.
        let count = i32::try_from(subscribers.len()).unwrap_or(i32::MAX).max(1);
        let (per_member, extra) = (n / count, n % count);
        let mut start = 0;
        for (i, member) in (0..).zip(subscribers) {
            let len = per_member + i32::from(i < extra);
            if len > 0 {
                if let Some(topics) = out.get_mut(member) {
                    topics.insert(topic.clone(), (start..start + len).collect());
                }
            }
            start += len;
        }
    }
    out
}

/// Kafka's `RoundRobinAssignor`: all partitions of all subscribed topics, sorted by topic then partition, are dealt
/// to the members in member-id order, cyclically; a member not subscribed to a partition's topic is skipped for it.
pub fn round_robin(
    members: &[(String, Vec<String>)],
    partitions_per_topic: &dyn Fn(&str) -> Option<i32>,
) -> Assignments {
    let mut out = empty(members);
    let mut sorted: Vec<&(String, Vec<String>)> = members.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut next = 0usize;
    for (topic, n) in subscribed_topics(members, partitions_per_topic) {
        for p in 0..n {
            // Advance the circular iterator to the next member subscribed to this topic (one exists), give it the
            // partition, and move past it: exactly Kafka's CircularIterator walk.
            for _ in 0..sorted.len() {
                let (member, topics) = sorted[next % sorted.len()];
                next += 1;
                if topics.contains(topic) {
                    if let Some(assigned) = out.get_mut(member) {
                        assigned.entry(topic.clone()).or_default().push(p);
                    }
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

    fn three_each(t: &str) -> Option<i32> {
        match t {
            "t0" | "t1" => Some(3),
            "t2" => Some(2),
            _ => None,
        }
    }

    /// `RangeAssignor` javadoc: C0 and C1 subscribed to t0 and t1, 3 partitions each →
    /// C0: [t0p0, t0p1, t1p0, t1p1], C1: [t0p2, t1p2]. Input order must not matter.
    #[test]
    fn range_matches_kafkas_example() {
        let a = range(&members(&[("C1", &["t0", "t1"]), ("C0", &["t1", "t0"])]), &three_each);
        assert_eq!(a["C0"], BTreeMap::from([("t0".into(), vec![0, 1]), ("t1".into(), vec![0, 1])]));
        assert_eq!(a["C1"], BTreeMap::from([("t0".into(), vec![2]), ("t1".into(), vec![2])]));
    }

    /// Members subscribed to different topics; a member left without partitions still appears.
    #[test]
    fn range_splits_each_topic_among_its_subscribers() {
        let a = range(
            &members(&[("a", &["t0"]), ("b", &["t0", "t2"]), ("c", &["t2", "nope"]), ("d", &["t2"])]),
            &three_each,
        );
        assert_eq!(a["a"]["t0"], vec![0, 1]);
        assert_eq!(a["b"]["t0"], vec![2]);
        assert_eq!(a["b"]["t2"], vec![0]);
        assert_eq!(a["c"]["t2"], vec![1]);
        assert!(a["d"].is_empty());
    }

    /// `RoundRobinAssignor` javadoc, same setup → C0: [t0p0, t0p2, t1p1], C1: [t0p1, t1p0, t1p2].
    #[test]
    fn round_robin_matches_kafkas_example() {
        let a = round_robin(&members(&[("C1", &["t0", "t1"]), ("C0", &["t0", "t1"])]), &three_each);
        assert_eq!(a["C0"], BTreeMap::from([("t0".into(), vec![0, 2]), ("t1".into(), vec![1])]));
        assert_eq!(a["C1"], BTreeMap::from([("t0".into(), vec![1]), ("t1".into(), vec![0, 2])]));
    }

    /// `RoundRobinAssignor` javadoc's unequal subscriptions: C0 [t0], C1 [t0, t1], C2 [t0, t1, t2] with t0, t1, t2
    /// of 1, 2, 3 partitions → C0: [t0p0], C1: [t1p0], C2: [t1p1, t2p0, t2p1, t2p2].
    #[test]
    fn round_robin_skips_unsubscribed_members() {
        let counts = |t: &str| match t {
            "t0" => Some(1),
            "t1" => Some(2),
            "t2" => Some(3),
            _ => None,
        };
        let a = round_robin(&members(&[("C0", &["t0"]), ("C1", &["t0", "t1"]), ("C2", &["t0", "t1", "t2"])]), &counts);
        assert_eq!(a["C0"], BTreeMap::from([("t0".into(), vec![0])]));
        assert_eq!(a["C1"], BTreeMap::from([("t1".into(), vec![0])]));
        assert_eq!(a["C2"], BTreeMap::from([("t1".into(), vec![1]), ("t2".into(), vec![0, 1, 2])]));
    }

    #[test]
    fn every_partition_is_assigned_exactly_once() {
        for n_members in 1..7 {
            let ms: Vec<(String, Vec<String>)> =
                (0..n_members).map(|i| (format!("m{i}"), vec!["t0".to_string(), "t2".to_string()])).collect();
            for name in SUPPORTED {
                let a = assign(name, &ms, &three_each).unwrap();
                assert_eq!(a.len(), n_members, "{name}: every member appears");
                let mut all: Vec<(String, i32)> = a
                    .values()
                    .flat_map(|t| t.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p))))
                    .collect();
                all.sort();
                let expected: Vec<(String, i32)> = [("t0", 0), ("t0", 1), ("t0", 2), ("t2", 0), ("t2", 1)]
                    .iter()
                    .map(|(t, p)| (t.to_string(), *p))
                    .collect();
                assert_eq!(all, expected, "{name} with {n_members} members");
            }
        }
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        assert!(assign("sticky", &members(&[("a", &["t0"])]), &three_each).is_none());
        for name in SUPPORTED {
            assert!(assign(name, &[], &three_each).unwrap().is_empty());
            let a = assign(name, &members(&[("a", &["neg", "t0"]), ("b", &[])]), &|t| match t {
                "neg" => Some(-4),
                _ => Some(1),
            })
            .unwrap();
            assert_eq!(a["a"], BTreeMap::from([("t0".into(), vec![0])]));
            assert!(a["b"].is_empty());
        }
    }
}

//! Kafka's embedded consumer protocol: the subscription a member puts in its JoinGroup metadata and the assignment
//! the leader hands back through SyncGroup. The coordinator treats both as opaque bytes; members (in-process or Kafka
//! clients) agree on this encoding, which is what lets either kind lead a group of the other.
//!
//! Sans-io: pure functions over bytes. The bytes come from the network, so decoding never panics and never allocates
//! more than the input could describe; anything malformed is a [`ProtocolError`].
//!
//! Encoding: int16 version, then Kafka's classic (non-flexible) types: int16-length strings, int32-count arrays,
//! int32-length nullable bytes. Newer versions only append fields, so, as Kafka's own clients do, a decoder reads a
//! higher version by the fields it knows and ignores the rest.

use std::collections::BTreeMap;

/// The highest version of both structures that this module knows the fields of.
pub const HIGHEST_VERSION: i16 = 3;

/// A member's subscription (`ConsumerProtocolSubscription` v0–v3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The version it is (to be) encoded with; encoding clamps it to `0..=HIGHEST_VERSION`.
    pub version: i16,
    /// The subscribed topics.
    pub topics: Vec<String>,
    /// Opaque data for the assignor.
    pub user_data: Option<Vec<u8>>,
    /// v1+: the partitions the member owned in its last generation (for cooperative and sticky assignors).
    pub owned_partitions: Vec<(String, Vec<i32>)>,
    /// v2+: the generation those partitions were owned in; -1 when unknown.
    pub generation_id: i32,
    /// v3+: the member's rack, for rack-aware assignors.
    pub rack_id: Option<String>,
}

impl Default for Subscription {
    fn default() -> Self {
        Subscription {
            version: 0,
            topics: Vec::new(),
            user_data: None,
            owned_partitions: Vec::new(),
            generation_id: -1,
            rack_id: None,
        }
    }
}

/// A member's assignment (`ConsumerProtocolAssignment` v0–v3; the versions differ only in what they promise).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The version it is (to be) encoded with; encoding clamps it to `0..=HIGHEST_VERSION`.
    pub version: i16,
    /// Assigned partitions per topic.
    pub partitions: BTreeMap<String, Vec<i32>>,
    /// Opaque data from the assignor.
    pub user_data: Option<Vec<u8>>,
}

impl Assignment {
    /// The assigned partitions as a flat list, in topic then listed order.
    pub fn topic_partitions(&self) -> Vec<super::TopicPartition> {
        self.partitions
            .iter()
            .flat_map(|(topic, ps)| ps.iter().map(move |&p| super::TopicPartition::new(topic.clone(), p)))
            .collect()
    }
}

/// Consumer-protocol bytes that cannot be decoded, or a value that cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The input ended inside the named field.
    #[error("malformed consumer protocol data: truncated {0}")]
    Truncated(&'static str),
    /// The named field holds an impossible value (negative version or length, bad UTF-8, null where not allowed).
    #[error("malformed consumer protocol data: invalid {0}")]
    Invalid(&'static str),
    /// The named field is too long for its length prefix.
    #[error("cannot encode consumer protocol data: {0} too long")]
    TooLong(&'static str),
}

/// A cursor over untrusted bytes.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.rest.len() < n {
            return Err(ProtocolError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ProtocolError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, ProtocolError> {
        self.array(what).map(i16::from_be_bytes)
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, ProtocolError> {
        self.array(what).map(i32::from_be_bytes)
    }

    fn nullable_string(&mut self, what: &'static str) -> Result<Option<String>, ProtocolError> {
        let Ok(len) = usize::try_from(self.i16(what)?) else {
            return Ok(None); // -1 is null
        };
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| ProtocolError::Invalid(what))
    }

    fn string(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        self.nullable_string(what)?.ok_or(ProtocolError::Invalid(what))
    }

    fn nullable_bytes(&mut self, what: &'static str) -> Result<Option<Vec<u8>>, ProtocolError> {
        let Ok(len) = usize::try_from(self.i32(what)?) else {
            return Ok(None);
        };
        Ok(Some(self.take(len, what)?.to_vec()))
    }

    /// A non-nullable array's element count, checked against the bytes left (each element takes at least
    /// `min_element` bytes) so that a hostile count cannot make us reserve gigabytes.
    fn count(&mut self, min_element: usize, what: &'static str) -> Result<usize, ProtocolError> {
        let n = usize::try_from(self.i32(what)?).map_err(|_| ProtocolError::Invalid(what))?;
        if n.saturating_mul(min_element) > self.rest.len() {
            return Err(ProtocolError::Truncated(what));
        }
        Ok(n)
    }

    fn topic_partitions(&mut self, what: &'static str) -> Result<Vec<(String, Vec<i32>)>, ProtocolError> {
        // A topic entry is at least an empty string (2 bytes) and an empty array (4 bytes).
        let n = self.count(6, what)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let topic = self.string(what)?;
            let m = self.count(4, what)?;
            let mut partitions = Vec::with_capacity(m);
            for _ in 0..m {
                partitions.push(self.i32(what)?);
            }
            out.push((topic, partitions));
        }
        Ok(out)
    }
}

/// Appends Kafka's classic encodings to a buffer, refusing lengths their prefixes cannot hold.
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn i16(&mut self, v: i16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    fn count(&mut self, n: usize, what: &'static str) -> Result<(), ProtocolError> {
        self.i32(i32::try_from(n).map_err(|_| ProtocolError::TooLong(what))?);
        Ok(())
    }

    fn nullable_string(&mut self, s: Option<&str>, what: &'static str) -> Result<(), ProtocolError> {
        match s {
            Some(s) => {
                self.i16(i16::try_from(s.len()).map_err(|_| ProtocolError::TooLong(what))?);
                self.out.extend_from_slice(s.as_bytes());
            }
            None => self.i16(-1),
        }
        Ok(())
    }

    fn nullable_bytes(&mut self, b: Option<&[u8]>, what: &'static str) -> Result<(), ProtocolError> {
        match b {
            Some(b) => {
                self.count(b.len(), what)?;
                self.out.extend_from_slice(b);
            }
            None => self.i32(-1),
        }
        Ok(())
    }

    fn topic_partitions<'a>(
        &mut self,
        tps: impl ExactSizeIterator<Item = (&'a String, &'a Vec<i32>)>,
        what: &'static str,
    ) -> Result<(), ProtocolError> {
        self.count(tps.len(), what)?;
        for (topic, partitions) in tps {
            self.nullable_string(Some(topic), what)?;
            self.count(partitions.len(), what)?;
            for &p in partitions {
                self.i32(p);
            }
        }
        Ok(())
    }
}

/// Encodes a subscription with the fields of its version.
pub fn encode_subscription(s: &Subscription) -> Result<Vec<u8>, ProtocolError> {
    let version = s.version.clamp(0, HIGHEST_VERSION);
    let mut w = Writer { out: Vec::new() };
    w.i16(version);
    w.count(s.topics.len(), "topics")?;
    for topic in &s.topics {
        w.nullable_string(Some(topic), "topic")?;
    }
    w.nullable_bytes(s.user_data.as_deref(), "user data")?;
    if version >= 1 {
        w.topic_partitions(s.owned_partitions.iter().map(|(t, p)| (t, p)), "owned partitions")?;
    }
    if version >= 2 {
        w.i32(s.generation_id);
    }
    if version >= 3 {
        w.nullable_string(s.rack_id.as_deref(), "rack id")?;
    }
    Ok(w.out)
}

/// Decodes a subscription of any version, reading the fields up to v3.
///
/// Optional fields missing at the very end read as their defaults: some clients end an old version early, and
/// losing a member's user data is better than stalling its group.
pub fn decode_subscription(bytes: &[u8]) -> Result<Subscription, ProtocolError> {
    let mut r = Reader { rest: bytes };
    let version = r.i16("version")?;
    if version < 0 {
        return Err(ProtocolError::Invalid("version"));
    }
    let n = r.count(2, "topics")?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        topics.push(r.string("topic")?);
    }
    let mut s = Subscription { version, topics, ..Subscription::default() };
    if !r.is_empty() {
        s.user_data = r.nullable_bytes("user data")?;
    }
    if version >= 1 && !r.is_empty() {
        s.owned_partitions = r.topic_partitions("owned partitions")?;
    }
    if version >= 2 && !r.is_empty() {
        s.generation_id = r.i32("generation id")?;
    }
    if version >= 3 && !r.is_empty() {
        s.rack_id = r.nullable_string("rack id")?;
    }
    Ok(s)
}

/// Encodes an assignment.
pub fn encode_assignment(a: &Assignment) -> Result<Vec<u8>, ProtocolError> {
    let mut w = Writer { out: Vec::new() };
    w.i16(a.version.clamp(0, HIGHEST_VERSION));
    w.topic_partitions(a.partitions.iter(), "assigned partitions")?;
    w.nullable_bytes(a.user_data.as_deref(), "user data")?;
    Ok(w.out)
}

/// Decodes an assignment of any version.
///
/// Empty bytes decode as an empty assignment: that is what the coordinator hands a member the leader left out.
/// A topic listed twice has its partitions merged.
pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment, ProtocolError> {
    if bytes.is_empty() {
        return Ok(Assignment::default());
    }
    let mut r = Reader { rest: bytes };
    let version = r.i16("version")?;
    if version < 0 {
        return Err(ProtocolError::Invalid("version"));
    }
    let mut partitions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, ps) in r.topic_partitions("assigned partitions")? {
        partitions.entry(topic).or_default().extend(ps);
    }
    let user_data = if r.is_empty() { None } else { r.nullable_bytes("user data")? };
    Ok(Assignment { version, partitions, user_data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subscription() -> impl Strategy<Value = Subscription> {
        (
            0i16..=HIGHEST_VERSION,
            proptest::collection::vec("[a-zA-Z0-9._-]{1,20}", 0..5),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::collection::vec(("[a-z]{1,5}", proptest::collection::vec(any::<i32>(), 0..4)), 0..3),
            any::<i32>(),
            proptest::option::of("[a-z0-9-]{0,6}"),
        )
            .prop_map(|(version, topics, user_data, owned, generation_id, rack_id)| Subscription {
                version,
                topics,
                user_data,
                owned_partitions: if version >= 1 { owned } else { Vec::new() },
                generation_id: if version >= 2 { generation_id } else { -1 },
                rack_id: if version >= 3 { rack_id } else { None },
            })
    }

    proptest! {
        #[test]
        fn subscriptions_round_trip(s in subscription()) {
            let bytes = encode_subscription(&s).unwrap();
            prop_assert_eq!(decode_subscription(&bytes).unwrap(), s);
        }

        #[test]
        fn assignments_round_trip(
            version in 0i16..=HIGHEST_VERSION,
            partitions in proptest::collection::btree_map(
                "[a-z]{1,8}", proptest::collection::vec(any::<i32>(), 0..6), 0..4),
            user_data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
        ) {
            let a = Assignment { version, partitions, user_data };
            prop_assert_eq!(decode_assignment(&encode_assignment(&a).unwrap()).unwrap(), a);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_subscription(&bytes);
            let _ = decode_assignment(&bytes);
        }

        /// Random bytes behind a plausible prefix reach the deeper fields, which pure noise rarely does.
        #[test]
        fn mutated_encodings_never_panic(s in subscription(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4), cut in any::<usize>()) {
            let mut bytes = encode_subscription(&s).unwrap();
            for (at, value) in flips {
                let n = bytes.len();
                bytes[at % n] = value;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = decode_subscription(&bytes);
            let _ = decode_assignment(&bytes);
        }
    }

    /// A subscription as Kafka's Java client writes it (v1: one topic, null user data, no owned partitions).
    #[test]
    fn decodes_kafkas_bytes() {
        let bytes = [0, 1, 0, 0, 0, 1, 0, 3, b'f', b'o', b'o', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        let s = decode_subscription(&bytes).unwrap();
        assert_eq!(s, Subscription { version: 1, topics: vec!["foo".into()], ..Subscription::default() });
        assert_eq!(encode_subscription(&s).unwrap(), bytes);

        // v0 assignment: foo → [0, 2], null user data.
        let bytes =
            [0, 0, 0, 0, 0, 1, 0, 3, b'f', b'o', b'o', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff];
        let a = decode_assignment(&bytes).unwrap();
        assert_eq!(a.partitions["foo"], vec![0, 2]);
        assert_eq!(encode_assignment(&a).unwrap(), bytes);
    }

    #[test]
    fn a_newer_version_is_read_by_its_known_fields() {
        let s = Subscription { version: 3, topics: vec!["t".into()], generation_id: 7, ..Subscription::default() };
        let mut bytes = encode_subscription(&s).unwrap();
        bytes[1] = 9; // version 9, whose extra fields follow
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        let d = decode_subscription(&bytes).unwrap();
        assert_eq!((d.version, d.topics, d.generation_id), (9, vec!["t".to_string()], 7));

        let a = Assignment { version: 1, partitions: BTreeMap::from([("t".into(), vec![3])]), user_data: None };
        let mut bytes = encode_assignment(&a).unwrap();
        bytes[1] = 200;
        bytes.extend_from_slice(&[0; 9]);
        assert_eq!(decode_assignment(&bytes).unwrap().partitions, a.partitions);
    }

    #[test]
    fn malformed_input_is_an_error() {
        // A count far larger than the input: refused before anything is reserved.
        assert_eq!(decode_subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), Err(ProtocolError::Truncated("topics")));
        assert_eq!(decode_subscription(&[0xff, 0xff, 0, 0, 0, 0]), Err(ProtocolError::Invalid("version")));
        assert_eq!(decode_subscription(&[0, 0, 0xff, 0xff, 0xff, 0xff]), Err(ProtocolError::Invalid("topics")));
        assert_eq!(decode_subscription(&[0, 0, 0, 0, 0, 1, 0xff, 0xff]), Err(ProtocolError::Invalid("topic")));
        assert_eq!(decode_subscription(&[0, 0, 0, 0, 0, 1, 0, 2, 0xc3, 0x28]), Err(ProtocolError::Invalid("topic")));
        assert_eq!(decode_subscription(&[0]), Err(ProtocolError::Truncated("version")));
        assert_eq!(decode_assignment(&[0, 0, 0, 0, 0, 1, 0, 1]), Err(ProtocolError::Truncated("assigned partitions")));
    }

    #[test]
    fn oversized_values_are_refused_not_truncated() {
        let s = Subscription { topics: vec!["x".repeat(40_000)], ..Subscription::default() };
        assert_eq!(encode_subscription(&s), Err(ProtocolError::TooLong("topic")));
    }
}

//! Kafka's embedded consumer protocol: the subscription a member sends in JoinGroup metadata and the assignment the
//! leader returns through SyncGroup. Sans-io: pure functions over bytes, so any client's bytes can be decoded and
//! malformed ones are errors, never panics.
//!
//! Encoding: int16 version, then Kafka's classic (non-flexible) types — int16-length strings, int32-count arrays,
//! int32-length nullable bytes. Newer versions only append fields, so a decoder reads the fields it knows and ignores
//! the rest.

use std::collections::BTreeMap;

/// A member's subscription (ConsumerProtocolSubscription v0–v3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    pub version: i16,
    pub topics: Vec<String>,
    pub user_data: Option<Vec<u8>>,
    /// v1+
    pub owned_partitions: Vec<(String, Vec<i32>)>,
    /// v2+ (-1 when absent)
    pub generation_id: i32,
    /// v3+
    pub rack_id: Option<String>,
}

/// A member's assignment (ConsumerProtocolAssignment v0–v3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    pub version: i16,
    pub partitions: BTreeMap<String, Vec<i32>>,
    pub user_data: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed consumer protocol data: {0}")]
pub struct DecodeError(&'static str);

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError(what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn nullable_string(&mut self, what: &'static str) -> Result<Option<String>, DecodeError> {
        let n = self.i16(what)?;
        if n < 0 {
            return Ok(None);
        }
        let b = self.take(n as usize, what)?;
        String::from_utf8(b.to_vec()).map(Some).map_err(|_| DecodeError(what))
    }
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        self.nullable_string(what)?.ok_or(DecodeError(what))
    }
    fn nullable_bytes(&mut self, what: &'static str) -> Result<Option<Vec<u8>>, DecodeError> {
        let n = self.i32(what)?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(n as usize, what)?.to_vec()))
    }
    /// An array count, checked against the bytes left so a hostile count cannot make us allocate gigabytes.
    fn count(&mut self, min_item: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.i32(what)?;
        if n < 0 {
            return Ok(0);
        }
        let n = n as usize;
        if n.saturating_mul(min_item) > self.b.len() {
            return Err(DecodeError(what));
        }
        Ok(n)
    }
    fn topic_partitions(&mut self, what: &'static str) -> Result<Vec<(String, Vec<i32>)>, DecodeError> {
        let n = self.count(6, what)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let topic = self.string(what)?;
            let m = self.count(4, what)?;
            let mut ps = Vec::with_capacity(m);
            for _ in 0..m {
                ps.push(self.i32(what)?);
            }
            out.push((topic, ps));
        }
        Ok(out)
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.extend_from_slice(&(b.len() as i32).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

fn put_topic_partitions<'a>(out: &mut Vec<u8>, tps: impl ExactSizeIterator<Item = (&'a String, &'a Vec<i32>)>) {
    out.extend_from_slice(&(tps.len() as i32).to_be_bytes());
    for (t, ps) in tps {
        put_string(out, t);
        out.extend_from_slice(&(ps.len() as i32).to_be_bytes());
        for p in ps {
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
}

pub fn encode_subscription(s: &Subscription) -> Vec<u8> {
    let version = s.version.clamp(0, 3);
    let mut out = Vec::new();
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&(s.topics.len() as i32).to_be_bytes());
    for t in &s.topics {
        put_string(&mut out, t);
    }
    put_bytes(&mut out, s.user_data.as_deref());
    if version >= 1 {
        put_topic_partitions(&mut out, s.owned_partitions.iter().map(|(t, p)| (t, p)));
    }
    if version >= 2 {
        out.extend_from_slice(&s.generation_id.to_be_bytes());
    }
    if version >= 3 {
        match &s.rack_id {
            Some(r) => put_string(&mut out, r),
            None => out.extend_from_slice(&(-1i16).to_be_bytes()),
        }
    }
    out
}

pub fn decode_subscription(b: &[u8]) -> Result<Subscription, DecodeError> {
    let mut r = Reader { b };
    let version = r.i16("version")?;
    if version < 0 {
        return Err(DecodeError("negative version"));
    }
    let n = r.count(2, "topics")?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        topics.push(r.string("topic")?);
    }
    let mut s = Subscription { version, topics, generation_id: -1, ..Default::default() };
    // Some clients end v0 right after the topics.
    if r.b.is_empty() {
        return Ok(s);
    }
    s.user_data = r.nullable_bytes("user data")?;
    if version >= 1 && !r.b.is_empty() {
        s.owned_partitions = r.topic_partitions("owned partitions")?;
    }
    if version >= 2 && !r.b.is_empty() {
        s.generation_id = r.i32("generation id")?;
    }
    if version >= 3 && !r.b.is_empty() {
        s.rack_id = r.nullable_string("rack id")?;
    }
    Ok(s)
}

pub fn encode_assignment(a: &Assignment) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&a.version.clamp(0, 3).to_be_bytes());
    put_topic_partitions(&mut out, a.partitions.iter());
    put_bytes(&mut out, a.user_data.as_deref());
    out
}

/// Decodes an assignment; empty bytes (a member given nothing) decode as an empty assignment.
pub fn decode_assignment(b: &[u8]) -> Result<Assignment, DecodeError> {
    if b.is_empty() {
        return Ok(Assignment::default());
    }
    let mut r = Reader { b };
    let version = r.i16("version")?;
    if version < 0 {
        return Err(DecodeError("negative version"));
    }
    let mut partitions = BTreeMap::new();
    for (t, ps) in r.topic_partitions("assigned partitions")? {
        partitions.entry(t).or_insert_with(Vec::new).extend(ps);
    }
    let user_data = if r.b.is_empty() { None } else { r.nullable_bytes("user data")? };
    Ok(Assignment { version, partitions, user_data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn subscriptions_round_trip(
            version in 0i16..=3,
            topics in proptest::collection::vec("[a-z.]{1,12}", 0..5),
            user_data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            owned in proptest::collection::vec(("[a-z]{1,5}", proptest::collection::vec(0i32..100, 0..4)), 0..3),
            generation_id in -1i32..1000,
            rack_id in proptest::option::of("[a-z]{1,4}"),
        ) {
            let s = Subscription {
                version,
                topics,
                user_data,
                owned_partitions: if version >= 1 { owned } else { vec![] },
                generation_id: if version >= 2 { generation_id } else { -1 },
                rack_id: if version >= 3 { rack_id } else { None },
            };
            prop_assert_eq!(decode_subscription(&encode_subscription(&s)).unwrap(), s);
        }

        #[test]
        fn assignments_round_trip(
            parts in proptest::collection::btree_map("[a-z]{1,8}", proptest::collection::vec(0i32..1000, 0..6), 0..4),
            user_data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
        ) {
            let a = Assignment { version: 0, partitions: parts, user_data };
            prop_assert_eq!(decode_assignment(&encode_assignment(&a)).unwrap(), a);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_subscription(&bytes);
            let _ = decode_assignment(&bytes);
        }
    }

    #[test]
    fn a_newer_version_is_read_by_its_known_fields() {
        let s = Subscription { version: 3, topics: vec!["t".into()], generation_id: 7, ..Default::default() };
        let mut bytes = encode_subscription(&s);
        bytes[1] = 9; // version 9 with extra trailing fields
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        let d = decode_subscription(&bytes).unwrap();
        assert_eq!(d.topics, vec!["t".to_string()]);
        assert_eq!(d.generation_id, 7);
    }

    #[test]
    fn a_huge_array_count_is_an_error_not_an_allocation() {
        let bytes = [0, 0, 0x7f, 0xff, 0xff, 0xff];
        assert!(decode_subscription(&bytes).is_err());
    }
}

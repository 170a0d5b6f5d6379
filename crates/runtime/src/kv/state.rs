//! The in-memory key-value state behind [`MemoryKv`](super::MemoryKv) and [`JournalKv`](super::JournalKv): strings
//! with TTLs, hashes and sorted sets, with Redis's meanings. Every change is made through an [`Effect`], which the
//! journal records as it is applied, so replaying the recorded effects rebuilds exactly the state that was served.
//! Expiry times are wall-clock milliseconds, so they mean the same after a restart.

use std::collections::HashMap;

use bytes::Bytes;

use super::KvError;

/// One change to the state: what a journal record holds (one operation's effects are written together).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// A string and its expiry (wall-clock ms).
    Set(String, Bytes, Option<i64>),
    Del(String),
    HSet(String, String, Bytes),
    HDel(String, String),
    /// Adds a member to a sorted set, or gives it a new score.
    ZSet(String, String, i64),
    ZRem(String, String),
}

/// A sorted set: each member's score, and the members in (score, member) order with their ranks.
#[derive(Clone, Debug, Default)]
pub(crate) struct ZSet {
    scores: HashMap<String, i64>,
    order: Ranked,
}

/// An ordered set of (score, member) that also answers "how many come before this one" without counting them one
/// by one: the entries are kept in sorted blocks of at most [`Ranked::MAX_BLOCK`], so a rank is a sum over the
/// blocks (a few hundred for 100,000 entries) and a search within one. Inserting or removing moves at most a
/// block's entries. (The same idea as Python's sortedcontainers.)
#[derive(Clone, Debug, Default)]
pub(crate) struct Ranked {
    blocks: Vec<Vec<(i64, String)>>,
    len: usize,
}

impl Ranked {
    const MAX_BLOCK: usize = 512;

    /// The block that holds `v`, or would: the first whose last entry is not below it (the last block if none).
    fn block_of(&self, v: &(i64, String)) -> usize {
        let i = self.blocks.partition_point(|b| b.last().is_some_and(|last| last < v));
        i.min(self.blocks.len().saturating_sub(1))
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `v`; false if it was there.
    pub(crate) fn insert(&mut self, v: (i64, String)) -> bool {
        if self.blocks.is_empty() {
            self.blocks.push(vec![v]);
            self.len = 1;
            return true;
        }
        let b = self.block_of(&v);
        let block = &mut self.blocks[b];
        let Err(at) = block.binary_search(&v) else { return false };
        block.insert(at, v);
        self.len += 1;
        if block.len() > Self::MAX_BLOCK {
            let upper = block.split_off(block.len() / 2);
            self.blocks.insert(b + 1, upper);
        }
        true
    }

    /// Removes `v`; false if it was not there.
    pub(crate) fn remove(&mut self, v: &(i64, String)) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let b = self.block_of(v);
        let block = &mut self.blocks[b];
        let Ok(at) = block.binary_search(v) else { return false };
        block.remove(at);
        self.len -= 1;
        if block.is_empty() {
            self.blocks.remove(b);
        }
        true
    }

    /// How many entries are below `v` (its rank when it is in the set).
    pub(crate) fn rank(&self, v: &(i64, String)) -> usize {
        if self.blocks.is_empty() {
            return 0;
        }
        let b = self.block_of(v);
        let before: usize = self.blocks[..b].iter().map(Vec::len).sum();
        before + self.blocks[b].partition_point(|e| e < v)
    }

    pub(crate) fn first(&self) -> Option<&(i64, String)> {
        self.blocks.first().and_then(|b| b.first())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &(i64, String)> {
        self.blocks.iter().flatten()
    }
}

/// Everything a key-value store holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct KvState {
    strings: HashMap<String, (Bytes, Option<i64>)>,
    hashes: HashMap<String, HashMap<String, Bytes>>,
    zsets: HashMap<String, ZSet>,
}

fn live(exp: Option<i64>, now: i64) -> bool {
    exp.is_none_or(|e| e > now)
}

fn parse_int(key: &str, v: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(v).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| KvError::NotAnInteger(key.into()))
}

/// Where an operation's effects go besides the state: the journal's buffer, or nowhere.
pub(crate) type Sink<'a> = Option<&'a mut Vec<u8>>;

impl KvState {
    /// Applies one effect (while serving, and when replaying a journal).
    pub(crate) fn apply(&mut self, e: Effect) {
        match e {
            Effect::Set(k, v, exp) => {
                self.strings.insert(k, (v, exp));
            }
            Effect::Del(k) => {
                self.strings.remove(&k);
            }
            Effect::HSet(k, f, v) => {
                self.hashes.entry(k).or_default().insert(f, v);
            }
            Effect::HDel(k, f) => {
                if let Some(h) = self.hashes.get_mut(&k) {
                    h.remove(&f);
                    if h.is_empty() {
                        self.hashes.remove(&k);
                    }
                }
            }
            Effect::ZSet(k, m, s) => {
                let z = self.zsets.entry(k).or_default();
                if let Some(old) = z.scores.insert(m.clone(), s) {
                    z.order.remove(&(old, m.clone()));
                }
                z.order.insert((s, m));
            }
            Effect::ZRem(k, m) => {
                if let Some(z) = self.zsets.get_mut(&k) {
                    if let Some(old) = z.scores.remove(&m) {
                        z.order.remove(&(old, m));
                    }
                    if z.scores.is_empty() {
                        self.zsets.remove(&k);
                    }
                }
            }
        }
    }

    /// Records `e` in the sink (if any), then applies it.
    fn emit(&mut self, e: Effect, sink: &mut Sink<'_>) {
        if let Some(buf) = sink.as_deref_mut() {
            encode(&e, buf);
        }
        self.apply(e);
    }

    fn live_string(&self, key: &str, now: i64) -> Option<&(Bytes, Option<i64>)> {
        self.strings.get(key).filter(|(_, exp)| live(*exp, now))
    }

    pub(crate) fn get(&self, key: &str, now: i64) -> Option<Bytes> {
        self.live_string(key, now).map(|(v, _)| v.clone())
    }

    pub(crate) fn set(&mut self, key: &str, value: &[u8], exp: Option<i64>, sink: &mut Sink<'_>) {
        self.emit(Effect::Set(key.into(), Bytes::copy_from_slice(value), exp), sink);
    }

    pub(crate) fn incr(&mut self, key: &str, by: i64, now: i64, sink: &mut Sink<'_>) -> Result<i64, KvError> {
        let (n, exp) = match self.live_string(key, now) {
            Some((v, exp)) => {
                (parse_int(key, v)?.checked_add(by).ok_or_else(|| KvError::NotAnInteger(key.into()))?, *exp)
            }
            None => (by, None),
        };
        self.emit(Effect::Set(key.into(), Bytes::from(n.to_string()), exp), sink);
        Ok(n)
    }

    pub(crate) fn delete(&mut self, key: &str, now: i64, sink: &mut Sink<'_>) -> bool {
        let Some((_, exp)) = self.strings.get(key) else { return false };
        let was_live = live(*exp, now);
        self.emit(Effect::Del(key.into()), sink);
        was_live
    }

    pub(crate) fn hset(&mut self, key: &str, fields: &[(String, Vec<u8>)], sink: &mut Sink<'_>) {
        for (f, v) in fields {
            self.emit(Effect::HSet(key.into(), f.clone(), Bytes::copy_from_slice(v)), sink);
        }
    }

    pub(crate) fn hgetall(&self, key: &str) -> Vec<(String, Bytes)> {
        self.hashes.get(key).map(|h| h.iter().map(|(f, v)| (f.clone(), v.clone())).collect()).unwrap_or_default()
    }

    pub(crate) fn hdel_if(&mut self, key: &str, field: &str, expected: Option<&[u8]>, sink: &mut Sink<'_>) -> bool {
        let Some(v) = self.hashes.get(key).and_then(|h| h.get(field)) else { return false };
        if expected.is_some_and(|e| v.as_ref() != e) {
            return false;
        }
        self.emit(Effect::HDel(key.into(), field.into()), sink);
        true
    }

    pub(crate) fn set_nx(&mut self, key: &str, value: &[u8], exp: Option<i64>, now: i64, sink: &mut Sink<'_>) -> bool {
        if self.live_string(key, now).is_some() {
            return false;
        }
        self.set(key, value, exp, sink);
        true
    }

    pub(crate) fn set_if(
        &mut self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        exp: Option<i64>,
        now: i64,
        sink: &mut Sink<'_>,
    ) -> bool {
        if self.live_string(key, now).is_none_or(|(v, _)| v.as_ref() != expected) {
            return false;
        }
        self.set(key, value, exp, sink);
        true
    }

    pub(crate) fn zadd_nx(&mut self, key: &str, member: &str, score: i64, sink: &mut Sink<'_>) -> bool {
        if self.zscore(key, member).is_some() {
            return false;
        }
        self.emit(Effect::ZSet(key.into(), member.into(), score), sink);
        true
    }

    pub(crate) fn zrank(&self, key: &str, member: &str) -> Option<u64> {
        let z = self.zsets.get(key)?;
        let s = *z.scores.get(member)?;
        Some(z.order.rank(&(s, member.to_string())) as u64)
    }

    pub(crate) fn zscore(&self, key: &str, member: &str) -> Option<i64> {
        self.zsets.get(key).and_then(|z| z.scores.get(member).copied())
    }

    pub(crate) fn zcard(&self, key: &str) -> u64 {
        self.zsets.get(key).map_or(0, |z| z.order.len() as u64)
    }

    pub(crate) fn zrem(&mut self, key: &str, member: &str, sink: &mut Sink<'_>) -> bool {
        if self.zscore(key, member).is_none() {
            return false;
        }
        self.emit(Effect::ZRem(key.into(), member.into()), sink);
        true
    }

    pub(crate) fn zrange_upto(&self, key: &str, max: i64, limit: usize) -> Vec<(String, i64)> {
        let Some(z) = self.zsets.get(key) else { return Vec::new() };
        z.order.iter().take_while(|(s, _)| *s <= max).take(limit).map(|(s, m)| (m.clone(), *s)).collect()
    }

    pub(crate) fn zmove_min(
        &mut self,
        from: &str,
        to: &str,
        n: u64,
        to_cap: u64,
        score: i64,
        sink: &mut Sink<'_>,
    ) -> Vec<(String, i64)> {
        let take = n.min(to_cap.saturating_sub(self.zcard(to)));
        let mut moved = Vec::new();
        while (moved.len() as u64) < take {
            let Some((s, m)) = self.zsets.get(from).and_then(|z| z.order.first()).cloned() else { break };
            self.emit(Effect::ZRem(from.into(), m.clone()), sink);
            self.emit(Effect::ZSet(to.into(), m.clone(), score), sink);
            moved.push((m, s));
        }
        moved
    }

    /// Drops what has expired (it reads as absent already); returns how many keys went.
    pub(crate) fn sweep(&mut self, now: i64) -> usize {
        let before = self.strings.len();
        self.strings.retain(|_, (_, exp)| live(*exp, now));
        before - self.strings.len()
    }

    /// Every live entry as the effects that rebuild it: a snapshot's content.
    pub(crate) fn write_snapshot(&self, now: i64, out: &mut Vec<u8>, mut each: impl FnMut(&mut Vec<u8>)) {
        for (k, (v, exp)) in &self.strings {
            if live(*exp, now) {
                encode(&Effect::Set(k.clone(), v.clone(), *exp), out);
                each(out);
            }
        }
        for (k, h) in &self.hashes {
            for (f, v) in h {
                encode(&Effect::HSet(k.clone(), f.clone(), v.clone()), out);
                each(out);
            }
        }
        for (k, z) in &self.zsets {
            for (s, m) in z.order.iter() {
                encode(&Effect::ZSet(k.clone(), m.clone(), *s), out);
                each(out);
            }
        }
    }

    /// How many strings, hash fields and sorted-set members it holds.
    pub(crate) fn entries(&self) -> usize {
        self.strings.len()
            + self.hashes.values().map(HashMap::len).sum::<usize>()
            + self.zsets.values().map(|z| z.order.len()).sum::<usize>()
    }
}

fn put_str(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

/// Appends `e` in the journal's encoding: a tag byte, then its fields (strings as a u32 length and the bytes,
/// integers little-endian).
pub(crate) fn encode(e: &Effect, out: &mut Vec<u8>) {
    match e {
        Effect::Set(k, v, exp) => {
            out.push(1);
            put_str(k.as_bytes(), out);
            put_str(v, out);
            match exp {
                Some(t) => {
                    out.push(1);
                    out.extend_from_slice(&t.to_le_bytes());
                }
                None => out.push(0),
            }
        }
        Effect::Del(k) => {
            out.push(2);
            put_str(k.as_bytes(), out);
        }
        Effect::HSet(k, f, v) => {
            out.push(3);
            put_str(k.as_bytes(), out);
            put_str(f.as_bytes(), out);
            put_str(v, out);
        }
        Effect::HDel(k, f) => {
            out.push(4);
            put_str(k.as_bytes(), out);
            put_str(f.as_bytes(), out);
        }
        Effect::ZSet(k, m, s) => {
            out.push(5);
            put_str(k.as_bytes(), out);
            put_str(m.as_bytes(), out);
            out.extend_from_slice(&s.to_le_bytes());
        }
        Effect::ZRem(k, m) => {
            out.push(6);
            put_str(k.as_bytes(), out);
            put_str(m.as_bytes(), out);
        }
    }
}

/// Reads effects back from one record's payload; None if it is not a whole, well-formed sequence of them.
pub(crate) fn decode_all(mut p: &[u8]) -> Option<Vec<Effect>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if p.len() < n {
            return None;
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Some(a)
    }
    fn bytes<'a>(p: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(take(p, 4)?.try_into().ok()?) as usize;
        take(p, n)
    }
    fn string(p: &mut &[u8]) -> Option<String> {
        String::from_utf8(bytes(p)?.to_vec()).ok()
    }
    fn int(p: &mut &[u8]) -> Option<i64> {
        Some(i64::from_le_bytes(take(p, 8)?.try_into().ok()?))
    }
    let mut out = Vec::new();
    while !p.is_empty() {
        let tag = take(&mut p, 1)?[0];
        out.push(match tag {
            1 => {
                let k = string(&mut p)?;
                let v = Bytes::copy_from_slice(bytes(&mut p)?);
                let exp = match take(&mut p, 1)?[0] {
                    0 => None,
                    1 => Some(int(&mut p)?),
                    _ => return None,
                };
                Effect::Set(k, v, exp)
            }
            2 => Effect::Del(string(&mut p)?),
            3 => Effect::HSet(string(&mut p)?, string(&mut p)?, Bytes::copy_from_slice(bytes(&mut p)?)),
            4 => Effect::HDel(string(&mut p)?, string(&mut p)?),
            5 => Effect::ZSet(string(&mut p)?, string(&mut p)?, int(&mut p)?),
            6 => Effect::ZRem(string(&mut p)?, string(&mut p)?),
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The blocks answer as a plain ordered set does, across splits and emptied blocks.
        #[test]
        fn ranked_matches_an_ordered_set(ops in proptest::collection::vec((any::<bool>(), 0i64..3000), 1..4000)) {
            let mut r = Ranked::default();
            let mut s = std::collections::BTreeSet::new();
            for (add, n) in ops {
                let v = (n % 50, format!("m{n}"));
                if add {
                    prop_assert_eq!(r.insert(v.clone()), s.insert(v.clone()));
                } else {
                    prop_assert_eq!(r.remove(&v), s.remove(&v));
                }
                prop_assert_eq!(r.len(), s.len());
                prop_assert_eq!(r.rank(&v), s.range(..&v).count());
                prop_assert_eq!(r.first(), s.first());
            }
            prop_assert!(r.iter().eq(s.iter()));
        }

        #[test]
        fn effects_read_back_as_written(k in ".{0,20}", v in proptest::collection::vec(any::<u8>(), 0..50), s in any::<i64>(), exp in proptest::option::of(any::<i64>())) {
            let effects = vec![
                Effect::Set(k.clone(), Bytes::from(v.clone()), exp),
                Effect::Del(k.clone()),
                Effect::HSet(k.clone(), "f".into(), Bytes::from(v)),
                Effect::HDel(k.clone(), "f".into()),
                Effect::ZSet(k.clone(), "m".into(), s),
                Effect::ZRem(k, "m".into()),
            ];
            let mut buf = Vec::new();
            for e in &effects {
                encode(e, &mut buf);
            }
            prop_assert_eq!(decode_all(&buf), Some(effects));
            prop_assert_eq!(decode_all(&buf[..buf.len() - 1]), None);
        }
    }
}

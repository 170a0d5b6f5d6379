//! Zig-zag variable-length integers as Kafka's record format uses them (protobuf-style, little-endian groups of 7 bits).

/// Appends `v` zig-zag encoded.
#[inline]
pub(crate) fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

#[inline]
pub(crate) fn put_varint(buf: &mut Vec<u8>, v: i32) {
    put_varlong(buf, v as i64)
}

/// Bytes `put_varlong(v)` would write.
#[inline]
pub(crate) fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[inline]
pub(crate) fn varint_len(v: i32) -> usize {
    varlong_len(v as i64)
}

/// Reads a zig-zag varlong at `*pos`, advancing it; `None` when the input ends or the value overflows 64 bits.
#[inline]
pub(crate) fn get_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift > 63 {
            return None;
        }
        z |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    Some(((z >> 1) as i64) ^ -((z & 1) as i64))
}

#[inline]
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i32> {
    let v = get_varlong(buf, pos)?;
    i32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varlong_round_trips(v in any::<i64>()) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            prop_assert_eq!(buf.len(), varlong_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varlong(&buf, &mut pos), Some(v));
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn varlong_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut pos = 0;
            let _ = get_varlong(&bytes, &mut pos);
        }
    }

    #[test]
    fn known_encodings() {
        let mut buf = Vec::new();
        put_varint(&mut buf, -1);
        put_varint(&mut buf, 1);
        put_varint(&mut buf, 64);
        assert_eq!(buf, vec![0x01, 0x02, 0x80, 0x01]);
    }
}

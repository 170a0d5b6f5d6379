//! Confluent's wire format: a record's key or value is a magic byte 0, the schema id as a 4-byte big-endian
//! integer, then the payload in the schema's encoding.

/// The magic byte that starts a framed record.
pub const MAGIC: u8 = 0;
/// Magic byte and schema id.
pub const HEADER_LEN: usize = 5;

/// `payload` framed with `schema_id`.
pub fn frame(schema_id: i32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The schema id and payload of a framed record; `None` when it does not start with the magic byte and an id.
pub fn unframe(bytes: &[u8]) -> Option<(i32, &[u8])> {
    if bytes.len() < HEADER_LEN || bytes[0] != MAGIC {
        return None;
    }
    let id = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Some((id, &bytes[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_frames_are_refused() {
        let framed = frame(258, b"abc");
        assert_eq!(framed, [0, 0, 0, 1, 2, b'a', b'b', b'c']);
        assert_eq!(unframe(&framed), Some((258, &b"abc"[..])));
        assert_eq!(unframe(&[0, 0, 0, 1]), None, "too short");
        assert_eq!(unframe(&[1, 0, 0, 0, 1, 9]), None, "wrong magic byte");
        assert_eq!(unframe(&[0, 0, 0, 0, 7]), Some((7, &b""[..])), "an empty payload is framed");
    }
}

//! The Kafka wire format without any I/O: size-prefixed frames, request headers and bodies in, responses out.
//! Everything here works on bytes alone so it can be fuzzed; malformed input is an error, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Why a frame could not be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("negative frame size {0}")]
    NegativeSize(i32),
    #[error("frame too short for a request header")]
    Truncated,
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} version {version} is not supported (supported: {min}..={max})")]
    UnsupportedVersion { api: ApiKey, version: i16, min: i16, max: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed { api: ApiKey, version: i16, reason: String },
}

/// The most a partly received frame grows the read buffer by at once.
const RESERVE_STEP: usize = 1 << 20;

/// Takes one complete frame (without its 4-byte size) off the front of `buf`, or `None` if it has not all arrived.
pub fn take_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, CodecError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 {
        return Err(CodecError::NegativeSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(CodecError::TooLarge { size, max });
    }
    if buf.len() < 4 + size {
        // Room for what is still to come, in steps: a size prefix alone must not reserve 100 MiB.
        buf.reserve((4 + size - buf.len()).min(RESERVE_STEP));
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

/// The part of a header that can be read before knowing whether the API is supported: enough to answer with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peek {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

pub fn peek(frame: &[u8]) -> Result<Peek, CodecError> {
    if frame.len() < 8 {
        return Err(CodecError::Truncated);
    }
    Ok(Peek {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// Decodes a frame, checking the API and version against `supported` (the listener passes `apis::supported`, weir's
/// own ranges within the protocol crate's).
pub fn decode_request(frame: Bytes, supported: impl Fn(ApiKey) -> Option<(i16, i16)>) -> Result<Request, CodecError> {
    let p = peek(&frame)?;
    let api = ApiKey::try_from(p.api_key).map_err(|_| CodecError::UnknownApi(p.api_key))?;
    let (min, max) = supported(api).ok_or(CodecError::UnknownApi(p.api_key))?;
    if !(min..=max).contains(&p.api_version) {
        return Err(CodecError::UnsupportedVersion { api, version: p.api_version, min, max });
    }
    let version = p.api_version;
    let malformed = |e: anyhow::Error| CodecError::Malformed { api, version, reason: format!("{e:#}") };
    // The crate's decoders index into the buffer; catch any panic on hostile input so one bad frame cannot take the
    // connection task (or, with panic=abort, the process) down.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut buf = frame;
        let header = RequestHeader::decode(&mut buf, api.request_header_version(version))?;
        let body = RequestKind::decode(api, &mut buf, version)?;
        anyhow::Ok((header, body))
    }));
    match decoded {
        Ok(Ok((header, body))) => Ok(Request { api, version, header, body }),
        Ok(Err(e)) => Err(malformed(e)),
        Err(_) => Err(malformed(anyhow::anyhow!("decoder rejected the bytes"))),
    }
}

/// Encodes a response frame (size prefix included).
pub fn encode_response(api: ApiKey, version: i16, correlation_id: i32, body: &ResponseKind) -> anyhow::Result<Bytes> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0); // size, patched below
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header.encode(&mut out, api.response_header_version(version))?;
    body.encode(&mut out, version)?;
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_arrive_in_pieces() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 3, 1]);
        assert!(take_frame(&mut buf, 100).unwrap().is_none());
        buf.extend_from_slice(&[2, 3, 0, 0]);
        assert_eq!(&take_frame(&mut buf, 100).unwrap().unwrap()[..], &[1, 2, 3]);
        assert_eq!(&buf[..], &[0, 0]);
        let mut big = BytesMut::from(&[0x7f, 0, 0, 0][..]);
        assert!(matches!(take_frame(&mut big, 100), Err(CodecError::TooLarge { .. })));
        let mut neg = BytesMut::from(&[0xff, 0, 0, 0][..]);
        assert!(matches!(take_frame(&mut neg, 100), Err(CodecError::NegativeSize(_))));
    }

    proptest::proptest! {
        /// Any bytes after a valid-looking header, for every API and version weir serves: an error or a request,
        /// never a panic (the decoders of every served API are reached).
        #[test]
        fn random_frames_never_panic(
            key in 0i16..80,
            version in 0i16..16,
            correlation in proptest::prelude::any::<i32>(),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            let mut frame = Vec::with_capacity(body.len() + 10);
            frame.extend_from_slice(&key.to_be_bytes());
            frame.extend_from_slice(&version.to_be_bytes());
            frame.extend_from_slice(&correlation.to_be_bytes());
            frame.extend_from_slice(&body);
            let _ = decode_request(Bytes::from(frame), crate::apis::supported);
        }

        /// Frames cut from an arbitrary byte stream: complete frames or none, never a panic or a bogus size.
        #[test]
        fn framing_never_panics(stream in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut buf = BytesMut::from(&stream[..]);
            while let Ok(Some(_)) = take_frame(&mut buf, 32) {}
        }
    }
}

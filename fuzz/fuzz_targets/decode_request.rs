//! Arbitrary bytes through the Kafka listener's decode path: as one frame (header and body after the size prefix,
//! what `server.rs` hands to `codec::decode_request` with the API table's versions), and as a byte stream cut into
//! frames by `codec::take_frame`. An error is fine; a panic, even one the codec would catch (libfuzzer-sys aborts
//! on any panic), or an allocation past `-malloc_limit_mb` (set by `scripts/fuzz.sh`) is a finding.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use weir_kafka::apis::supported;
use weir_kafka::codec::{decode_request, take_frame};

/// A frame size limit like the listener's before authentication, so a stream's size prefixes are mostly in range.
const MAX_FRAME: usize = 512 * 1024;

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(Bytes::copy_from_slice(data), supported);
    let mut stream = BytesMut::from(data);
    while let Ok(Some(frame)) = take_frame(&mut stream, MAX_FRAME) {
        let _ = decode_request(frame, supported);
    }
});

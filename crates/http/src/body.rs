//! Request bodies: read within the size limit, then deserialized straight into the handlers' own types (the types
//! the OpenAPI document is generated from), with errors that name the field that does not fit, as in
//! "auto.offset.reset: invalid type: integer `5`, expected a string".

use std::fmt;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};
use serde_path_to_error::Segment;

use crate::error::{ApiError, ErrorCode};

/// The body, or 413 when it is over the limit (axum's own answer would be plain text).
pub fn read(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is larger than the server accepts")
        }
        other => ApiError::new(ErrorCode::BadRequest, format!("cannot read the request body: {other}")),
    })
}

/// Why a body, or one record of a produce body, does not deserialize into its type.
#[derive(Debug)]
pub struct BodyError {
    /// Where: `auto.offset.reset`, `topics[2]`, `records[3].value`; empty for the body as a whole.
    pub path: String,
    /// The field of the deserialized type at fault (`offsets` for `offsets[1].topic`; field names may have dots),
    /// or "" for the value as a whole.
    pub field: String,
    /// serde's account of it. Without the line and column for a misfit (a produce record's would count within the
    /// record, not the body); with them for text that is not JSON.
    pub message: String,
    /// The text is not JSON at all, or is cut short, rather than JSON of the wrong shape.
    pub syntax: bool,
}

impl BodyError {
    fn misfit(message: impl Into<String>) -> Self {
        BodyError { path: String::new(), field: String::new(), message: message.into(), syntax: false }
    }

    /// The same error for a value found at `prefix` of a larger body (`records[3]`); `field` stays the value's.
    pub fn within(mut self, prefix: &str) -> Self {
        self.path = match self.path.as_str() {
            "" => prefix.to_string(),
            p if p.starts_with('[') => format!("{prefix}{p}"),
            p => format!("{prefix}.{p}"),
        };
        self
    }

    /// As a 422 with `code`.
    pub fn into_api(self, code: ErrorCode) -> ApiError {
        ApiError::new(code, self.to_string())
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.syntax {
            write!(f, "the body is not valid JSON: {}", self.message)
        } else if self.path.is_empty() {
            write!(f, "the body: {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// `text` as a `T`, which must be a JSON object: serde's derived structs also take an array of their fields in
/// order, which no client means and the OpenAPI document does not allow.
pub fn object<'a, T: Deserialize<'a>>(text: &'a [u8]) -> Result<T, BodyError> {
    check_object(text)?;
    serde_json::from_slice(text).map_err(|e| locate::<T>(text, e))
}

/// [`object`] for text already known to be UTF-8 (a produce record, cut from a body that was read as JSON), which
/// spares checking its strings again.
pub fn object_str<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, BodyError> {
    check_object(text.as_bytes())?;
    serde_json::from_str(text).map_err(|e| locate::<T>(text.as_bytes(), e))
}

fn check_object(text: &[u8]) -> Result<(), BodyError> {
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(&first) if first != b'{' => {
            Err(BodyError::misfit(format!("invalid type: {}, expected a JSON object", kind(first))))
        }
        // Empty text is left to serde, which calls it cut short.
        _ => Ok(()),
    }
}

/// The error of [`object`] again, now with where it is. Tracking the path costs an allocation for every key read,
/// so it is paid only for a body already known to be wrong: a produce request of a million good records pays
/// nothing for it.
#[cold]
fn locate<'a, T: Deserialize<'a>>(text: &'a [u8], e: serde_json::Error) -> BodyError {
    if e.is_syntax() || e.is_eof() || e.is_io() {
        return BodyError { path: String::new(), field: String::new(), message: e.to_string(), syntax: true };
    }
    let tracked = match serde_path_to_error::deserialize::<_, T>(&mut serde_json::Deserializer::from_slice(text)) {
        Ok(_) => return BodyError::misfit(without_position(&e)),
        Err(tracked) => tracked,
    };
    let field = match tracked.path().iter().next() {
        Some(Segment::Map { key }) => key.clone(),
        _ => String::new(),
    };
    let path = tracked.path().to_string();
    BodyError {
        path: if path == "." { String::new() } else { path },
        field,
        message: without_position(tracked.inner()),
        syntax: false,
    }
}

/// serde_json's message without its " at line L column C".
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).map(str::to_string).unwrap_or(text)
}

/// What kind of JSON value starts with `first`, for "invalid type: X, expected Y" messages.
pub fn kind(first: u8) -> &'static str {
    match first {
        b'{' => "an object",
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        b'-' | b'0'..=b'9' => "a number",
        _ => "not JSON",
    }
}

/// A partition number in a body: an integer from 0 to `i32::MAX`. JSON Schema counts `3.0` as an integer; so does
/// this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition(pub i32);

impl<'de> Deserialize<'de> for Partition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = d.deserialize_any(Integer { min: 0, max: i32::MAX.into(), expecting: "a non-negative integer" })?;
        // Within i32 by the bounds just checked.
        Ok(Partition(p as i32))
    }
}

/// A record's offset in a body: a non-negative integer, below `i64::MAX` so that the position after it is one too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offset(pub i64);

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Integer { min: 0, max: i64::MAX - 1, expecting: "a non-negative integer" }).map(Offset)
    }
}

/// Reads an integral JSON number (`3` or `3.0`) within `min..=max`.
struct Integer {
    min: i64,
    max: i64,
    expecting: &'static str,
}

impl Visitor<'_> for Integer {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(E::invalid_value(Unexpected::Signed(v), &self))
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // Up to 2^53 a float holds every integer exactly (JSON Schema counts `5.0` as an integer); past it, the
        // number written may not be the one parsed.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() == 0.0 && v.abs() <= EXACT {
            self.visit_i64(v as i64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // the fields are what the errors are about
    struct Commit {
        topic: String,
        offsets: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        partition: Partition,
        offset: Offset,
    }

    fn err(text: &str) -> BodyError {
        object::<Commit>(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        let ok = object::<Commit>(br#" {"topic":"t","offsets":[{"partition":3.0,"offset":7}]}"#).unwrap();
        assert_eq!((ok.offsets[0].partition, ok.offsets[0].offset), (Partition(3), Offset(7)));
        // Integral floats up to 2^53, where every integer is still exact (schemathesis sent this one).
        let big = object::<Commit>(br#"{"topic":"t","offsets":[{"partition":0,"offset":9007199254740990.0}]}"#);
        assert_eq!(big.unwrap().offsets[0].offset, Offset(9_007_199_254_740_990));
        assert!(object::<Commit>(br#"{"topic":"t","offsets":[{"partition":0,"offset":1e17}]}"#).is_err());
        for (text, path, needle) in [
            (r#"{"topic":5,"offsets":[]}"#, "topic", "invalid type: integer `5`, expected a string"),
            (
                r#"{"topic":"t","offsets":[{"partition":1,"offset":0},{"partition":-1,"offset":0}]}"#,
                "offsets[1].partition",
                "`-1`, expected a non-negative integer",
            ),
            (r#"{"topic":"t","offsets":[{"partition":1.5,"offset":0}]}"#, "offsets[0].partition", "1.5"),
            (
                r#"{"topic":"t","offsets":[{"partition":1,"offset":9223372036854775807}]}"#,
                "offsets[0].offset",
                "invalid value",
            ),
            (r#"{"topic":"t","offsets":{}}"#, "offsets", "expected a sequence"),
            (r#"{"offsets":[]}"#, "", "missing field `topic`"),
            (r#"["t",[]]"#, "", "invalid type: an array, expected a JSON object"),
        ] {
            let e = err(text);
            assert_eq!((e.path.as_str(), e.syntax), (path, false), "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {e}");
            assert!(!e.message.contains("line 1"), "a misfit's position is left out: {e}");
        }
        let e = err(r#"{"topic":"t","#);
        assert!(e.syntax && e.to_string().starts_with("the body is not valid JSON"), "{e}");
        assert_eq!(err(r#"{"offsets":[{"partition":"x"}]}"#).field, "offsets");
        let nested = err(r#"{"topic":"t","offsets":[{"partition":"x","offset":0}]}"#).within("commits[2]");
        assert_eq!(
            nested.to_string(),
            r#"commits[2].offsets[0].partition: invalid type: string "x", expected a non-negative integer"#
        );
    }
}

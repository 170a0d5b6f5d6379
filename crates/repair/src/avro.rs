//! The Rust side of the events' Avro logical types, which the generated event types (`build.rs`) use: an exact
//! decimal and a microsecond timestamp, serialized as the schema registry's JSON form of them, so
//! `Events::encode` writes the bytes Confluent's serializers write and `Events::decode_as` reads them back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An event type generated from its `.avsc`: its name (`ticket_opened`, the file's) and the schema's text.
pub trait AvroEvent: Serialize + serde::de::DeserializeOwned {
    const NAME: &'static str;
    const SCHEMA: &'static str;
}

/// A `timestamp-micros`: microseconds since the epoch, UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms.saturating_mul(1000))
    }

    pub fn millis(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&weir_runtime::time::format_rfc3339(self.millis()))
    }
}

/// An Avro `decimal` with `SCALE` digits after the point, held exactly as its unscaled integer (never a float). On
/// the wire, and in the registry's JSON form, it is the unscaled value's big-endian two's complement bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal<const SCALE: u32> {
    unscaled: i128,
}

impl<const SCALE: u32> Decimal<SCALE> {
    pub const fn from_unscaled(unscaled: i128) -> Self {
        Decimal { unscaled }
    }

    pub fn unscaled(self) -> i128 {
        self.unscaled
    }

    /// The minimal big-endian two's complement bytes of the unscaled value (Java's `BigInteger.toByteArray`).
    pub fn to_bytes(self) -> Vec<u8> {
        let all = self.unscaled.to_be_bytes();
        let mut start = 0;
        // Drop leading bytes that only repeat the sign of the next one.
        while start < all.len() - 1 {
            let (b, next) = (all[start], all[start + 1]);
            if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
                start += 1;
            } else {
                break;
            }
        }
        all[start..].to_vec()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() || bytes.len() > 16 {
            return Err(format!("a decimal of {} bytes", bytes.len()));
        }
        let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
        let mut all = [fill; 16];
        all[16 - bytes.len()..].copy_from_slice(bytes);
        Ok(Decimal { unscaled: i128::from_be_bytes(all) })
    }
}

impl<const SCALE: u32> fmt::Display for Decimal<SCALE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.unscaled < 0 { "-" } else { "" };
        let abs = self.unscaled.unsigned_abs();
        if SCALE == 0 {
            return write!(f, "{sign}{abs}");
        }
        let unit = 10u128.pow(SCALE);
        write!(f, "{sign}{}.{:0width$}", abs / unit, abs % unit, width = SCALE as usize)
    }
}

impl<const SCALE: u32> FromStr for Decimal<SCALE> {
    type Err = String;

    /// `150`, `150.5`, `-0.25`: at most `SCALE` digits after the point.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a decimal with at most {SCALE} digits after the point");
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty()
            || fraction.len() > SCALE as usize
            || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let mut unscaled: i128 = 0;
        for b in whole.bytes().chain(fraction.bytes()).chain(std::iter::repeat_n(b'0', SCALE as usize - fraction.len()))
        {
            unscaled = unscaled.checked_mul(10).and_then(|n| n.checked_add(i128::from(b - b'0'))).ok_or_else(bad)?;
        }
        Ok(Decimal { unscaled: if negative { -unscaled } else { unscaled } })
    }
}

impl<const SCALE: u32> Serialize for Decimal<SCALE> {
    /// As Avro's JSON encoding of bytes: one character per byte, U+0000 to U+00FF.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_bytes().into_iter().map(char::from).collect::<String>())
    }
}

impl<'de, const SCALE: u32> Deserialize<'de> for Decimal<SCALE> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes: Vec<u8> = text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).map_err(|_| serde::de::Error::custom("a decimal's byte above U+00FF")))
            .collect::<Result<_, _>>()?;
        Decimal::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_and_round_trip_through_bytes_and_text() {
        let d: Decimal<2> = "1234.56".parse().unwrap();
        assert_eq!(d.unscaled(), 123_456);
        assert_eq!(d.to_string(), "1234.56");
        assert_eq!(Decimal::<2>::from_bytes(&d.to_bytes()).unwrap(), d);
        assert_eq!("12.34".parse::<Decimal<2>>().unwrap().to_bytes(), vec![0x04, 0xd2]);
        assert_eq!("-1.28".parse::<Decimal<2>>().unwrap().to_bytes(), vec![0x80]);
        assert_eq!("1.28".parse::<Decimal<2>>().unwrap().to_bytes(), vec![0x00, 0x80]);
        assert_eq!("5".parse::<Decimal<2>>().unwrap().to_string(), "5.00");
        assert!("1.234".parse::<Decimal<2>>().is_err());
        assert!("abc".parse::<Decimal<2>>().is_err());
        let json = serde_json::to_value(d).unwrap();
        assert_eq!(serde_json::from_value::<Decimal<2>>(json).unwrap(), d);
    }
}

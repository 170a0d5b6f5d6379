//! The shop's clock: real time by default, or faster (`clock_speed`: 60 runs an hour a minute) so tests and the
//! simulator see repairs finish without waiting for them; `max` makes every appointment due as soon as it is booked
//! (event times still advance with real time, so the calendar stays sensible).

use std::time::Instant;

/// How fast the shop's time runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// Shop seconds per real second.
    Times(f64),
    /// Every appointment is due at once.
    Max,
}

impl std::str::FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Speed, String> {
        match s.trim() {
            "max" => Ok(Speed::Max),
            n => match n.parse::<f64>() {
                Ok(x) if x.is_finite() && x > 0.0 => Ok(Speed::Times(x)),
                _ => Err(format!("{s:?} is not a speed: give a number above 0 (1 is real time) or max")),
            },
        }
    }
}

/// The shop's time, shared by its services.
#[derive(Clone, Copy, Debug)]
pub struct ShopClock {
    speed: Speed,
    /// Shop time (µs since the epoch) at `started`.
    origin_us: i64,
    started: Instant,
}

impl ShopClock {
    /// A clock that reads the wall clock now and runs at `speed` from there.
    pub fn new(speed: Speed) -> ShopClock {
        ShopClock { speed, origin_us: weir_runtime::time::now_ms() * 1000, started: Instant::now() }
    }

    pub fn speed(&self) -> Speed {
        self.speed
    }

    /// Now, in shop time (µs since the epoch).
    pub fn now_us(&self) -> i64 {
        let elapsed = self.started.elapsed().as_micros() as f64;
        let factor = match self.speed {
            Speed::Times(x) => x,
            Speed::Max => 1.0,
        };
        self.origin_us.saturating_add((elapsed * factor) as i64)
    }

    /// Whether shop time `at_us` has passed.
    pub fn has_passed(&self, at_us: i64) -> bool {
        self.speed == Speed::Max || at_us <= self.now_us()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_parse_and_a_fast_clock_runs_ahead() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("60".parse::<Speed>(), Ok(Speed::Times(60.0)));
        assert!("0".parse::<Speed>().is_err() && "fast".parse::<Speed>().is_err());
        let fast = ShopClock::new(Speed::Times(3600.0));
        let start = fast.now_us();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(fast.now_us() - start >= 60_000_000, "20 ms at 3600x is over a minute");
        assert!(ShopClock::new(Speed::Max).has_passed(i64::MAX));
        assert!(!ShopClock::new(Speed::Times(1.0)).has_passed(i64::MAX));
    }
}

//! Timestamps: stored as microseconds since the Unix epoch (`Micros`) and
//! written on the wire as ISO-8601 UTC with seven fractional digits and `Z`,
//! the way Defender writes them (`2021-02-04T15:36:52.7788848Z`).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

impl Micros {
    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    /// `secs` seconds later.
    pub fn plus_secs(self, secs: u64) -> Self {
        Self(
            self.0
                .saturating_add((secs as i64).saturating_mul(1_000_000)),
        )
    }

    /// `secs` seconds earlier.
    pub fn minus_secs(self, secs: u64) -> Self {
        Self(
            self.0
                .saturating_sub((secs as i64).saturating_mul(1_000_000)),
        )
    }

    /// Whole seconds since the epoch.
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// `2021-02-04T15:36:52.7788840Z`.
    pub fn to_wire(self) -> String {
        let dt = DateTime::<Utc>::from_timestamp_micros(self.0).unwrap_or_default();
        format!(
            "{}.{:07}Z",
            dt.format("%Y-%m-%dT%H:%M:%S"),
            dt.timestamp_subsec_nanos() / 100
        )
    }

    /// `2021-02-04T16:13:50Z`, the form of a download link's `se`.
    pub fn to_wire_seconds(self) -> String {
        let dt = DateTime::<Utc>::from_timestamp_micros(self.0).unwrap_or_default();
        dt.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    /// Parses the timestamp forms clients send: RFC 3339 with any fraction and
    /// offset, a bare UTC date-time, or a date (`2018-08-01Z`, `2018-08-01`).
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
            return Some(Self(dt.with_timezone(&Utc).timestamp_micros()));
        }
        let bare = text.strip_suffix('Z').unwrap_or(text);
        if let Ok(dt) = NaiveDateTime::parse_from_str(bare, "%Y-%m-%dT%H:%M:%S%.f") {
            return Some(Self(dt.and_utc().timestamp_micros()));
        }
        NaiveDate::parse_from_str(bare, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|dt| Self(dt.and_utc().timestamp_micros()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_has_seven_fraction_digits() {
        let t = Micros::parse("2021-02-04T15:36:52.778884Z").unwrap();
        assert_eq!(t.to_wire(), "2021-02-04T15:36:52.7788840Z");
        assert_eq!(t.to_wire_seconds(), "2021-02-04T15:36:52Z");
    }

    #[test]
    fn parses_lenient_forms() {
        let day = Micros::parse("2018-08-01Z").unwrap();
        assert_eq!(day.to_wire(), "2018-08-01T00:00:00.0000000Z");
        assert_eq!(Micros::parse("2018-08-01"), Some(day));
        assert_eq!(
            Micros::parse("2023-03-18T21:04:01.92Z").unwrap().to_wire(),
            "2023-03-18T21:04:01.9200000Z"
        );
        assert_eq!(
            Micros::parse("2023-03-18T22:04:01+01:00")
                .unwrap()
                .to_wire(),
            "2023-03-18T21:04:01.0000000Z"
        );
        assert_eq!(Micros::parse("yesterday"), None);
    }
}

//! The three timestamp formats AWS uses here, without a date library: ISO 8601 (the
//! connections API's `connectedAt`), the SigV4 `X-Amz-Date` (`20240131T235959Z`) and the
//! `requestTime` of API Gateway events (`31/Jan/2024:23:59:59 +0000`); and the ids made of a
//! timestamp and a counter that events and answers carry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC calendar time, to the millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Civil {
    pub(crate) year: i64,
    pub(crate) month: u32,
    pub(crate) day: u32,
    pub(crate) hour: u32,
    pub(crate) minute: u32,
    pub(crate) second: u32,
    pub(crate) millis: u32,
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Civil {
    pub(crate) fn from_system(t: SystemTime) -> Civil {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let secs = ms.div_euclid(1000);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        Civil {
            year,
            month,
            day,
            hour: (sod / 3600) as u32,
            minute: (sod % 3600 / 60) as u32,
            second: (sod % 60) as u32,
            millis: ms.rem_euclid(1000) as u32,
        }
    }

    pub(crate) fn to_system(self) -> Option<SystemTime> {
        let valid = (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 61
            && self.millis < 1000;
        if !valid {
            return None;
        }
        // Checked all the way: the fields come from peers (timestamps in answers and headers),
        // and a far-off year must be refused, not overflow.
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days
            .checked_mul(86_400)?
            .checked_add(i64::from(self.hour) * 3600)?
            .checked_add(i64::from(self.minute) * 60)?
            .checked_add(i64::from(self.second))?;
        let ms = u64::try_from(secs)
            .ok()?
            .checked_mul(1000)?
            .checked_add(u64::from(self.millis))?;
        UNIX_EPOCH.checked_add(Duration::from_millis(ms))
    }
}

/// `2024-01-31T23:59:59.123Z`.
pub(crate) fn iso8601(t: SystemTime) -> String {
    let c = Civil::from_system(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    )
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Exactly `width` ASCII digits.
fn fixed(s: &str, width: usize) -> Option<u32> {
    (s.len() == width).then(|| num(s)).flatten()
}

/// Parses `2024-01-31T23:59:59Z`, with optional fractional seconds. Fields have their fixed
/// widths (a four-digit year, two-digit month to second), as ISO 8601 writes them.
pub(crate) fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (year, month, day) = (
        fixed(d.next()?, 4)?,
        fixed(d.next()?, 2)?,
        fixed(d.next()?, 2)?,
    );
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let (hour, minute, second) = (
        fixed(t.next()?, 2)?,
        fixed(t.next()?, 2)?,
        fixed(t.next()?, 2)?,
    );
    let millis = if frac.is_empty() {
        0
    } else {
        // Digits only (however many); the first three are the milliseconds.
        num(frac)?;
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        num(&digits)?
    };
    Civil {
        year: i64::from(year),
        month,
        day,
        hour,
        minute,
        second,
        millis,
    }
    .to_system()
}

/// `20240131T235959Z`, the SigV4 timestamp.
pub(crate) fn amz_date(t: SystemTime) -> String {
    let c = Civil::from_system(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Parses `20240131T235959Z`.
pub(crate) fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    // ASCII first: the fields below are sliced by byte offsets.
    if !s.is_ascii() || b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    Civil {
        year: i64::from(num(&s[0..4])?),
        month: num(&s[4..6])?,
        day: num(&s[6..8])?,
        hour: num(&s[9..11])?,
        minute: num(&s[11..13])?,
        second: num(&s[13..15])?,
        millis: 0,
    }
    .to_system()
}

/// `31/Jan/2024:23:59:59 +0000`, API Gateway's `requestTime`.
pub(crate) fn request_time(t: SystemTime) -> String {
    let c = Civil::from_system(t);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// Milliseconds since the epoch.
pub(crate) fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Now, in milliseconds since the epoch, and a number never handed out before by this process.
fn stamp() -> (u64, u64) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    (epoch_millis(SystemTime::now()), n)
}

/// An event's `requestId` / `messageId`: 16 characters of base64, as API Gateway's look (six
/// bytes of the time, six of the counter).
pub(crate) fn event_id() -> String {
    let (t, n) = stamp();
    let mut raw = [0u8; 12];
    raw[..6].copy_from_slice(&t.to_be_bytes()[2..]);
    raw[6..].copy_from_slice(&n.to_be_bytes()[2..]);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// An answer's `x-amzn-RequestId`: `{time:012x}-{counter:08x}`.
pub(crate) fn request_id() -> String {
    let (t, n) = stamp();
    format!("{t:012x}-{n:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        // 2024-02-29T12:34:56.789Z (a leap day).
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(iso8601(t), "2024-02-29T12:34:56.789Z");
        assert_eq!(parse_iso8601("2024-02-29T12:34:56.789Z"), Some(t));
        assert_eq!(
            parse_iso8601("2024-02-29T12:34:56Z"),
            Some(t - Duration::from_millis(789))
        );
        assert_eq!(amz_date(t), "20240229T123456Z");
        assert_eq!(
            parse_amz_date("20240229T123456Z"),
            Some(t - Duration::from_millis(789))
        );
        assert_eq!(request_time(t), "29/Feb/2024:12:34:56 +0000");
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert!(parse_amz_date("2024-02-29T12:34:56Z").is_none());
        assert!(parse_iso8601("2024-13-01T00:00:00Z").is_none());
        // Only four-digit years (and fixed-width fields); nothing a peer sends can overflow.
        assert!(parse_iso8601("99999-01-01T00:00:00Z").is_none());
        assert!(parse_iso8601("4294967295-12-31T23:59:59.999Z").is_none());
        assert!(parse_iso8601("24-01-01T00:00:00Z").is_none());
        assert!(parse_iso8601("2024-1-01T00:00:00Z").is_none());
        assert!(parse_iso8601("2024-01-01T00:00:00.1x2Z").is_none());
        assert_eq!(
            parse_iso8601("9999-12-31T23:59:59.9Z"),
            Some(UNIX_EPOCH + Duration::from_millis(253_402_300_799_900))
        );
        assert!(parse_iso8601("1969-12-31T23:59:59Z").is_none());
        assert!(parse_amz_date("20€401T123456Z").is_none());
        for days in [-1000i64, 0, 59, 60, 365, 10_957, 19_782, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}

//! Bearer token answers and their lifetime (distribution's token spec): `{"token": …}` or
//! `{"access_token": …}`, with `expires_in` (seconds the token stays valid from its issue;
//! 60 when omitted) and `issued_at` (RFC 3339; when omitted, the token counts from its
//! receipt).
//!
//! A client refreshes its token *before* it expires ([`Token::refresh_at`]): a tenth of the
//! lifetime ahead, at most 10 s, so that a long pull of many blobs fetches a new token
//! instead of paying a 401 round trip per expired token. A 401 `invalid_token` still
//! triggers a refresh as a fallback (clocks disagree, the registry revoked the token).
//!
//! Clock skew: `issued_at` only ever shortens the lifetime counted from receipt (a token
//! issued "in the future" is not given more than `expires_in`), and an `issued_at` that
//! would make the token expired on arrival is ignored (counting from receipt), so a server
//! clock behind ours cannot make every request fetch a new token.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::error::{Error, Result};

/// The lifetime of a token whose answer has no `expires_in` (the spec's default).
pub(crate) const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(60);
/// The most a token is refreshed ahead of its expiry.
const MAX_REFRESH_AHEAD: Duration = Duration::from_secs(10);

/// A token from a realm.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// The token itself.
    pub value: String,
    /// How long it stays valid, counted from its receipt.
    pub lifetime: Duration,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl Token {
    /// When a token received at `received` should be replaced: a tenth of its lifetime
    /// before it ends, at most [`MAX_REFRESH_AHEAD`] before.
    pub(crate) fn refresh_at(&self, received: Instant) -> Instant {
        let ahead = (self.lifetime / 10).min(MAX_REFRESH_AHEAD);
        received + (self.lifetime - ahead)
    }
}

/// Parses a token answer (JSON) from `url`, received at wall-clock time `received`.
///
/// # Errors
/// [`Error::Protocol`] when it is not JSON or has no token.
pub(crate) fn parse_answer(url: &str, bytes: &[u8], received: SystemTime) -> Result<Token> {
    let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::Protocol {
        url: url.to_owned(),
        reason: format!("token answer is not JSON: {e}"),
    })?;
    let value = json
        .get("token")
        .or_else(|| json.get("access_token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Error::Protocol {
            url: url.to_owned(),
            reason: "token answer has no token".into(),
        })?;
    let expires_in = json
        .get("expires_in")
        .and_then(|v| {
            v.as_u64()
                .map(Duration::from_secs)
                .or_else(|| v.as_f64().and_then(|f| Duration::try_from_secs_f64(f).ok()))
        })
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_EXPIRES_IN);
    let mut lifetime = expires_in;
    if let Some(issued) = json
        .get("issued_at")
        .and_then(|v| v.as_str())
        .and_then(parse_rfc3339)
        && let Some(end) = issued.checked_add(expires_in)
    {
        match end.duration_since(received) {
            Ok(left) if !left.is_zero() => lifetime = lifetime.min(left),
            _ => tracing::debug!(
                url,
                issued_at = ?json.get("issued_at"),
                "token issued_at makes it expired on arrival (clock skew?); counting from receipt"
            ),
        }
    }
    Ok(Token { value, lifetime })
}

/// Parses an RFC 3339 date-time (`2024-05-01T12:30:00Z`, `…00.123456+02:00`).
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let end = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        if end == 0 {
            return None;
        }
        for (i, d) in frac[..end].bytes().take(9).enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &frac[end..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
                return None;
            }
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let o = h * 3600 + m * 60;
            if ob[0] == b'-' { -o } else { o }
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(at(0)));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:30:15Z"),
            Some(at(1_709_209_815))
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T14:30:15.25+02:00"),
            Some(at(1_709_209_815) + Duration::from_millis(250))
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T10:00:15-02:30"),
            Some(at(1_709_209_815))
        );
        for bad in [
            "",
            "2024-02-29",
            "2024-02-29T12:30:15",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:30:15.Z",
            "2024-02-29T12:30:15+0200",
            "x024-02-29T12:30:15Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn token_lifetimes() {
        let now = at(1_700_000_000);
        let parse = |json: &str| parse_answer("u", json.as_bytes(), now).unwrap();
        // No expires_in: 60 s; expires_in as given (integer or not).
        assert_eq!(parse(r#"{"token":"t"}"#).lifetime, DEFAULT_EXPIRES_IN);
        assert_eq!(
            parse(r#"{"token":"t","expires_in":0}"#).lifetime,
            DEFAULT_EXPIRES_IN
        );
        assert_eq!(
            parse(r#"{"access_token":"t","expires_in":300}"#).lifetime,
            Duration::from_secs(300)
        );
        assert_eq!(
            parse(r#"{"token":"t","expires_in":2.5}"#).lifetime,
            Duration::from_millis(2500)
        );
        // issued_at 100 s ago: 200 s are left of 300.
        let t = parse(r#"{"token":"t","expires_in":300,"issued_at":"2023-11-14T22:11:40Z"}"#);
        assert_eq!(t.lifetime, Duration::from_secs(200));
        // issued "in the future" (a clock ahead): never more than expires_in.
        let t = parse(r#"{"token":"t","expires_in":300,"issued_at":"2023-11-14T22:15:00Z"}"#);
        assert_eq!(t.lifetime, Duration::from_secs(300));
        // Expired on arrival by issued_at (a clock behind): counted from receipt.
        let t = parse(r#"{"token":"t","expires_in":60,"issued_at":"2023-11-14T20:00:00Z"}"#);
        assert_eq!(t.lifetime, Duration::from_secs(60));
        // Unparseable issued_at: ignored.
        let t = parse(r#"{"token":"t","expires_in":60,"issued_at":"yesterday"}"#);
        assert_eq!(t.lifetime, Duration::from_secs(60));
        assert!(parse_answer("u", b"{}", now).is_err());
        assert!(parse_answer("u", b"nope", now).is_err());
        assert!(!format!("{t:?}").contains("\"t\""));
    }

    #[test]
    fn refreshed_shortly_before_expiry() {
        let received = Instant::now();
        let token = |secs: u64| Token {
            value: "t".into(),
            lifetime: Duration::from_secs(secs),
        };
        assert_eq!(
            token(300).refresh_at(received),
            received + Duration::from_secs(290)
        );
        assert_eq!(
            token(60).refresh_at(received),
            received + Duration::from_secs(54)
        );
        assert_eq!(
            token(2).refresh_at(received),
            received + Duration::from_millis(1800)
        );
    }
}

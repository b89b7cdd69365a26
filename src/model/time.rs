//! Times as the store keeps them (Unix microseconds) and as the APIs write and read them.

/// The current time as Unix microseconds.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// ISO 8601 UTC with `+00:00`, as the Queue API writes times.
pub fn format_time(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// ISO 8601 (`2024-01-02T03:04:05+00:00`, or a plain date), `now`, `today`, `yesterday`,
/// or relative `-N unit` / `N units ago` (second, minute, hour, day, week).
pub fn parse_time(text: &str) -> Option<i64> {
    parse_time_at(text, chrono::Utc::now().timestamp_micros())
}

/// `parse_time` with `now` (Unix microseconds) as the time relative times count from.
pub fn parse_time_at(text: &str, now: i64) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, Utc};
    let now = DateTime::<Utc>::from_timestamp_micros(now)?;
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.timestamp_micros());
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    let midnight = now.date_naive().and_hms_opt(0, 0, 0)?.and_utc();
    match text {
        "now" => return Some(now.timestamp_micros()),
        "today" => return Some(midnight.timestamp_micros()),
        "yesterday" => return Some((midnight - chrono::Duration::days(1)).timestamp_micros()),
        _ => {}
    }
    let relative = text.strip_suffix(" ago").map(|t| format!("-{t}"));
    let relative = relative.as_deref().unwrap_or(text);
    let mut words = relative.split_whitespace();
    let amount: i64 = words.next()?.parse().ok()?;
    let unit = words.next()?.trim_end_matches('s');
    let seconds = match unit {
        "second" | "sec" => 1,
        "minute" | "min" => 60,
        "hour" => 3600,
        "day" => 86_400,
        "week" => 604_800,
        _ => return None,
    };
    if words.next().is_some() {
        return None;
    }
    Some(now.timestamp_micros() + amount * seconds * 1_000_000)
}

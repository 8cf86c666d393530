//! `strftime` for chat templates' `strftime_now`: a Unix time as a UTC date, formatted with the
//! C library's directives (`%d %b %Y` gives `26 Jul 2024`) in the C locale, and glibc's `-` flag
//! (`%-d`: no padding). An unknown directive is written as it is, as glibc does.

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A UTC date and time.
struct Civil {
    year: i64,
    /// 1..=12
    month: usize,
    /// 1..=31
    day: i64,
    /// 0 = Sunday
    weekday: usize,
    /// 1..=366
    yday: i64,
    hour: i64,
    minute: i64,
    second: i64,
}

/// The UTC date of `unix` seconds (Howard Hinnant's `civil_from_days`).
fn civil(unix: i64) -> Civil {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const BEFORE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let month = month as usize;
    let yday = BEFORE[month - 1] + day + i64::from(leap && month > 2);
    Civil {
        year,
        month,
        day,
        weekday: (days + 4).rem_euclid(7) as usize,
        yday,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
    }
}

/// `unix` seconds as `format` says, in UTC.
pub(super) fn format_utc(unix: i64, format: &str) -> String {
    let t = civil(unix);
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let no_pad = chars.peek() == Some(&'-');
        if no_pad {
            chars.next();
        }
        let num = |n: i64, width: usize| {
            if no_pad {
                n.to_string()
            } else {
                format!("{n:0width$}")
            }
        };
        let hour12 = if t.hour % 12 == 0 { 12 } else { t.hour % 12 };
        let piece = match chars.next() {
            Some('a') => DAYS[t.weekday][..3].to_string(),
            Some('A') => DAYS[t.weekday].to_string(),
            Some('b') | Some('h') => MONTHS[t.month - 1][..3].to_string(),
            Some('B') => MONTHS[t.month - 1].to_string(),
            Some('d') => num(t.day, 2),
            Some('e') => format!("{:>2}", t.day),
            Some('H') => num(t.hour, 2),
            Some('I') => num(hour12, 2),
            Some('j') => num(t.yday, 3),
            Some('m') => num(t.month as i64, 2),
            Some('M') => num(t.minute, 2),
            Some('p') => if t.hour < 12 { "AM" } else { "PM" }.to_string(),
            Some('S') => num(t.second, 2),
            Some('y') => num(t.year.rem_euclid(100), 2),
            Some('Y') => t.year.to_string(),
            Some('F') => format!("{}-{:02}-{:02}", t.year, t.month, t.day),
            Some('T') => format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second),
            Some('D') => format!("{:02}/{:02}/{:02}", t.month, t.day, t.year.rem_euclid(100)),
            Some('u') => (if t.weekday == 0 { 7 } else { t.weekday }).to_string(),
            Some('w') => t.weekday.to_string(),
            Some('Z') => "UTC".to_string(),
            Some('z') => "+0000".to_string(),
            Some('n') => "\n".to_string(),
            Some('t') => "\t".to_string(),
            Some('%') => "%".to_string(),
            Some(other) => format!("%{}{other}", if no_pad { "-" } else { "" }),
            None => "%".to_string(),
        };
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::format_utc;

    #[test]
    fn formats_like_the_c_library() {
        // 2024-07-26 13:05:09 UTC, a Friday, day 208 of a leap year.
        let t = 1_721_999_109;
        assert_eq!(format_utc(t, "%d %b %Y"), "26 Jul 2024");
        assert_eq!(format_utc(t, "%A, %B %-d %y %j"), "Friday, July 26 24 208");
        assert_eq!(
            format_utc(t, "%F %T %I%p %a %% %Q"),
            "2024-07-26 13:05:09 01PM Fri % %Q"
        );
        assert_eq!(
            format_utc(0, "%Y-%m-%d %H:%M:%S %w"),
            "1970-01-01 00:00:00 4"
        );
        assert_eq!(format_utc(-1, "%Y-%m-%d %H:%M:%S"), "1969-12-31 23:59:59");
        assert_eq!(format_utc(951_782_400, "%d %b %Y %j"), "29 Feb 2000 060");
    }
}

//! Number texts as protojson reads them: an integer field takes a JSON number or string in any
//! form whose value is an integer (`1e3`, `"2.50e1"`, `1.0`), exactly, with no detour through a
//! float (`9007199254740993.0` stays 9007199254740993); `Timestamp` / `Duration` strings
//! carry at most nanoseconds, and a `Timestamp` no leap second.

use prost_reflect::Kind;

/// Why a number text is not an integer of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotIntegral {
    /// Not a JSON number at all (`abc`, `+1`, ` 1`): left to the proto3 JSON reader's own error.
    NotANumber,
    /// A number with a fractional part (`1.5`, `15e-1`).
    Fraction,
    /// An integer too large for any integer field (`1e40`).
    TooLarge,
}

/// The integer the JSON number `text` stands for (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`),
/// worked out on its decimal digits and exponent, never through a float: `2.50e1` is 25, `1e3`
/// 1000, `10e-1` 1, `1.5` a [`NotIntegral::Fraction`].
pub fn integral(text: &str) -> Result<i128, NotIntegral> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (whole.len() > 1 && whole.starts_with('0')) || fraction.is_some_and(|f| !digits(f)) {
        return Err(NotIntegral::NotANumber);
    }
    let exponent = match exponent {
        Some(e) => parse_exponent(e).ok_or(NotIntegral::NotANumber)?,
        None => 0,
    };
    let fraction = fraction.unwrap_or("");
    scale(whole, fraction, exponent).map(|n| if negative { -n } else { n })
}

/// The exponent of a JSON number (`+3`, `-2`, `10`); one too large for an `i64` is clamped, which
/// decides the same (a fraction, or too large) for any mantissa but zero.
fn parse_exponent(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.parse::<i64>().unwrap_or(i64::MAX / 4).min(i64::MAX / 4);
    Some(if negative { -magnitude } else { magnitude })
}

/// `whole.fraction` times ten to `exponent`, as an integer: the digits of both parts, the
/// trailing zeros moved into the exponent, then shifted.
fn scale(whole: &str, fraction: &str, exponent: i64) -> Result<i128, NotIntegral> {
    let digits = format!("{whole}{fraction}");
    let trimmed = digits.trim_end_matches('0');
    let significant = trimmed.trim_start_matches('0');
    if significant.is_empty() {
        return Ok(0);
    }
    // Lengths are at most a request body's: far inside i64, as the clamped exponent is.
    let shift = exponent - fraction.len() as i64 + (digits.len() - trimmed.len()) as i64;
    if shift < 0 {
        return Err(NotIntegral::Fraction);
    }
    // i128 holds every 38-digit integer: anything longer is past every integer field.
    if significant.len() as i64 + shift > 38 {
        return Err(NotIntegral::TooLarge);
    }
    let value = significant.parse::<i128>().map_err(|_| NotIntegral::TooLarge)?;
    let power = u32::try_from(shift).ok().and_then(|s| 10i128.checked_pow(s)).ok_or(NotIntegral::TooLarge)?;
    value.checked_mul(power).ok_or(NotIntegral::TooLarge)
}

/// The values an integer field of `kind` holds, and the name of its type; `None` for a kind that
/// is not an integer.
pub fn integer_range(kind: &Kind) -> Option<(i128, i128, &'static str)> {
    Some(match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => (i32::MIN.into(), i32::MAX.into(), "int32"),
        Kind::Uint32 | Kind::Fixed32 => (0, u32::MAX.into(), "uint32"),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => (i64::MIN.into(), i64::MAX.into(), "int64"),
        Kind::Uint64 | Kind::Fixed64 => (0, u64::MAX.into(), "uint64"),
        // `NullValue` is `null`, never a number.
        Kind::Enum(e) if e.full_name() != "google.protobuf.NullValue" => (i32::MIN.into(), i32::MAX.into(), "enum number"),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Int32Value" => (i32::MIN.into(), i32::MAX.into(), "int32"),
            "google.protobuf.UInt32Value" => (0, u32::MAX.into(), "uint32"),
            "google.protobuf.Int64Value" => (i64::MIN.into(), i64::MAX.into(), "int64"),
            "google.protobuf.UInt64Value" => (0, u64::MAX.into(), "uint64"),
            _ => return None,
        },
        _ => return None,
    })
}

/// The integer `text` stands for, within `range` (from [`integer_range`]); the error says why
/// not, naming the text and the type. [`NotIntegral::NotANumber`] is `Ok(None)`: the proto3 JSON
/// reader refuses it with its own words.
pub fn integer_in(text: &str, range: (i128, i128, &str)) -> Result<Option<i128>, String> {
    let (min, max, name) = range;
    match integral(text) {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        Ok(_) | Err(NotIntegral::TooLarge) => Err(format!("{text} is out of range for {name}")),
        Err(NotIntegral::Fraction) => Err(format!("{text} is not an integer ({name})")),
        Err(NotIntegral::NotANumber) => Ok(None),
    }
}

/// The most fractional digits a `Timestamp` or `Duration` takes: nanoseconds.
pub const MAX_FRACTION_DIGITS: usize = 9;

/// Whether a field of `kind` is a `google.protobuf.Timestamp` or `Duration`, written as a string
/// with fractional seconds.
pub fn is_time(kind: &Kind) -> bool {
    matches!(kind, Kind::Message(m) if matches!(m.full_name(), "google.protobuf.Timestamp" | "google.protobuf.Duration"))
}

/// Refuses a `Timestamp` or `Duration` text (`type_name`) with more than nine fractional digits,
/// which protojson refuses and the proto3 JSON reader would cut to nanoseconds.
pub fn check_fraction(text: &str, type_name: &str) -> Result<(), String> {
    let Some((_, after)) = text.split_once('.') else { return Ok(()) };
    let count = after.bytes().take_while(u8::is_ascii_digit).count();
    if count > MAX_FRACTION_DIGITS {
        return Err(format!("{text} has {count} fractional digits: {type_name} takes at most {MAX_FRACTION_DIGITS} (nanoseconds)"));
    }
    Ok(())
}

/// Refuses a `Timestamp` or `Duration` text (`type_name`) that the proto3 JSON reader would
/// silently change, as protojson refuses it: more than nine fractional digits (cut to
/// nanoseconds), or a `Timestamp` at second 60 (a leap second, made :59).
pub fn check_time(text: &str, type_name: &str) -> Result<(), String> {
    check_fraction(text, type_name)?;
    if type_name == "google.protobuf.Timestamp" && is_leap_second(text) {
        return Err(format!("{text} is at second 60 (a leap second): {type_name} takes seconds 00 to 59"));
    }
    Ok(())
}

/// Whether `text` reads as an RFC 3339 time at second 60 (`2024-06-30T23:59:60Z`): its seconds
/// at their fixed place after a four-digit year (any other year is out of a `Timestamp`'s range).
/// A look at four bytes, for every string of the body.
pub fn is_leap_second(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 19 && b[4] == b'-' && matches!(b[10], b'T' | b't' | b' ') && b[13] == b':' && b[16] == b':' && &b[17..19] == b"60"
}

/// Whether a string of the body may be a `Timestamp` or `Duration` that [`check_time`] refuses:
/// finer than nanoseconds ([`may_be_too_fine`]) or at a leap second ([`is_leap_second`]).
pub fn may_be_misread_time(text: &str) -> bool {
    may_be_too_fine(text) || is_leap_second(text)
}

/// Whether a string of the body may be a `Timestamp` or `Duration` with more than nine fractional
/// digits: ten or more digits after a `.`, right before the final `s` (`1.0000000001s`), `Z`, or
/// `+hh:mm` / `-hh:mm`. A look at its end only, for every string of the body: a string that
/// passes is checked by its field's type (the typed pass).
pub fn may_be_too_fine(text: &str) -> bool {
    let bytes = text.as_bytes();
    let end = match bytes.last() {
        Some(b's' | b'Z') => bytes.len() - 1,
        Some(b'0'..=b'9') if bytes.len() >= 6 && matches!(bytes[bytes.len() - 6], b'+' | b'-') && bytes[bytes.len() - 3] == b':' => bytes.len() - 6,
        _ => return false,
    };
    let digits = bytes[..end].iter().rev().take_while(|b| b.is_ascii_digit()).count();
    digits > MAX_FRACTION_DIGITS && end > digits && bytes[end - digits - 1] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_values_in_any_json_number_form_are_exact() {
        assert_eq!(integral("0"), Ok(0));
        assert_eq!(integral("-0"), Ok(0));
        assert_eq!(integral("-0.0e5"), Ok(0));
        assert_eq!(integral("1e3"), Ok(1000));
        assert_eq!(integral("1E+3"), Ok(1000));
        assert_eq!(integral("2.50e1"), Ok(25));
        assert_eq!(integral("10e-1"), Ok(1));
        assert_eq!(integral("1.0"), Ok(1));
        assert_eq!(integral("-25000e-3"), Ok(-25));
        assert_eq!(integral("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(integral("9007199254740993.0"), Ok(9_007_199_254_740_993), "no float on the way");
        assert_eq!(integral("9.007199254740993e15"), Ok(9_007_199_254_740_993));
        assert_eq!(integral("18446744073709551615"), Ok(u64::MAX.into()));
        assert_eq!(integral("-9223372036854775808"), Ok(i64::MIN.into()));
        assert_eq!(integral("0e99999999999999999999999"), Ok(0), "zero whatever the exponent");
    }

    #[test]
    fn fractions_huge_values_and_non_numbers_are_told_apart() {
        for fraction in ["1.5", "15e-1", "1e-1", "0.1", "1e-99999999999999999999999"] {
            assert_eq!(integral(fraction), Err(NotIntegral::Fraction), "{fraction}");
        }
        for huge in ["1e40", "1e99999999999999999999999", "123456789012345678901234567890123456789"] {
            assert_eq!(integral(huge), Err(NotIntegral::TooLarge), "{huge}");
        }
        for bad in ["", "-", "+1", " 1", "1 ", "01", "1.", ".5", "1e", "1e+", "0x10", "1_000", "abc", "1.5.5", "NaN", "Infinity"] {
            assert_eq!(integral(bad), Err(NotIntegral::NotANumber), "{bad:?}");
        }
    }

    #[test]
    fn integers_are_checked_against_their_type() {
        let int32 = integer_range(&Kind::Int32).unwrap();
        assert_eq!(integer_in("1e3", int32), Ok(Some(1000)));
        assert_eq!(integer_in("abc", int32), Ok(None));
        assert_eq!(integer_in("2147483648", int32).unwrap_err(), "2147483648 is out of range for int32");
        assert_eq!(integer_in("1.5", int32).unwrap_err(), "1.5 is not an integer (int32)");
        let uint64 = integer_range(&Kind::Uint64).unwrap();
        assert_eq!(integer_in("1.8446744073709551615e19", uint64), Ok(Some(u64::MAX.into())));
        assert_eq!(integer_in("18446744073709551616", uint64).unwrap_err(), "18446744073709551616 is out of range for uint64");
        assert_eq!(integer_in("-1", uint64).unwrap_err(), "-1 is out of range for uint64");
        assert_eq!(integer_in("1e40", uint64).unwrap_err(), "1e40 is out of range for uint64");
        assert!(integer_range(&Kind::Double).is_none());
    }

    #[test]
    fn times_take_at_most_nanoseconds() {
        assert!(check_fraction("1.000000001s", "google.protobuf.Duration").is_ok());
        assert!(check_fraction("2024-01-01T00:00:00.123456789Z", "google.protobuf.Timestamp").is_ok());
        assert!(check_fraction("3s", "google.protobuf.Duration").is_ok());
        assert_eq!(
            check_fraction("1.0000000001s", "google.protobuf.Duration").unwrap_err(),
            "1.0000000001s has 10 fractional digits: google.protobuf.Duration takes at most 9 (nanoseconds)"
        );
        for fine in ["1.0000000001s", "-0.1234567890s", "2024-01-01T00:00:00.1234567890Z", "2024-01-01T00:00:00.1234567890+01:00"] {
            assert!(may_be_too_fine(fine), "{fine}");
        }
        for plain in ["", "s", "users", "1.000000001s", "12345678901s", "2024-01-01T00:00:00.123456789Z", "2024-01-01T00:00:00Z", "1234567890Z", "a.12345678901"] {
            assert!(!may_be_too_fine(plain), "{plain}");
        }
    }

    /// protojson refuses second 60; the proto3 JSON reader made it :59, silently.
    #[test]
    fn a_timestamp_at_a_leap_second_is_refused() {
        let timestamp = "google.protobuf.Timestamp";
        assert_eq!(
            check_time("2024-06-30T12:00:60.5Z", timestamp).unwrap_err(),
            "2024-06-30T12:00:60.5Z is at second 60 (a leap second): google.protobuf.Timestamp takes seconds 00 to 59"
        );
        for leap in ["2016-12-31T23:59:60Z", "2016-12-31t23:59:60+01:00", "2016-12-31 23:59:60Z"] {
            assert!(check_time(leap, timestamp).is_err() && may_be_misread_time(leap), "{leap}");
        }
        for fine in ["2024-06-30T12:00:59.5Z", "2024-06-30T12:60:00Z", "60", "1960-01-01T00:00:00Z"] {
            assert!(check_time(fine, timestamp).is_ok() && !is_leap_second(fine), "{fine}");
        }
        assert!(check_time("60s", "google.protobuf.Duration").is_ok());
        assert!(check_time("1.0000000001s", "google.protobuf.Duration").is_err(), "finer than nanoseconds, as before");
    }
}

//! `multipleOf` on the numbers' decimal values. Boon divides two `f64`s and wants no fraction,
//! so `19.99` is "not a multiple of `0.01`" (19.99 / 0.01 is 1998.9999999999998). JSON Schema
//! means the mathematical values: the plugin checks each `multipleOf` failure boon reports
//! again, exactly, on the numbers' shortest decimal text in scaled integers, and drops the
//! ones that are wrong (and, with them, an `anyOf`, `oneOf` or `contains` they made fail).
//! When the numbers are too long or too far apart in scale for 128-bit integers, boon's verdict
//! stands.

use boon::{ErrorKind, ValidationError};
use serde_json::Number;

/// A number's magnitude as `digits × 10^exponent`, from its shortest decimal text (`19.99`,
/// `1e-7`); `None` when the digits do not fit in 128 bits.
fn decimal(number: &Number) -> Option<(u128, i64)> {
    let text = number.to_string();
    let text = text.strip_prefix('-').unwrap_or(&text);
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: u128 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        if !b.is_ascii_digit() {
            return None;
        }
        digits = digits.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
    }
    let mut exponent = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
    while digits != 0 && digits.is_multiple_of(10) {
        digits /= 10;
        exponent = exponent.checked_add(1)?;
    }
    Some((digits, exponent))
}

/// Whether `number` is an integer multiple of `divisor`, in exact decimal arithmetic; `None`
/// when that cannot be told without overflowing.
pub fn is_multiple(number: &Number, divisor: &Number) -> Option<bool> {
    let (a, p) = decimal(number)?;
    let (b, q) = decimal(divisor)?;
    if b == 0 {
        return None;
    }
    if a == 0 {
        return Some(true);
    }
    let low = p.min(q);
    let scaled = |digits: u128, exponent: i64| -> Option<u128> {
        let shift = u32::try_from(exponent.checked_sub(low)?).ok()?;
        digits.checked_mul(10u128.checked_pow(shift)?)
    };
    Some(scaled(a, p)? % scaled(b, q)? == 0)
}

/// Boon's error tree without the `multipleOf` failures that exact arithmetic shows are wrong;
/// `None` when nothing is left (the value passes). A keyword whose causes are alternatives
/// (`anyOf`, `oneOf`, `contains`) is judged again on how many of them now pass; any other error
/// with causes stands while one of them does. (Under `not` and `if`, boon keeps no detail:
/// its verdict stands there.)
pub fn prune<'s, 'v>(mut error: ValidationError<'s, 'v>) -> Option<ValidationError<'s, 'v>> {
    if error.causes.is_empty() {
        return match &error.kind {
            ErrorKind::MultipleOf { got, want } if is_multiple(got, want) == Some(true) => None,
            _ => Some(error),
        };
    }
    let before = error.causes.len();
    let causes: Vec<_> = std::mem::take(&mut error.causes).into_iter().filter_map(prune).collect();
    let passed = before - causes.len();
    let fails = match &error.kind {
        ErrorKind::AnyOf | ErrorKind::Contains => passed == 0,
        ErrorKind::OneOf(None) => passed != 1,
        ErrorKind::MinContains { got, want } => got.len() + passed < *want,
        _ => !causes.is_empty(),
    };
    error.causes = causes;
    fails.then_some(error)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn multiple(number: Value, divisor: Value) -> Option<bool> {
        is_multiple(number.as_number().unwrap(), divisor.as_number().unwrap())
    }

    #[test]
    fn decimal_multiples_are_exact() {
        for (n, d) in [(json!(19.99), json!(0.01)), (json!(0.07), json!(0.01)), (json!(4.35), json!(0.01)), (json!(0.3), json!(0.1)), (json!(-0.3), json!(0.1))] {
            assert_eq!(multiple(n.clone(), d.clone()), Some(true), "{n} {d}");
        }
        assert_eq!(multiple(json!(10), json!(2.5)), Some(true));
        assert_eq!(multiple(json!(1e20), json!(1e-5)), Some(true));
        assert_eq!(multiple(json!(0), json!(0.7)), Some(true));
        assert_eq!(multiple(json!(0.3), json!(0.2)), Some(false));
        assert_eq!(multiple(json!(7), json!(2)), Some(false));
        assert_eq!(multiple(json!(19.999), json!(0.01)), Some(false));
        assert_eq!(multiple(json!(u64::MAX), json!(1e-30)), None, "too far apart: boon decides");
        assert_eq!(multiple(json!(1e308), json!(0.01)), None);
        assert_eq!(multiple(json!(1e308), json!(1e-308)), None);
        assert_eq!(multiple(json!(5e-324), json!(1e308)), None);
    }
}

//! Amounts are integer stroops (1 unit = 10^7 stroops) everywhere inside the system and
//! rendered as decimal strings with exactly seven places at the edges, as Horizon does.

use std::fmt::Write as _;

/// Stroops in one unit of any Stellar asset.
pub const STROOPS_PER_UNIT: i128 = 10_000_000;

/// Renders stroops as a decimal string with seven places: `1234567` -> `"0.1234567"`.
pub fn format_stroops(stroops: i128) -> String {
    let mut out = String::with_capacity(24);
    write_stroops(&mut out, stroops);
    out
}

/// Appends the seven-place decimal form of `stroops` to `out`.
pub fn write_stroops(out: &mut String, stroops: i128) {
    if stroops < 0 {
        out.push('-');
    }
    let magnitude = stroops.unsigned_abs();
    let units = magnitude / STROOPS_PER_UNIT as u128;
    let fraction = magnitude % STROOPS_PER_UNIT as u128;
    // Writing to a String cannot fail.
    let _ = write!(out, "{units}.{fraction:07}");
}

/// Why a decimal amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseAmountError {
    /// The text is not a decimal number of the form `123`, `123.45` or `-0.5`.
    #[error("`{0}` is not a decimal amount")]
    NotDecimal(String),
    /// More than seven digits after the decimal point: smaller than a stroop.
    #[error("`{0}` has more than seven decimal places")]
    TooPrecise(String),
    /// Does not fit in 128-bit stroops.
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Parses a decimal amount (as rendered by [`format_stroops`], or with fewer places) back
/// into stroops, exactly.
pub fn parse_stroops(text: &str) -> Result<i128, ParseAmountError> {
    let not_decimal = || ParseAmountError::NotDecimal(text.to_owned());
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_decimal());
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit())
        || (digits.contains('.') && fraction.is_empty())
    {
        return Err(not_decimal());
    }
    if fraction.len() > 7 {
        return Err(ParseAmountError::TooPrecise(text.to_owned()));
    }
    let too_large = || ParseAmountError::TooLarge(text.to_owned());
    let whole: i128 = whole.parse().map_err(|_| too_large())?;
    let mut fraction_stroops: i128 = 0;
    for (place, digit) in fraction.bytes().enumerate() {
        fraction_stroops += i128::from(digit - b'0') * 10i128.pow(6 - place as u32);
    }
    let magnitude = whole
        .checked_mul(STROOPS_PER_UNIT)
        .and_then(|w| w.checked_add(fraction_stroops))
        .ok_or_else(too_large)?;
    Ok(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renders_seven_places() {
        assert_eq!(format_stroops(0), "0.0000000");
        assert_eq!(format_stroops(1), "0.0000001");
        assert_eq!(format_stroops(1_582_390_000_000), "158239.0000000");
        assert_eq!(format_stroops(-15), "-0.0000015");
        assert_eq!(format_stroops(i64::MAX.into()), "922337203685.4775807");
        assert_eq!(
            format_stroops(i128::MIN),
            "-17014118346046923173168730371588.4105728"
        );
    }

    #[test]
    fn parses_what_it_renders_and_rejects_garbage() {
        assert_eq!(parse_stroops("158239"), Ok(1_582_390_000_000));
        assert_eq!(parse_stroops("0.5"), Ok(5_000_000));
        assert!(matches!(
            parse_stroops("1.12345678"),
            Err(ParseAmountError::TooPrecise(_))
        ));
        for bad in ["", ".", "1.", ".5", "1e5", "--1", "1.2.3", " 1"] {
            assert!(parse_stroops(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn round_trips(stroops in any::<i64>()) {
            prop_assert_eq!(parse_stroops(&format_stroops(stroops.into())), Ok(i128::from(stroops)));
        }
    }
}

//! Money as integer micro-units (1 USD = 1,000,000 µUSD).
//!
//! Revenue is never summed as floating point: a JSON number's text is parsed
//! straight into micro-units, so `0.1 + 0.2` is exactly `300000`. Digits
//! beyond the sixth decimal are rounded half away from zero; producers that
//! print floats with noise (`0.07100000000000001`) still land on the intended
//! micro-unit.

/// Micro-units per US dollar.
pub const MICROS_PER_USD: i64 = 1_000_000;

/// A number that is valid JSON but cannot be a revenue amount here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyError {
    /// Not the text of a JSON number.
    NotANumber,
    /// Too large to represent (far beyond any plausible ad revenue).
    Overflow,
}

/// Parses the text of a JSON number (`12`, `0.0523`, `5.2e-2`, `-1`) into
/// micro-units.
pub fn parse_micros(text: &str) -> Result<i64, MoneyError> {
    let b = text.as_bytes();
    let mut i = 0;
    let negative = b.first() == Some(&b'-');
    if negative {
        i += 1;
    }
    // Significant digits as an integer plus a decimal exponent: value =
    // mantissa * 10^exp10.
    let mut mantissa: i128 = 0;
    let mut exp10: i64 = 0;
    let mut any_digit = false;
    let push = |m: &mut i128, d: u8, exp: &mut i64, after_point: bool| {
        // Keep at most 30 significant digits: far more than micro-units of
        // any representable amount need; later digits cannot change the
        // rounded result except for an exact tie, which they then break
        // upwards as half-away-from-zero would anyway.
        if *m < 10i128.pow(30) {
            *m = *m * 10 + i128::from(d);
            if after_point {
                *exp -= 1;
            }
        } else if !after_point {
            *exp += 1;
        }
    };
    while i < b.len() && b[i].is_ascii_digit() {
        push(&mut mantissa, b[i] - b'0', &mut exp10, false);
        any_digit = true;
        i += 1;
    }
    if !any_digit {
        return Err(MoneyError::NotANumber);
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            push(&mut mantissa, b[i] - b'0', &mut exp10, true);
            i += 1;
        }
        if i == start {
            return Err(MoneyError::NotANumber);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let mut eneg = false;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            eneg = b[i] == b'-';
            i += 1;
        }
        let start = i;
        let mut e: i64 = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            e = (e * 10 + i64::from(b[i] - b'0')).min(100_000);
            i += 1;
        }
        if i == start {
            return Err(MoneyError::NotANumber);
        }
        exp10 += if eneg { -e } else { e };
    }
    if i != b.len() {
        return Err(MoneyError::NotANumber);
    }
    // Scale to micro-units: value * 10^6 = mantissa * 10^(exp10 + 6).
    let shift = exp10 + 6;
    let micros: i128 = if mantissa == 0 {
        0
    } else if shift >= 0 {
        if shift > 30 {
            return Err(MoneyError::Overflow);
        }
        mantissa.checked_mul(10i128.pow(shift as u32)).ok_or(MoneyError::Overflow)?
    } else {
        let down = -shift;
        if down > 38 {
            0
        } else {
            let div = 10i128.pow(down as u32);
            let q = mantissa / div;
            let r = mantissa % div;
            // Half away from zero (the sign is applied below).
            if r * 2 >= div {
                q + 1
            } else {
                q
            }
        }
    };
    let micros = i64::try_from(micros).map_err(|_| MoneyError::Overflow)?;
    Ok(if negative { -micros } else { micros })
}

/// `1234567` µUSD → `"1.234567"`; always six decimals, as ClickHouse prints
/// a `Decimal(18, 6)`.
pub fn format_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let a = micros.unsigned_abs();
    format!("{sign}{}.{:06}", a / 1_000_000, a % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(parse_micros("0"), Ok(0));
        assert_eq!(parse_micros("0.0"), Ok(0));
        assert_eq!(parse_micros("0.0523"), Ok(52_300));
        assert_eq!(parse_micros("0.1"), Ok(100_000));
        assert_eq!(parse_micros("12"), Ok(12_000_000));
        assert_eq!(parse_micros("-0.5"), Ok(-500_000));
        assert_eq!(parse_micros("1000.000001"), Ok(1_000_000_001));
    }

    #[test]
    fn parses_exponents() {
        assert_eq!(parse_micros("5.23e-2"), Ok(52_300));
        assert_eq!(parse_micros("1E3"), Ok(1_000_000_000));
        assert_eq!(parse_micros("1e+0"), Ok(1_000_000));
        assert_eq!(parse_micros("1e-7"), Ok(0));
        assert_eq!(parse_micros("5e-7"), Ok(1));
    }

    #[test]
    fn rounds_float_noise_to_the_intended_micro() {
        assert_eq!(parse_micros("0.07100000000000001"), Ok(71_000));
        assert_eq!(parse_micros("0.07099999999999999"), Ok(71_000));
        assert_eq!(parse_micros("0.0000005"), Ok(1));
        assert_eq!(parse_micros("0.0000004999"), Ok(0));
        assert_eq!(parse_micros("-0.0000005"), Ok(-1));
    }

    #[test]
    fn rejects_non_numbers_and_overflow() {
        for s in ["", "-", ".5", "1.", "1e", "1e+", "NaN", "Infinity", "0x10", "1 ", " 1", "1,5"] {
            assert_eq!(parse_micros(s), Err(MoneyError::NotANumber), "{s:?}");
        }
        assert_eq!(parse_micros("1e40"), Err(MoneyError::Overflow));
        assert_eq!(parse_micros("99999999999999999999"), Err(MoneyError::Overflow));
    }

    #[test]
    fn formats_as_clickhouse_decimal() {
        assert_eq!(format_micros(52_300), "0.052300");
        assert_eq!(format_micros(1_234_567), "1.234567");
        assert_eq!(format_micros(-1), "-0.000001");
    }

    /// Sums of parsed amounts are the exact decimal totals, on inputs where
    /// summing the same texts as `f64` is wrong (checked here, so the cases
    /// stay ones that floats get wrong).
    #[test]
    fn sums_of_parsed_amounts_are_exact_where_float_sums_are_not() {
        let sum_f64 = |texts: &[&str]| texts.iter().map(|t| t.parse::<f64>().unwrap()).sum::<f64>();
        let sum_micros = |texts: &[&str]| texts.iter().map(|t| parse_micros(t).unwrap()).sum::<i64>();
        let cases: [(&[&str], f64, &str); 4] = [
            (&["0.1", "0.2"], 0.3, "0.300000"),
            (&["0.1"; 10], 1.0, "1.000000"),
            (&["0.07", "0.0175"], 0.0875, "0.087500"),
            (&["1.1", "2.2"], 3.3, "3.300000"),
        ];
        for (texts, exact, total) in cases {
            assert_ne!(sum_f64(texts), exact, "{texts:?}: a case floats get wrong");
            assert_eq!(format_micros(sum_micros(texts)), total, "{texts:?}");
        }
        // A day of clicks at one price: a million additions of 0.0523.
        let clicks = vec!["0.0523"; 1_000_000];
        assert_ne!(sum_f64(&clicks), 52_300.0, "f64 drifts over a million additions");
        assert_eq!(format_micros(sum_micros(&clicks)), "52300.000000");
        // Float noise in the input lands on the intended micro-unit, so the
        // total is still the exact one.
        assert_eq!(format_micros(sum_micros(&["0.07100000000000001", "0.02899999999999999"])), "0.100000");
    }
}

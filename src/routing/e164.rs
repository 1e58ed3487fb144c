//! `E164`: a phone number in canonical E.164 form, parsed once at the edge.
//!
//! Gateways mostly send canonical E.164 already (`+14155550100`). That input
//! takes a fast path of a few byte comparisons and never touches
//! libphonenumber, whose full parse costs microseconds. Everything else
//! (spaces and punctuation, national format read with a default region,
//! `00`/`011` international prefixes, `tel:`/`sip:` URIs) goes through the
//! `phonenumber` crate.

use std::{fmt, str::FromStr};

use phonenumber::{country, Mode};

/// Longest raw input accepted before any parsing. A SIP URI with a long host
/// name and parameters fits easily; anything longer is not a phone number and
/// is rejected before it reaches the parser.
pub const MAX_INPUT_BYTES: usize = 256;

/// E.164 allows at most 15 digits after the `+`.
const MAX_DIGITS: usize = 15;
/// Shortest subscriber numbers in service (country code included) have 7
/// digits; shorter input is a typo or a service code, not a routable number.
const MIN_DIGITS: usize = 7;

/// A phone number in canonical E.164 form: `+`, then 7 to 15 digits, the
/// first of which is not 0.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(Box<str>);

/// Why a string is not a phone number. The `Display` text is returned to the
/// gateway as is, so it names the problem without echoing the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_INPUT_BYTES} bytes")]
    TooLong,
    #[error("is not a valid ISO 3166-1 alpha-2 region code")]
    UnknownRegion,
    #[error("is in national format but no default_region was given")]
    NeedsRegion,
    #[error("is not a phone number ({0})")]
    Unparseable(String),
    #[error("has {0} digits; E.164 numbers have {MIN_DIGITS} to {MAX_DIGITS}")]
    BadLength(usize),
}

/// A region used to read national-format numbers: an ISO 3166-1 alpha-2 code
/// known to libphonenumber's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(country::Id);

impl FromStr for Region {
    type Err = NumberError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        let code = code.trim();
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(NumberError::UnknownRegion);
        }
        country::Id::from_str(&code.to_ascii_uppercase())
            .map(Region)
            .map_err(|_| NumberError::UnknownRegion)
    }
}

impl Region {
    /// Reads an optional region field: empty means "none given".
    pub fn parse_optional(code: &str) -> Result<Option<Self>, NumberError> {
        if code.trim().is_empty() {
            Ok(None)
        } else {
            code.parse().map(Some)
        }
    }
}

impl E164 {
    /// Parses any accepted form of a phone number into E.164.
    pub fn parse(input: &str, region: Option<Region>) -> Result<Self, NumberError> {
        if input.len() > MAX_INPUT_BYTES {
            return Err(NumberError::TooLong);
        }
        let input = input.trim();
        if input.is_empty() {
            return Err(NumberError::Empty);
        }
        if is_canonical(input) {
            return Ok(Self(input.into()));
        }
        let candidate = uri_user_part(input);
        if is_canonical(candidate) {
            return Ok(Self(candidate.into()));
        }
        Self::parse_slow(candidate, region)
    }

    /// The full libphonenumber parse, for anything not already canonical.
    fn parse_slow(input: &str, region: Option<Region>) -> Result<Self, NumberError> {
        let dialable = without_international_prefix(input, region);
        let explicit_country = dialable.starts_with('+');
        if !explicit_country && region.is_none() {
            // Without a region, libphonenumber cannot read a national number,
            // and guessing one would route calls to the wrong country.
            if dialable.bytes().any(|b| b.is_ascii_digit()) {
                return Err(NumberError::NeedsRegion);
            }
            return Err(NumberError::Unparseable("no digits".into()));
        }
        let parsed = phonenumber::parse(region.map(|r| r.0), dialable.as_ref())
            .map_err(|e| NumberError::Unparseable(e.to_string()))?;
        let formatted = parsed.format().mode(Mode::E164).to_string();
        if is_canonical(&formatted) {
            Ok(Self(formatted.into()))
        } else {
            Err(NumberError::BadLength(formatted.len().saturating_sub(1)))
        }
    }

    /// Accepts only canonical E.164, with no parsing at all: for values that
    /// were normalized before they were stored (database rows, cache keys).
    pub fn from_canonical(s: &str) -> Result<Self, NumberError> {
        if is_canonical(s) {
            Ok(Self(s.into()))
        } else {
            Err(NumberError::Unparseable("not canonical E.164".into()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164({})", self.0)
    }
}

impl AsRef<str> for E164 {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// `+` followed by 7–15 ASCII digits, the first not 0.
fn is_canonical(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (MIN_DIGITS..=MAX_DIGITS).contains(&digits.len())
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The user part of a `sip:`/`sips:`/`tel:` URI (`sip:+1415…@host;user=phone`
/// → `+1415…`), with any angle brackets and URI parameters removed; other
/// input is returned unchanged.
fn uri_user_part(input: &str) -> &str {
    let s = input.trim_start_matches('<').trim_end_matches('>');
    let after = |scheme: &str| {
        s.get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .map(|_| &s[scheme.len()..])
    };
    let Some(rest) = after("sips:")
        .or_else(|| after("sip:"))
        .or_else(|| after("tel:"))
    else {
        return input;
    };
    let user = rest.split('@').next().unwrap_or(rest);
    user.split(';').next().unwrap_or(user).trim()
}

/// Rewrites an international call prefix into `+`: `00` (most of the world)
/// and `011` (North America) when no region is given, so that
/// `0044 20 7183 8750` is read as `+44 20 7183 8750`. With a region,
/// libphonenumber applies that region's own international prefix.
fn without_international_prefix(input: &str, region: Option<Region>) -> std::borrow::Cow<'_, str> {
    if region.is_some() {
        return input.into();
    }
    let digits_start = input.trim_start_matches(|c: char| c == '(' || c.is_whitespace());
    for prefix in ["011", "00"] {
        if let Some(rest) = digits_start.strip_prefix(prefix) {
            return format!("+{rest}").into();
        }
    }
    input.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn us() -> Option<Region> {
        Some("US".parse().unwrap())
    }

    #[test]
    fn canonical_input_is_kept_as_is() {
        assert_eq!(
            E164::parse("+14155550100", None).unwrap().as_str(),
            "+14155550100"
        );
        assert_eq!(
            E164::parse(" +442071838750 ", None).unwrap().as_str(),
            "+442071838750"
        );
    }

    #[test]
    fn formatted_and_national_input_is_normalized() {
        let cases = [
            ("+1 (415) 555-0100", None),
            ("(415) 555-0100", us()),
            ("415.555.0100", us()),
            ("tel:+1-415-555-0100", None),
            ("sip:+14155550100@trunk.example.com;user=phone", None),
            ("<sips:+1-415-555-0100@edge.example.net>", None),
            ("011 1 415 555 0100", None),
            ("001 415 555 0100", None),
        ];
        for (input, region) in cases {
            assert_eq!(
                E164::parse(input, region).map(|n| n.to_string()),
                Ok("+14155550100".to_string()),
                "{input}"
            );
        }
        let gb = Some("gb".parse().unwrap());
        assert_eq!(
            E164::parse("020 7183 8750", gb).unwrap().as_str(),
            "+442071838750"
        );
        assert_eq!(
            E164::parse("0044 20 7183 8750", None).unwrap().as_str(),
            "+442071838750"
        );
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        assert_eq!(E164::parse("", None), Err(NumberError::Empty));
        assert_eq!(E164::parse("   ", None), Err(NumberError::Empty));
        assert_eq!(
            E164::parse(&"1".repeat(300), None),
            Err(NumberError::TooLong)
        );
        assert_eq!(
            E164::parse("(415) 555-0100", None),
            Err(NumberError::NeedsRegion)
        );
        assert!(matches!(
            E164::parse("hello", us()),
            Err(NumberError::Unparseable(_))
        ));
        assert!(E164::parse("+0123456789", None).is_err());
        assert!(E164::parse("+1234567890123456", None).is_err());
        // multi-byte text where a URI scheme would be must not panic
        assert!(E164::parse("€€€+14155550100", None).is_err());
        assert_eq!("XX".parse::<Region>(), Err(NumberError::UnknownRegion));
        assert_eq!("USA".parse::<Region>(), Err(NumberError::UnknownRegion));
    }

    fn canonical() -> impl Strategy<Value = String> {
        "[1-9][0-9]{6,14}".prop_map(|d| format!("+{d}"))
    }

    /// Real numbers (fictional ranges of real numbering plans) with the
    /// separators people and switches put into them.
    fn formatted_real_number() -> impl Strategy<Value = (String, &'static str)> {
        let numbers = prop::sample::select(vec![
            ("+14155550100", "+1 415 555 0100"),
            ("+442079460123", "+44 20 7946 0123"),
            ("+4930901820", "+49 30 901820"),
            ("+61291234567", "+61 2 9123 4567"),
        ]);
        let sep = prop::sample::select(vec![" ", "-", ".", "  ", " - "]);
        (numbers, sep).prop_map(|((canon, spaced), sep)| (spaced.replace(' ', sep), canon))
    }

    proptest! {
        #[test]
        fn canonical_strings_parse_to_themselves(s in canonical()) {
            prop_assert_eq!(E164::parse(&s, None).unwrap().to_string(), s);
        }

        #[test]
        fn parsing_never_panics_and_output_is_canonical(s in ".{0,300}", region in "[A-Z]{2}") {
            let region = region.parse::<Region>().ok();
            if let Ok(n) = E164::parse(&s, region) {
                prop_assert!(is_canonical(n.as_str()), "{} from {:?}", n, s);
            }
        }

        #[test]
        fn normalizing_is_idempotent(s in "[-+0-9 ()]{0,24}") {
            if let Ok(n) = E164::parse(&s, us()) {
                prop_assert_eq!(E164::parse(n.as_str(), None).unwrap(), n);
            }
        }

        #[test]
        fn separators_do_not_change_the_number((input, canon) in formatted_real_number()) {
            prop_assert_eq!(E164::parse(&input, None).unwrap().to_string(), canon);
        }

        #[test]
        fn not_canonical_means_no_fast_path(s in "\\+0[0-9]{6,14}|[0-9]{7,15}|\\+[1-9][0-9]{15,20}") {
            prop_assert!(!is_canonical(&s));
        }
    }
}

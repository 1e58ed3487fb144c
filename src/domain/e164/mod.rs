//! `E164`: a phone number in canonical E.164 form, parsed once at the edge.
//!
//! Gateways mostly send canonical E.164 already (`+14155550100`). That input
//! takes a fast path of a few byte comparisons and never touches
//! libphonenumber, whose full parse costs microseconds. Everything else
//! (spaces and punctuation, national format read with a default region,
//! `00`/`011` international prefixes, `tel:`/`sip:` URIs) goes through the
//! `phonenumber` crate.
//!
//! [`E164::parse_explained`] runs the same parser and also says how it read
//! the input ([`Normalization`]), for `ExplainRoute`. The parser notes its
//! steps through a generic `Notes` sink whose no-op instance `parse` uses,
//! so the explanation costs `parse` nothing.

use std::{fmt, str::FromStr};

use phonenumber::{
    country::{self, Source},
    Mode,
};

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

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

/// A set of regions a number may belong to, for matching callers: the
/// regions' country calling codes decide at once for a number under none
/// of them, or under a code only one region has (`+44` is not only GB:
/// GG, IM and JE share it; `+353` is only IE); a full parse (microseconds)
/// is left for a number under a code that regions share, to tell them
/// apart (`+1`: US, CA and the Caribbean).
#[derive(Debug, Clone, PartialEq)]
pub struct RegionSet {
    /// The ISO codes, as given.
    codes: Vec<String>,
    /// `+<calling code>`, and whether other regions share it.
    calling_codes: Vec<(String, bool)>,
}

impl RegionSet {
    /// The regions named by ISO 3166-1 alpha-2 `codes`; a code the metadata
    /// does not know matches nothing.
    pub fn new(codes: &[String]) -> Self {
        let database = &*phonenumber::metadata::DATABASE;
        let mut calling_codes: Vec<(String, bool)> = Vec::new();
        for code in codes {
            let Some(calling) = database.by_id(code.as_str()).map(|m| m.country_code()) else {
                continue;
            };
            let shared = database
                .region(&calling)
                .is_some_and(|regions| regions.len() > 1);
            let prefix = format!("+{calling}");
            if !calling_codes.iter().any(|(p, _)| *p == prefix) {
                calling_codes.push((prefix, shared));
            }
        }
        Self {
            codes: codes.to_vec(),
            calling_codes,
        }
    }

    /// The ISO codes, as given.
    pub fn codes(&self) -> &[String] {
        &self.codes
    }

    /// Whether `number` belongs to one of the regions.
    pub fn contains(&self, number: &E164) -> bool {
        // calling codes are a prefix code: at most one starts the number
        let Some((_, shared)) = (self.calling_codes.iter())
            .find(|(prefix, _)| number.as_str().starts_with(prefix.as_str()))
        else {
            return false;
        };
        if !shared {
            return true;
        }
        number
            .region()
            .is_some_and(|region| self.codes.iter().any(|code| code == region.code()))
    }
}

impl Region {
    /// The ISO 3166-1 alpha-2 code (`US`, `GB`).
    pub fn code(&self) -> &str {
        self.0.as_ref()
    }

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
        Self::read(input, region, &mut ())
    }

    /// Parses like [`E164::parse`] (same result, same errors), and says how
    /// the input was read, or how far it got before it was refused.
    pub fn parse_explained(
        input: &str,
        region: Option<Region>,
    ) -> (Result<Self, NumberError>, Normalization) {
        let mut how = Normalization::default();
        let result = Self::read(input, region, &mut how);
        (result, how)
    }

    /// The parser, noting its steps in `notes`.
    #[inline]
    fn read(
        input: &str,
        region: Option<Region>,
        notes: &mut impl Notes,
    ) -> Result<Self, NumberError> {
        if input.len() > MAX_INPUT_BYTES {
            return Err(NumberError::TooLong);
        }
        let input = input.trim();
        if input.is_empty() {
            return Err(NumberError::Empty);
        }
        if is_canonical(input) {
            notes.method(Method::Canonical);
            return Ok(Self(input.into()));
        }
        let candidate = match uri_user_part(input) {
            Some((scheme, user)) => {
                notes.uri_scheme(scheme);
                user
            }
            None => input,
        };
        if is_canonical(candidate) {
            notes.method(Method::Canonical);
            return Ok(Self(candidate.into()));
        }
        Self::parse_slow(candidate, region, notes)
    }

    /// The full libphonenumber parse, for anything not already canonical.
    fn parse_slow(
        input: &str,
        region: Option<Region>,
        notes: &mut impl Notes,
    ) -> Result<Self, NumberError> {
        let (idd, dialable) = without_international_prefix(input, region);
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
        if !is_canonical(&formatted) {
            return Err(NumberError::BadLength(formatted.len().saturating_sub(1)));
        }
        notes.method(match (idd, region, parsed.code().source()) {
            (Some(prefix), _, _) => Method::InternationalPrefix(prefix),
            (None, _, Source::Plus) | (None, None, _) => Method::SeparatorsStripped,
            (None, Some(region), Source::Idd) => Method::RegionInternationalPrefix(region),
            (None, Some(region), Source::Number) => Method::CountryCodeWithoutPlus(region),
            (None, Some(region), Source::Default) => Method::National(region),
        });
        Ok(Self(formatted.into()))
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

    /// The region the number belongs to, as libphonenumber's metadata
    /// places it (`+1 416…` is CA, `+1 415…` US); `None` for a
    /// non-geographic number or one it cannot place. A full parse: costs
    /// microseconds.
    pub fn region(&self) -> Option<Region> {
        phonenumber::parse(None, self.as_str())
            .ok()?
            .country()
            .id()
            .map(Region)
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

/// The scheme (`sip`, `sips`, `tel`) and user part of a URI
/// (`sip:+1415…@host;user=phone` → `+1415…`), with any angle brackets and
/// URI parameters removed; `None` when the input is not such a URI.
fn uri_user_part(input: &str) -> Option<(&'static str, &str)> {
    let s = input.trim_start_matches('<').trim_end_matches('>');
    let (scheme, rest) = [("sips", "sips:"), ("sip", "sip:"), ("tel", "tel:")]
        .into_iter()
        .find_map(|(scheme, head)| {
            s.get(..head.len())
                .filter(|h| h.eq_ignore_ascii_case(head))
                .map(|_| (scheme, &s[head.len()..]))
        })?;
    let user = rest.split('@').next().unwrap_or(rest);
    Some((scheme, user.split(';').next().unwrap_or(user).trim()))
}

/// Rewrites an international call prefix into `+`: `00` (most of the world)
/// and `011` (North America) when no region is given, so that
/// `0044 20 7183 8750` is read as `+44 20 7183 8750`. With a region,
/// libphonenumber applies that region's own international prefix. Returns
/// the prefix it rewrote, if any.
fn without_international_prefix(
    input: &str,
    region: Option<Region>,
) -> (Option<&'static str>, std::borrow::Cow<'_, str>) {
    if region.is_some() {
        return (None, input.into());
    }
    let digits_start = input.trim_start_matches(|c: char| c == '(' || c.is_whitespace());
    for prefix in ["011", "00"] {
        if let Some(rest) = digits_start.strip_prefix(prefix) {
            return (Some(prefix), format!("+{rest}").into());
        }
    }
    (None, input.into())
}

/// How [`E164::parse_explained`] read its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Normalization {
    /// The scheme of the URI the number was taken out of (`sip`, `sips`,
    /// `tel`), if it came in one.
    pub uri_scheme: Option<&'static str>,
    /// How the number itself was read.
    pub method: Method,
}

/// How the number (the URI's user part, for a URI) was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Method {
    /// Not read: the input was refused.
    #[default]
    None,
    /// Canonical E.164 already: the fast path, no parsing library.
    Canonical,
    /// E.164 written with separators or punctuation (`+1 (415) 555-0100`),
    /// which were removed.
    SeparatorsStripped,
    /// No region given: the international call prefix (`00`, `011`) was
    /// read as `+`.
    InternationalPrefix(&'static str),
    /// National format, read with the region's numbering plan.
    National(Region),
    /// Dialled with the region's own international call prefix.
    RegionInternationalPrefix(Region),
    /// A country code without the `+`, recognized by the region's plan.
    CountryCodeWithoutPlus(Region),
}

impl Method {
    /// Stable machine-readable name, sent in `ExplainRoute` answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Canonical => "canonical",
            Method::SeparatorsStripped => "separators_stripped",
            Method::InternationalPrefix(_) => "international_prefix",
            Method::National(_) => "national",
            Method::RegionInternationalPrefix(_) => "region_international_prefix",
            Method::CountryCodeWithoutPlus(_) => "country_code_without_plus",
        }
    }
}

/// In words, for people: "national format read with region US".
impl fmt::Display for Normalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = self.uri_scheme {
            write!(f, "user part of a {scheme}: URI, ")?;
        }
        match self.method {
            Method::None => f.write_str("not read as a phone number"),
            Method::Canonical => f.write_str("canonical E.164 (fast path, not parsed)"),
            Method::SeparatorsStripped => {
                f.write_str("E.164 with separators and punctuation removed")
            }
            Method::InternationalPrefix(prefix) => {
                write!(f, "international prefix {prefix} read as +")
            }
            Method::National(region) => write!(f, "national format read with region {region}"),
            Method::RegionInternationalPrefix(region) => {
                write!(f, "international prefix of region {region} read as +")
            }
            Method::CountryCodeWithoutPlus(region) => {
                write!(f, "country code without + read with region {region}")
            }
        }
    }
}

/// Where the parser notes how it read its input.
trait Notes {
    fn uri_scheme(&mut self, scheme: &'static str);
    fn method(&mut self, method: Method);
}

/// `E164::parse`: notes nothing, compiled away.
impl Notes for () {
    #[inline(always)]
    fn uri_scheme(&mut self, _: &'static str) {}
    #[inline(always)]
    fn method(&mut self, _: Method) {}
}

impl Notes for Normalization {
    fn uri_scheme(&mut self, scheme: &'static str) {
        self.uri_scheme = Some(scheme);
    }

    fn method(&mut self, method: Method) {
        self.method = method;
    }
}

#[cfg(test)]
mod tests;

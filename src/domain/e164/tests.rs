//! The parser's cases: canonical input, national and international
//! notation, URIs, and what is refused.

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

#[test]
fn the_explanation_says_how_the_number_was_read() {
    let us_region = us().unwrap();
    let gb: Region = "GB".parse().unwrap();
    let cases = [
        ("+14155550100", None, None, Method::Canonical),
        (" +14155550100 ", us(), None, Method::Canonical),
        ("+1 (415) 555-0100", None, None, Method::SeparatorsStripped),
        ("+1 415 555 0100", us(), None, Method::SeparatorsStripped),
        ("(415) 555-0100", us(), None, Method::National(us_region)),
        ("020 7183 8750", Some(gb), None, Method::National(gb)),
        (
            "011 44 20 7183 8750",
            None,
            None,
            Method::InternationalPrefix("011"),
        ),
        (
            "0044 20 7183 8750",
            None,
            None,
            Method::InternationalPrefix("00"),
        ),
        (
            "011 44 20 7183 8750",
            us(),
            None,
            Method::RegionInternationalPrefix(us_region),
        ),
        (
            "00 1 415 555 0100",
            Some(gb),
            None,
            Method::RegionInternationalPrefix(gb),
        ),
        (
            "1 415 555 0100",
            us(),
            None,
            Method::CountryCodeWithoutPlus(us_region),
        ),
        (
            "sip:+14155550100@trunk.example.com;user=phone",
            None,
            Some("sip"),
            Method::Canonical,
        ),
        (
            "<sips:+1-415-555-0100@edge.example.net>",
            None,
            Some("sips"),
            Method::SeparatorsStripped,
        ),
        (
            "tel:+1-415-555-0100",
            None,
            Some("tel"),
            Method::SeparatorsStripped,
        ),
        (
            "TEL:415-555-0100",
            us(),
            Some("tel"),
            Method::National(us_region),
        ),
    ];
    for (input, region, uri_scheme, method) in cases {
        let (result, how) = E164::parse_explained(input, region);
        assert_eq!(result, E164::parse(input, region), "{input}");
        assert!(result.is_ok(), "{input}: {result:?}");
        assert_eq!(how, Normalization { uri_scheme, method }, "{input}");
    }
}

#[test]
fn a_refused_number_is_explained_by_the_same_error() {
    let long = "1".repeat(300);
    let cases = [
        ("", None),
        ("   ", us()),
        (long.as_str(), None),
        ("(415) 555-0100", None),
        ("hello", us()),
        ("+1234567890123456", None),
        ("sip:alice@example.com", None),
    ];
    for (input, region) in cases {
        let (result, how) = E164::parse_explained(input, region);
        assert_eq!(result, E164::parse(input, region), "{input}");
        assert!(result.is_err(), "{input}");
        assert_eq!(how.method, Method::None, "{input}");
    }
    // the URI is recognized even when its user part is not a number
    let (_, how) = E164::parse_explained("sip:alice@example.com", None);
    assert_eq!(how.uri_scheme, Some("sip"));
    assert_eq!(
        how.to_string(),
        "user part of a sip: URI, not read as a phone number"
    );
}

#[test]
fn the_explanation_reads_as_words_and_names() {
    let (_, how) = E164::parse_explained("(415) 555-0100", us());
    assert_eq!(how.to_string(), "national format read with region US");
    assert_eq!(how.method.as_str(), "national");
    let (_, how) = E164::parse_explained("sip:+14155550100@trunk.example.com", None);
    assert_eq!(
        how.to_string(),
        "user part of a sip: URI, canonical E.164 (fast path, not parsed)"
    );
    assert_eq!(how.method.as_str(), "canonical");
    let (_, how) = E164::parse_explained("0044 20 7183 8750", None);
    assert_eq!(how.to_string(), "international prefix 00 read as +");
    assert_eq!(how.method.as_str(), "international_prefix");
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
    fn the_explained_parse_agrees_with_the_plain_one(
        s in "[-+0-9 ()]{0,24}|(sip|tel):[-+0-9]{0,16}(@[a-z.]{0,12})?|.{0,40}",
        region in "[A-Z]{2}",
    ) {
        let region = region.parse::<Region>().ok();
        let (explained, how) = E164::parse_explained(&s, region);
        prop_assert_eq!(&explained, &E164::parse(&s, region));
        prop_assert_eq!(explained.is_ok(), how.method != Method::None, "{:?}: {:?}", s, how);
    }

    #[test]
    fn not_canonical_means_no_fast_path(s in "\\+0[0-9]{6,14}|[0-9]{7,15}|\\+[1-9][0-9]{15,20}") {
        prop_assert!(!is_canonical(&s));
    }
}

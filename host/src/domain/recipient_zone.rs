//! Where a recipient presumably is, from the phone number alone: the IANA zone(s) its
//! prefix may be in and, for NANP numbers, the state or province of its area code.
//!
//! Data: libphonenumber's time-zone map (whole world) and a NANP area code → ISO 3166-2
//! table derived from its geocoding data, both compiled in from `host/data/phonenumbers/`
//! (Apache-2.0; provenance in `SOURCE`, refreshed by `build-support/phonenumbers/refresh.sh`).
//! A presumption only: ported numbers and travellers are elsewhere, which is why a
//! contact's own `timezone` attribute, when set, wins over this.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono_tz::Tz;

/// libphonenumber `resources/timezones/map_data.txt`, unchanged: `prefix|Zone&Zone`.
const TIMEZONES: &str = include_str!("../../data/phonenumbers/timezones.txt");
/// `prefix|ISO 3166-2 code`, derived from libphonenumber `resources/geocoding/en/1.txt`.
const NANP_REGIONS: &str = include_str!("../../data/phonenumbers/nanp_regions.txt");
/// Provenance of both files (`commit:` and `date:` lines).
const SOURCE: &str = include_str!("../../data/phonenumbers/SOURCE");

/// E.164 allows at most 15 digits after the `+`, which bounds a lookup to 15 probes.
const MAX_E164_DIGITS: usize = 15;

/// Where a phone number's recipient is presumed to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresumedLocation {
    /// Every IANA zone the number's prefix may be in (one or more); empty when unknown.
    pub zones: Vec<chrono_tz::Tz>,
    /// ISO 3166-2 subdivision presumed from the NANP area code (`US-FL`), or None.
    pub region: Option<&'static str>,
}

impl PresumedLocation {
    /// Nothing known: no zone, no region.
    fn unknown() -> Self {
        Self {
            zones: Vec::new(),
            region: None,
        }
    }
}

/// From an E.164 number (`+13055550100`). Unknown prefix → zones empty, region None.
///
/// The longest matching prefix wins, separately for zones and region: `+1 928 871` (Window
/// Rock, Navajo Nation) gets Denver and Phoenix while the rest of 928 gets Phoenix, and both
/// are `US-AZ`. A number that matches only its country's entry, where the country spans
/// several zones (NANP's `1` lists 42, from Adak to Guam: a toll-free number, an area code
/// newer than the data), says nothing of where its recipient is: its zones are unknown
/// (empty), and the rules fall back to the campaign's zone. Anything but `+` and 1 to 15
/// digits is unknown.
pub fn presume(phone_e164: &str) -> PresumedLocation {
    let Some(digits) = phone_e164.strip_prefix('+') else {
        return PresumedLocation::unknown();
    };
    if digits.is_empty() || digits.len() > MAX_E164_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return PresumedLocation::unknown();
    }
    let tables = &*TABLES;
    let zones = match longest_match(&tables.zones, digits) {
        Some((prefix, zones)) if prefix.len() > MAX_COUNTRY_CODE_DIGITS || zones.len() == 1 => zones.to_vec(),
        _ => Vec::new(),
    };
    PresumedLocation {
        zones,
        region: longest_match(&tables.regions, digits).map(|(_, region)| *region),
    }
}

/// Country calling codes have 1 to 3 digits: a prefix no longer is a whole country.
const MAX_COUNTRY_CODE_DIGITS: usize = 3;

/// Data provenance for docs/audit: e.g. "libphonenumber f7e3e88 (2026-07-17)".
pub fn data_version() -> &'static str {
    &DATA_VERSION
}

/// Both prefix tables, parsed at first use.
struct PrefixTables {
    zones: HashMap<&'static str, Box<[Tz]>>,
    regions: HashMap<&'static str, &'static str>,
}

static TABLES: LazyLock<PrefixTables> = LazyLock::new(|| PrefixTables {
    zones: data_lines(TIMEZONES)
        .filter_map(|(prefix, names)| {
            // An unknown name (a refresh newer than chrono-tz) is dropped; a prefix left
            // with none falls back to a shorter one. A unit test catches both.
            let zones: Box<[Tz]> = names.split('&').filter_map(|name| name.trim().parse().ok()).collect();
            (!zones.is_empty()).then_some((prefix, zones))
        })
        .collect(),
    regions: data_lines(NANP_REGIONS).collect(),
});

static DATA_VERSION: LazyLock<String> = LazyLock::new(|| {
    let field = |key: &str| {
        SOURCE
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    match (field("commit"), field("date")) {
        (Some(commit), Some(date)) => format!("libphonenumber {} ({date})", commit.get(..7).unwrap_or(commit)),
        _ => "libphonenumber (unknown version)".to_string(),
    }
});

/// The `prefix|value` lines of a data file: comments, blank and malformed lines skipped.
fn data_lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|line| {
        let (prefix, value) = line.trim().split_once('|')?;
        let well_formed = !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty();
        well_formed.then_some((prefix, value))
    })
}

/// The value of the longest key that prefixes `digits` (ASCII digits only).
fn longest_match<'t, 'd, V>(table: &'t HashMap<&'static str, V>, digits: &'d str) -> Option<(&'d str, &'t V)> {
    (1..=digits.len())
        .rev()
        .find_map(|len| table.get(&digits[..len]).map(|v| (&digits[..len], v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::{
        Adak, Anchorage, Boise, Chicago, Denver, Juneau, Los_Angeles, New_York, Phoenix, Puerto_Rico, Toronto,
    };
    use chrono_tz::Europe::London;
    use chrono_tz::Pacific::Honolulu;

    fn zones(phone: &str) -> Vec<Tz> {
        presume(phone).zones
    }

    fn region(phone: &str) -> Option<&'static str> {
        presume(phone).region
    }

    #[test]
    fn every_zone_name_in_the_data_is_a_chrono_tz_zone() {
        let unknown: Vec<&str> = data_lines(TIMEZONES)
            .flat_map(|(_, names)| names.split('&'))
            .filter(|name| name.trim().parse::<Tz>().is_err())
            .collect();
        assert!(unknown.is_empty(), "zones chrono-tz does not know: {unknown:?}");
    }

    #[test]
    fn every_data_line_is_well_formed() {
        for (file, text) in [("timezones.txt", TIMEZONES), ("nanp_regions.txt", NANP_REGIONS)] {
            let odd: Vec<&str> = text
                .lines()
                .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
                .filter(|line| data_lines(line).next().is_none())
                .collect();
            assert!(odd.is_empty(), "{file}: malformed lines {odd:?}");
        }
    }

    #[test]
    fn every_region_is_a_us_or_canadian_iso_3166_2_code() {
        for (prefix, code) in data_lines(NANP_REGIONS) {
            let (country, subdivision) = code.split_once('-').unwrap_or(("", ""));
            assert!(
                matches!(country, "US" | "CA") && subdivision.len() == 2,
                "{prefix}|{code} is not US-xx or CA-xx"
            );
            assert!(
                prefix.starts_with('1') && prefix.len() >= 4,
                "{prefix} is not a NANP area code prefix"
            );
        }
    }

    #[test]
    fn every_us_state_dc_and_territory_has_an_area_code() {
        let regions: Vec<&str> = data_lines(NANP_REGIONS).map(|(_, code)| code).collect();
        let expected = "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ \
                        NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR VI GU MP AS";
        for state in expected.split_whitespace() {
            let code = format!("US-{state}");
            assert!(regions.contains(&code.as_str()), "no area code for {code}");
        }
    }

    #[test]
    fn single_zone_area_codes_of_the_issue() {
        assert_eq!(
            presume("+12125550100"),
            PresumedLocation {
                zones: vec![New_York],
                region: Some("US-NY")
            }
        );
        assert_eq!(zones("+14155550100"), vec![Los_Angeles]);
        assert_eq!(region("+14155550100"), Some("US-CA"));
        assert_eq!(zones("+18085550100"), vec![Honolulu]);
        assert_eq!(region("+18085550100"), Some("US-HI"));
        assert_eq!(zones("+13055550100"), vec![New_York]);
        assert_eq!(region("+13055550100"), Some("US-FL"));
        assert_eq!(zones("+14055550100"), vec![Chicago]);
        assert_eq!(region("+14055550100"), Some("US-OK"));
        assert_eq!(zones("+14105550100"), vec![New_York]);
        assert_eq!(region("+14105550100"), Some("US-MD"));
        assert_eq!(zones("+18605550100"), vec![New_York]);
        assert_eq!(region("+18605550100"), Some("US-CT"));
        assert_eq!(zones("+15125550100"), vec![Chicago]);
        assert_eq!(region("+15125550100"), Some("US-TX"));
    }

    #[test]
    fn alaska_area_code_spans_the_aleutians_and_the_panhandle_has_its_own_zone() {
        // 907 by default: Aleutian (Adak) or Alaska (Anchorage) time.
        assert_eq!(
            presume("+19075550100"),
            PresumedLocation {
                zones: vec![Adak, Anchorage],
                region: Some("US-AK")
            }
        );
        // 907-209 is a Juneau exchange.
        assert_eq!(
            presume("+19072090100"),
            PresumedLocation {
                zones: vec![Juneau],
                region: Some("US-AK")
            }
        );
    }

    #[test]
    fn idaho_208_splits_between_mountain_and_pacific_by_exchange() {
        // 208-343: Boise.
        assert_eq!(
            presume("+12083430100"),
            PresumedLocation {
                zones: vec![Denver],
                region: Some("US-ID")
            }
        );
        // 208-667: Coeur d'Alene, in the Panhandle.
        assert_eq!(
            presume("+12086670100"),
            PresumedLocation {
                zones: vec![Los_Angeles],
                region: Some("US-ID")
            }
        );
        // 208-300: the data only knows the area code's two zones.
        assert_eq!(
            presume("+12083000100"),
            PresumedLocation {
                zones: vec![Boise, Los_Angeles],
                region: Some("US-ID")
            }
        );
    }

    #[test]
    fn arizona_is_phoenix_except_navajo_nation_exchanges_that_keep_daylight_time() {
        assert_eq!(
            presume("+19285550100"),
            PresumedLocation {
                zones: vec![Phoenix],
                region: Some("US-AZ")
            }
        );
        // 928-871: Window Rock, Navajo Nation.
        assert_eq!(
            presume("+19288710100"),
            PresumedLocation {
                zones: vec![Denver, Phoenix],
                region: Some("US-AZ")
            }
        );
    }

    #[test]
    fn florida_panhandle_850_is_eastern_by_default_and_central_in_the_west() {
        // 850-222: Tallahassee.
        assert_eq!(
            presume("+18502220100"),
            PresumedLocation {
                zones: vec![New_York],
                region: Some("US-FL")
            }
        );
        // 850-432: Pensacola.
        assert_eq!(
            presume("+18504320100"),
            PresumedLocation {
                zones: vec![Chicago],
                region: Some("US-FL")
            }
        );
    }

    #[test]
    fn territories_and_canada_get_their_iso_3166_2_codes() {
        assert_eq!(
            presume("+17875550100"),
            PresumedLocation {
                zones: vec![Puerto_Rico],
                region: Some("US-PR")
            }
        );
        assert_eq!(region("+13405550100"), Some("US-VI"));
        assert_eq!(region("+16715550100"), Some("US-GU"));
        assert_eq!(region("+12025550100"), Some("US-DC"));
        assert_eq!(
            presume("+14165550100"),
            PresumedLocation {
                zones: vec![Toronto],
                region: Some("CA-ON")
            }
        );
    }

    #[test]
    fn area_code_spanning_two_provinces_is_split_by_exchange() {
        // 902 serves Nova Scotia and Prince Edward Island; 902-368 is Charlottetown, 902-245 Digby.
        assert_eq!(region("+19023680100"), Some("CA-PE"));
        assert_eq!(region("+19022450100"), Some("CA-NS"));
        // An exchange the data does not name stays unknown rather than guessed.
        assert_eq!(region("+19020000100"), None);
    }

    #[test]
    fn non_us_nanp_members_have_zones_but_no_region() {
        let jamaica = presume("+18765550100");
        assert_eq!(jamaica.zones, vec![chrono_tz::America::Jamaica]);
        assert_eq!(jamaica.region, None);
    }

    #[test]
    fn uk_number_is_london_without_region() {
        assert_eq!(
            presume("+442079460000"),
            PresumedLocation {
                zones: vec![London],
                region: None
            }
        );
    }

    #[test]
    fn a_number_known_only_by_a_country_of_many_zones_has_no_presumed_zone() {
        // The data's `1` line lists every NANP zone: no instant is inside
        // 08:00-21:00 in all of them, so presuming it would hold the message forever.
        for toll_free_or_unknown in ["+18005550100", "+19995550100"] {
            assert_eq!(
                presume(toll_free_or_unknown),
                PresumedLocation::unknown(),
                "{toll_free_or_unknown}"
            );
        }
    }

    #[test]
    fn garbage_is_unknown() {
        let unknown = PresumedLocation {
            zones: vec![],
            region: None,
        };
        for input in [
            "",
            "+",
            "12125550100",
            "+1 212 555 0100",
            "+1212555010a",
            "+1234567890123456",
            "++12125550100",
            "+１２１２５５５０１００",
        ] {
            assert_eq!(presume(input), unknown, "{input:?}");
        }
    }

    #[test]
    fn prefix_not_in_the_data_is_unknown() {
        // Country code 999 is unassigned, and neither 99 nor 9 has a line.
        let location = presume("+999123456");
        assert!(location.zones.is_empty(), "{:?}", location.zones);
        assert_eq!(location.region, None);
    }

    #[test]
    fn data_version_names_the_upstream_commit_and_date() {
        // "libphonenumber f7e3e88 (2026-07-17)" for the snapshot first shipped.
        let version = data_version();
        let (commit, date) = version
            .strip_prefix("libphonenumber ")
            .and_then(|rest| rest.strip_suffix(')')?.split_once(" ("))
            .unwrap_or_else(|| panic!("unexpected shape: {version}"));
        assert!(
            commit.len() == 7 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{version}"
        );
        assert!(chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(), "{version}");
    }
}

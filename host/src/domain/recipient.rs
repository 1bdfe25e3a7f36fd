//! Where a message's recipient is presumed to be (SPEC §4.1): the contact's
//! `timezone` attribute when it names an IANA zone, else every zone the
//! number's prefix may be in; the state from the area code either way (state
//! laws presume it from the area code).

use chrono_tz::Tz;

use super::contact::Attributes;
use super::recipient_zone::presume;

/// The contact attribute that overrides the zones presumed from the number.
pub const TIMEZONE_ATTRIBUTE: &str = "timezone";

/// A recipient's presumed zones and region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// One zone, or every candidate of a prefix that spans several; empty when unknown.
    pub zones: Vec<Tz>,
    /// ISO 3166-2 subdivision from the NANP area code (`US-FL`).
    pub region: Option<&'static str>,
}

impl Location {
    /// The zones as recorded for the audit: IANA names joined by `&`
    /// (libphonenumber's notation), `unknown` when none.
    pub fn zone_names(&self) -> String {
        if self.zones.is_empty() {
            return "unknown".into();
        }
        self.zones.iter().map(|z| z.name()).collect::<Vec<_>>().join("&")
    }
}

/// Locates the recipient of `phone` (E.164) with these contact attributes.
pub fn locate(phone: &str, attributes: &Attributes) -> Location {
    let presumed = presume(phone);
    let declared = attributes
        .get(TIMEZONE_ATTRIBUTE)
        .and_then(|name| name.trim().parse::<Tz>().ok());
    Location {
        zones: declared.map_or(presumed.zones, |zone| vec![zone]),
        region: presumed.region,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timezone_attribute_overrides_the_area_code_but_not_the_state() {
        let none = Attributes::new();
        let miami = locate("+13055550100", &none);
        assert_eq!(miami.zones, vec![chrono_tz::America::New_York]);
        assert_eq!(miami.region, Some("US-FL"));

        let travelling = Attributes::from([("timezone".to_string(), "America/Los_Angeles".to_string())]);
        let moved = locate("+13055550100", &travelling);
        assert_eq!(moved.zones, vec![chrono_tz::America::Los_Angeles]);
        assert_eq!(moved.region, Some("US-FL"), "the state law still presumes Florida");
        assert_eq!(moved.zone_names(), "America/Los_Angeles");

        let nonsense = Attributes::from([("timezone".to_string(), "Mars/Base".to_string())]);
        assert_eq!(
            locate("+13055550100", &nonsense),
            miami,
            "a name that is no zone is ignored"
        );
    }
}

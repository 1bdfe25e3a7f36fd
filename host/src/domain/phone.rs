//! Phone numbers: E.164 with a configurable set of country calling codes.
//!
//! National formatting is accepted everywhere a number enters Herald (JSON and
//! CSV alike): spaces, dashes, dots and parentheses are dropped, and a bare 10-digit
//! number or an 11-digit one starting with `1` is read as NANP.

/// A phone number in E.164 form (`+` and digits). Only [`PhonePolicy::normalize`]
/// makes one from outside input; the store reads back numbers it stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for PhoneNumber {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<PhoneNumber> for String {
    fn from(number: PhoneNumber) -> Self {
        number.0
    }
}

/// Which numbers are accepted. NANP only by default, as the original contract had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonePolicy {
    any_country: bool,
    country_codes: Vec<String>,
}

impl Default for PhonePolicy {
    fn default() -> Self {
        Self::new(&["1".to_string()])
    }
}

impl PhonePolicy {
    /// `codes` are calling codes without `+`; `"*"` accepts every country.
    pub fn new(codes: &[String]) -> Self {
        Self {
            any_country: codes.iter().any(|c| c == "*"),
            country_codes: codes.iter().filter(|c| *c != "*").cloned().collect(),
        }
    }

    /// Normalizes `input` to E.164 (`+` and digits) or explains why it is not valid.
    pub fn normalize(&self, input: &str) -> Result<PhoneNumber, String> {
        super::check_text(input).map_err(|e| format!("phone number {e}"))?;
        let invalid = || format!("invalid phone number {:?}", input);
        let trimmed = input.trim();
        let (plus, rest) = match trimmed.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let mut digits = String::with_capacity(rest.len());
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(invalid()),
            }
        }
        let digits = match (plus, digits.len()) {
            (true, _) => digits,
            (false, 10) => format!("1{digits}"),
            (false, 11) if digits.starts_with('1') => digits,
            _ => return Err(invalid()),
        };
        if self.accepts(&digits) {
            Ok(PhoneNumber(format!("+{digits}")))
        } else {
            Err(invalid())
        }
    }

    fn accepts(&self, digits: &str) -> bool {
        // NANP numbers always have exactly 10 digits after the `1`, whatever else is allowed.
        if let Some(national) = digits.strip_prefix('1') {
            return national.len() == 10 && (self.any_country || self.allows_code("1"));
        }
        let e164 = (8..=15).contains(&digits.len()) && !digits.starts_with('0');
        e164 && (self.any_country || self.country_codes.iter().any(|code| digits.starts_with(code.as_str())))
    }

    /// A regular expression for the API's document matching exactly the E.164
    /// numbers (`+` and digits) that [`PhonePolicy::normalize`] accepts as written.
    pub fn pattern(&self) -> String {
        let mut forms = Vec::new();
        if self.any_country || self.allows_code("1") {
            forms.push("1[0-9]{10}".to_string());
        }
        if self.any_country {
            forms.push("[2-9][0-9]{7,14}".to_string());
        } else {
            // A code starting with 1 is read as NANP, one starting with 0 never matches.
            let codes = self.country_codes.iter().filter(|code| {
                !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) && !code.starts_with(['0', '1'])
            });
            for code in codes {
                let (min, max) = (8usize.saturating_sub(code.len()), 15usize.saturating_sub(code.len()));
                forms.push(format!("{code}[0-9]{{{min},{max}}}"));
            }
        }
        match forms.is_empty() {
            true => "^(?!)$".to_string(),
            false => format!(r"^\+(?:{})$", forms.join("|")),
        }
    }

    fn allows_code(&self, code: &str) -> bool {
        self.country_codes.iter().any(|c| c == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(codes: &[&str]) -> PhonePolicy {
        PhonePolicy::new(&codes.iter().map(|c| c.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_documented_pattern_names_the_accepted_forms() {
        assert_eq!(PhonePolicy::default().pattern(), r"^\+(?:1[0-9]{10})$");
        assert_eq!(policy(&["1", "44"]).pattern(), r"^\+(?:1[0-9]{10}|44[0-9]{6,13})$");
        assert_eq!(policy(&["33"]).pattern(), r"^\+(?:33[0-9]{6,13})$");
        assert_eq!(policy(&["*"]).pattern(), r"^\+(?:1[0-9]{10}|[2-9][0-9]{7,14})$");
        // Shortest and longest numbers the pattern allows are accepted.
        let wide = policy(&["44"]);
        assert!(wide.normalize("+44123456").is_ok() && wide.normalize("+441234567890123").is_ok());
        assert!(wide.normalize("+4412345").is_err() && wide.normalize("+4412345678901234").is_err());
    }

    #[test]
    fn nanp_numbers_in_every_national_format_normalize() {
        let p = PhonePolicy::default();
        for input in [
            "+15551234567",
            "5551234567",
            "15551234567",
            "(555) 123-4567",
            "555.123.4567",
            "1 555 123 4567",
            " +1 (555) 123-4567 ",
        ] {
            assert_eq!(p.normalize(input).as_deref(), Ok("+15551234567"), "{input}");
        }
    }

    #[test]
    fn wrong_lengths_letters_and_foreign_numbers_are_rejected_by_default() {
        let p = PhonePolicy::default();
        for input in [
            "12345",
            "+1555123456",
            "+155512345678",
            "555-CALL-NOW",
            "",
            "+447911123456",
            "25551234567",
        ] {
            assert!(p.normalize(input).is_err(), "{input} should be rejected");
        }
        assert_eq!(p.normalize("12345").unwrap_err(), "invalid phone number \"12345\"");
    }

    #[test]
    fn widened_policy_applies_e164_lengths() {
        let p = policy(&["1", "44"]);
        assert_eq!(p.normalize("+44 7911 123456").as_deref(), Ok("+447911123456"));
        assert!(p.normalize("+33612345678").is_err(), "France not allowed");
        assert!(p.normalize("+4412345678901234").is_err(), "16 digits");
        let any = policy(&["*"]);
        assert_eq!(any.normalize("+33612345678").as_deref(), Ok("+33612345678"));
        assert!(any.normalize("+1555123456").is_err(), "NANP length still enforced");
    }
}

//! Inbound keywords (SPEC §3.8): STOP and its kin opt out, START opts back in.

/// What an inbound message's body asks for (SPEC §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    OptOut,
    OptIn,
    /// HELP, INFO and anything else: published as an inbound event only.
    Other,
}

const OPT_OUT_KEYWORDS: [&str; 9] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "OPT OUT",
];
const OPT_IN_KEYWORDS: [&str; 3] = ["START", "UNSTOP", "YES"];

/// Case-insensitive, whole trimmed body.
pub fn classify_inbound(body: &str) -> Keyword {
    // Trims and collapses inner whitespace runs, so "opt \t out" reads "opt out".
    let normalized = body.split_whitespace().collect::<Vec<_>>().join(" ");
    // ASCII-only folding: Unicode case mapping would let e.g. "ſtop" (long s) match.
    let is_one_of = |keywords: &[&str]| keywords.iter().any(|k| k.eq_ignore_ascii_case(&normalized));
    if is_one_of(&OPT_OUT_KEYWORDS) {
        Keyword::OptOut
    } else if is_one_of(&OPT_IN_KEYWORDS) {
        Keyword::OptIn
    } else {
        Keyword::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- keywords ------------------------------------------------------------

    #[test]
    fn keyword_table() {
        use Keyword::*;
        let cases = [
            ("STOP", OptOut),
            ("stop", OptOut),
            ("  Stop\n", OptOut),
            ("STOPALL", OptOut),
            ("unsubscribe", OptOut),
            ("Cancel", OptOut),
            ("END", OptOut),
            ("quit", OptOut),
            ("REVOKE", OptOut),
            ("optout", OptOut),
            ("opt out", OptOut),
            ("OPT   OUT", OptOut),
            ("\topt\t out ", OptOut),
            ("START", OptIn),
            ("unstop", OptIn),
            (" yes ", OptIn),
            ("Yes", OptIn),
            ("HELP", Other),
            ("help", Other),
            ("INFO", Other),
            ("", Other),
            ("   ", Other),
            ("stop please", Other),
            ("please stop", Other),
            ("STOP!", Other),
            ("S TOP", Other),
            ("optout now", Other),
            ("opt-out", Other),
            ("yess", Other),
            ("ſtop", Other),
        ];
        for (body, expected) in cases {
            assert_eq!(classify_inbound(body), expected, "{body:?}");
        }
    }
}

//! SMS encodings and segment counting.
//!
//! A body is GSM-7 when every character is in the GSM 03.38 basic set or its
//! extension table; the extension characters (`^ { } \ [ ~ ] | €` and form
//! feed) take two septets (escape + character). Anything else makes the whole
//! body UCS-2, where each character takes its UTF-16 length (characters outside
//! the Basic Multilingual Plane, such as most emoji, take two units).
//!
//! One segment holds 160 septets (GSM-7) or 70 units (UCS-2). Longer bodies
//! are split into segments of 153 septets or 67 units (the rest is the
//! concatenation header). A two-unit character is never split across two
//! segments: when it does not fit, it starts the next segment, as handsets and
//! carriers do, so a multipart count can exceed `ceil(units / 153)`.

use std::borrow::Cow;

use herald_sdk::Encoding;

/// Septets in a single-segment GSM-7 message.
pub const GSM7_SINGLE: u32 = 160;
/// Septets per segment of a multipart GSM-7 message.
pub const GSM7_MULTI: u32 = 153;
/// UTF-16 units in a single-segment UCS-2 message.
pub const UCS2_SINGLE: u32 = 70;
/// UTF-16 units per segment of a multipart UCS-2 message.
pub const UCS2_MULTI: u32 = 67;

/// The non-ASCII characters of the GSM 03.38 basic set.
const GSM_BASIC_NON_ASCII: &str = "£¥èéùìòÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà";

/// Septets `c` takes in GSM-7: 1 for the basic set, 2 for the extension
/// table, `None` when it has no GSM-7 form.
pub fn gsm7_septets(c: char) -> Option<u32> {
    match c {
        // ASCII in the basic set: everything printable except the extension
        // characters and the backtick, plus LF and CR.
        '\n' | '\r' => Some(1),
        '^' | '{' | '}' | '\\' | '[' | ']' | '~' | '|' | '\u{000C}' | '€' => Some(2),
        '`' => None,
        ' '..='~' => Some(1),
        c if !c.is_ascii() && GSM_BASIC_NON_ASCII.contains(c) => Some(1),
        _ => None,
    }
}

/// How a body is encoded and how many segments it takes. An empty body takes
/// no segments.
pub fn measure(body: &str) -> (Encoding, u32) {
    if body.chars().all(|c| gsm7_septets(c).is_some()) {
        let segments = count_segments(
            body.chars().map(|c| gsm7_septets(c).unwrap_or(1)),
            GSM7_SINGLE,
            GSM7_MULTI,
        );
        (Encoding::Gsm7, segments)
    } else {
        let segments = count_segments(body.chars().map(|c| c.len_utf16() as u32), UCS2_SINGLE, UCS2_MULTI);
        (Encoding::Ucs2, segments)
    }
}

/// Segments for characters of the given unit sizes: one when they fit in
/// `single`, otherwise greedy segments of `multi` units that never split a
/// character.
fn count_segments(units: impl Iterator<Item = u32> + Clone, single: u32, multi: u32) -> u32 {
    let total: u64 = units.clone().map(u64::from).sum();
    if total == 0 {
        return 0;
    }
    if total <= u64::from(single) {
        return 1;
    }
    let mut segments = 1;
    let mut used = 0;
    for size in units {
        if used + size > multi {
            segments += 1;
            used = 0;
        }
        used += size;
    }
    segments
}

/// The GSM-7 look-alike of a typographic character, when smart encoding knows one.
fn look_alike(c: char) -> Option<&'static str> {
    Some(match c {
        // Single quotes, apostrophes, primes, acute accent, single guillemets.
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{00B4}' | '\u{2039}' | '\u{203A}' => "'",
        // Double quotes, double primes, guillemets.
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{00AB}' | '\u{00BB}' => "\"",
        // Hyphens, dashes, minus sign.
        '\u{2010}'..='\u{2015}' | '\u{2212}' => "-",
        '\u{2026}' => "...",
        // Non-breaking and other typographic spaces.
        '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => " ",
        // Zero-width space, byte-order mark, soft hyphen: invisible, dropped.
        '\u{200B}' | '\u{FEFF}' | '\u{00AD}' => "",
        _ => return None,
    })
}

/// Smart encoding: replaces typographic quotes, dashes, ellipses and special
/// spaces with GSM-7 look-alikes — but only when that makes the whole body
/// GSM-7. A body that would stay UCS-2 anyway (an emoji, Cyrillic, …) is
/// returned unchanged, so nothing is degraded for no gain.
pub fn smart_encode(body: &str) -> Cow<'_, str> {
    if body.chars().all(|c| gsm7_septets(c).is_some()) {
        return Cow::Borrowed(body);
    }
    let mut out = String::with_capacity(body.len());
    for c in body.chars() {
        match look_alike(c) {
            Some(replacement) => out.push_str(replacement),
            None if gsm7_septets(c).is_some() => out.push(c),
            None => return Cow::Borrowed(body),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::{Gsm7, Ucs2};

    fn rep(s: &str, n: usize) -> String {
        s.repeat(n)
    }

    #[test]
    fn basic_set_has_127_characters_and_extension_9_plus_form_feed() {
        let basic: Vec<char> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| gsm7_septets(c) == Some(1))
            .collect();
        assert_eq!(basic.len(), 127, "{basic:?}");
        let extension: String = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| gsm7_septets(c) == Some(2))
            .collect();
        assert_eq!(extension, "\u{c}[\\]^{|}~€");
    }

    #[test]
    fn table() {
        let cases: Vec<(String, Encoding, u32)> = vec![
            (String::new(), Gsm7, 0),
            ("Hello".into(), Gsm7, 1),
            (
                "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà".into(),
                Gsm7,
                1,
            ),
            // GSM-7 single-segment boundary.
            (rep("a", 160), Gsm7, 1),
            (rep("a", 161), Gsm7, 2),
            // Extension characters count twice, right at the 160 boundary.
            (rep("a", 158) + "€", Gsm7, 1),
            (rep("a", 159) + "€", Gsm7, 2),
            (rep("^", 80), Gsm7, 1),
            (rep("{", 81), Gsm7, 2),
            (rep("a", 156) + "\u{c}", Gsm7, 1),
            // Multipart: 153 septets per segment.
            (rep("a", 306), Gsm7, 2),
            (rep("a", 307), Gsm7, 3),
            (rep("a", 459), Gsm7, 3),
            (rep("a", 460), Gsm7, 4),
            // An escape sequence is never split: it starts the next segment.
            (rep("a", 152) + "[" + &rep("a", 151), Gsm7, 2),
            (rep("a", 152) + "[" + &rep("a", 152), Gsm7, 3),
            // One non-GSM character makes the whole body UCS-2.
            ("Hello `world`".into(), Ucs2, 1),
            ("ê".into(), Ucs2, 1),
            ("δ".into(), Ucs2, 1),
            ("Привет".into(), Ucs2, 1),
            (rep("a", 69) + "ê", Ucs2, 1),
            (rep("a", 70) + "ê", Ucs2, 2),
            (rep("ж", 134), Ucs2, 2),
            (rep("ж", 135), Ucs2, 3),
            // Emoji outside the BMP take two UTF-16 units.
            ("😀".into(), Ucs2, 1),
            (rep("😀", 35), Ucs2, 1),
            (rep("😀", 36), Ucs2, 2),
            (rep("😀", 67), Ucs2, 3),
            (rep("a", 68) + "😀", Ucs2, 1),
            (rep("a", 69) + "😀", Ucs2, 2),
            // A surrogate pair is never split either.
            (rep("ж", 66) + "😀" + &rep("ж", 65), Ucs2, 2),
            (rep("ж", 66) + "😀" + &rep("ж", 66), Ucs2, 3),
            // Extension characters in a UCS-2 body are one unit.
            (rep("€", 69) + "ж", Ucs2, 1),
        ];
        for (body, encoding, segments) in cases {
            assert_eq!(
                measure(&body),
                (encoding, segments),
                "{body:?} ({} chars)",
                body.chars().count()
            );
        }
    }

    #[test]
    fn smart_encoding() {
        let cases = [
            (
                "\u{201C}Hi\u{201D} \u{2014} it\u{2019}s\u{2026}\u{00A0}ok",
                "\"Hi\" - it's... ok",
            ),
            ("a\u{2013}b \u{2018}c\u{2019} \u{00AB}d\u{00BB}", "a-b 'c' \"d\""),
            ("zero\u{200B}width", "zerowidth"),
            // Already GSM-7: unchanged.
            ("plain \"text\"", "plain \"text\""),
            // Still UCS-2 after replacement: unchanged.
            ("\u{201C}Hi\u{201D} 😀", "\u{201C}Hi\u{201D} 😀"),
            ("\u{2019} ж", "\u{2019} ж"),
        ];
        for (input, expected) in cases {
            assert_eq!(smart_encode(input), expected, "{input:?}");
        }
        let typographic = rep("it\u{2019}s ", 20);
        assert_eq!(measure(&typographic), (Ucs2, 2));
        assert_eq!(measure(&smart_encode(&typographic)), (Gsm7, 1));
    }
}

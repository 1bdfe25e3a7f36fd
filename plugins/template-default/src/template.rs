//! The template language: text with `{{ variable | filter | … }}` placeholders.
//!
//! * A placeholder is `{{`, a variable name, any number of `| filter`, `}}`.
//!   Whitespace (including newlines) is allowed anywhere inside the braces.
//! * Variable names start with a letter or `_` and go on with letters, digits,
//!   `_`, `.` and `-`; they are matched exactly (case-sensitive) against the
//!   variables given to `render`; when a name is given twice, the last wins.
//! * Filters run left to right: `upper`, `lower`, `first_word` (the first
//!   whitespace-separated word) and `default:"text"` (used when the variable is
//!   missing, or empty or whitespace only). The default is a double- or
//!   single-quoted string; inside it `\"`, `\'`, `\\` and `\n` are escapes.
//! * A variable that is missing when the filters have run is an error.
//! * `{{` always opens a placeholder and a `}}` outside one is an error (it is
//!   almost always a typo such as `{name}}`); single `{` and `}` are text.
//! * A template is 1 to 1600 characters long.
//!
//! Error positions are 0-based offsets in characters (Unicode scalar values).

use std::collections::HashMap;

use herald_sdk::TemplateError;

/// The longest template (and rendered body), in characters: Herald's SMS
/// body cap, ten segments of UCS-2 or about ten of GSM-7.
pub const MAX_CHARS: usize = 1600;

/// The filters a placeholder may use.
pub const FILTERS: [&str; 4] = ["default", "upper", "lower", "first_word"];

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder {
        name: String,
        position: u32,
        filters: Vec<Filter>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    Default(String),
    Upper,
    Lower,
    FirstWord,
}

/// Parses `template`, checking its length, placeholders and filters.
pub fn parse(template: &str) -> Result<Parsed, TemplateError> {
    let chars: Vec<char> = template.chars().collect();
    if chars.is_empty() {
        return Err(TemplateError::new("the template is empty"));
    }
    if chars.len() > MAX_CHARS {
        return Err(TemplateError::at(
            MAX_CHARS as u32,
            format!(
                "the template is {} characters long; the limit is {MAX_CHARS}",
                chars.len()
            ),
        ));
    }
    Parser { chars: &chars, pos: 0 }.template()
}

/// Renders a parsed template with `variables`.
pub fn render(parsed: &Parsed, variables: &[(String, String)]) -> Result<String, TemplateError> {
    let lookup: HashMap<&str, &str> = variables.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = String::new();
    for part in &parsed.parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Placeholder {
                name,
                position,
                filters,
            } => {
                let mut value: Option<String> = lookup.get(name.as_str()).map(|v| v.to_string());
                for filter in filters {
                    value = match filter {
                        Filter::Default(default) => match value {
                            Some(v) if !v.trim().is_empty() => Some(v),
                            _ => Some(default.clone()),
                        },
                        Filter::Upper => value.map(|v| v.to_uppercase()),
                        Filter::Lower => value.map(|v| v.to_lowercase()),
                        Filter::FirstWord => value.map(|v| v.split_whitespace().next().unwrap_or("").to_string()),
                    };
                }
                match value {
                    Some(value) => out.push_str(&value),
                    None => {
                        return Err(TemplateError::at(
                            *position,
                            format!(
                                "variable `{name}` is missing; set it on the contact or give a default: \
                                 {{{{ {name} | default:\"…\" }}}}"
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
}

fn err(position: usize, message: impl Into<String>) -> TemplateError {
    // Positions are bounded by MAX_CHARS, so this never saturates in practice.
    TemplateError::at(u32::try_from(position).unwrap_or(u32::MAX), message)
}

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-')
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_pair(&self, c: char) -> bool {
        self.chars.get(self.pos) == Some(&c) && self.chars.get(self.pos + 1) == Some(&c)
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn template(mut self) -> Result<Parsed, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        while let Some(c) = self.peek() {
            if self.at_pair('{') {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(self.placeholder()?);
            } else if self.at_pair('}') {
                return Err(err(self.pos, "`}}` without a matching `{{`"));
            } else {
                text.push(c);
                self.pos += 1;
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Parsed { parts })
    }

    /// A placeholder, from its `{{` through its `}}`.
    fn placeholder(&mut self) -> Result<Part, TemplateError> {
        let open = self.pos;
        let unclosed = || err(open, "placeholder opened with `{{` is never closed with `}}`");
        self.pos += 2;
        self.skip_whitespace();
        let position = self.pos;
        let name = match self.peek() {
            None => return Err(unclosed()),
            Some('}') if self.at_pair('}') => return Err(err(open, "empty placeholder: expected a variable name")),
            Some(c) if is_name_start(c) => self.word(is_name_char),
            Some(c) => return Err(err(self.pos, format!("expected a variable name, found `{c}`"))),
        };
        let mut filters = Vec::new();
        loop {
            self.skip_whitespace();
            match self.peek() {
                None => return Err(unclosed()),
                Some('}') if self.at_pair('}') => {
                    self.pos += 2;
                    break;
                }
                Some('|') => {
                    self.pos += 1;
                    filters.push(self.filter()?);
                }
                Some(c) => {
                    return Err(err(
                        self.pos,
                        format!("unexpected `{c}` in placeholder: expected `|` or `}}}}`"),
                    ));
                }
            }
        }
        let position = u32::try_from(position).unwrap_or(u32::MAX);
        Ok(Part::Placeholder {
            name,
            position,
            filters,
        })
    }

    /// A filter, after its `|`.
    fn filter(&mut self) -> Result<Filter, TemplateError> {
        self.skip_whitespace();
        let start = self.pos;
        let name = self.word(|c| c.is_alphanumeric() || c == '_');
        if name.is_empty() {
            return Err(match self.peek() {
                None => err(start, "expected a filter name after `|`"),
                Some(c) => err(start, format!("expected a filter name after `|`, found `{c}`")),
            });
        }
        self.skip_whitespace();
        let argument = if self.peek() == Some(':') {
            let colon = self.pos;
            self.pos += 1;
            self.skip_whitespace();
            Some((colon, self.string()?))
        } else {
            None
        };
        match (name.as_str(), argument) {
            ("default", Some((_, value))) => Ok(Filter::Default(value)),
            ("default", None) => Err(err(start, "filter `default` needs a value, e.g. `default:\"friend\"`")),
            ("upper" | "lower" | "first_word", Some((colon, _))) => {
                Err(err(colon, format!("filter `{name}` takes no argument")))
            }
            ("upper", None) => Ok(Filter::Upper),
            ("lower", None) => Ok(Filter::Lower),
            ("first_word", None) => Ok(Filter::FirstWord),
            _ => Err(err(
                start,
                format!("unknown filter `{name}` (known: {})", FILTERS.join(", ")),
            )),
        }
    }

    /// A quoted string (`"…"` or `'…'`), with its escapes resolved.
    fn string(&mut self) -> Result<String, TemplateError> {
        let open = self.pos;
        let quote = match self.peek() {
            Some(q @ ('"' | '\'')) => q,
            Some(c) => return Err(err(open, format!("expected a quoted string after `:`, found `{c}`"))),
            None => return Err(err(open, "expected a quoted string after `:`")),
        };
        self.pos += 1;
        let mut value = String::new();
        loop {
            match self.peek() {
                None => return Err(err(open, "string is never closed")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(value);
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ ('"' | '\'' | '\\')) => value.push(c),
                        Some('n') => value.push('\n'),
                        // Not an escape: keep the backslash; the character is read next.
                        _ => {
                            value.push('\\');
                            continue;
                        }
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    value.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn word(&mut self, accept: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&accept) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn run(template: &str, variables: &[(&str, &str)]) -> Result<String, TemplateError> {
        render(&parse(template)?, &vars(variables))
    }

    #[test]
    fn renders() {
        let contact = [
            ("first_name", "ada"),
            ("last_name", "Lovelace"),
            ("full", "  Ada  King "),
            ("empty", ""),
        ];
        let cases = [
            ("Hello", "Hello"),
            ("Hi {{first_name}}!", "Hi ada!"),
            ("Hi {{ first_name }}!", "Hi ada!"),
            ("Hi {{\n\tfirst_name\n}}!", "Hi ada!"),
            ("{{first_name}}{{last_name}}", "adaLovelace"),
            ("{{ first_name | upper }}", "ADA"),
            ("{{ last_name|lower }}", "lovelace"),
            ("{{ full | first_word }}", "Ada"),
            ("{{ full | first_word | upper }}", "ADA"),
            ("{{ empty | first_word }}.", "."),
            ("Hi {{ nickname | default:\"friend\" }}", "Hi friend"),
            ("Hi {{ nickname | default : 'friend' }}", "Hi friend"),
            ("Hi {{ empty | default:\"friend\" }}", "Hi friend"),
            ("Hi {{ first_name | default:\"friend\" }}", "Hi ada"),
            ("Hi {{ nickname | default:\"friend\" | upper }}", "Hi FRIEND"),
            ("Hi {{ nickname | upper | default:\"friend\" }}", "Hi friend"),
            ("{{ x | default:\"say \\\"hi\\\" \\\\ \\n}}\" }}", "say \"hi\" \\ \n}}"),
            ("{{ x | default:\"a\\b\" }}", "a\\b"),
            ("{{ x | default:\"\" }}|", "|"),
            ("{ not a placeholder } {a}", "{ not a placeholder } {a}"),
            ("Grüße, {{ first_name }} 😀", "Grüße, ada 😀"),
        ];
        for (template, expected) in cases {
            assert_eq!(run(template, &contact).as_deref(), Ok(expected), "{template:?}");
        }
    }

    #[test]
    fn names_are_exact_and_last_wins() {
        assert_eq!(run("{{ a.b-c_1 }}", &[("a.b-c_1", "x")]).as_deref(), Ok("x"));
        assert_eq!(run("{{ Ünïcode }}", &[("Ünïcode", "y")]).as_deref(), Ok("y"));
        assert_eq!(run("{{ a }}", &[("a", "1"), ("a", "2")]).as_deref(), Ok("2"));
        assert!(run("{{ Name }}", &[("name", "x")]).is_err());
        assert_eq!(run("{{ x | upper }}", &[("x", "straße")]).as_deref(), Ok("STRASSE"));
    }

    #[test]
    fn errors_with_positions() {
        let cases: [(&str, Option<u32>, &str); 19] = [
            ("", None, "the template is empty"),
            ("Hi {{ name }}", Some(6), "variable `name` is missing"),
            ("é {{name}}", Some(4), "variable `name` is missing"),
            ("Hi {{ name | upper }}", Some(6), "variable `name` is missing"),
            ("Hi {{ name", Some(3), "never closed"),
            (
                "Hi {{ name }",
                Some(11),
                "unexpected `}` in placeholder: expected `|` or `}}`",
            ),
            ("Hi {{", Some(3), "never closed"),
            ("Hi {{ }}", Some(3), "empty placeholder"),
            ("Hi {{ 1x }}", Some(6), "expected a variable name, found `1`"),
            ("Hi {{ {{ x }} }}", Some(6), "expected a variable name, found `{`"),
            ("Hi {{ a b }}", Some(8), "unexpected `b` in placeholder"),
            ("Hi {{ a | }}", Some(10), "expected a filter name after `|`, found `}`"),
            (
                "Hi {{ a | shout }}",
                Some(10),
                "unknown filter `shout` (known: default, upper, lower, first_word)",
            ),
            ("Hi {{ a | default }}", Some(10), "filter `default` needs a value"),
            (
                "Hi {{ a | default: friend }}",
                Some(19),
                "expected a quoted string after `:`, found `f`",
            ),
            ("Hi {{ a | default:\"x }}", Some(18), "string is never closed"),
            ("Hi {{ a | upper:\"x\" }}", Some(15), "filter `upper` takes no argument"),
            ("Hi name}}", Some(7), "`}}` without a matching `{{`"),
            ("{{ a }} }}", Some(8), "`}}` without a matching `{{`"),
        ];
        for (template, position, message) in cases {
            let error = run(template, &[("a", "x")]).unwrap_err();
            assert_eq!(error.position, position, "{template:?}: {error}");
            assert!(error.message.contains(message), "{template:?}: {error}");
        }
    }

    #[test]
    fn length_limits() {
        assert!(parse(&"a".repeat(MAX_CHARS)).is_ok());
        assert!(
            parse(&"é".repeat(MAX_CHARS)).is_ok(),
            "the limit counts characters, not bytes"
        );
        let error = parse(&"a".repeat(MAX_CHARS + 1)).unwrap_err();
        assert_eq!(error.position, Some(1600));
        assert!(error.message.contains("1601 characters"), "{error}");
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let mut inputs: Vec<String> = [
            "{",
            "}",
            "{{",
            "}}",
            "{{{",
            "}}}",
            "{{}",
            "{}}",
            "{{|}}",
            "{{a|}}",
            "{{a|:}}",
            "{{a|default:}}",
            "{{a|default:\"}}",
            "{{a|default:'\\",
            "{{a|default:\"\\",
            "{{a|default:\"\\\"}}",
            "{{a||upper}}",
            "{{a|upper|}}",
            "{{ a | default:\"x\" extra }}",
            "{{\u{0}}}",
            "{{a\u{0}}}",
            "\u{FEFF}{{a}}",
            "{{😀}}",
            "{{a|😀}}",
            "{{a|default:😀}}",
            "{{ a | default:\"\u{10FFFF}\" }}",
            "{{-}}",
            "{{.}}",
            "{{_}}",
            "{{a:b}}",
            "{{ a | default : }}",
            "\u{301}{{a}}\u{301}",
            "{{a}}{{",
            "}}{{a}}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        inputs.push("{{".repeat(900));
        inputs.push("}}".repeat(900));
        inputs.push("{{ a | ".repeat(300));
        inputs.push(format!("{{{{ a | default:\"{}", "\\".repeat(1500)));
        inputs.push("😀".repeat(MAX_CHARS + 1));
        // Every prefix of a rich template, cut at every character.
        let rich = "Hi {{ first | default:\"a\\\"b\" | upper }}, {{ b|first_word }} é😀 {x} }";
        for end in 0..=rich.chars().count() {
            inputs.push(rich.chars().take(end).collect());
        }
        for input in &inputs {
            let outcome = std::panic::catch_unwind(|| run(input, &[("a", "x"), ("first", "f")]));
            assert!(outcome.is_ok(), "panicked on {input:?}");
        }
    }
}

//! Template checks the host can make without running the template plugin.
//!
//! The template plugin is the authority on template syntax (the API asks it on
//! every create and update); this quick structural check refuses obviously
//! broken input, with the other field errors, before a plugin call.

pub const MAX_TEMPLATE_CHARS: usize = 1600;

/// Checks length and that every `{{` has a matching `}}` around a non-empty
/// expression. Quoted strings inside a placeholder (a filter's argument, such as
/// `default:"}}"`) are skipped, as the template plugin reads them: this check must
/// never refuse a template the plugin accepts (fuzzed in `tests/fuzz.rs`).
pub fn check(template: &str) -> Result<(), String> {
    super::check_text(template)?;
    let len = super::char_len(template);
    if template.trim().is_empty() {
        return Err("must not be blank".into());
    }
    if len > MAX_TEMPLATE_CHARS {
        return Err(format!("must be at most {MAX_TEMPLATE_CHARS} characters (got {len})"));
    }
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = placeholder_end(after).ok_or_else(|| "unclosed placeholder: `{{` without `}}`".to_string())?;
        if after[..close].trim().is_empty() {
            return Err("empty placeholder `{{}}`".into());
        }
        rest = &after[close + 2..];
    }
    Ok(())
}

/// The offset of the `}}` closing a placeholder whose `{{` precedes `inside`;
/// `None` when another `{{` or the end comes first.
fn placeholder_end(inside: &str) -> Option<usize> {
    let bytes = inside.as_bytes();
    let mut quote = None;
    let mut i = 0;
    while i < bytes.len() {
        match (quote, bytes[i]) {
            // An escape (`\"`, `\'`, `\\`): the next byte is part of the string.
            (Some(_), b'\\') => i += 1,
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b @ (b'"' | b'\'')) => quote = Some(b),
            (None, _) if bytes[i..].starts_with(b"}}") => return Some(i),
            (None, _) if bytes[i..].starts_with(b"{{") => return None,
            (None, _) => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_placeholders_and_plain_text() {
        assert!(check("Hi {{ first_name | default:\"there\" }}, 20% off!").is_ok());
        assert!(check("No placeholders at all").is_ok());
    }

    #[test]
    fn rejects_broken_structure_and_bad_lengths() {
        assert!(check("Hi {{ name").is_err());
        assert!(check("Hi {{ }}").is_err());
        assert!(check("Hi {{ a {{ b }}").is_err());
        assert!(check("   ").is_err());
        assert!(check(&"x".repeat(1601)).is_err());
        assert!(check(&"é".repeat(1600)).is_ok(), "length counts characters");
        assert!(
            check("Hi {{ a | default:\"}} {{\" }}").is_ok(),
            "quoted braces are text"
        );
        assert!(
            check("Hi {{ a | default:'it\\'s' }}").is_ok(),
            "escaped quotes stay inside"
        );
        assert!(check("Hi {{ a | default:\"x }}").is_err(), "unclosed string");
    }
}

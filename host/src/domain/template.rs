//! Template checks the host can make without running the template plugin.
//!
//! The template plugin is the authority on template syntax (the API asks it on
//! every create and update); this quick structural check refuses obviously
//! broken input, with the other field errors, before a plugin call.

pub const MAX_TEMPLATE_CHARS: usize = 1600;

/// Checks length and that every `{{` has a matching `}}` around a non-empty expression.
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
        let close = after
            .find("}}")
            .ok_or_else(|| "unclosed placeholder: `{{` without `}}`".to_string())?;
        let expression = &after[..close];
        if expression.contains("{{") {
            return Err("unclosed placeholder: `{{` without `}}`".into());
        }
        if expression.trim().is_empty() {
            return Err("empty placeholder `{{}}`".into());
        }
        rest = &after[close + 2..];
    }
    Ok(())
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
    }
}

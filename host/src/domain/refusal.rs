//! What a carrier's refusal means beyond "this message failed" (or "try again").
//!
//! WIT `send-error` has no variant for these (the 0.1.0 contract is frozen),
//! so a plugin marks them with a prefix on `permanent`'s reason; the SDK's
//! `SendError::opted_out` and `SendError::misconfigured` write it, and plugins
//! in other languages write the same text.

/// The recipient opted out with the carrier (Twilio 21610 and its kin).
pub const OPTED_OUT_PREFIX: &str = "opted-out:";
/// The carrier account or plugin settings are wrong (bad credentials, a
/// sender the account does not own): no message can go until an operator acts.
pub const MISCONFIGURED_PREFIX: &str = "misconfigured:";

/// On `retryable`: the carrier answered, but whether it took the message is
/// unknown (a success without its message id): held like an unanswered request.
pub const OUTCOME_UNKNOWN_PREFIX: &str = "outcome-unknown:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Only this message cannot go.
    Message,
    /// The recipient opted out: opt the contact out.
    RecipientOptedOut,
    /// The carrier cannot send anything: pause it, keep messages waiting.
    CarrierMisconfigured,
}

/// Whether `reason` starts with `prefix` (case-insensitive, leading spaces ignored).
fn starts_with(reason: &str, prefix: &str) -> bool {
    reason
        .trim_start()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Whether a `retryable` reason says the outcome is unknown.
pub fn outcome_unknown(reason: &str) -> bool {
    starts_with(reason, OUTCOME_UNKNOWN_PREFIX)
}

/// Classifies a `permanent` reason by its prefix (case-insensitive, leading
/// spaces ignored).
pub fn classify(reason: &str) -> Refusal {
    let has = |prefix: &str| starts_with(reason, prefix);
    if has(OPTED_OUT_PREFIX) {
        Refusal::RecipientOptedOut
    } else if has(MISCONFIGURED_PREFIX) {
        Refusal::CarrierMisconfigured
    } else {
        Refusal::Message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_mark_the_kind_of_refusal() {
        assert_eq!(classify("opted-out: Twilio error 21610"), Refusal::RecipientOptedOut);
        assert_eq!(classify("  Opted-Out: x"), Refusal::RecipientOptedOut);
        assert_eq!(
            classify("misconfigured: Twilio error 20003"),
            Refusal::CarrierMisconfigured
        );
        assert_eq!(classify("Twilio HTTP 400 error 21211"), Refusal::Message);
        assert_eq!(classify("opted"), Refusal::Message);
        assert_eq!(classify("ü"), Refusal::Message, "no panic on a char boundary");
    }

    #[test]
    fn a_retryable_reason_can_say_the_outcome_is_unknown() {
        assert!(outcome_unknown("outcome-unknown: Twilio answered 201 without a `sid`"));
        assert!(!outcome_unknown("Twilio HTTP 503"));
    }
}

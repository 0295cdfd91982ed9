//! GraphQL `errors` to HTTP status: the operator's rules first, then the default classes.

use serde::Deserialize;
use serde_json::Value;

/// `extensions.code` values that mean the client's request was wrong (400 by default).
pub const CLIENT_CODES: [&str; 3] = ["GRAPHQL_VALIDATION_FAILED", "GRAPHQL_PARSE_FAILED", "BAD_USER_INPUT"];

/// One `[[errors]]` rule: an error matching every given condition gives `status`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// Matches the error's `extensions.code` exactly.
    pub code: Option<String>,
    /// Matches when the error's `message` contains this text.
    pub message: Option<String>,
    /// The status answered, 400-599.
    pub status: u16,
}

impl ErrorRule {
    /// Checks the rule; `key` is where it sits (e.g. `errors[0]`).
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if !(400..=599).contains(&self.status) {
            return Err(format!("`{key}.status`: {} is not an error status (400-599)", self.status));
        }
        if self.code.is_none() && self.message.is_none() {
            return Err(format!("`{key}`: give `code` and/or `message` to match errors on"));
        }
        Ok(())
    }

    fn matches(&self, error: &Value) -> bool {
        let code_ok = self.code.as_deref().is_none_or(|c| code(error) == Some(c));
        let message_ok =
            self.message.as_deref().is_none_or(|m| error.get("message").and_then(Value::as_str).is_some_and(|t| t.contains(m)));
        code_ok && message_ok
    }
}

/// An error's `extensions.code`, if it has one.
pub fn code(error: &Value) -> Option<&str> {
    error.get("extensions").and_then(|e| e.get("code")).and_then(Value::as_str)
}

/// The status of the first rule matching any of `errors`, if one does.
pub fn rule_status(rules: &[ErrorRule], errors: &[Value]) -> Option<u16> {
    rules.iter().find(|rule| errors.iter().any(|e| rule.matches(e))).map(|rule| rule.status)
}

/// The status for a response without a result (`data`, or the route's `result` under it, null)
/// and which carries `errors`: the first rule matching any error, else 400 if any error is of a
/// client class ([`CLIENT_CODES`]), else 502.
pub fn status_for(rules: &[ErrorRule], errors: &[Value]) -> u16 {
    if let Some(status) = rule_status(rules, errors) {
        return status;
    }
    if errors.iter().any(|e| code(e).is_some_and(|c| CLIENT_CODES.contains(&c))) { 400 } else { 502 }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rules_first_then_the_default_classes() {
        let rules: Vec<ErrorRule> = serde_json::from_value(json!([
            {"code": "NOT_FOUND", "status": 404},
            {"message": "not allowed", "status": 403}
        ]))
        .unwrap();
        let err = |code: &str, message: &str| json!({"message": message, "extensions": {"code": code}});
        assert_eq!(status_for(&rules, &[err("NOT_FOUND", "no user 7")]), 404);
        assert_eq!(status_for(&rules, &[err("X", "you are not allowed here")]), 403);
        assert_eq!(status_for(&rules, &[err("GRAPHQL_VALIDATION_FAILED", "unknown field")]), 400);
        assert_eq!(status_for(&rules, &[json!({"message": "boom"}), err("BAD_USER_INPUT", "x")]), 400);
        assert_eq!(status_for(&rules, &[json!({"message": "internal"})]), 502);
        assert_eq!(status_for(&[], &[err("NOT_FOUND", "x")]), 502);
    }

    #[test]
    fn rules_are_checked() {
        let rule = |v: Value| serde_json::from_value::<ErrorRule>(v).unwrap().validate("errors[0]");
        assert_eq!(rule(json!({"code": "X", "status": 200})).unwrap_err(), "`errors[0].status`: 200 is not an error status (400-599)");
        assert_eq!(rule(json!({"status": 404})).unwrap_err(), "`errors[0]`: give `code` and/or `message` to match errors on");
        assert!(rule(json!({"message": "x", "status": 404})).is_ok());
    }
}

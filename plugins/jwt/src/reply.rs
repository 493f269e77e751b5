//! The 401 answers (RFC 6750 §3): a bare challenge when there is no token,
//! `error="invalid_token"` with a short reason when there is a bad one. The
//! reason never quotes the token or anything taken from it.

use std::borrow::Cow;

use serde_json::json;
use wasmgate_sdk::Reply;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No token at all.
    Missing,
    /// A token that is not acceptable, and why.
    Invalid(Cow<'static, str>),
}

impl From<Cow<'static, str>> for Rejection {
    fn from(reason: Cow<'static, str>) -> Self {
        Self::Invalid(reason)
    }
}

impl From<String> for Rejection {
    fn from(reason: String) -> Self {
        Self::Invalid(Cow::Owned(reason))
    }
}

impl From<&'static str> for Rejection {
    fn from(reason: &'static str) -> Self {
        Self::Invalid(Cow::Borrowed(reason))
    }
}

/// The longest `error_description` sent.
const MAX_DESCRIPTION: usize = 200;

/// `text` as an RFC 6750 `error_description`: printable ASCII without `"`
/// and `\`, so it fits a quoted-string as is.
fn description(text: &str) -> String {
    text.chars()
        .take(MAX_DESCRIPTION)
        .map(|c| if (' '..='~').contains(&c) && c != '"' && c != '\\' { c } else { '?' })
        .collect()
}

/// The reply for `rejection`. `realm` was checked at configure.
pub fn unauthorized(realm: &str, rejection: &Rejection) -> Reply {
    let (challenge, body) = match rejection {
        Rejection::Missing => (
            format!("Bearer realm=\"{realm}\""),
            json!({ "error": "unauthorized", "error_description": "missing token" }),
        ),
        Rejection::Invalid(reason) => {
            let reason = description(reason);
            (
                format!("Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{reason}\""),
                json!({ "error": "invalid_token", "error_description": reason }),
            )
        }
    };
    Reply::json(401, &body).header("www-authenticate", challenge).header("cache-control", "no-store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_gets_a_bare_challenge() {
        let r = unauthorized("api", &Rejection::Missing);
        assert_eq!(r.status, 401);
        assert_eq!(r.header_str("www-authenticate"), Some("Bearer realm=\"api\""));
        assert_eq!(r.header_str("content-type"), Some("application/json"));
    }

    #[test]
    fn invalid_names_the_error_and_a_safe_reason() {
        let r = unauthorized("api", &Rejection::from("bad \"quote\" \\ and \u{e9}\n"));
        assert_eq!(
            r.header_str("www-authenticate"),
            Some("Bearer realm=\"api\", error=\"invalid_token\", error_description=\"bad ?quote? ? and ??\"")
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, json!({"error": "invalid_token", "error_description": "bad ?quote? ? and ??"}));
        let long = unauthorized("api", &Rejection::Invalid("x".repeat(1000).into()));
        assert!(long.header_str("www-authenticate").unwrap().len() < 300);
    }
}

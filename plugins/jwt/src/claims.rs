//! Checking a verified token's claims (RFC 7519 §4.1): the time claims
//! against the gateway's clock with a leeway, the issuer and audience against
//! the config, and the claims the config requires. A registered claim of the
//! wrong type is refused with a reason naming it, never ignored.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// What the config asks of the claims.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub leeway_ms: u64,
    /// Accepted `iss` values; `None`: any.
    pub issuers: Option<Vec<String>>,
    /// Accepted `aud` values (one match is enough); `None`: any.
    pub audiences: Option<Vec<String>>,
    /// Claims that must be present and not null.
    pub required: Vec<String>,
}

/// What the rest of the plugin needs from claims that passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// Until when (ms, leeway included) the token is acceptable; `None` without `exp`.
    pub valid_until_ms: Option<u64>,
    pub sub: Option<String>,
}

pub type Reason = Cow<'static, str>;

/// A NumericDate claim in milliseconds; `Ok(None)` when absent (or null).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, Reason> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().map(|secs| secs * 1000.0)),
        Some(_) => Err(format!("claim `{name}` must be a number (seconds since the epoch)").into()),
    }
}

fn string<'a>(claims: &'a Map<String, Value>, name: &'static str) -> Result<Option<&'a str>, Reason> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("claim `{name}` must be a string").into()),
    }
}

/// `aud` as a list: a single string or an array of strings (RFC 7519 §4.1.3).
fn audiences(claims: &Map<String, Value>) -> Result<Option<Vec<&str>>, Reason> {
    const WRONG: &str = "claim `aud` must be a string or an array of strings";
    match claims.get("aud") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().ok_or(Reason::Borrowed(WRONG))).collect::<Result<_, _>>().map(Some)
        }
        Some(_) => Err(WRONG.into()),
    }
}

/// Checks `claims` at `now_ms`.
pub fn check(claims: &Map<String, Value>, rules: &Rules, now_ms: u64) -> Result<Checked, Reason> {
    let now = now_ms as f64;
    let leeway = rules.leeway_ms as f64;
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    let iss = string(claims, "iss")?;
    let sub = string(claims, "sub")?;
    let aud = audiences(claims)?;

    if let Some(exp) = exp
        && now >= exp + leeway
    {
        return Err("token expired".into());
    }
    if let Some(nbf) = nbf
        && now + leeway < nbf
    {
        return Err("token not yet valid (nbf)".into());
    }
    if let Some(iat) = iat
        && iat > now + leeway
    {
        return Err("token issued in the future (iat)".into());
    }
    if let Some(accepted) = &rules.issuers {
        match iss {
            None => return Err("missing claim `iss`".into()),
            Some(iss) if !accepted.iter().any(|a| a == iss) => return Err("issuer not accepted".into()),
            Some(_) => {}
        }
    }
    if let Some(accepted) = &rules.audiences {
        match aud {
            None => return Err("missing claim `aud`".into()),
            Some(aud) if !aud.iter().any(|a| accepted.iter().any(|x| x == a)) => {
                return Err("audience not accepted".into());
            }
            Some(_) => {}
        }
    }
    for name in &rules.required {
        if matches!(claims.get(name), None | Some(Value::Null)) {
            return Err(format!("missing required claim `{name}`").into());
        }
    }
    // `as` saturates: an absurdly distant exp is simply "no time soon".
    let valid_until_ms = exp.map(|exp| (exp + leeway).max(0.0) as u64);
    Ok(Checked { valid_until_ms, sub: sub.map(str::to_owned) })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const NOW_S: u64 = NOW / 1000;

    fn run(claims: Value, rules: &Rules) -> Result<Checked, String> {
        let Value::Object(map) = claims else { panic!("claims must be an object") };
        check(&map, rules, NOW).map_err(Cow::into_owned)
    }

    fn leeway(secs: u64) -> Rules {
        Rules { leeway_ms: secs * 1000, ..Rules::default() }
    }

    #[test]
    fn exp_edges_with_and_without_leeway() {
        let none = leeway(0);
        assert_eq!(run(json!({"exp": NOW_S + 1}), &none).unwrap().valid_until_ms, Some(NOW + 1000));
        assert_eq!(run(json!({"exp": NOW_S}), &none).unwrap_err(), "token expired", "exp is exclusive");
        let l30 = leeway(30);
        assert!(run(json!({"exp": NOW_S - 29}), &l30).is_ok());
        assert_eq!(run(json!({"exp": NOW_S - 30}), &l30).unwrap_err(), "token expired");
        // Fractional NumericDates are allowed.
        assert!(run(json!({"exp": NOW_S as f64 + 0.5}), &none).is_ok());
        assert!(run(json!({"exp": NOW_S as f64 - 0.5}), &none).is_err());
        assert_eq!(run(json!({"exp": 1e300}), &none).unwrap().valid_until_ms, Some(u64::MAX));
    }

    #[test]
    fn nbf_and_iat_edges() {
        let l30 = leeway(30);
        assert!(run(json!({"nbf": NOW_S + 30}), &l30).is_ok());
        assert_eq!(run(json!({"nbf": NOW_S + 31}), &l30).unwrap_err(), "token not yet valid (nbf)");
        assert!(run(json!({"iat": NOW_S + 30}), &l30).is_ok());
        assert_eq!(run(json!({"iat": NOW_S + 31}), &l30).unwrap_err(), "token issued in the future (iat)");
        assert!(run(json!({"iat": 0, "nbf": 0}), &leeway(0)).is_ok(), "old iat and nbf are fine");
    }

    #[test]
    fn wrongly_typed_claims_are_named() {
        let r = Rules::default();
        let cases = [
            (json!({"exp": "1700000000"}), "claim `exp` must be a number (seconds since the epoch)"),
            (json!({"nbf": true}), "claim `nbf` must be a number (seconds since the epoch)"),
            (json!({"iat": [1]}), "claim `iat` must be a number (seconds since the epoch)"),
            (json!({"iss": 7}), "claim `iss` must be a string"),
            (json!({"sub": {"id": 1}}), "claim `sub` must be a string"),
            (json!({"aud": 42}), "claim `aud` must be a string or an array of strings"),
            (json!({"aud": ["a", 1]}), "claim `aud` must be a string or an array of strings"),
        ];
        for (claims, want) in cases {
            assert_eq!(run(claims.clone(), &r).unwrap_err(), want, "{claims}");
        }
    }

    #[test]
    fn issuer_and_audience() {
        let r = Rules {
            issuers: Some(vec!["https://idp.a".into(), "https://idp.b".into()]),
            audiences: Some(vec!["api".into()]),
            ..Rules::default()
        };
        assert!(run(json!({"iss": "https://idp.b", "aud": "api"}), &r).is_ok());
        assert!(run(json!({"iss": "https://idp.a", "aud": ["web", "api"]}), &r).is_ok());
        assert_eq!(run(json!({"iss": "https://evil", "aud": "api"}), &r).unwrap_err(), "issuer not accepted");
        assert_eq!(run(json!({"aud": "api"}), &r).unwrap_err(), "missing claim `iss`");
        assert_eq!(run(json!({"iss": "https://idp.a", "aud": "web"}), &r).unwrap_err(), "audience not accepted");
        assert_eq!(run(json!({"iss": "https://idp.a", "aud": ["web"]}), &r).unwrap_err(), "audience not accepted");
        assert_eq!(run(json!({"iss": "https://idp.a", "aud": []}), &r).unwrap_err(), "audience not accepted");
        assert_eq!(run(json!({"iss": "https://idp.a"}), &r).unwrap_err(), "missing claim `aud`");
    }

    #[test]
    fn required_claims_must_be_present_and_not_null() {
        let r = Rules { required: vec!["email".into(), "exp".into()], ..Rules::default() };
        assert!(run(json!({"email": "a@b", "exp": NOW_S + 60}), &r).is_ok());
        assert_eq!(run(json!({"exp": NOW_S + 60}), &r).unwrap_err(), "missing required claim `email`");
        assert_eq!(run(json!({"email": null, "exp": NOW_S + 60}), &r).unwrap_err(), "missing required claim `email`");
        assert_eq!(run(json!({"email": "a@b"}), &r).unwrap_err(), "missing required claim `exp`");
    }

    #[test]
    fn sub_is_returned() {
        let got = run(json!({"sub": "alice"}), &Rules::default()).unwrap();
        assert_eq!(got, Checked { valid_until_ms: None, sub: Some("alice".into()) });
    }
}

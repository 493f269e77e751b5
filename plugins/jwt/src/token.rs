//! Taking a compact JWS apart (RFC 7515 §7.1) before any key is involved:
//! exactly three strict base64url segments, a header that is a JSON object
//! with unique names, an `alg` this route accepts (never `none`), and no
//! `crit` extension (this plugin understands none). Key hints the token
//! carries (`jwk`, `jku`, `x5u`, `x5c`) are ignored: keys come only from the
//! config.

use wasmgate_sdk::crypto::Algorithm;

use crate::b64;
use crate::claims::Reason;
use crate::json::{ObjectError, parse_object};

/// A token whose shape is acceptable; its signature is not checked yet.
#[derive(Debug)]
pub struct Token<'a> {
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// The decoded payload (the claims, once verified).
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Parses `token`; `allowed` is the config's `algorithms` list, if any.
pub fn parse<'a>(token: &'a str, allowed: Option<&[Algorithm]>) -> Result<Token<'a>, Reason> {
    let mut parts = token.splitn(4, '.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("token must have 3 segments (header.payload.signature)".into());
    };
    let signing_input = &token[..header.len() + 1 + payload.len()];
    let header = b64::decode(header).ok_or("token header is not base64url")?;
    let header = parse_object(&header).map_err(|e| match e {
        ObjectError::NotJson => "token header is not JSON",
        ObjectError::NotObject => "token header is not a JSON object",
        ObjectError::Duplicate => "token header repeats a parameter",
    })?;
    if header.contains_key("crit") {
        return Err("token header has critical extensions (crit) this gateway does not support".into());
    }
    let alg = match header.get("alg") {
        None => return Err("token header has no `alg`".into()),
        Some(serde_json::Value::String(name)) => name,
        Some(_) => return Err("header `alg` must be a string".into()),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err("unsigned tokens (alg none) are not accepted".into());
    }
    let alg = Algorithm::from_jwt(alg).ok_or("unsupported algorithm")?;
    if allowed.is_some_and(|list| !list.contains(&alg)) {
        return Err(format!("algorithm {} is not allowed", alg.jwt_name()).into());
    }
    let kid = match header.get("kid") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("header `kid` must be a string".into()),
    };
    let payload_decoded = b64::decode(payload).ok_or("token payload is not base64url")?;
    let signature = b64::decode(signature).ok_or("token signature is not base64url")?;
    if signature.is_empty() {
        return Err("token has no signature".into());
    }
    Ok(Token { signing_input, alg, kid, payload: payload_decoded, signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(json: &str) -> String {
        crate::tests::support::b64(json.as_bytes())
    }

    fn token(header: &str) -> String {
        format!("{}.{}.c2ln", enc(header), enc("{}"))
    }

    fn reason(token: &str, allowed: Option<&[Algorithm]>) -> String {
        parse(token, allowed).err().map(std::borrow::Cow::into_owned).unwrap_or_default()
    }

    #[test]
    fn a_good_token_splits_into_its_parts() {
        let t = token(r#"{"alg":"ES256","kid":"k1","typ":"JWT","jku":"https://evil.example/keys"}"#);
        let parsed = parse(&t, None).unwrap();
        assert_eq!(parsed.alg, Algorithm::Es256);
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.payload, b"{}");
        assert_eq!(parsed.signature, b"sig");
        assert_eq!(parsed.signing_input, &t[..t.len() - 5]);
    }

    #[test]
    fn shapes_that_are_refused() {
        let ok_header = enc(r#"{"alg":"RS256"}"#);
        let cases = [
            ("abc".to_owned(), "3 segments"),
            (format!("{ok_header}.e30"), "3 segments"),
            (format!("{ok_header}.e30.c2ln.x"), "3 segments"),
            (format!("{ok_header}.e30.c2ln.x.y"), "3 segments"),
            (format!("{ok_header}.e30="), "3 segments"),
            (format!("{ok_header}=.e30.c2ln"), "header is not base64url"),
            (format!("{ok_header}.e30.c2l+"), "signature is not base64url"),
            (format!("{ok_header}.e3 0.c2ln"), "payload is not base64url"),
            (format!("{ok_header}.e30."), "no signature"),
            (token("not json"), "header is not JSON"),
            (token(r#"["RS256"]"#), "header is not a JSON object"),
            (token(r#"{"alg":"HS256","alg":"RS256"}"#), "repeats a parameter"),
            (token(r#"{"typ":"JWT"}"#), "no `alg`"),
            (token(r#"{"alg":256}"#), "`alg` must be a string"),
            (token(r#"{"alg":"none"}"#), "alg none"),
            (token(r#"{"alg":"NoNe"}"#), "alg none"),
            (token(r#"{"alg":"rs256"}"#), "unsupported algorithm"),
            (token(r#"{"alg":"RS256","kid":7}"#), "`kid` must be a string"),
            (token(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#), "crit"),
        ];
        for (t, want) in cases {
            let got = reason(&t, None);
            assert!(got.contains(want), "{t}: {got:?} does not contain {want:?}");
        }
    }

    #[test]
    fn the_allow_list_is_applied_before_any_key() {
        let t = token(r#"{"alg":"HS256"}"#);
        assert_eq!(reason(&t, Some(&[Algorithm::Rs256])), "algorithm HS256 is not allowed");
        assert!(parse(&t, Some(&[Algorithm::Rs256, Algorithm::Hs256])).is_ok());
    }
}

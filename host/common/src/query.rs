//! Query strings and percent-encoding, as plugins read and edit them. A
//! query is `&`-separated `name=value` pairs in form encoding
//! (`application/x-www-form-urlencoded`: `%XX` escapes, `+` for a space).
//!
//! Names are compared after decoding, as the upstream's framework will
//! decode them: `api%5Fkey=...` is the `api_key` parameter too, so a
//! parameter cannot slip past a rule by being written differently.

/// Percent-decodes `%XX` escapes and, when `plus_is_space` (query strings,
/// forms), `+` as a space. An invalid escape stays as written.
pub fn decode(text: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (bytes.get(i + 1).and_then(hex_value), bytes.get(i + 2).and_then(hex_value)) {
            (Some(hi), Some(lo)) => Some(hi << 4 | lo),
            _ => None,
        };
        match (b, escaped) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn hex_value(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters (letters,
/// digits, `-._~`) onto `out`: safe in a path segment and in a query.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// [`encode_into`] a new string.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    encode_into(bytes, &mut out);
    out
}

/// The query's parameters in order, each as its decoded name and the pair
/// as written (`name=value`, or a bare `name`); empty pairs are skipped.
pub fn pairs(query: &str) -> impl Iterator<Item = (Vec<u8>, &str)> {
    query.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        (decode(name, true), pair)
    })
}

/// The decoded values of every `name` parameter, in order (a bare `name`
/// has the empty value).
pub fn values(query: &str, name: &str) -> Vec<Vec<u8>> {
    pairs(query).filter(|(n, _)| n == name.as_bytes()).map(|(_, pair)| decode(raw_value(pair), true)).collect()
}

/// The decoded value of the first `name` parameter.
pub fn value(query: &str, name: &str) -> Option<Vec<u8>> {
    pairs(query).find(|(n, _)| n == name.as_bytes()).map(|(_, pair)| decode(raw_value(pair), true))
}

/// The query without any `name` parameter, the others as written; `None`
/// when nothing is left.
pub fn without(query: &str, name: &str) -> Option<String> {
    let rest = pairs(query).filter(|(n, _)| n != name.as_bytes()).map(|(_, pair)| pair).collect::<Vec<_>>().join("&");
    (!rest.is_empty()).then_some(rest)
}

fn raw_value(pair: &str) -> &str {
    pair.split_once('=').map_or("", |(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_keeps_what_is_not_an_escape() {
        assert_eq!(decode("a%20b+c%2f", false), b"a b+c/");
        assert_eq!(decode("a+b%zz%4", true), b"a b%zz%4");
        assert_eq!(decode("%zz%4a+", true), b"%zzJ ");
        assert_eq!(decode("100%", true), b"100%");
        assert_eq!(decode("%+1", true), b"% 1", "a sign is not a hex digit; `+` is a space");
        assert_eq!(decode("%C3%A9", true), "é".as_bytes());
    }

    #[test]
    fn encoding_escapes_all_but_unreserved() {
        assert_eq!(encode(b"a b&c=d/e~f.g-h_i"), "a%20b%26c%3Dd%2Fe~f.g-h_i");
        assert_eq!(encode("é".as_bytes()), "%C3%A9");
        assert_eq!(encode("ä/ ~".as_bytes()), "%C3%A4%2F%20~");
        assert_eq!(decode(&encode(b"\x00%+ \xff"), true), b"\x00%+ \xff", "round trip");
    }

    #[test]
    fn parameters_match_by_decoded_name() {
        assert_eq!(values("a=1&b=2&a=3", "a"), vec![b"1".to_vec(), b"3".to_vec()]);
        assert_eq!(values("a&b=", "a"), vec![Vec::<u8>::new()]);
        assert_eq!(values("k=a+b%20c%2", "k"), vec![b"a b c%2".to_vec()]);
        assert_eq!(values("api%5Fkey=s", "api_key"), vec![b"s".to_vec()]);
        assert_eq!(value("a=1&a=2", "a"), Some(b"1".to_vec()));
        assert_eq!(value("b=1", "a"), None);
        assert_eq!(value("a=1&q=x%26y+z&q=2", "q"), Some(b"x&y z".to_vec()));
        assert_eq!(value("flag&b=2", "flag"), Some(Vec::new()));
        let names: Vec<(Vec<u8>, &str)> = pairs("x=%41&&a+b=1&c").collect();
        assert_eq!(names, vec![(b"x".to_vec(), "x=%41"), (b"a b".to_vec(), "a+b=1"), (b"c".to_vec(), "c")]);
    }

    #[test]
    fn without_removes_every_match_and_keeps_the_rest_as_written() {
        assert_eq!(without("a=1&b=2&a=3", "a").as_deref(), Some("b=2"));
        assert_eq!(without("a=1", "a"), None);
        assert_eq!(without("x=%41&a%3D=1", "a=").as_deref(), Some("x=%41"));
        assert_eq!(without("a=1&&b", "a").as_deref(), Some("b"), "empty pairs are dropped");
    }
}

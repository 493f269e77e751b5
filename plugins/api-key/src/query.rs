//! Reading and removing one parameter of a query string
//! (`application/x-www-form-urlencoded`: `&`-separated, `+` is a space).
//!
//! Names are compared after decoding, as the upstream's framework will
//! decode them: `api%5Fkey=...` is the `api_key` parameter too, so it can
//! neither slip past `hide_key` nor smuggle in a second key.

/// The decoded values of every `name` parameter, in order.
pub(crate) fn values(query: &str, name: &str) -> Vec<Vec<u8>> {
    query
        .split('&')
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(n) == name.as_bytes()).then(|| decode(v))
        })
        .collect()
}

/// The query without any `name` parameter, the others untouched; `None`
/// when nothing is left.
pub(crate) fn without(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let n = pair.split_once('=').map_or(*pair, |(n, _)| n);
            decode(n) != name.as_bytes()
        })
        .collect();
    let rest = kept.join("&");
    (!rest.is_empty()).then_some(rest)
}

/// Percent-decodes, with `+` as a space; a `%` not followed by two hex
/// digits stays as it is.
pub(crate) fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).and_then(hex_value), bytes.get(i + 2).and_then(hex_value)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex_value(b: &u8) -> Option<u8> {
    char::from(*b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

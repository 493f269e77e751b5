//! Strict base64url (RFC 4648 §5) as JWS compact serialisation uses it:
//! the URL-safe alphabet, no padding, no whitespace, and canonical trailing
//! bits. A token that decodes only under a lenient reading is refused, so two
//! different strings never stand for the same signed bytes.

/// The value of one base64url character, `None` for anything else
/// (including `=`, `+`, `/` and whitespace).
fn value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    }))
}

/// Decodes unpadded base64url; `None` when `text` is not exactly that.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    // A lone trailing character carries 6 bits: less than a byte.
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 2);
    let mut chunks = bytes.chunks_exact(4);
    for chunk in &mut chunks {
        let mut n = 0u32;
        for &c in chunk {
            n = (n << 6) | value(c)?;
        }
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    let rest = chunks.remainder();
    let mut n = 0u32;
    for &c in rest {
        n = (n << 6) | value(c)?;
    }
    match rest.len() {
        0 => {}
        // 12 bits: one byte and 4 bits that must be zero.
        2 => {
            if n & 0xf != 0 {
                return None;
            }
            out.push((n >> 4) as u8);
        }
        // 18 bits: two bytes and 2 bits that must be zero.
        3 => {
            if n & 0x3 != 0 {
                return None;
            }
            out.extend_from_slice(&[(n >> 10) as u8, (n >> 2) as u8]);
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_every_length() {
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("Zg"), Some(b"f".to_vec()));
        assert_eq!(decode("Zm8"), Some(b"fo".to_vec()));
        assert_eq!(decode("Zm9v"), Some(b"foo".to_vec()));
        assert_eq!(decode("Zm9vYg"), Some(b"foob".to_vec()));
        assert_eq!(decode("Zm9vYmE"), Some(b"fooba".to_vec()));
        assert_eq!(decode("Zm9vYmFy"), Some(b"foobar".to_vec()));
        assert_eq!(decode("-_8"), Some(vec![0xfb, 0xff]));
    }

    #[test]
    fn refuses_anything_lenient() {
        for bad in ["Zg==", "Zm9v=", "+/8", "Zm 9v", "Zm9v\n", "Z", "Zm9vY", "Zh", "Zm9", "ä"] {
            // "Zh" and "Zm9" have non-zero unused bits: not canonical.
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}

//! What the cache keeps in the store, and its byte format.
//!
//! A small binary format rather than JSON: a body is stored as it is (no
//! base64 growth against the store's 1 MiB value limit), and decoding is a
//! few length-prefixed reads. Every integer is big-endian; a `str`/`bytes`
//! is a `u32` length and that many bytes.
//!
//! ```text
//! record   = magic "wgc1" · kind u8 · key str · body
//! kind 1   = response:   stored_at_ms u64 · expires_at_ms u64 · initial_age_s u64 · status u16
//!                        · n_headers u32 · (name str · value bytes)* · body bytes
//! kind 2   = vary index: generation u64 · expires_at_ms u64 · n_names u32 · name str*
//! ```
//!
//! `key` is the store key the record was written under
//! ([`crate::key::store_key`], the full key's SHA-256), not the full key,
//! which may hold a request header's value (a `Vary: Authorization`
//! variant's token) the store is not to keep; a read checks it before
//! trusting the record. A record that does not decode (another version, a
//! foreign value) is a miss.

/// A cached response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The store key it was written under.
    pub key: String,
    pub stored_at_ms: u64,
    /// The end of freshness; the store's TTL ends at the same moment.
    pub expires_at_ms: u64,
    /// The response's own `Age` when it was stored.
    pub initial_age_s: u64,
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Stored {
    /// The response's age at `now_ms`, in seconds (RFC 9111 §4.2.3, with the
    /// store's write standing in for the response's arrival).
    pub fn age_s(&self, now_ms: u64) -> u64 {
        self.initial_age_s.saturating_add(now_ms.saturating_sub(self.stored_at_ms) / 1000)
    }
}

/// Where a response that carries `Vary` is found: the base key holds this
/// index, naming the request headers whose values pick the variant. Its
/// `generation` is part of every variant's key, so deleting the index (an
/// invalidation) or replacing it (the upstream changed its `Vary`) orphans
/// all the old variants at once; they expire on their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaryIndex {
    /// The store key it was written under.
    pub key: String,
    pub generation: u64,
    pub expires_at_ms: u64,
    /// Lowercase, sorted, without duplicates.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Response(Stored),
    Vary(VaryIndex),
}

const MAGIC: &[u8; 4] = b"wgc1";
const RESPONSE: u8 = 1;
const VARY: u8 = 2;

impl Record {
    /// The store key the record was written under.
    pub fn key(&self) -> &str {
        match self {
            Self::Response(s) => &s.key,
            Self::Vary(v) => &v.key,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(match self {
            Self::Response(s) => 64 + s.key.len() + s.body.len() + s.headers.len() * 48,
            Self::Vary(v) => 64 + v.key.len() + v.names.len() * 24,
        });
        w.extend_from_slice(MAGIC);
        match self {
            Self::Response(s) => {
                w.push(RESPONSE);
                put_bytes(&mut w, s.key.as_bytes());
                w.extend_from_slice(&s.stored_at_ms.to_be_bytes());
                w.extend_from_slice(&s.expires_at_ms.to_be_bytes());
                w.extend_from_slice(&s.initial_age_s.to_be_bytes());
                w.extend_from_slice(&s.status.to_be_bytes());
                put_len(&mut w, s.headers.len());
                for (name, value) in &s.headers {
                    put_bytes(&mut w, name.as_bytes());
                    put_bytes(&mut w, value);
                }
                put_bytes(&mut w, &s.body);
            }
            Self::Vary(v) => {
                w.push(VARY);
                put_bytes(&mut w, v.key.as_bytes());
                w.extend_from_slice(&v.generation.to_be_bytes());
                w.extend_from_slice(&v.expires_at_ms.to_be_bytes());
                put_len(&mut w, v.names.len());
                for name in &v.names {
                    put_bytes(&mut w, name.as_bytes());
                }
            }
        }
        w
    }

    /// The record, or `None` when `bytes` is not one this version wrote.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return None;
        }
        let kind = r.take(1)?[0];
        let key = r.string()?;
        let record = match kind {
            RESPONSE => {
                let (stored_at_ms, expires_at_ms, initial_age_s) = (r.u64()?, r.u64()?, r.u64()?);
                let status = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
                let n = r.len()?;
                // Each header takes at least 8 bytes: a count past what is
                // left is corrupt, and must not size an allocation.
                let mut headers = Vec::with_capacity(n.min(r.0.len() / 8));
                for _ in 0..n {
                    headers.push((r.string()?, r.bytes()?.to_vec()));
                }
                let body = r.bytes()?.to_vec();
                Self::Response(Stored { key, stored_at_ms, expires_at_ms, initial_age_s, status, headers, body })
            }
            VARY => {
                let (generation, expires_at_ms) = (r.u64()?, r.u64()?);
                let n = r.len()?;
                let mut names = Vec::with_capacity(n.min(r.0.len() / 4));
                for _ in 0..n {
                    names.push(r.string()?);
                }
                Self::Vary(VaryIndex { key, generation, expires_at_ms, names })
            }
            _ => return None,
        };
        r.0.is_empty().then_some(record)
    }
}

fn put_len(w: &mut Vec<u8>, n: usize) {
    // Values over 4 GiB never get here: the store takes 1 MiB at most.
    w.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_len(w, b.len());
    w.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)).ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> Record {
        Record::Response(Stored {
            key: "GET r\nh=http://a\np=/x".into(),
            stored_at_ms: 1_700_000_000_000,
            expires_at_ms: 1_700_000_060_000,
            initial_age_s: 3,
            status: 203,
            headers: vec![("content-type".into(), b"text/plain".to_vec()), ("x-bin".into(), vec![0xff, 0x80])],
            body: vec![0, 1, 2, 255],
        })
    }

    #[test]
    fn records_round_trip() {
        let r = response();
        assert_eq!(Record::decode(&r.encode()), Some(r));
        let v = Record::Vary(VaryIndex {
            key: "k".into(),
            generation: 42,
            expires_at_ms: 7,
            names: vec!["accept".into(), "accept-language".into()],
        });
        assert_eq!(Record::decode(&v.encode()), Some(v));
    }

    #[test]
    fn the_format_is_compact() {
        let Record::Response(s) = response() else { unreachable!() };
        let encoded = response().encode();
        let payload = s.key.len() + s.body.len() + s.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        // magic, kind, three u64s, status, counts and lengths: 4+1+24+2+4+4 + 4 per string.
        assert_eq!(encoded.len(), payload + 4 + 1 + 24 + 2 + 4 + 4 + 4 + 4 * 4);
    }

    #[test]
    fn anything_else_does_not_decode() {
        let good = response().encode();
        assert_eq!(Record::decode(b""), None);
        assert_eq!(Record::decode(b"{\"json\":true}"), None);
        assert_eq!(Record::decode(&good[..good.len() - 1]), None, "truncated");
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(Record::decode(&longer), None, "trailing bytes");
        let mut kind = good.clone();
        kind[4] = 9;
        assert_eq!(Record::decode(&kind), None, "unknown kind");
        let mut version = good;
        version[3] = b'2';
        assert_eq!(Record::decode(&version), None, "another version");
        // A huge header count is refused without allocating for it.
        let mut huge = b"wgc1\x01\0\0\0\0".to_vec();
        huge.extend_from_slice(&[0; 26]);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Record::decode(&huge), None);
    }

    #[test]
    fn age_counts_whole_seconds_since_the_write() {
        let Record::Response(s) = response() else { unreachable!() };
        assert_eq!(s.age_s(s.stored_at_ms), 3);
        assert_eq!(s.age_s(s.stored_at_ms + 1_999), 4);
        assert_eq!(s.age_s(s.stored_at_ms - 5), 3, "a clock that stepped back adds nothing");
    }
}

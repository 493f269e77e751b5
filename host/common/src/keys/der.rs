//! The few DER shapes a public key needs (SEQUENCE, INTEGER, BIT STRING,
//! OBJECT IDENTIFIER, NULL), read strictly.
//!
//! A full ASN.1 crate would be a large dependency for three structures; this
//! reader accepts only definite, minimal lengths, so one key has one encoding.

use super::KeyError;

pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const INTEGER: u8 = 0x02;
pub(super) const BIT_STRING: u8 = 0x03;
pub(super) const NULL: u8 = 0x05;
pub(super) const OID: u8 = 0x06;

/// Lengths over 4 bytes would describe gigabyte keys: refused outright.
const MAX_LENGTH_OCTETS: usize = 4;

/// A cursor over DER input; every read names what it expected, for the error.
pub(super) struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(input: &'a [u8]) -> Self {
        Reader { input }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    pub(super) fn peek_tag(&self) -> Option<u8> {
        self.input.first().copied()
    }

    /// Reads one element with tag `tag` and returns its contents.
    pub(super) fn read(&mut self, tag: u8, what: &str) -> Result<&'a [u8], KeyError> {
        let (&found, rest) = self.input.split_first().ok_or_else(|| invalid(format!("{what} is missing")))?;
        if found != tag {
            return Err(invalid(format!("expected {what} (tag {tag:#04x}), found tag {found:#04x}")));
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(|| invalid(format!("{what} has no length")))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let octets = usize::from(first & 0x7f);
            if octets == 0 {
                return Err(invalid(format!("{what} has an indefinite length, which DER forbids")));
            }
            if octets > MAX_LENGTH_OCTETS || octets > rest.len() {
                return Err(invalid(format!("{what} has an impossible length")));
            }
            let (bytes, after) = rest.split_at(octets);
            rest = after;
            let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            // Minimal encoding: no leading zero octet, no long form for < 128.
            if bytes.first() == Some(&0) || len < 0x80 {
                return Err(invalid(format!("{what} has a non-minimal length, which DER forbids")));
            }
            len
        };
        if len > rest.len() {
            return Err(invalid(format!("{what} is truncated ({len} bytes announced, {} present)", rest.len())));
        }
        let (contents, after) = rest.split_at(len);
        self.input = after;
        Ok(contents)
    }

    /// Reads a non-negative INTEGER and returns its magnitude (big-endian,
    /// possibly with DER's leading zero sign octet).
    pub(super) fn read_unsigned(&mut self, what: &str) -> Result<&'a [u8], KeyError> {
        let contents = self.read(INTEGER, what)?;
        match contents.first() {
            None => Err(invalid(format!("{what} is an empty INTEGER"))),
            Some(first) if first & 0x80 != 0 => Err(invalid(format!("{what} is negative"))),
            Some(_) => Ok(contents),
        }
    }

    /// Reads a BIT STRING holding whole bytes, as keys always do.
    pub(super) fn read_bit_string(&mut self, what: &str) -> Result<&'a [u8], KeyError> {
        match self.read(BIT_STRING, what)?.split_first() {
            Some((0, bytes)) => Ok(bytes),
            Some(_) => Err(invalid(format!("{what} does not hold whole bytes"))),
            None => Err(invalid(format!("{what} is an empty BIT STRING"))),
        }
    }

    /// Succeeds only when everything was read: trailing bytes mean the input
    /// is not the structure it claims to be.
    pub(super) fn finish(self, what: &str) -> Result<(), KeyError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(invalid(format!("{} unexpected bytes after {what}", self.input.len())))
        }
    }
}

/// An OID's dotted form, for messages that name an algorithm we refuse.
pub(super) fn dotted(oid: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for byte in oid {
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

fn invalid(message: String) -> KeyError {
    KeyError::Invalid(format!("the key's DER is malformed: {message}"))
}

//! The accepted keys: SHA-256 digests from the config and from a granted
//! secret, each naming a consumer and its scopes.
//!
//! A presented key is hashed and its digest compared with every accepted
//! digest in constant time, without stopping at a match. A map lookup on the
//! digest would leak nothing that helps to forge a key (timing would tell at
//! most where the digest of a guess sorts among the stored ones, and a key
//! still needs a full SHA-256 preimage), but it would leak bits of the stored
//! digests, and for a weak key a digest is enough to guess the key offline,
//! without meeting any rate limit. The linear scan costs one 32-byte
//! comparison per configured key: nanoseconds for thousands of keys.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use wasmgate_sdk::ConfigError;

/// One key's entry: `"<sha256-hex>" = { consumer = "acme", scopes = ["read"] }`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEntry {
    /// The consumer's name, for the `consumer` context entry and `consumer_header`.
    consumer: String,
    /// The key's scopes, checked against a route's `required_scopes`.
    #[serde(default)]
    scopes: Vec<String>,
}

/// A map of digest → entry that keeps every entry in order, so that
/// `KeySet::build` can refuse a digest listed twice. (serde's own maps keep
/// the last and say nothing; TOML refuses duplicates itself, JSON does not.)
#[derive(Debug, Clone, Default)]
pub struct KeyMap(pub(crate) Vec<(String, RawEntry)>);

impl<'de> Deserialize<'de> for KeyMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;

        impl<'de> Visitor<'de> for Entries {
            type Value = KeyMap;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of SHA-256 hex digests to { consumer, scopes }")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyMap, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, RawEntry>()? {
                    entries.push(entry);
                }
                Ok(KeyMap(entries))
            }
        }

        deserializer.deserialize_map(Entries)
    }
}

/// What the deserializer above reads: a map (digest → entry). That the keys
/// are digests, listed once, is checked by `KeySet::build`.
impl JsonSchema for KeyMap {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "KeyMap".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "additionalProperties": generator.subschema_for::<RawEntry>()
        })
    }
}

/// Who a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    pub scopes: Vec<String>,
    /// `scopes` as a JSON array, for the `api_key.scopes` context entry.
    pub scopes_json: String,
}

/// The accepted keys, as digests.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySet {
    digests: Vec<[u8; 32]>,
    consumers: Vec<Consumer>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Digests stay out of logs: for a weak key they are as good as the key.
        f.debug_struct("KeySet").field("keys", &self.digests.len()).finish()
    }
}

impl KeySet {
    /// Checks and merges key maps; `source` names each in error messages
    /// (`keys`, or `secret \`name\``).
    pub(crate) fn build(sources: Vec<(String, KeyMap)>) -> Result<Self, ConfigError> {
        let mut set = Self { digests: Vec::new(), consumers: Vec::new() };
        for (source, map) in sources {
            for (digest, entry) in map.0 {
                let consumer = entry.consumer;
                let at = format!("{source}: the key of consumer `{consumer}`");
                // Never echo the text: a plaintext key pasted in by mistake
                // would end up in the gateway's log.
                let Some(bytes) = parse_digest(&digest) else {
                    return Err(format!(
                        "{at} is not listed by its SHA-256 digest: 64 hex digits are expected, the text has {} characters; list `printf %s \"$KEY\" | sha256sum`, never the key itself",
                        digest.chars().count()
                    )
                    .into());
                };
                if set.digests.contains(&bytes) {
                    return Err(format!(
                        "{at} is listed twice (in `keys` and in the secret, or twice in one); keep one"
                    )
                    .into());
                }
                check_consumer(&consumer).map_err(|e| ConfigError::new(format!("{source}: {e}")))?;
                for scope in &entry.scopes {
                    check_scope(scope).map_err(|e| ConfigError::new(format!("{at}: {e}")))?;
                }
                let scopes_json = serde_json::to_string(&entry.scopes).unwrap_or_else(|_| "[]".to_owned());
                set.digests.push(bytes);
                set.consumers.push(Consumer { name: consumer, scopes: entry.scopes, scopes_json });
            }
        }
        if set.digests.is_empty() {
            return Err(
                "no API keys: list digests in `keys`, or name a granted secret holding them in `keys_secret`".into()
            );
        }
        if u32::try_from(set.digests.len()).is_err() {
            return Err("too many API keys".into());
        }
        Ok(set)
    }

    /// The consumer whose key this is. Every digest is compared, in constant
    /// time, whether or not an earlier one matched.
    pub(crate) fn find(&self, key: &[u8]) -> Option<&Consumer> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, candidate) in (0u32..).zip(&self.digests) {
            let same = candidate[..].ct_eq(&digest[..]);
            index.conditional_assign(&i, same);
            found |= same;
        }
        if bool::from(found) { self.consumers.get(usize::try_from(index).ok()?) } else { None }
    }
}

/// 64 hex digits (either case) as bytes.
pub(crate) fn parse_digest(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// A consumer name goes into a header and the context: visible text only.
fn check_consumer(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 {
        return Err("a consumer name must be 1 to 256 bytes".to_owned());
    }
    if name.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!("consumer {name:?} has a control character"));
    }
    Ok(())
}

/// A scope is one token: visible ASCII, no quotes or backslashes.
pub(crate) fn check_scope(scope: &str) -> Result<(), String> {
    if scope.is_empty() || !scope.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
        return Err(format!("scope {scope:?} is not valid: use visible ASCII without spaces or quotes"));
    }
    Ok(())
}

/// The entries a secret holds, from its bytes.
pub(crate) fn parse_secret(name: &str, bytes: &[u8]) -> Result<KeyMap, ConfigError> {
    serde_json::from_slice::<KeyMap>(bytes).map_err(|e| {
        // serde's message may quote the secret's text; report where and what kind.
        let what = match e.classify() {
            serde_json::error::Category::Io | serde_json::error::Category::Eof => "ends too early",
            serde_json::error::Category::Syntax => "is not valid JSON",
            serde_json::error::Category::Data => "does not have the shape of `keys`",
        };
        ConfigError::new(format!(
            "secret `{name}` {what} (line {}, column {}); it must be a JSON object like {{\"<sha256-hex>\": {{\"consumer\": \"acme\", \"scopes\": [\"read\"]}}}}",
            e.line(),
            e.column()
        ))
    })
}

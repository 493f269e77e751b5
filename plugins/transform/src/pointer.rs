//! JSON Pointers (RFC 6901) and the three edits the body rules make with
//! them: set, remove, and (remove + set) rename.
//!
//! Semantics, decided once here:
//! * `set` creates missing objects on the way (`/meta/source` on `{}` gives
//!   `{"meta":{"source":…}}`) and replaces a `null` it meets on the way with
//!   an object. It never invents array elements: an index into an array must
//!   exist, except as the last token, where `-` or the length appends.
//! * `remove` of something absent does nothing.
//! * Anything else (a token through a string or number, an index past the
//!   end) is a [`Conflict`]: the body does not have the shape the rule
//!   expects, and the caller decides what that means for the request.

use serde_json::{Map, Value};

/// A parsed pointer, never the root: the rules edit members, not the whole
/// document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

/// A rule that does not fit the document, at this pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict(pub String);

impl Pointer {
    /// Parses `/a/b~1c/0`. The root (`""`) is refused, as are `~` escapes
    /// other than `~0` (`~`) and `~1` (`/`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err(
                "the empty pointer is the whole document, which cannot be edited; point at a member, e.g. \"/name\""
                    .into(),
            );
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("`{text}` is not a JSON Pointer: it must start with `/`, e.g. \"/{text}\""));
        };
        let tokens = rest.split('/').map(|t| unescape(t, text)).collect::<Result<_, _>>()?;
        Ok(Self { text: text.to_owned(), tokens })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn conflict(&self) -> Conflict {
        Conflict(self.text.clone())
    }
}

fn unescape(token: &str, pointer: &str) -> Result<String, String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return Err(format!("`{pointer}`: `~` must be written `~0` (and `/` inside a name `~1`)")),
        }
    }
    Ok(out)
}

/// An array index as RFC 6901 writes it: `0`, or digits without a leading zero.
fn index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// Sets the value at `p`, creating missing objects on the way.
pub fn set(doc: &mut Value, p: &Pointer, value: Value) -> Result<(), Conflict> {
    let Some((last, parents)) = p.tokens.split_last() else {
        return Err(p.conflict());
    };
    let mut cur = doc;
    for token in parents {
        if cur.is_null() {
            *cur = Value::Object(Map::new());
        }
        cur = match cur {
            Value::Object(map) => map.entry(token.clone()).or_insert(Value::Null),
            Value::Array(items) => index(token).and_then(|i| items.get_mut(i)).ok_or_else(|| p.conflict())?,
            _ => return Err(p.conflict()),
        };
    }
    if cur.is_null() {
        *cur = Value::Object(Map::new());
    }
    match cur {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let at = if last == "-" { Some(items.len()) } else { index(last) };
            match at {
                Some(i) if i == items.len() => items.push(value),
                Some(i) => *items.get_mut(i).ok_or_else(|| p.conflict())? = value,
                None => return Err(p.conflict()),
            }
            Ok(())
        }
        _ => Err(p.conflict()),
    }
}

/// Removes and returns the value at `p`; `None` when there is none.
pub fn remove(doc: &mut Value, p: &Pointer) -> Option<Value> {
    let (last, parents) = p.tokens.split_last()?;
    let mut cur = doc;
    for token in parents {
        cur = match cur {
            Value::Object(map) => map.get_mut(token)?,
            Value::Array(items) => items.get_mut(index(token)?)?,
            _ => return None,
        };
    }
    match cur {
        Value::Object(map) => map.remove(last),
        Value::Array(items) => {
            let i = index(last)?;
            (i < items.len()).then(|| items.remove(i))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(text: &str) -> Pointer {
        Pointer::parse(text).expect("valid pointer")
    }

    #[test]
    fn parses_and_unescapes() {
        assert_eq!(p("/a~1b/c~0d/~01").tokens, vec!["a/b", "c~d", "~1"]);
        assert_eq!(p("/").tokens, vec![""], "`/` is the member with the empty name");
        assert!(Pointer::parse("").is_err_and(|e| e.contains("whole document")));
        assert!(Pointer::parse("name").is_err_and(|e| e.contains("must start with `/`")));
        assert!(Pointer::parse("/a~2").is_err_and(|e| e.contains("~0")));
        assert!(Pointer::parse("/a~").is_err());
    }

    #[test]
    fn set_replaces_and_creates_objects() {
        let mut doc = json!({ "a": 1, "meta": null });
        set(&mut doc, &p("/a"), json!(2)).expect("set");
        set(&mut doc, &p("/x/y/z"), json!("new")).expect("set");
        set(&mut doc, &p("/meta/source"), json!("gw")).expect("set");
        assert_eq!(doc, json!({ "a": 2, "x": { "y": { "z": "new" } }, "meta": { "source": "gw" } }));
    }

    #[test]
    fn set_in_arrays() {
        let mut doc = json!({ "items": [{ "id": 1 }, { "id": 2 }] });
        set(&mut doc, &p("/items/0/id"), json!(10)).expect("replace inside element");
        set(&mut doc, &p("/items/1"), json!("two")).expect("replace element");
        set(&mut doc, &p("/items/-"), json!(3)).expect("append with -");
        set(&mut doc, &p("/items/3"), json!(4)).expect("append at length");
        assert_eq!(doc, json!({ "items": [{ "id": 10 }, "two", 3, 4] }));
        assert_eq!(set(&mut doc, &p("/items/9"), json!(0)), Err(Conflict("/items/9".into())), "no gaps");
        assert_eq!(set(&mut doc, &p("/items/01"), json!(0)), Err(Conflict("/items/01".into())), "no leading zero");
        assert!(set(&mut doc, &p("/items/7/id"), json!(0)).is_err(), "no element invented on the way");
    }

    #[test]
    fn set_through_a_scalar_is_a_conflict() {
        let mut doc = json!({ "name": "ada" });
        assert_eq!(set(&mut doc, &p("/name/first"), json!("x")), Err(Conflict("/name/first".into())));
        let mut doc = json!([1, 2]);
        assert!(set(&mut doc, &p("/meta"), json!(1)).is_err(), "an array has no named members");
        let mut doc = json!("text");
        assert!(set(&mut doc, &p("/a"), json!(1)).is_err());
    }

    #[test]
    fn escaped_names() {
        let mut doc = json!({ "a/b": 1, "c~d": 2 });
        assert_eq!(remove(&mut doc, &p("/a~1b")), Some(json!(1)));
        set(&mut doc, &p("/e~1f~0"), json!(3)).expect("set");
        assert_eq!(doc, json!({ "c~d": 2, "e/f~": 3 }));
    }

    #[test]
    fn remove_returns_the_value_or_nothing() {
        let mut doc = json!({ "a": { "b": [10, 20, 30] }, "s": "x" });
        assert_eq!(remove(&mut doc, &p("/a/b/1")), Some(json!(20)));
        assert_eq!(remove(&mut doc, &p("/a/b/5")), None);
        assert_eq!(remove(&mut doc, &p("/a/b/-")), None);
        assert_eq!(remove(&mut doc, &p("/missing/deep")), None);
        assert_eq!(remove(&mut doc, &p("/s/x")), None);
        assert_eq!(doc, json!({ "a": { "b": [10, 30] }, "s": "x" }));
    }
}

//! [`ClientOrderId`]: a strategy's own id for an order, text compared and hashed as text,
//! kept inline when short, so making, copying and comparing one allocates nothing.
//!
//! The SDK numbers orders `{strategy}-{n}` ([`ClientOrderId::numbered`]); a client on the
//! bus may send any text. Both are the same type and equal when their text is equal,
//! whichever way they were made, so a fill read back from JSON matches the id the
//! strategy kept.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest id kept inline (bytes).
const INLINE: usize = 30;

/// A strategy's id for one of its orders (see the [module docs](self)).
#[derive(Clone)]
pub struct ClientOrderId(Repr);

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]` is the text (always valid UTF-8: copied from a `str`).
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Longer ids share one heap copy.
    Shared(Arc<str>),
}

impl ClientOrderId {
    /// The id with text `text`.
    pub fn new(text: &str) -> ClientOrderId {
        if text.len() > INLINE {
            return ClientOrderId(Repr::Shared(Arc::from(text)));
        }
        let mut bytes = [0u8; INLINE];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        ClientOrderId(Repr::Inline {
            len: text.len() as u8,
            bytes,
        })
    }

    /// `{prefix}-{n}`, the SDK's ids: without allocating when it fits inline.
    pub fn numbered(prefix: &str, n: u64) -> ClientOrderId {
        // "-" and at most 20 digits of a u64.
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let digits = &digits[i..];
        let len = prefix.len() + 1 + digits.len();
        if len > INLINE {
            return ClientOrderId(Repr::Shared(Arc::from(format!("{prefix}-{n}"))));
        }
        let mut bytes = [0u8; INLINE];
        bytes[..prefix.len()].copy_from_slice(prefix.as_bytes());
        bytes[prefix.len()] = b'-';
        bytes[prefix.len() + 1..len].copy_from_slice(digits);
        ClientOrderId(Repr::Inline {
            len: len as u8,
            bytes,
        })
    }

    /// The id's text as bytes (equal bytes, equal text: no UTF-8 check to compare).
    fn bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Shared(text) => text.as_bytes(),
        }
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // SAFETY: `bytes[..len]` of an inline id is always valid UTF-8: `new` and
            // `numbered`, the only constructors, copy it whole from a `str` (at most
            // INLINE bytes, else the id is shared), or from a `str`, b'-' and ASCII digits.
            // Checking it again cost a call per hash of an id (every order lookup).
            Repr::Inline { len, bytes } => unsafe {
                std::str::from_utf8_unchecked(&bytes[..*len as usize])
            },
            Repr::Shared(text) => text,
        }
    }
}

impl Default for ClientOrderId {
    fn default() -> ClientOrderId {
        ClientOrderId::new("")
    }
}

impl std::ops::Deref for ClientOrderId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ClientOrderId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ClientOrderId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for ClientOrderId {
    fn eq(&self, other: &ClientOrderId) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for ClientOrderId {}

impl PartialEq<str> for ClientOrderId {
    fn eq(&self, other: &str) -> bool {
        self.bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for ClientOrderId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for ClientOrderId {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<ClientOrderId> for str {
    fn eq(&self, other: &ClientOrderId) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ClientOrderId> for &str {
    fn eq(&self, other: &ClientOrderId) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<ClientOrderId> for String {
    fn eq(&self, other: &ClientOrderId) -> bool {
        self == other.as_str()
    }
}

impl Hash for ClientOrderId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the text, so `Borrow<str>` lookups find it.
        self.as_str().hash(state);
    }
}

impl PartialOrd for ClientOrderId {
    fn partial_cmp(&self, other: &ClientOrderId) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ClientOrderId {
    fn cmp(&self, other: &ClientOrderId) -> Ordering {
        // Byte order is `str` order.
        self.bytes().cmp(other.bytes())
    }
}

impl From<&str> for ClientOrderId {
    fn from(text: &str) -> ClientOrderId {
        ClientOrderId::new(text)
    }
}

impl From<String> for ClientOrderId {
    fn from(text: String) -> ClientOrderId {
        ClientOrderId::new(&text)
    }
}

impl From<&String> for ClientOrderId {
    fn from(text: &String) -> ClientOrderId {
        ClientOrderId::new(text)
    }
}

impl From<&ClientOrderId> for ClientOrderId {
    fn from(id: &ClientOrderId) -> ClientOrderId {
        id.clone()
    }
}

impl Serialize for ClientOrderId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ClientOrderId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ClientOrderId, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = ClientOrderId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a client order id string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ClientOrderId, E> {
                Ok(ClientOrderId::new(v))
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_equal_by_text_however_made_and_round_trip_through_json() {
        let made = ClientOrderId::numbered("mm", 42);
        assert_eq!(made.as_str(), "mm-42");
        assert_eq!(made, ClientOrderId::new("mm-42"));
        assert_eq!(made, "mm-42");
        assert_eq!(ClientOrderId::numbered("x", 0).as_str(), "x-0");
        let max = ClientOrderId::numbered("s", u64::MAX);
        assert_eq!(max.as_str(), format!("s-{}", u64::MAX));
        let long = "a-strategy-with-a-rather-long-name";
        let shared = ClientOrderId::numbered(long, 7);
        assert_eq!(shared.as_str(), format!("{long}-7"));
        assert_eq!(shared, ClientOrderId::new(&format!("{long}-7")));
        let json = serde_json::to_string(&made).unwrap();
        assert_eq!(json, "\"mm-42\"");
        let back: ClientOrderId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, made);
        let mut set = std::collections::HashSet::new();
        set.insert(made.clone());
        assert!(set.contains("mm-42"), "found by its text");
        assert_eq!(format!("{made} {made:?}"), "mm-42 \"mm-42\"");
    }
}

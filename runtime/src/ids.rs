//! Compact ids as newtypes, all made by [`define_id!`](crate::define_id), plus the shared string
//! type used for user-visible names (keys, op names, addresses) and a small
//! fast hasher for the scheduler's few hash maps.
//!
//! Keys are strings on the client side only: the scheduler interns each key to
//! a [`TaskId`] and the worker protocol carries the id.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a `Copy` newtype id over an unsigned integer, with conversions,
/// `Display` and serde support. Every id type in the runtime comes from here.
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $ty:ty) => {
        $(#[$meta])*
        #[derive(
            Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            ::serde::Serialize, ::serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $ty);

        impl $name {
            /// Wraps a raw number.
            #[inline]
            pub const fn new(raw: $ty) -> Self {
                Self(raw)
            }
            /// The raw number.
            #[inline]
            pub const fn as_num(self) -> $ty {
                self.0
            }
            /// The raw number as an index.
            #[inline]
            pub const fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl ::std::convert::From<$ty> for $name {
            #[inline]
            fn from(raw: $ty) -> Self {
                Self(raw)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

define_id!(
    /// A worker, as numbered by the reactor when the worker connects. Never
    /// reused within one scheduler's life.
    WorkerId,
    u32
);
define_id!(
    /// A client connection, as numbered by the reactor.
    ClientId,
    u32
);
define_id!(
    /// An interned op name.
    OpId,
    u32
);
define_id!(
    /// An interned resource name (such as `gpu`).
    ResourceId,
    u16
);
define_id!(
    /// A task: the interned form of a key. The low 32 bits are a slot in the
    /// scheduler's task table, the high 32 bits that slot's generation, so an id
    /// that outlives its task (a late message about a forgotten key) never
    /// aliases the slot's next occupant.
    TaskId,
    u64
);

impl TaskId {
    /// Builds an id from a slot and its generation.
    #[inline]
    pub const fn from_parts(slot: u32, generation: u32) -> Self {
        Self(((generation as u64) << 32) | slot as u64)
    }
    /// The slot in the task table.
    #[inline]
    pub const fn slot(self) -> u32 {
        self.0 as u32
    }
    /// The generation of the slot this id was minted for.
    #[inline]
    pub const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The generation no scheduler mints: a worker files the results it
    /// keeps from a scheduler that went away under ids of this generation
    /// until the next scheduler claims them, so they never collide with
    /// that scheduler's ids.
    pub const ORPHAN_GENERATION: u32 = u32::MAX;
    /// The `n`th id of [`TaskId::ORPHAN_GENERATION`].
    #[inline]
    pub const fn orphan(n: u32) -> Self {
        Self::from_parts(n, Self::ORPHAN_GENERATION)
    }
    /// Whether this id is of [`TaskId::ORPHAN_GENERATION`].
    #[inline]
    pub const fn is_orphan(self) -> bool {
        self.generation() == Self::ORPHAN_GENERATION
    }
    /// The other generation no scheduler mints: a worker keeps the pieces
    /// of shuffles it receives (`crate::shuffle`) under ids of it.
    pub const PIECE_GENERATION: u32 = u32::MAX - 1;
    /// The `n`th id of [`TaskId::PIECE_GENERATION`].
    #[inline]
    pub const fn piece(n: u32) -> Self {
        Self::from_parts(n, Self::PIECE_GENERATION)
    }
}

/// An immutable, cheaply cloned string: keys, op names, worker names and
/// addresses. Serialized as a plain string. Several may share one buffer
/// ([`SharedStr::indexed`]): the keys of a layer cost one allocation, which
/// lives as long as any of them.
#[derive(Clone)]
pub struct SharedStr {
    buf: Arc<str>,
    /// The string's range in `buf`; `end == WHOLE` for all of it.
    start: u32,
    end: u32,
}

/// `SharedStr::end` of a string that is its whole buffer.
const WHOLE: u32 = u32::MAX;

impl SharedStr {
    /// The string.
    #[inline]
    pub fn as_str(&self) -> &str {
        if self.end == WHOLE {
            &self.buf
        } else {
            // In bounds and on character boundaries: set by `indexed` only.
            &self.buf[self.start as usize..self.end as usize]
        }
    }

    /// The keys `name-0 .. name-{n-1}` of a layer, in one buffer.
    pub fn indexed(name: &str, n: u32) -> Vec<SharedStr> {
        use std::fmt::Write;
        let mut text = String::with_capacity(n as usize * (name.len() + 8));
        let mut ends = Vec::with_capacity(n as usize);
        for i in 0..n {
            // Writing into a String cannot fail.
            let _ = write!(text, "{name}-{i}");
            ends.push(text.len());
        }
        if text.len() >= WHOLE as usize {
            // Past what a range holds: one buffer each.
            let mut start = 0;
            return ends
                .into_iter()
                .map(|end| {
                    let key = SharedStr::from(&text[start..end]);
                    start = end;
                    key
                })
                .collect();
        }
        let buf: Arc<str> = Arc::from(text);
        let mut start = 0u32;
        ends.into_iter()
            .map(|end| {
                let key = SharedStr {
                    buf: buf.clone(),
                    start,
                    end: end as u32,
                };
                start = end as u32;
                key
            })
            .collect()
    }
}

impl PartialEq for SharedStr {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SharedStr {}

impl PartialOrd for SharedStr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedStr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for SharedStr {
    // As `str` hashes, so that maps keyed by it are looked up by `&str`.
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::hash::Hash::hash(self.as_str(), state)
    }
}

impl std::ops::Deref for SharedStr {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        Self::whole(Arc::from(s))
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        Self::whole(Arc::from(s))
    }
}

impl SharedStr {
    fn whole(buf: Arc<str>) -> Self {
        SharedStr {
            buf,
            start: 0,
            end: WHOLE,
        }
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl Serialize for SharedStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

/// A user-visible task key.
pub type Key = SharedStr;

/// FxHash (as in rustc): a multiply-rotate hash. The scheduler's maps are keyed
/// by data it controls or by keys from authenticated clients, so HashDoS
/// resistance is not worth SipHash's cost here.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_parts_round_trip() {
        let id = TaskId::from_parts(7, 3);
        assert_eq!(id.slot(), 7);
        assert_eq!(id.generation(), 3);
        assert_ne!(id, TaskId::from_parts(7, 4));
    }

    #[test]
    fn shared_str_borrows_as_str() {
        let mut m: FxHashMap<SharedStr, u32> = FxHashMap::default();
        m.insert("a-1".into(), 1);
        assert_eq!(m.get("a-1"), Some(&1));
        assert_eq!(m.get("a-2"), None);
    }

    #[test]
    fn indexed_keys_share_one_buffer_and_act_as_strings() {
        let keys = SharedStr::indexed("x", 12);
        assert_eq!(keys[0].as_str(), "x-0");
        assert_eq!(keys[11], SharedStr::from("x-11"));
        assert!(Arc::ptr_eq(&keys[3].buf, &keys[10].buf));
        let mut m: FxHashMap<SharedStr, u32> = FxHashMap::default();
        m.insert(keys[5].clone(), 5);
        assert_eq!(m.get("x-5"), Some(&5));
        assert_eq!(format!("{:?}", keys[7]), "\"x-7\"");
        assert!(keys[1] < keys[2] && keys[10] < keys[2], "ordered as strings");
    }
}

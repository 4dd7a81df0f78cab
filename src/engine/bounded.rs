//! Sequences read from untrusted files (session headers) with a most length: a file of a few
//! hundred MB of `0,` must not become billions of entries before any count is checked. Each
//! bound is the most the settings' own limits can need, so a valid file always fits.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

/// A `Vec<T>` of at most `MAX` entries; one more is an error naming the bound.
pub struct Bounded<T, const MAX: usize>(pub Vec<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for Bounded<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<T, const MAX: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for Seq<T, MAX> {
            type Value = Bounded<T, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of at most {MAX} entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // The length a file claims is no reason to reserve memory.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX).min(4096));
                while let Some(x) = seq.next_element()? {
                    if out.len() == MAX {
                        return Err(serde::de::Error::custom(format!(
                            "a list longer than the {MAX} entries any run can have"
                        )));
                    }
                    out.push(x);
                }
                Ok(Bounded(out))
            }
        }
        d.deserialize_seq(Seq::<T, MAX>(PhantomData))
    }
}

/// For `#[serde(deserialize_with = "bounded::vec::<_, _, MAX>")]`.
pub fn vec<'de, D: Deserializer<'de>, T: Deserialize<'de>, const MAX: usize>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Bounded::<T, MAX>::deserialize(d).map(|b| b.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_past_its_bound_is_refused_and_one_within_is_read() {
        let read = |json: &str| serde_json::from_str::<Bounded<u32, 3>>(json).map(|b| b.0);
        assert_eq!(read("[1,2,3]").unwrap(), vec![1, 2, 3]);
        assert_eq!(read("[]").unwrap(), Vec::<u32>::new());
        let e = read("[1,2,3,4]").unwrap_err().to_string();
        assert!(e.contains("3 entries"), "{e}");
        // Nested bounds hold too.
        let nested = serde_json::from_str::<Bounded<Bounded<u8, 2>, 2>>("[[1],[1,2,3]]");
        assert!(nested.is_err());
    }
}

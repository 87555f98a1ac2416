//! The value codec: every value Warren stores starts with a format version.
//!
//! ```text
//! +----------------------+-----------------------------------------------+
//! | FORMAT_VERSION (u8)  | bincode 2 (serde, standard configuration)      |
//! +----------------------+-----------------------------------------------+
//! ```
//!
//! The version byte lets a later Warren change the encoding of a value without
//! touching callers or rewriting the file: it reads old versions and writes the new
//! one. A value written by a newer Warren is refused with
//! [`DecodeError::NewerVersion`] instead of being misread.
//!
//! bincode is pinned at `=2.0.1` (3.0.0 is a tombstone release that does not
//! compile); it is used only here, so swapping it touches this file alone.
//!
//! Decoding never panics on bad input and never allocates without bound: bincode
//! is given a memory budget proportional to the input (see [`decode`]), so a
//! corrupt length prefix cannot claim gigabytes.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version byte this build writes in front of every value, and the newest it
/// reads.
pub const FORMAT_VERSION: u8 = 1;

/// Why a value could not be encoded.
///
/// bincode cannot express every `Serialize` implementation: a sequence or map whose
/// length is unknown up front (`serialize_seq(None)`, as produced by some custom
/// impls over iterators), or a `Serialize` impl that itself returns an error (e.g. a
/// poisoned lock). Plain `#[derive(Serialize)]` types built from std types,
/// `bytes::Bytes`, strings, numbers, options, vectors and maps never fail, which is
/// why callers of Warren's own types may treat this error as a bug in the type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error(
    "cannot encode a value of type {type_name}: {cause}; \
     the type's Serialize implementation uses something bincode cannot express \
     (such as a sequence of unknown length): change the type"
)]
pub struct EncodeError {
    /// The Rust type that failed to encode.
    pub type_name: &'static str,
    /// bincode's description of the failure.
    pub cause: String,
}

/// Why stored bytes could not be decoded into a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Zero bytes: not even a version byte.
    #[error("stored value is empty (no format version byte); the record is corrupt")]
    Empty,
    /// Written by a newer Warren, whose format this build does not know.
    #[error(
        "stored value has format version {found}, this build reads up to {supported}; \
         it was written by a newer Warren: upgrade Warren to read it"
    )]
    NewerVersion {
        /// The version byte found.
        found: u8,
        /// The newest version this build reads ([`FORMAT_VERSION`]).
        supported: u8,
    },
    /// The version is known but the bytes after it are not a valid value of the
    /// requested type (damaged data, or read as the wrong type).
    #[error("stored value (format version {version}) is corrupt: {cause}")]
    Corrupt {
        /// The version byte found.
        version: u8,
        /// What is wrong with it.
        cause: String,
    },
}

/// Encodes `value` as `[FORMAT_VERSION] + bincode bytes`.
///
/// Returns an error rather than panicking for the rare `Serialize` impls bincode
/// cannot express (see [`EncodeError`]); for plain derived types it never fails.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `value` (version byte included) to `out`, so that a hot
/// path can reuse one buffer. On error `out` is left as it was.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.push(FORMAT_VERSION);
    match bincode::serde::encode_into_std_write(value, out, bincode::config::standard()) {
        Ok(_) => Ok(()),
        Err(err) => {
            out.truncate(start);
            Err(EncodeError {
                type_name: std::any::type_name::<T>(),
                cause: err.to_string(),
            })
        }
    }
}

/// A sequence's elements encoded one by one, as they come, to be sent later as one
/// `Vec<T>` (see [`encode_element_into`] and [`encode_sequence`]): a producer encodes
/// each record while it is in cache instead of the whole batch once it went cold.
///
/// The bytes of one element: what follows the version byte for `value` alone.
/// Appends them to `out`; on error `out` is left as it was.
pub fn encode_element_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
        .map(drop)
        .map_err(|err| {
            out.truncate(start);
            EncodeError {
                type_name: std::any::type_name::<T>(),
                cause: err.to_string(),
            }
        })
}

/// How many bytes [`encode_element_into`] appends for `value`, without writing them.
pub fn element_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, EncodeError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, bincode::config::standard())
        .map(|()| size.bytes_written)
        .map_err(|err| EncodeError {
            type_name: std::any::type_name::<T>(),
            cause: err.to_string(),
        })
}

/// The encoding of a `Vec<T>` of `count` elements whose element encodings
/// ([`encode_element_into`]) are `parts`, concatenated in order: what [`encode`]
/// gives for the vector itself, so [`decode`] reads it as a `Vec<T>`.
pub fn encode_sequence<'a>(
    count: usize,
    parts: impl IntoIterator<Item = &'a [u8]> + Clone,
) -> Vec<u8> {
    let len: usize = parts.clone().into_iter().map(<[u8]>::len).sum();
    let mut out = Vec::with_capacity(1 + 9 + len);
    out.push(FORMAT_VERSION);
    // A sequence's length is a u64 (serde's), written as bincode writes any u64.
    encode_element_into(&(count as u64), &mut out).expect("a u64 always encodes");
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// The format version byte of a stored value, without decoding the rest.
pub fn version_of(bytes: &[u8]) -> Result<u8, DecodeError> {
    bytes.first().copied().ok_or(DecodeError::Empty)
}

/// Decodes a value written by [`encode`].
///
/// Fails with [`DecodeError::Empty`] for zero bytes, [`DecodeError::NewerVersion`]
/// for a version byte above [`FORMAT_VERSION`], and [`DecodeError::Corrupt`] for
/// version 0 (never written), bytes that are not a valid `T`, or bytes left over
/// after the value.
///
/// Memory: bincode may allocate at most `max(1 MiB, 256 × input length)` bytes
/// for containers while decoding, so a corrupt length prefix fails with `Corrupt`
/// instead of exhausting memory. Real values stay far below that budget: it would
/// take a vector of hundreds of bytes-wide elements that each encode to about one
/// byte to exceed it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, consumed) = decode_prefix(bytes)?;
    if consumed != bytes.len() {
        return Err(DecodeError::Corrupt {
            version: bytes[0],
            cause: TrailingBytes {
                consumed: consumed - 1,
                total: bytes.len() - 1,
            }
            .to_string(),
        });
    }
    Ok(value)
}

/// Decodes the value at the start of `bytes` (as written by [`encode_into`]) and
/// returns it with the number of bytes it took, version byte included: for buffers
/// that hold several values one after another, or a value followed by raw bytes.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    let version = version_of(bytes)?;
    if version > FORMAT_VERSION {
        return Err(DecodeError::NewerVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(DecodeError::Corrupt {
            version,
            cause: "format version 0 was never written by any Warren".to_string(),
        });
    }
    let (value, consumed) =
        decode_bounded::<T>(&bytes[1..]).map_err(|err| DecodeError::Corrupt {
            version,
            cause: err.to_string(),
        })?;
    Ok((value, consumed + 1))
}

/// Describes bytes left over after a complete value.
struct TrailingBytes {
    consumed: usize,
    total: usize,
}

impl fmt::Display for TrailingBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} trailing bytes after a complete value of {} bytes (read as the wrong type?)",
            self.total - self.consumed,
            self.consumed
        )
    }
}

/// bincode with an allocation budget scaled to the input. bincode's limit is a
/// const generic, so the budget is picked from a ladder of powers of 16.
fn decode_bounded<T: DeserializeOwned>(
    payload: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    macro_rules! with_limit {
        ($limit:expr) => {
            bincode::serde::decode_from_slice::<T, _>(
                payload,
                bincode::config::standard().with_limit::<{ $limit }>(),
            )
        };
    }
    let budget = (payload.len() as u64).saturating_mul(256).max(1 << 20);
    if budget <= 1 << 20 {
        with_limit!(1 << 20)
    } else if budget <= 1 << 24 {
        with_limit!(1 << 24)
    } else if budget <= 1 << 28 {
        with_limit!(1 << 28)
    } else if budget <= 1 << 32 {
        with_limit!(1usize << 32)
    } else if budget <= 1 << 36 {
        with_limit!(1usize << 36)
    } else {
        with_limit!(1usize << 40)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        seq: u64,
        headers: BTreeMap<String, Vec<u8>>,
        priority: Option<u8>,
        kind: Kind,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Classic,
        Mirrored { replicas: u32 },
    }

    fn sample() -> Sample {
        Sample {
            name: "orders".to_string(),
            seq: 42,
            headers: BTreeMap::from([("x-death".to_string(), vec![1, 2, 3])]),
            priority: Some(9),
            kind: Kind::Mirrored { replicas: 3 },
        }
    }

    #[test]
    fn round_trip_keeps_the_value_and_starts_with_the_version() {
        let bytes = encode(&sample()).expect("derived types encode");
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: Sample = decode(&bytes).expect("decodes");
        assert_eq!(back, sample());
    }

    #[test]
    fn a_sequence_encoded_element_by_element_decodes_as_the_vector() {
        for count in [0usize, 1, 3, 250, 251, 300, 70_000] {
            let values: Vec<Sample> = (0..count)
                .map(|i| Sample {
                    seq: i as u64,
                    ..sample()
                })
                .collect();
            let mut first = Vec::new();
            let mut second = Vec::new();
            for (i, v) in values.iter().enumerate() {
                let part = if i % 2 == 0 { &mut first } else { &mut second };
                let before = part.len();
                encode_element_into(v, part).expect("encodes");
                assert_eq!(element_len(v), Ok(part.len() - before));
            }
            // Two parts of whole elements, as two batches of records in one frame
            // (the even elements first, so the order decoded is theirs).
            let bytes = encode_sequence(count, [first.as_slice(), second.as_slice()]);
            let mut expected: Vec<Sample> = values.iter().step_by(2).cloned().collect();
            expected.extend(values.iter().skip(1).step_by(2).cloned());
            assert_eq!(
                bytes,
                encode(&expected).expect("encodes"),
                "{count} elements"
            );
            assert_eq!(decode::<Vec<Sample>>(&bytes), Ok(expected));
        }
    }

    #[test]
    fn encode_into_appends_after_existing_bytes() {
        let mut buf = vec![0xAA];
        encode_into(&7u32, &mut buf).expect("encodes");
        assert_eq!(buf[0], 0xAA);
        assert_eq!(decode::<u32>(&buf[1..]), Ok(7));
    }

    #[test]
    fn empty_input_is_reported_as_empty() {
        assert_eq!(decode::<u64>(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn newer_version_is_refused_with_both_versions() {
        let mut bytes = encode(&sample()).expect("encodes");
        bytes[0] = 3;
        let err = decode::<Sample>(&bytes).expect_err("newer version refused");
        assert_eq!(
            err,
            DecodeError::NewerVersion {
                found: 3,
                supported: FORMAT_VERSION
            }
        );
        let text = err.to_string();
        assert!(text.contains("format version 3"), "{text}");
        assert!(text.contains("upgrade Warren"), "{text}");
    }

    #[test]
    fn version_zero_is_corrupt() {
        let mut bytes = encode(&1u8).expect("encodes");
        bytes[0] = 0;
        assert!(matches!(
            decode::<u8>(&bytes),
            Err(DecodeError::Corrupt { version: 0, .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_corrupt() {
        let mut bytes = encode(&5u8).expect("encodes");
        bytes.push(0);
        let err = decode::<u8>(&bytes).expect_err("trailing byte refused");
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn truncated_value_is_corrupt() {
        let bytes = encode(&sample()).expect("encodes");
        let err = decode::<Sample>(&bytes[..bytes.len() - 2]).expect_err("truncated");
        assert!(
            matches!(err, DecodeError::Corrupt { version: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn huge_length_prefix_does_not_allocate_it() {
        // version 1, then a varint u64 marker (253) followed by 2^62: a Vec<u8>
        // claiming 4 EiB.
        let mut bytes = vec![FORMAT_VERSION, 253];
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(matches!(
            decode::<Vec<u8>>(&bytes),
            Err(DecodeError::Corrupt { .. })
        ));
        assert!(matches!(
            decode::<String>(&bytes),
            Err(DecodeError::Corrupt { .. })
        ));
    }

    #[test]
    fn unknown_length_sequence_is_an_encode_error() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let seq = s.serialize_seq(None)?;
                seq.end()
            }
        }
        let mut buf = vec![9];
        let err = encode_into(&Unsized, &mut buf).expect_err("unknown length refused");
        assert_eq!(buf, vec![9], "buffer restored on error");
        assert!(err.type_name.contains("Unsized"), "{err}");
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Sample>(&bytes);
            let _ = decode::<Vec<u8>>(&bytes);
            let _ = decode::<String>(&bytes);
            let _ = decode::<Vec<String>>(&bytes);
            let _ = decode::<BTreeMap<String, Vec<u64>>>(&bytes);
            let _ = decode::<(u64, Option<i32>, bool, char)>(&bytes);
        }

        #[test]
        fn decode_never_panics_on_corrupted_valid_values(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
        ) {
            let mut bytes = encode(&sample()).expect("encodes");
            for (index, value) in flips {
                let at = index.index(bytes.len());
                bytes[at] = value;
            }
            let _ = decode::<Sample>(&bytes);
        }

        #[test]
        fn round_trip_of_random_values(
            name in ".*",
            seq in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            priority in any::<Option<u8>>(),
        ) {
            let value = Sample {
                name,
                seq,
                headers: BTreeMap::from([("body".to_string(), body)]),
                priority,
                kind: Kind::Classic,
            };
            let bytes = encode(&value).expect("encodes");
            prop_assert_eq!(decode::<Sample>(&bytes), Ok(value));
        }
    }
}

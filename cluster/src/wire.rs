//! The envelope for Warren's messages on the cluster transport.
//!
//! ractor_cluster sends each argument of a remote message as bytes through
//! `BytesConvertable`, whose `from_bytes` cannot return an error, and it silently drops
//! a frame it cannot decode. [`Wire`] makes a bad payload visible instead: decoding
//! never panics, and a payload that does not decode arrives as [`Wire::Undecodable`]
//! with the reason, so the receiver can answer with a clear error.
//!
//! Encoding goes through `warren_storage::codec`, the one place that knows bincode.

use ractor::BytesConvertable;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A payload on the wire: the value, or why it could not be decoded.
#[derive(Debug, Clone)]
pub enum Wire<T> {
    /// The payload.
    Value(T),
    /// The bytes did not decode; why, for the error the receiver answers with.
    Undecodable(String),
    /// The value's encoding, made by the sender ahead of time (see
    /// `warren_storage::codec::encode_sequence`): sent as it is, decoded where it
    /// is read.
    Encoded(Vec<u8>),
}

impl<T> Wire<T> {
    /// The value, or the decode failure as a protocol error text.
    pub fn into_result(self) -> Result<T, String>
    where
        T: DeserializeOwned,
    {
        match self {
            Wire::Value(v) => Ok(v),
            Wire::Undecodable(why) => Err(why),
            // (Only a message to an actor of this process arrives still encoded.)
            Wire::Encoded(bytes) => {
                warren_storage::codec::decode(&bytes).map_err(|e| e.to_string())
            }
        }
    }
}

impl<T> From<T> for Wire<T> {
    fn from(value: T) -> Self {
        Wire::Value(value)
    }
}

impl<T: Serialize + DeserializeOwned> BytesConvertable for Wire<T> {
    fn into_bytes(self) -> Vec<u8> {
        match self {
            Wire::Value(v) => warren_storage::codec::encode(&v).unwrap_or_else(|e| {
                // Our wire types are plain data, so this is a bug; the far side
                // receives an empty payload and reports it as undecodable.
                tracing::error!("cannot encode a cluster message: {e}");
                Vec::new()
            }),
            // Re-sending an undecodable payload sends nothing decodable: an empty
            // buffer decodes to Undecodable again on the far side.
            Wire::Undecodable(_) => Vec::new(),
            Wire::Encoded(bytes) => bytes,
        }
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        match warren_storage::codec::decode(&bytes) {
            Ok(v) => Wire::Value(v),
            Err(e) => Wire::Undecodable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let w: Wire<(String, u64)> = Wire::Value(("q".into(), 7));
        let back = Wire::<(String, u64)>::from_bytes(w.into_bytes());
        assert_eq!(back.into_result().unwrap(), ("q".to_string(), 7));
        let garbage = Wire::<(String, u64)>::from_bytes(vec![1, 255, 255, 255]);
        assert!(garbage.into_result().is_err());
        let empty = Wire::<(String, u64)>::from_bytes(Vec::new());
        assert!(empty.into_result().is_err());
    }

    #[test]
    fn an_encoded_value_goes_as_it_is_and_reads_as_the_value() {
        let bytes = warren_storage::codec::encode(&vec![("q".to_string(), 7u64)]).unwrap();
        let sent = Wire::<Vec<(String, u64)>>::Encoded(bytes.clone()).into_bytes();
        assert_eq!(sent, bytes);
        let far = Wire::<Vec<(String, u64)>>::from_bytes(sent);
        assert_eq!(far.into_result().unwrap(), vec![("q".to_string(), 7)]);
        // Delivered in this process without the transport: decoded when read.
        let near = Wire::<Vec<(String, u64)>>::Encoded(bytes);
        assert_eq!(near.into_result().unwrap(), vec![("q".to_string(), 7)]);
        let bad = Wire::<Vec<(String, u64)>>::Encoded(vec![1, 9]);
        assert!(bad.into_result().is_err());
    }
}

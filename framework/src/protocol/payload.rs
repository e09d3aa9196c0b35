//! Decoding a message's payload into the handler's type.

use serde::de::DeserializeOwned;

use crate::error::ChannelError;

/// Deserializes a payload; on failure, runs again with path tracking so the error names the
/// field (the fast path pays nothing for it). Malformed JSON is `bad_json`, JSON of the wrong
/// shape `bad_payload`.
pub fn decode_payload<T: DeserializeOwned>(json: &str) -> Result<T, ChannelError> {
    match serde_json::from_str(json) {
        Ok(v) => Ok(v),
        Err(e) if e.is_syntax() || e.is_eof() => {
            let mut msg = e.to_string();
            if let Some(idx) = msg.rfind(" at line ") {
                msg.truncate(idx);
            }
            Err(ChannelError::BadJson(
                crate::error::clip_to(&msg, 256).into_owned(),
            ))
        }
        Err(_) => {
            let de = &mut serde_json::Deserializer::from_str(json);
            match serde_path_to_error::deserialize(de) {
                Ok(v) => Ok(v),
                Err(e) => Err(ChannelError::from_payload(e)),
            }
        }
    }
}

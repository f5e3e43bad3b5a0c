//! A message: one row turned into something to deliver, with its
//! deterministic id.

use serde::{Deserialize, Serialize};

/// One message: a row turned into something to deliver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Deterministic id `job:key:version`: the same row of the same job at
    /// the same version always gets the same id, so consumers and brokers
    /// can de-duplicate replays.
    pub id: String,
    /// The row key; it chooses the lane, so one key's messages stay in order.
    pub key: i64,
    /// The version this message brings the row to.
    pub version: i64,
    /// Body (JSON by convention).
    pub payload: Vec<u8>,
}

impl Message {
    /// A message for `key` at `version` of `job`, with its deterministic id.
    pub fn new(job: &str, key: i64, version: i64, payload: Vec<u8>) -> Self {
        // Written by hand into one allocation: this runs for every row.
        let mut digits = itoa::Buffer::new();
        let mut id = String::with_capacity(job.len() + 2 * 20 + 2);
        id.push_str(job);
        id.push(':');
        id.push_str(digits.format(key));
        id.push(':');
        id.push_str(digits.format(version));
        Self {
            id,
            key,
            version,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Message;

    #[test]
    fn a_message_id_is_job_key_and_version() {
        assert_eq!(Message::new("resend", 42, 7, Vec::new()).id, "resend:42:7");
        assert_eq!(
            Message::new("j", i64::MIN, i64::MAX, Vec::new()).id,
            "j:-9223372036854775808:9223372036854775807"
        );
        assert_eq!(Message::new("", 0, -1, Vec::new()).id, ":0:-1");
    }
}

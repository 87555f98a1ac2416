//! A stream consumer's group, from its arguments: which group (and member, for a
//! broadcast group) and when the group's offset moves.
//!
//! | argument | values | meaning |
//! | --- | --- | --- |
//! | `x-stream-group` | a name | join this consumer group: one active member per partition, the group's offset stored by the broker |
//! | `x-stream-group-mode` | `clustering` (default), `broadcast` | RocketMQ's modes: members share the partitions, or each member gets every message with an offset of its own |
//! | `x-stream-member` | a name | the member's name, which keeps its offset across reconnects (broadcast: required) |
//! | `x-stream-commit` | `ack` (default), `delivery` | the offset moves as the active member acks, or as messages are sent to it |

use warren_actors::message::{FieldTable, FieldValue};

use crate::machine::Commit;

/// The consumer group argument.
pub const GROUP_ARG: &str = "x-stream-group";
/// The group mode argument.
pub const GROUP_MODE_ARG: &str = "x-stream-group-mode";
/// The member name argument.
pub const MEMBER_ARG: &str = "x-stream-member";
/// The commit argument.
pub const COMMIT_ARG: &str = "x-stream-commit";

/// What a consumer asks of its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupArgs {
    /// The key the group's offset is stored under: the group's name, and for a
    /// broadcast group `NAME\0MEMBER`.
    pub key: String,
    /// When the offset moves.
    pub commit: Commit,
}

impl GroupArgs {
    /// The group a consumer's arguments ask for (`None`: no group). The error is
    /// `(argument, reason)` for a 406.
    pub fn of(arguments: &FieldTable) -> Result<Option<GroupArgs>, (&'static str, String)> {
        let text = |arg: &'static str| -> Result<Option<&str>, (&'static str, String)> {
            match arguments.get(arg) {
                None => Ok(None),
                Some(v) => match v.as_str() {
                    Some(s) if !s.is_empty() && !s.contains('\u{0}') => Ok(Some(s)),
                    _ => Err((
                        arg,
                        format!("a non-empty string is expected, not {}", shown(v)),
                    )),
                },
            }
        };
        let group = text(GROUP_ARG)?;
        let mode = text(GROUP_MODE_ARG)?;
        let member = text(MEMBER_ARG)?;
        let commit = match text(COMMIT_ARG)? {
            None | Some("ack") => Commit::OnAck,
            Some("delivery") => Commit::OnDelivery,
            Some(other) => {
                return Err((
                    COMMIT_ARG,
                    format!("'ack' or 'delivery' is expected, not '{other}'"),
                ))
            }
        };
        let Some(group) = group else {
            if let Some((arg, _)) = [(GROUP_MODE_ARG, mode), (MEMBER_ARG, member)]
                .into_iter()
                .find(|(_, v)| v.is_some())
            {
                return Err((arg, format!("it needs '{GROUP_ARG}' (the consumer group)")));
            }
            return Ok(None);
        };
        let key =
            match (mode, member) {
                (None | Some("clustering"), _) => group.to_string(),
                (Some("broadcast"), Some(member)) => format!("{group}\u{0}{member}"),
                (Some("broadcast"), None) => return Err((
                    MEMBER_ARG,
                    "a member of a broadcast group needs a name of its own, which keeps its offset"
                        .to_string(),
                )),
                (Some(other), _) => {
                    return Err((
                        GROUP_MODE_ARG,
                        format!("'clustering' or 'broadcast' is expected, not '{other}'"),
                    ))
                }
            };
        Ok(Some(GroupArgs { key, commit }))
    }
}

fn shown(v: &FieldValue) -> String {
    match v.as_str() {
        Some(s) => format!("'{s}'"),
        None => format!("a {}", v.type_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> FieldTable {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), FieldValue::string(*v)))
            .collect()
    }

    #[test]
    fn groups_members_and_commits_parse() {
        assert_eq!(GroupArgs::of(&FieldTable::new()), Ok(None));
        assert_eq!(
            GroupArgs::of(&args(&[(GROUP_ARG, "billing")])),
            Ok(Some(GroupArgs {
                key: "billing".into(),
                commit: Commit::OnAck
            }))
        );
        assert_eq!(
            GroupArgs::of(&args(&[
                (GROUP_ARG, "audit"),
                (GROUP_MODE_ARG, "broadcast"),
                (MEMBER_ARG, "m1"),
                (COMMIT_ARG, "delivery"),
            ])),
            Ok(Some(GroupArgs {
                key: "audit\u{0}m1".into(),
                commit: Commit::OnDelivery
            }))
        );
        for bad in [
            args(&[(GROUP_ARG, "")]),
            args(&[(GROUP_ARG, "g"), (GROUP_MODE_ARG, "fanout")]),
            args(&[(GROUP_ARG, "g"), (GROUP_MODE_ARG, "broadcast")]),
            args(&[(GROUP_ARG, "g"), (COMMIT_ARG, "never")]),
            args(&[(MEMBER_ARG, "m1")]),
        ] {
            assert!(GroupArgs::of(&bad).is_err(), "{bad:?}");
        }
        let typed = FieldTable::from([(GROUP_ARG.to_string(), FieldValue::I32(1))]);
        assert!(GroupArgs::of(&typed).is_err());
    }
}

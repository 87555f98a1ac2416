//! The supervised actor of a mirrored queue's replica on a node other than its home:
//! it runs the queue's group here (the copy of the queue is the group's machine's),
//! and shows the replica in the supervision tree.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use warren_supervisor::{ChildSpec, Restart};

use crate::log::Group;

/// A replica's actor.
pub(crate) struct Member;

/// What it starts with.
#[derive(Clone)]
pub(crate) struct MemberArgs {
    pub group: Group,
}

impl Actor for Member {
    type Msg = ();
    type State = MemberArgs;
    type Arguments = MemberArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        args: MemberArgs,
    ) -> Result<MemberArgs, ActorProcessingErr> {
        Ok(args)
    }

    // Opened after the start: at a node's start the replica comes after the queues,
    // and the supervisor does not wait for it.
    async fn post_start(
        &self,
        _myself: ActorRef<()>,
        args: &mut MemberArgs,
    ) -> Result<(), ActorProcessingErr> {
        args.group.open().await?;
        Ok(())
    }
}

/// The child spec of the replica of the queue whose group `group` is, registered as
/// `name`.
pub(crate) fn child(name: String, group: Group) -> ChildSpec {
    let args = MemberArgs { group };
    ChildSpec::for_actor(name, "mirror", Restart::Permanent, move || {
        (Member, args.clone())
    })
}

//! `warren queue ...`: the members of quorum (mirrored) queues, as RabbitMQ's
//! `rabbitmq-queues add_member / delete_member / grow / shrink / quorum_status`.

use clap::Subcommand;

use crate::client::ClientError;
use crate::conn::Conn;

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// Add a replica of a quorum queue on a node; it catches up from the others,
    /// then votes.
    AddMember {
        /// The queue's name.
        queue: String,
        /// The node, as `warren cluster status` shows it.
        #[arg(value_name = "NODE")]
        member: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a quorum queue's replica from a node (its log there is deleted).
    DeleteMember {
        /// The queue's name.
        queue: String,
        /// The node.
        #[arg(value_name = "NODE")]
        member: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Add a replica on a node to every quorum queue of the vhost that has none there.
    Grow {
        /// The node.
        #[arg(value_name = "NODE")]
        member: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove the replicas on a node from every quorum queue of the vhost that has
    /// one there (a queue's last replica stays).
    Shrink {
        /// The node.
        #[arg(value_name = "NODE")]
        member: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// A quorum queue's Raft group: leader, term, commit index, and each member's
    /// match index and whether it is in sync.
    Status {
        /// The queue's name.
        queue: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn queue(cmd: QueueCmd) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    let (queue, node, add, conn) = match cmd {
        QueueCmd::Status { queue, json, conn } => {
            let client = conn.connect().await.map_err(e)?;
            let queues = client.queues().await.map_err(e)?;
            let q = crate::listing::queue_named(&queues, &queue)?;
            if json {
                println!("{}", crate::listing::queue_json(q));
            } else {
                print!("{}", crate::listing::replication_text(q));
            }
            return Ok(());
        }
        QueueCmd::AddMember {
            queue,
            member,
            conn,
        } => (Some(queue), member, true, conn),
        QueueCmd::DeleteMember {
            queue,
            member,
            conn,
        } => (Some(queue), member, false, conn),
        QueueCmd::Grow { member, conn } => (None, member, true, conn),
        QueueCmd::Shrink { member, conn } => (None, member, false, conn),
    };
    let client = conn.connect().await.map_err(e)?;
    let changes = client
        .change_members(queue.as_deref(), &node, add)
        .await
        .map_err(e)?;
    if changes.is_empty() {
        let what = if add { "lacks" } else { "has" };
        println!("no quorum queue of the vhost {what} a replica on {node}");
    }
    let mut failed = 0;
    for change in changes {
        match change.outcome {
            Ok(members) => println!("queue {}: members {}", change.queue, members.join(", ")),
            Err(reply) => {
                failed += 1;
                eprintln!("queue {}: {} {}", change.queue, reply.code, reply.text);
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} queue(s) not changed"));
    }
    Ok(())
}

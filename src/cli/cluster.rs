//! `warren cluster ...`: the members of the cluster a node belongs to.

use clap::Subcommand;

use crate::client::ClientError;
use crate::conn::Conn;

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Each member as the node sees it: name, address, role, up / suspect / down,
    /// which node leads the metadata.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// The node leaves the cluster (its members forget it) and stops.
    Leave {
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a member that is down and will not come back.
    Forget {
        /// The member's name, as `warren cluster status` shows it.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn cluster(cmd: ClusterCmd) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    match cmd {
        ClusterCmd::Status { json, conn } => {
            let nodes = conn.connect().await.map_err(e)?.nodes().await.map_err(e)?;
            if json {
                let text = serde_json::to_string_pretty(&nodes).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print!("{}", crate::shell::render::nodes(&nodes));
            }
        }
        ClusterCmd::Leave { conn } => {
            let client = conn.connect().await.map_err(e)?;
            client.leave_cluster().await.map_err(e)?;
            println!("the node left the cluster and is stopping");
        }
        ClusterCmd::Forget { name, conn } => {
            let client = conn.connect().await.map_err(e)?;
            client.forget_node(&name).await.map_err(e)?;
            println!("member {name} forgotten");
        }
    }
    Ok(())
}

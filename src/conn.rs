//! [`Conn`]: the flags every client command and the debug shell take to reach a node.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::client::{Client, ClientError, ConnectOptions};

/// How a client command reaches a node.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The node's cluster address.
    #[arg(long, env = "WARREN_NODE", default_value = crate::client::DEFAULT_NODE_ADDR)]
    pub node: SocketAddr,
    /// The node's cookie file.
    #[arg(long, env = "WARREN_COOKIE_FILE", default_value = crate::client::DEFAULT_COOKIE_FILE)]
    pub cookie_file: PathBuf,
    /// The vhost the command acts in.
    #[arg(long, env = "WARREN_VHOST", default_value = "/")]
    pub vhost: String,
}

impl Conn {
    /// Connects to the node as the CLI does.
    pub async fn connect(&self) -> Result<Client, ClientError> {
        let mut options = ConnectOptions::new(self.node, &self.cookie_file)?;
        options.client_name = "warren-cli".into();
        options.vhost = self.vhost.clone();
        Client::connect(options).await
    }
}

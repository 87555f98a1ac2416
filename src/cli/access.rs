//! `warren user ...`, `warren permissions ...` and `warren vhost ...`: the node's AMQP
//! users, their per-vhost permissions, and the vhosts. Whoever holds the node's cookie administers them (as
//! `rabbitmqctl` does with the Erlang cookie).

use std::io::BufRead;

use clap::Subcommand;

use crate::client::{ClientError, Permission};
use crate::conn::Conn;

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user (the password is read from stdin when --password is not given).
    Add {
        name: String,
        #[arg(long)]
        password: Option<String>,
        /// Comma-separated tags, e.g. administrator,monitoring.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a user and its permissions.
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List users.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand, Debug)]
pub enum VhostCmd {
    /// Add a vhost (empty but for the amq.* exchanges; no user has permissions in it
    /// yet: see `warren permissions set --vhost NAME`).
    Add {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a vhost with its exchanges, queues, messages and permissions (its
    /// connections are closed).
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List vhosts.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand, Debug)]
pub enum PermissionsCmd {
    /// Set a user's permissions in a vhost (--vhost, default /): three regular
    /// expressions matched against whole queue and exchange names ("" allows nothing,
    /// ".*" everything).
    Set {
        #[arg(long)]
        user: String,
        #[arg(long)]
        configure: String,
        #[arg(long)]
        write: String,
        #[arg(long)]
        read: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a user's permissions in a vhost (--vhost, default /).
    Clear {
        #[arg(long)]
        user: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List every user's permissions.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err("give the password with --password or on stdin".into());
    }
    Ok(password)
}

pub async fn user(cmd: UserCmd) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    match cmd {
        UserCmd::Add {
            name,
            password,
            tags,
            conn,
        } => {
            let password = match password {
                Some(p) => p,
                None => read_password()?,
            };
            let client = conn.connect().await.map_err(e)?;
            client.add_user(&name, &password, tags).await.map_err(e)?;
            println!("user {name} added (no permissions yet: see `warren permissions set`)");
        }
        UserCmd::Delete { name, conn } => {
            let client = conn.connect().await.map_err(e)?;
            client.delete_user(&name).await.map_err(e)?;
            println!("user {name} deleted");
        }
        UserCmd::List { json, conn } => {
            let client = conn.connect().await.map_err(e)?;
            let users = client.users().await.map_err(e)?;
            if json {
                let rows: Vec<_> = users
                    .iter()
                    .map(|(n, t)| serde_json::json!({"name": n, "tags": t}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:<24} tags", "user");
                for (n, t) in users {
                    println!("{:<24} {}", n, t.join(","));
                }
            }
        }
    }
    Ok(())
}

pub async fn permissions(cmd: PermissionsCmd) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    match cmd {
        PermissionsCmd::Set {
            user,
            configure,
            write,
            read,
            conn,
        } => {
            let vhost = conn.vhost.clone();
            let client = conn.connect().await.map_err(e)?;
            let p = Permission {
                user: user.clone(),
                vhost: vhost.clone(),
                configure,
                write,
                read,
            };
            client.set_permissions(p).await.map_err(e)?;
            println!("permissions of {user} in vhost {vhost} set");
        }
        PermissionsCmd::Clear { user, conn } => {
            let vhost = conn.vhost.clone();
            let client = conn.connect().await.map_err(e)?;
            client.clear_permissions(&user, &vhost).await.map_err(e)?;
            println!("permissions of {user} in vhost {vhost} cleared");
        }
        PermissionsCmd::List { json, conn } => {
            let client = conn.connect().await.map_err(e)?;
            let list = client.permissions().await.map_err(e)?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|p| {
                        serde_json::json!({"user": p.user, "vhost": p.vhost,
                            "configure": p.configure, "write": p.write, "read": p.read})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<20} {:<12} {:<16} {:<16} read",
                    "user", "vhost", "configure", "write"
                );
                for p in list {
                    println!(
                        "{:<20} {:<12} {:<16} {:<16} {}",
                        p.user, p.vhost, p.configure, p.write, p.read
                    );
                }
            }
        }
    }
    Ok(())
}

pub async fn vhost(cmd: VhostCmd) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    match cmd {
        VhostCmd::Add {
            name,
            description,
            conn,
        } => {
            let client = conn.connect().await.map_err(e)?;
            client.add_vhost(&name, &description).await.map_err(e)?;
            println!("vhost {name} added (no permissions yet: see `warren permissions set --vhost {name}`)");
        }
        VhostCmd::Delete { name, conn } => {
            let client = conn.connect().await.map_err(e)?;
            client.delete_vhost(&name).await.map_err(e)?;
            println!("vhost {name} deleted");
        }
        VhostCmd::List { json, conn } => {
            let client = conn.connect().await.map_err(e)?;
            let vhosts = client.vhosts().await.map_err(e)?;
            if json {
                let rows: Vec<_> = vhosts
                    .iter()
                    .map(|v| serde_json::json!({"name": v.name, "description": v.description}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:<24} description", "vhost");
                for v in vhosts {
                    println!("{:<24} {}", v.name, v.description);
                }
            }
        }
    }
    Ok(())
}

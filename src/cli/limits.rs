//! `warren limits`: the node's memory and disk against the limits at which its
//! publishers are blocked (RabbitMQ's memory high watermark and disk free limit).

use clap::Args;
use warren_resources::alarm::{parse_size, show_size, MemoryLimit};

use crate::conn::Conn;

#[derive(Args, Debug)]
pub struct LimitsArgs {
    /// A new memory high watermark: a fraction of RAM (0.4) or a size (2GiB).
    #[arg(long, value_name = "FRACTION|SIZE")]
    pub memory_high_watermark: Option<String>,
    /// A new disk free limit (50MB, 1GiB).
    #[arg(long, value_name = "SIZE")]
    pub disk_free_limit: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: Conn,
}

pub async fn limits(args: LimitsArgs) -> Result<(), String> {
    let memory = args
        .memory_high_watermark
        .as_deref()
        .map(MemoryLimit::parse)
        .transpose()?;
    let disk = args
        .disk_free_limit
        .as_deref()
        .map(|d| parse_size(d).map_err(|e| format!("disk free limit {e}")))
        .transpose()?;
    let client = args.conn.connect().await.map_err(|e| e.to_string())?;
    let info = client
        .limits(memory, disk)
        .await
        .map_err(|e| e.to_string())?;
    let alarms: Vec<&str> = [(info.memory_alarm, "memory"), (info.disk_alarm, "disk")]
        .into_iter()
        .filter_map(|(up, name)| up.then_some(name))
        .collect();
    if args.json {
        let row = serde_json::json!({
            "memory_used": info.memory_used,
            "memory_limit": info.memory_limit,
            "memory_high_watermark": info.memory_limit_setting,
            "disk_free": info.disk_free,
            "disk_free_limit": info.disk_free_limit,
            "queue_memory_used": info.queue_memory_used,
            "queue_memory_limit": info.queue_memory_limit,
            "alarms": alarms,
        });
        println!("{row}");
    } else {
        println!(
            "memory  {} used, high watermark {} ({})",
            show_size(info.memory_used),
            show_size(info.memory_limit),
            info.memory_limit_setting
        );
        println!(
            "queues  {} of {} kept in memory for consumers beyond the queues' windows",
            show_size(info.queue_memory_used),
            show_size(info.queue_memory_limit)
        );
        println!(
            "disk    {} free, limit {}",
            show_size(info.disk_free),
            show_size(info.disk_free_limit)
        );
        if alarms.is_empty() {
            println!("alarms  none");
        } else {
            println!("alarms  {} (publishers are blocked)", alarms.join(", "));
        }
    }
    Ok(())
}

//! A node's configuration: embedded defaults, a TOML file, then command-line flags.
//!
//! ```toml
//! name = "rabbit1"
//! data_dir = "/var/lib/warren"
//! cluster_listen = "127.0.0.1:4370"
//! link_listen = "127.0.0.1:4380"     # queue links between nodes (default: cluster_listen's address, any port)
//! amqp_listen = "127.0.0.1:5672"     # or "off"
//! cookie_file = "/var/lib/warren/cookie"
//! log = "info"
//! storage_cache_mib = 32
//! storage_quick_repair = false      # true: faster start after a crash, dearer commits
//! storage_journal = true            # false: every durable write is a durable redb commit
//! seeds = ["127.0.0.1:4371", "127.0.0.1:4372"]
//! role = "disk"                      # or "ram"
//! memory_high_watermark = "0.4"      # of RAM, or a size: "2GiB"
//! disk_free_limit = "50MB"
//! metadata_snapshot_every = 8192    # metadata log entries between snapshots
//! queue_snapshot_every = 8192       # a quorum queue's log entries between snapshots (at least)
//! queue_hibernate_after = 10000     # ms an idle queue keeps its actor (0: always)
//! amqps_listen = "127.0.0.1:5671"    # AMQP over TLS; needs tls_cert and tls_key
//! http_listen = "127.0.0.1:15672"    # the management API and UI, or "off"
//! prometheus_listen = "127.0.0.1:15692"  # Prometheus metrics, or "off"
//! tls_cert = "/etc/warren/cert.pem"  # the certificate chain, PEM
//! tls_key = "/etc/warren/key.pem"    # its private key, PEM
//! tls_client_ca = "/etc/warren/ca.pem"  # optional: clients must show a certificate it signed
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
pub use warren_cluster::members::Role;
use warren_resources::alarm::{parse_size, MemoryLimit, DEFAULT_DISK_FREE_LIMIT};

/// How long an idle queue keeps its actor by default: 10 s (a queue used every few
/// seconds keeps it; waking one costs a few tens of microseconds).
pub const DEFAULT_QUEUE_HIBERNATE_AFTER: u64 = 10_000;

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// The node's name: its identity in the cluster and in logs.
    pub name: String,
    /// Where the node keeps its redb file and its cookie.
    pub data_dir: PathBuf,
    /// The address the node listens on for cluster sessions (nodes and client handles).
    pub cluster_listen: SocketAddr,
    /// Where other nodes open queue links (the data plane between nodes); `None`:
    /// cluster_listen's address with a port the system picks (other nodes ask for it).
    pub link_listen: Option<SocketAddr>,
    /// The AMQP 0-9-1 listener's address; `None` disables it.
    pub amqp_listen: Option<SocketAddr>,
    /// The cookie file; `<data_dir>/cookie` when not set.
    pub cookie_file: Option<PathBuf>,
    /// A tracing filter (`info`, `warren=debug`, ...).
    pub log: String,
    /// MiB of redb page cache.
    pub storage_cache_mib: u32,
    /// redb quick repair: every durable commit also saves the allocator state (two
    /// fsyncs instead of one) so that a start after a crash does not walk the file.
    pub storage_quick_repair: bool,
    /// Small durable writes fsynced as records of the journal beside the data file
    /// (`warren.redb.journal.0`, `.1`) rather than as durable redb commits.
    pub storage_journal: bool,
    /// Cluster addresses of nodes to join (`IP:PORT` or `HOST:PORT`); empty: alone.
    pub seeds: Vec<String>,
    /// Whether the node keeps the cluster's metadata on disk or in memory only.
    pub role: Role,
    /// Resident memory at which publishers are blocked.
    pub memory_high_watermark: MemoryLimit,
    /// Free disk space (of the data directory) below which publishers are blocked.
    pub disk_free_limit: u64,
    /// Metadata log entries applied between two snapshots (the log is compacted
    /// behind each).
    pub metadata_snapshot_every: u64,
    /// A quorum queue's log entries applied between two snapshots, at least (more
    /// for a queue holding many messages).
    pub queue_snapshot_every: u64,
    /// Milliseconds an idle classic queue (no message, no consumer) keeps its actor
    /// before it hibernates until the next request; 0: queue actors never stop.
    pub queue_hibernate_after: u64,
    /// The AMQP-over-TLS listener's address; `None`: no AMQPS.
    pub amqps_listen: Option<SocketAddr>,
    /// The AMQPS listener's certificate, key and optional client CA.
    pub tls: Option<warren_amqp::TlsSettings>,
    /// The management API's and UI's address; `None` disables them.
    pub http_listen: Option<SocketAddr>,
    /// The Prometheus metrics' address; `None` disables them.
    pub prometheus_listen: Option<SocketAddr>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "warren".into(),
            data_dir: PathBuf::from("warren-data"),
            cluster_listen: crate::client::DEFAULT_NODE_ADDR
                .parse()
                .expect("the default address parses"),
            amqp_listen: Some(
                DEFAULT_AMQP_LISTEN
                    .parse()
                    .expect("the default AMQP address parses"),
            ),
            cookie_file: None,
            log: "info,ractor_cluster=error".into(),
            storage_cache_mib: 32,
            storage_quick_repair: warren_storage::StoreOptions::default().quick_repair,
            storage_journal: warren_storage::StoreOptions::default().journal,
            seeds: Vec::new(),
            role: Role::Disk,
            memory_high_watermark: MemoryLimit::DEFAULT,
            disk_free_limit: DEFAULT_DISK_FREE_LIMIT,
            metadata_snapshot_every: warren_cluster::replica::SNAPSHOT_EVERY,
            queue_snapshot_every: warren_cluster::replica::SNAPSHOT_EVERY,
            queue_hibernate_after: DEFAULT_QUEUE_HIBERNATE_AFTER,
            link_listen: None,
            amqps_listen: None,
            tls: None,
            http_listen: Some(
                DEFAULT_HTTP_LISTEN
                    .parse()
                    .expect("the default HTTP address parses"),
            ),
            prometheus_listen: Some(
                DEFAULT_PROMETHEUS_LISTEN
                    .parse()
                    .expect("the default Prometheus address parses"),
            ),
        }
    }
}

/// Where the AMQP listener binds unless told otherwise (RabbitMQ's port, loopback).
pub const DEFAULT_AMQP_LISTEN: &str = "127.0.0.1:5672";

/// Where the management API and UI listen unless told otherwise (RabbitMQ's port,
/// loopback).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:15672";
/// Where the Prometheus metrics listen unless told otherwise (RabbitMQ's port).
pub const DEFAULT_PROMETHEUS_LISTEN: &str = "127.0.0.1:15692";

/// `ADDR` or `off` (no AMQP listener).
pub fn parse_amqp_listen(text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    parse_listen(text, "amqp_listen")
}

/// `ADDR` or `off` for the listener `key` (`http_listen`, ...).
pub fn parse_listen(text: &str, key: &'static str) -> Result<Option<SocketAddr>, ConfigError> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| match key {
        "amqp_listen" => ConfigError::AmqpListen(text.to_string()),
        _ => ConfigError::Listen {
            key,
            value: text.to_string(),
        },
    })
}

/// The keys a config file may hold; every one is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub cluster_listen: Option<SocketAddr>,
    pub link_listen: Option<SocketAddr>,
    pub amqp_listen: Option<String>,
    pub cookie_file: Option<PathBuf>,
    pub log: Option<String>,
    pub storage_cache_mib: Option<u32>,
    pub storage_quick_repair: Option<bool>,
    pub storage_journal: Option<bool>,
    pub seeds: Option<Vec<String>>,
    pub role: Option<String>,
    pub memory_high_watermark: Option<String>,
    pub disk_free_limit: Option<String>,
    pub metadata_snapshot_every: Option<u64>,
    pub queue_snapshot_every: Option<u64>,
    pub queue_hibernate_after: Option<u64>,
    pub amqps_listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub http_listen: Option<String>,
    pub prometheus_listen: Option<String>,
}

/// Why a config file was not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "node name '{0}' is not valid: use letters, digits, '-', '_' or '.' (1 to 64 of them)"
    )]
    Name(String),
    #[error("AMQP listen address '{0}' is not valid: give IP:PORT (e.g. 127.0.0.1:5672) or 'off'")]
    AmqpListen(String),
    #[error("{key} = '{value}' is not valid: give IP:PORT (e.g. 127.0.0.1:15672) or 'off'")]
    Listen { key: &'static str, value: String },
    #[error("storage_cache_mib = {0} is not valid: give 1 to 65536 (MiB)")]
    CacheSize(u32),
    #[error("{0} = {1} is not valid: give 16 to 10000000 (log entries)")]
    SnapshotEvery(&'static str, u64),
    #[error("{0}")]
    Role(String),
    #[error("{0}")]
    Limit(String),
    #[error("node name '{0}' is not valid: names starting with 'warren-client-' are those of client processes; choose another --name")]
    ReservedName(String),
    #[error("seed '{0}' is not valid: give HOST:PORT, the cluster address of another node (e.g. 127.0.0.1:4371)")]
    Seed(String),
}

/// A size such as `50MB` or `1GiB`.
pub fn parse_disk_free_limit(text: &str) -> Result<u64, ConfigError> {
    parse_size(text).map_err(|e| ConfigError::Limit(format!("disk free limit {e}")))
}

/// `disk` or `ram`.
pub fn parse_role(text: &str) -> Result<Role, ConfigError> {
    text.parse().map_err(ConfigError::Role)
}

/// A comma-separated seed list (`127.0.0.1:4371,127.0.0.1:4372`); blanks are skipped.
pub fn parse_seeds(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }
}

impl NodeConfig {
    /// Sets what of the TLS settings is given (the rest stays).
    pub fn set_tls(
        &mut self,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) {
        if cert.is_none() && key.is_none() && client_ca.is_none() {
            return;
        }
        let tls = self.tls.get_or_insert(warren_amqp::TlsSettings {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            client_ca: None,
        });
        if let Some(c) = cert {
            tls.cert = c;
        }
        if let Some(k) = key {
            tls.key = k;
        }
        if client_ca.is_some() {
            tls.client_ca = client_ca;
        }
    }

    /// The AMQPS settings, checked: a listener needs a certificate and a key.
    pub fn amqps(&self) -> Result<Option<(SocketAddr, warren_amqp::TlsSettings)>, String> {
        let Some(addr) = self.amqps_listen else {
            return Ok(None);
        };
        match &self.tls {
            Some(tls) if !tls.cert.as_os_str().is_empty() && !tls.key.as_os_str().is_empty() => {
                Ok(Some((addr, tls.clone())))
            }
            _ => Err(format!(
                "--amqps-listen {addr} needs --tls-cert and --tls-key (PEM files)"
            )),
        }
    }

    /// Lays a config file over this configuration.
    pub fn apply(&mut self, file: ConfigFile) -> Result<(), ConfigError> {
        if let Some(v) = file.name {
            self.name = v;
        }
        if let Some(v) = file.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = file.cluster_listen {
            self.cluster_listen = v;
        }
        if let Some(v) = file.link_listen {
            self.link_listen = Some(v);
        }
        if let Some(v) = file.amqp_listen {
            self.amqp_listen = parse_amqp_listen(&v)?;
        }
        if let Some(v) = file.amqps_listen {
            self.amqps_listen = parse_amqp_listen(&v)?;
        }
        if let Some(v) = file.http_listen {
            self.http_listen = parse_listen(&v, "http_listen")?;
        }
        if let Some(v) = file.prometheus_listen {
            self.prometheus_listen = parse_listen(&v, "prometheus_listen")?;
        }
        self.set_tls(file.tls_cert, file.tls_key, file.tls_client_ca);
        if file.cookie_file.is_some() {
            self.cookie_file = file.cookie_file;
        }
        if let Some(v) = file.log {
            self.log = v;
        }
        if let Some(v) = file.storage_cache_mib {
            self.storage_cache_mib = v;
        }
        if let Some(v) = file.storage_quick_repair {
            self.storage_quick_repair = v;
        }
        if let Some(v) = file.storage_journal {
            self.storage_journal = v;
        }
        if let Some(v) = file.seeds {
            self.seeds = v;
        }
        if let Some(v) = file.role {
            self.role = parse_role(&v)?;
        }
        if let Some(v) = file.memory_high_watermark {
            self.memory_high_watermark = MemoryLimit::parse(&v).map_err(ConfigError::Limit)?;
        }
        if let Some(v) = file.disk_free_limit {
            self.disk_free_limit = parse_disk_free_limit(&v)?;
        }
        if let Some(v) = file.metadata_snapshot_every {
            self.metadata_snapshot_every = v;
        }
        if let Some(v) = file.queue_snapshot_every {
            self.queue_snapshot_every = v;
        }
        if let Some(v) = file.queue_hibernate_after {
            self.queue_hibernate_after = v;
        }
        Ok(())
    }

    pub fn cookie_path(&self) -> PathBuf {
        self.cookie_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cookie"))
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("warren.redb")
    }

    /// How long an idle queue keeps its actor (`None`: always).
    pub fn hibernate_after(&self) -> Option<std::time::Duration> {
        (self.queue_hibernate_after > 0)
            .then(|| std::time::Duration::from_millis(self.queue_hibernate_after))
    }

    pub fn store_options(&self) -> warren_storage::StoreOptions {
        let mut options = warren_storage::StoreOptions::default();
        options.cache_size = self.storage_cache_mib as usize * 1024 * 1024;
        options.quick_repair = self.storage_quick_repair;
        options.journal = self.storage_journal;
        options
    }

    /// Checks what flags and files cannot check by their types.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(ConfigError::Name(self.name.clone()));
        }
        if !(1..=65536).contains(&self.storage_cache_mib) {
            return Err(ConfigError::CacheSize(self.storage_cache_mib));
        }
        for (key, every) in [
            ("metadata_snapshot_every", self.metadata_snapshot_every),
            ("queue_snapshot_every", self.queue_snapshot_every),
        ] {
            if !(16..=10_000_000).contains(&every) {
                return Err(ConfigError::SnapshotEvery(key, every));
            }
        }
        for seed in &self.seeds {
            let ok = seed
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(ConfigError::Seed(seed.clone()));
            }
        }
        if self.name.starts_with("warren-client-") {
            return Err(ConfigError::ReservedName(self.name.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warren.toml");
        std::fs::write(
            &path,
            "name = \"n1\"\ncluster_listen = \"127.0.0.1:5000\"\nstorage_quick_repair = true\n\
             storage_journal = false\n",
        )
        .unwrap();
        let mut config = NodeConfig::default();
        assert!(!config.store_options().quick_repair);
        assert!(config.store_options().journal);
        config.apply(ConfigFile::load(&path).unwrap()).unwrap();
        assert!(config.store_options().quick_repair);
        assert!(!config.store_options().journal);
        assert_eq!(config.name, "n1");
        assert_eq!(config.cluster_listen.port(), 5000);
        assert_eq!(config.cookie_path(), PathBuf::from("warren-data/cookie"));

        std::fs::write(&path, "nmae = \"typo\"\n").unwrap();
        let err = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("nmae"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        let mut config = NodeConfig::default();
        assert!(config.validate().is_ok());
        config.name = "bad name".into();
        assert!(config.validate().is_err());
        config.name = "warren-client-7".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("client processes"), "{err}");
    }

    #[test]
    fn seeds_and_roles_are_checked() {
        assert_eq!(
            parse_seeds(" 127.0.0.1:1, ,localhost:2,"),
            vec!["127.0.0.1:1".to_string(), "localhost:2".to_string()]
        );
        let config = NodeConfig {
            seeds: vec!["127.0.0.1".into()],
            ..NodeConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("HOST:PORT"));
        assert_eq!(parse_role("RAM").unwrap(), Role::Ram);
        assert!(parse_role("tape")
            .unwrap_err()
            .to_string()
            .contains("'disk' or 'ram'"));
    }
}

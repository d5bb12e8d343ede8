//! The broker's configuration, layered: defaults, then the TOML file
//! (`--config`), then `TICKWIRE_*` environment variables, then flags.
//! Every error names the key and where it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tickwire_cluster::ClusterConfig;
use tickwire_engine::{EngineConfig, OutboxConfig};
use tickwire_gateway::{AuthConfig, GatewayConfig, TlsConfig};

/// `[limits]` keys and their defaults. The first twelve are PROTOCOL.md's;
/// the rest are tickwire's own (docs/configuration.md).
pub const LIMITS: &[(&str, u64)] = &[
    ("soft_limit_bytes", 262_144),
    ("hard_limit_bytes", 4_194_304),
    ("slow_timeout_ms", 10_000),
    ("write_timeout_ms", 5_000),
    ("heartbeat_ms", 15_000),
    ("max_tick_bytes", 4096),
    ("max_message_bytes", 65_536),
    ("max_subscriptions_per_connection", 1024),
    ("history_per_topic", 1024),
    ("stale_after_ms", 10_000),
    ("auth_timeout_ms", 5_000),
    ("max_connections", 100_000),
    ("max_connections_per_ip", 100_000),
    ("socket_send_buffer_bytes", 65_536),
    ("max_topics", 100_000),
    ("max_fragments", 1024),
    ("max_http_body_bytes", 4_194_304),
    ("header_read_timeout_ms", 10_000),
    ("close_timeout_ms", 2_000),
    ("shutdown_timeout_ms", 5_000),
    ("direct_writes", 1),
    ("io_uring", 1),
];

/// Everything the binary needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub limits: BTreeMap<&'static str, u64>,
    pub auth: AuthConfig,
    pub demo_feed: bool,
    /// `[[feeds]]` tables, handed to the feed crate.
    pub feeds: Vec<toml::Value>,
    /// Where the file came from, for error messages.
    pub source: Option<PathBuf>,
    /// `--tls-cert` + `--tls-key`, loaded and checked at start.
    pub tls: Option<TlsConfig>,
    /// `[cluster]` or `--cluster-nats`: this node is one of several (docs/cluster.md).
    pub cluster: Option<ClusterConfig>,
}

/// What the command line can set.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub config: Option<PathBuf>,
    pub no_demo_feed: bool,
    pub publisher_keys: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub cluster_nats: Option<String>,
    pub cluster_node: Option<String>,
}

fn strings(v: &toml::Value, key: &str, file: &Path) -> Result<Vec<String>> {
    let arr = v.as_array().with_context(|| {
        format!(
            "key `{key}` in {}: expected an array of strings",
            file.display()
        )
    })?;
    arr.iter()
        .map(|s| {
            s.as_str().map(str::to_owned).with_context(|| {
                format!(
                    "key `{key}` in {}: expected an array of strings",
                    file.display()
                )
            })
        })
        .collect()
}

impl Config {
    pub fn defaults() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            limits: LIMITS.iter().copied().collect(),
            auth: AuthConfig::default(),
            demo_feed: true,
            feeds: Vec::new(),
            source: None,
            tls: None,
            cluster: None,
        }
    }

    /// Builds the configuration from all layers.
    ///
    /// # Errors
    /// A message naming the key and the file or variable that is wrong.
    pub fn load(o: &Overrides, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let mut c = Config::defaults();
        if let Some(path) = &o.config {
            c.apply_file(path)?;
        }
        c.apply_env(env)?;
        if let Some(l) = o.listen {
            c.listen = l;
        }
        if o.no_demo_feed {
            c.demo_feed = false;
        }
        if o.publisher_keys.iter().any(String::is_empty) {
            bail!("--publisher-key: a key may not be empty");
        }
        c.auth
            .publisher_keys
            .extend(o.publisher_keys.iter().cloned());
        c.tls = match (&o.tls_cert, &o.tls_key) {
            (Some(cert), Some(key)) => Some(
                TlsConfig::from_pem_files(cert, key)
                    .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?,
            ),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        if let Some(url) = &o.cluster_nats {
            c.cluster.get_or_insert_with(ClusterConfig::default).url = url.clone();
        }
        if let Some(node) = &o.cluster_node {
            let Some(cluster) = c.cluster.as_mut() else {
                bail!("--cluster-node needs --cluster-nats or a [cluster] table");
            };
            cluster.node = node.clone();
        }
        c.validate()?;
        Ok(c)
    }

    fn apply_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
        self.source = Some(path.to_owned());
        for (key, value) in &table {
            match key.as_str() {
                "listen" => {
                    let s = value.as_str().with_context(|| {
                        format!("key `listen` in {}: expected \"ADDR:PORT\"", path.display())
                    })?;
                    self.listen = s.parse().with_context(|| {
                        format!(
                            "key `listen` in {}: '{s}' is not an address like 127.0.0.1:8080",
                            path.display()
                        )
                    })?;
                }
                "demo_feed" => {
                    self.demo_feed = value.as_bool().with_context(|| {
                        format!(
                            "key `demo_feed` in {}: expected true or false",
                            path.display()
                        )
                    })?;
                }
                "limits" => {
                    let t = value.as_table().with_context(|| {
                        format!("key `limits` in {}: expected a table", path.display())
                    })?;
                    for (k, v) in t {
                        let Some((name, _)) = LIMITS.iter().find(|(n, _)| n == k) else {
                            bail!("key `limits.{k}` in {}: unknown setting", path.display());
                        };
                        let n = v.as_integer().filter(|n| *n >= 0).with_context(|| {
                            format!(
                                "key `limits.{k}` in {}: expected a whole number >= 0",
                                path.display()
                            )
                        })?;
                        self.limits.insert(name, n as u64);
                    }
                }
                "auth" => {
                    let t = value.as_table().with_context(|| {
                        format!("key `auth` in {}: expected a table", path.display())
                    })?;
                    for (k, v) in t {
                        match k.as_str() {
                            "publisher_keys" => {
                                let keys = strings(v, "auth.publisher_keys", path)?;
                                if keys.iter().any(String::is_empty) {
                                    // `{"op":"auth","token":""}` would match it.
                                    bail!(
                                        "key `auth.publisher_keys` in {}: a key may not be empty",
                                        path.display()
                                    );
                                }
                                self.auth.publisher_keys = keys;
                            }
                            "allowed_origins" => {
                                self.auth.allowed_origins =
                                    strings(v, "auth.allowed_origins", path)?
                            }
                            "jwt_secret" => {
                                let s = v.as_str().with_context(|| {
                                    format!(
                                        "key `auth.jwt_secret` in {}: expected a string",
                                        path.display()
                                    )
                                })?;
                                self.auth.jwt_secret = Some(s.to_owned());
                            }
                            _ => bail!("key `auth.{k}` in {}: unknown setting", path.display()),
                        }
                    }
                }
                "cluster" => self.cluster = Some(cluster_table(value, path)?),
                "feeds" => {
                    let arr = value.as_array().with_context(|| {
                        format!(
                            "key `feeds` in {}: expected [[feeds]] tables",
                            path.display()
                        )
                    })?;
                    self.feeds = arr.clone();
                }
                other => bail!("key `{other}` in {}: unknown setting", path.display()),
            }
        }
        Ok(())
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<()> {
        for (name, _) in LIMITS {
            let var = format!("TICKWIRE_{}", name.to_ascii_uppercase());
            if let Some(v) = env(&var) {
                let n: u64 = v.trim().parse().with_context(|| {
                    format!("environment variable {var}: '{v}' is not a whole number")
                })?;
                self.limits.insert(name, n);
            }
        }
        if let Some(v) = env("TICKWIRE_LISTEN") {
            self.listen = v.parse().with_context(|| {
                format!("environment variable TICKWIRE_LISTEN: '{v}' is not an address like 127.0.0.1:8080")
            })?;
        }
        if let Some(v) = env("TICKWIRE_CLUSTER_NATS") {
            self.cluster.get_or_insert_with(ClusterConfig::default).url = v;
        }
        if let Some(v) = env("TICKWIRE_CLUSTER_NODE") {
            self.cluster.get_or_insert_with(ClusterConfig::default).node = v;
        }
        if let Some(v) = env("TICKWIRE_JWT_SECRET") {
            self.auth.jwt_secret = Some(v);
        }
        if let Some(v) = env("TICKWIRE_PUBLISHER_KEYS") {
            self.auth.publisher_keys.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(())
    }

    fn where_(&self) -> String {
        match &self.source {
            Some(p) => format!(" (from {} or TICKWIRE_*)", p.display()),
            None => " (from TICKWIRE_* or defaults)".into(),
        }
    }

    fn validate(&self) -> Result<()> {
        let l = |k: &str| self.limit(k);
        if l("soft_limit_bytes") >= l("hard_limit_bytes") {
            bail!(
                "key `limits.soft_limit_bytes`{}: must be below hard_limit_bytes",
                self.where_()
            );
        }
        for k in [
            "heartbeat_ms",
            "write_timeout_ms",
            "max_tick_bytes",
            "max_message_bytes",
            "max_connections",
            "max_topics",
            // 0 would refuse every client (503, 413, 4500), or drop requests.
            "max_connections_per_ip",
            "max_http_body_bytes",
            "auth_timeout_ms",
            "header_read_timeout_ms",
        ] {
            if l(k) == 0 {
                bail!("key `limits.{k}`{}: must be above 0", self.where_());
            }
        }
        for k in ["direct_writes", "io_uring"] {
            if l(k) > 1 {
                bail!(
                    "key `limits.{k}`{}: must be 0 (off) or 1 (on)",
                    self.where_()
                );
            }
        }
        if l("max_tick_bytes") > l("max_message_bytes") {
            bail!(
                "key `limits.max_tick_bytes`{}: must not exceed max_message_bytes",
                self.where_()
            );
        }
        if let Some(c) = &self.cluster {
            c.validate().map_err(|e| {
                let (key, why) = split_key(&e);
                anyhow::anyhow!("key `{key}`{}: {why}", self.where_())
            })?;
        }
        if matches!(&self.auth.jwt_secret, Some(s) if s.len() < 16) {
            bail!(
                "key `auth.jwt_secret`{}: use at least 16 bytes",
                self.where_()
            );
        }
        Ok(())
    }

    pub fn limit(&self, key: &str) -> u64 {
        *self.limits.get(key).expect("every limit has a default")
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            history_per_topic: self.limit("history_per_topic") as usize,
            stale_after_ms: self.limit("stale_after_ms"),
            max_subscriptions_per_connection: self.limit("max_subscriptions_per_connection")
                as usize,
            max_topics: self.limit("max_topics") as usize,
            // Clustered, ticks keep the epoch of the node that accepted them.
            frames_carry_epoch: self.cluster.is_some(),
            outbox: OutboxConfig {
                soft_limit_bytes: self.limit("soft_limit_bytes") as usize,
                hard_limit_bytes: self.limit("hard_limit_bytes") as usize,
                slow_timeout_ms: self.limit("slow_timeout_ms"),
            },
        }
    }

    pub fn gateway(&self) -> GatewayConfig {
        GatewayConfig {
            listen: self.listen,
            heartbeat_ms: self.limit("heartbeat_ms"),
            write_timeout_ms: self.limit("write_timeout_ms"),
            max_tick_bytes: self.limit("max_tick_bytes") as usize,
            max_message_bytes: self.limit("max_message_bytes") as usize,
            max_fragments: self.limit("max_fragments") as usize,
            auth_timeout_ms: self.limit("auth_timeout_ms"),
            max_connections: self.limit("max_connections") as usize,
            max_connections_per_ip: self.limit("max_connections_per_ip") as usize,
            socket_send_buffer_bytes: self.limit("socket_send_buffer_bytes") as usize,
            max_http_body_bytes: self.limit("max_http_body_bytes") as usize,
            header_read_timeout_ms: self.limit("header_read_timeout_ms"),
            close_timeout_ms: self.limit("close_timeout_ms"),
            shutdown_timeout_ms: self.limit("shutdown_timeout_ms"),
            direct_writes: self.limit("direct_writes") != 0,
            io_uring: self.limit("io_uring") != 0,
            auth: self.auth.clone(),
            tls: self.tls.clone(),
            ..GatewayConfig::default()
        }
    }

    /// A commented default file, for `--print-config`.
    pub fn default_file() -> String {
        let mut s = String::from(
            "# tickwire configuration (docs/configuration.md). Every key is optional.\nlisten = \"127.0.0.1:8080\"\ndemo_feed = true\n\n[limits]\n",
        );
        for (k, v) in LIMITS {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s.push_str("\n[auth]\npublisher_keys = []\n# jwt_secret = \"at least 16 bytes\"\nallowed_origins = []\n");
        s.push_str("\n# One node of several sharing ticks over NATS (docs/cluster.md).\n# [cluster]\n# url = \"nats://127.0.0.1:4222\"\n# node = \"the host name\"\n# subject_prefix = \"tickwire\"\n# queue_capacity = 16384\n");
        s
    }
}

/// The `[cluster]` table. Present means clustered: `url` defaults to
/// `nats://127.0.0.1:4222` and `--cluster-nats` overrides it.
fn cluster_table(value: &toml::Value, file: &Path) -> Result<ClusterConfig> {
    let t = value
        .as_table()
        .with_context(|| format!("key `cluster` in {}: expected a table", file.display()))?;
    let mut c = ClusterConfig::default();
    for (k, v) in t {
        let text = || {
            v.as_str().map(str::to_owned).with_context(|| {
                format!("key `cluster.{k}` in {}: expected a string", file.display())
            })
        };
        match k.as_str() {
            "url" => c.url = text()?,
            "node" => c.node = text()?,
            "subject_prefix" => c.subject_prefix = text()?,
            "queue_capacity" => {
                let n = v.as_integer().filter(|n| *n > 0).with_context(|| {
                    format!(
                        "key `cluster.queue_capacity` in {}: expected a whole number > 0",
                        file.display()
                    )
                })?;
                c.queue_capacity = n as usize;
            }
            _ => bail!("key `cluster.{k}` in {}: unknown setting", file.display()),
        }
    }
    // Checked here too, so the message names this file.
    c.validate().map_err(|e| {
        let (key, why) = split_key(&e);
        anyhow::anyhow!("key `{key}` in {}: {why}", file.display())
    })?;
    Ok(c)
}

/// A `ClusterError` reads `cluster.key: why`.
fn split_key(e: &tickwire_cluster::ClusterError) -> (String, String) {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((k, why)) => (k.to_owned(), why.to_owned()),
        None => ("cluster".to_owned(), text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_file(text: &str, env: &[(&str, &str)]) -> Result<Config> {
        let dir = std::env::temp_dir().join(format!("tickwire-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // One file per call: tests run in parallel, and two texts of one
        // length used to share a file.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("c{n}.toml"));
        std::fs::write(&path, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::load(
            &Overrides {
                config: Some(path),
                ..Default::default()
            },
            |k| env.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone()),
        )
    }

    #[test]
    fn file_then_env() {
        let c = load_file(
            "[limits]\nheartbeat_ms = 2000\nstale_after_ms = 7\n",
            &[("TICKWIRE_HEARTBEAT_MS", "1000")],
        )
        .unwrap();
        assert_eq!(c.limit("heartbeat_ms"), 1000);
        assert_eq!(c.limit("stale_after_ms"), 7);
        assert_eq!(c.limit("history_per_topic"), 1024);
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let e = load_file("[limits]\nheartbeat_msx = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("limits.heartbeat_msx") && e.contains(".toml"),
            "{e}"
        );
        let e = load_file("[limits]\nheartbeat_ms = \"fast\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("limits.heartbeat_ms") && e.contains("whole number"),
            "{e}"
        );
        let e = load_file("", &[("TICKWIRE_MAX_TICK_BYTES", "lots")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("TICKWIRE_MAX_TICK_BYTES"), "{e}");
        let e = load_file(
            "[limits]\nsoft_limit_bytes = 10\nhard_limit_bytes = 5\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("soft_limit_bytes"), "{e}");
        let e = load_file("[limits]\ndirect_writes = 2\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("limits.direct_writes") && e.contains(".toml"),
            "{e}"
        );
        let c = load_file("", &[("TICKWIRE_DIRECT_WRITES", "0")]).unwrap();
        assert!(!c.gateway().direct_writes);
        assert!(load_file("", &[]).unwrap().gateway().direct_writes);
        let e = load_file("[limits]\nio_uring = 7\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.io_uring"), "{e}");
        assert!(
            !load_file("[limits]\nio_uring = 0\n", &[])
                .unwrap()
                .gateway()
                .io_uring
        );
        assert!(load_file("", &[]).unwrap().gateway().io_uring);
    }

    #[test]
    fn cluster_table_then_environment_then_flag() {
        let c = load_file(
            "[cluster]\nurl = \"nats://10.0.0.1:4222\"\nnode = \"a1\"\nsubject_prefix = \"tw.prod\"\n",
            &[("TICKWIRE_CLUSTER_NODE", "a2")],
        )
        .unwrap();
        let cl = c.cluster.as_ref().unwrap();
        assert_eq!(
            (cl.url.as_str(), cl.node.as_str()),
            ("nats://10.0.0.1:4222", "a2")
        );
        assert_eq!(cl.subject_prefix, "tw.prod");
        assert!(c.engine().frames_carry_epoch);
        let c = Config::load(
            &Overrides {
                cluster_nats: Some("nats://127.0.0.1:5222".into()),
                ..Default::default()
            },
            |_| None,
        )
        .unwrap();
        assert_eq!(c.cluster.unwrap().url, "nats://127.0.0.1:5222");
        assert!(
            Config::load(&Overrides::default(), |_| None)
                .unwrap()
                .cluster
                .is_none()
        );
        let e = load_file("[cluster]\nnode = \"a.b\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.node") && e.contains(".toml"), "{e}");
        let e = load_file("[cluster]\nnodes = \"a\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.nodes") && e.contains(".toml"), "{e}");
        let e = load_file("[cluster]\nqueue_capacity = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.queue_capacity"), "{e}");
    }

    #[test]
    fn limits_that_would_refuse_every_client_are_errors() {
        // 0 here would refuse every upgrade (503), every publish body (413),
        // every `auth` message (4500), or drop a request whose head comes in
        // two reads.
        for k in [
            "max_connections_per_ip",
            "max_http_body_bytes",
            "auth_timeout_ms",
            "header_read_timeout_ms",
        ] {
            let e = load_file(&format!("[limits]\n{k} = 0\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("limits.{k}")) && e.contains(".toml"),
                "{e}"
            );
        }
    }

    #[test]
    fn an_empty_publisher_key_is_an_error() {
        // An empty key would let `{"op":"auth","token":""}` publish.
        let e = load_file("[auth]\npublisher_keys = [\"k1\", \"\"]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("auth.publisher_keys") && e.contains(".toml"),
            "{e}"
        );
        let e = Config::load(
            &Overrides {
                publisher_keys: vec![String::new()],
                ..Default::default()
            },
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--publisher-key"), "{e}");
    }

    #[test]
    fn default_file_parses_back() {
        let c = load_file(&Config::default_file(), &[]).unwrap();
        assert_eq!(c.limits, Config::defaults().limits);
    }
}

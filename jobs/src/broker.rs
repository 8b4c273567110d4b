//! The local Kafka-protocol broker (tansu on loopback) and topic management for any cluster.
//!
//! [`LocalBroker`] starts the tansu binary installed by `scripts/install-tansu.sh` (found via
//! `TIDEMARK_TANSU`, the install cache, or `PATH`) on a loopback port with memory or SQLite
//! storage, waits until it answers a metadata request, and stops it with SIGTERM (SIGKILL after
//! a grace period). [`ensure_topics`] creates the SPEC §2 topics with the profile's partition
//! counts on whatever cluster the profile points at; tansu does not auto-create topics.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::types::RDKafkaErrorCode;

use tidemark_sources::kafka::topic_partitions;
use tidemark_sources::{KafkaConn, SourceError};

use crate::config::Profile;

/// The tansu version the project installs and tests against.
pub const TANSU_VERSION: &str = "0.6.0";

/// Topic names (SPEC §2).
pub mod topics {
    /// Raw candidates from every producer.
    pub const INGRESS: &str = "fp.bus.ingress.v1";
    /// Admitted traffic envelopes.
    pub const TRAFFIC: &str = "fp.bus.traffic.v1";
    /// Decisions and action intents.
    pub const DECISIONS: &str = "fp.bus.decisions.v1";
    /// Admitted control envelopes (labels, posture, governance facts).
    pub const CONTROL: &str = "fp.bus.control.v1";
    /// Pointer events (files written, snapshot hashes).
    pub const AUDIT: &str = "fp.bus.audit.v1";
}

/// The topics a profile needs, with their partition counts.
pub fn topic_layout(profile: &Profile) -> Vec<(&'static str, u32)> {
    let out = profile.wiring.topic_partitions.max(1);
    vec![
        (topics::INGRESS, profile.wiring.ingress_partitions.max(1)),
        (topics::TRAFFIC, out),
        (topics::DECISIONS, out),
        (topics::CONTROL, out),
        (topics::AUDIT, out),
    ]
}

/// Where the tansu binary is: `$TIDEMARK_TANSU`, the install cache
/// (`$HOME/.cache/tidemark/tansu-<version>/bin/tansu`), or `tansu` on `PATH`.
pub fn tansu_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIDEMARK_TANSU") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("TIDEMARK_TANSU={} is not a file", p.display());
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = PathBuf::from(home)
            .join(".cache/tidemark")
            .join(format!("tansu-{TANSU_VERSION}"))
            .join("bin/tansu");
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("tansu");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!("the tansu broker is not installed: run scripts/install-tansu.sh (or set TIDEMARK_TANSU)")
}

/// A free loopback port (bound then released).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Broker storage.
#[derive(Clone, Debug)]
pub enum Storage {
    /// In memory: gone when the broker stops.
    Memory,
    /// A SQLite file `tansu.db` in this directory: survives restarts.
    Sqlite(PathBuf),
}

/// A tansu broker process on loopback.
pub struct LocalBroker {
    child: Option<Child>,
    port: u16,
    storage: Storage,
    log: PathBuf,
    authentication: bool,
    advertised: Option<String>,
}

impl LocalBroker {
    /// Starts a broker on `port` (0 picks a free one), logging to `log`, and waits until it
    /// answers.
    pub fn start(port: u16, storage: Storage, log: &Path) -> Result<LocalBroker> {
        let port = if port == 0 { free_port()? } else { port };
        let mut b = LocalBroker {
            child: None,
            port,
            storage,
            log: log.to_path_buf(),
            authentication: false,
            advertised: None,
        };
        b.spawn()?;
        Ok(b)
    }

    /// Requires SASL authentication (tansu `--authentication`: SCRAM credentials from its
    /// storage, created with the AlterUserScramCredentials API) from the next (re)start on.
    pub fn set_authentication(&mut self, on: bool) {
        self.authentication = on;
    }

    /// Advertises `host:port` to clients instead of the listener (a TLS-terminating proxy in
    /// front of it) from the next (re)start on.
    pub fn set_advertised(&mut self, addr: Option<String>) {
        self.advertised = addr;
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = tansu_binary()?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let (engine, cwd) = match &self.storage {
            Storage::Memory => ("memory://tansu/".to_owned(), None),
            Storage::Sqlite(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                ("sqlite://tansu.db".to_owned(), Some(dir.clone()))
            }
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open broker log {}", self.log.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("broker")
            .args(["--listener-url", &url])
            .args([
                "--advertised-listener-url",
                &self
                    .advertised
                    .as_ref()
                    .map_or(url.clone(), |a| format!("tcp://{a}")),
            ])
            .args(["--storage-engine", &engine])
            .args(["--cluster-id", "tidemark-local"])
            .args(self.authentication.then_some("--authentication"))
            .env_remove("CLUSTER_ID")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: a Ctrl-C aimed at the caller does not kill the broker
            // before it is stopped cleanly.
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(60))
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    self.child = None;
                    bail!(
                        "tansu exited during startup ({status}); see {}",
                        self.log.display()
                    );
                }
            }
            // With authentication on, an anonymous metadata request is refused: a listening
            // port is the readiness signal then.
            let ready = if self.authentication {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
                    Duration::from_millis(500),
                )
                .is_ok()
            } else {
                answers(&self.addr(), Duration::from_millis(500))
            };
            if ready {
                return Ok(());
            }
            if t0.elapsed() > limit {
                bail!(
                    "tansu did not answer on {} within {limit:?}; see {}",
                    self.addr(),
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the broker: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        terminate(&mut c, Duration::from_secs(10))
    }

    /// Kills the broker with SIGKILL (no shutdown at all) and starts it again on the same port
    /// and storage: a hard bounce.
    pub fn kill_and_restart(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn()
    }

    /// Stops and starts the broker again on the same port and storage.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("stopping tansu: {e}");
        }
    }
}

/// Sends `signal` to `pid`; true if the process existed.
fn signal(pid: u32, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) on a pid we spawned (or read from our own pid file); no memory is touched.
    unsafe { libc::kill(pid as libc::pid_t, signal) == 0 }
}

/// SIGTERM, poll `gone` until it says the process exited or `grace` passes, then SIGKILL.
fn term_then_kill(pid: u32, grace: Duration, mut gone: impl FnMut() -> Result<bool>) -> Result<()> {
    signal(pid, libc::SIGTERM);
    let t0 = Instant::now();
    while t0.elapsed() < grace {
        if gone()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(pid, libc::SIGKILL);
    Ok(())
}

/// Stops a broker we spawned and reaps it.
fn terminate(c: &mut Child, grace: Duration) -> Result<()> {
    term_then_kill(c.id(), grace, || Ok(c.try_wait()?.is_some()))?;
    c.wait()?;
    Ok(())
}

/// Stops the detached broker with process id `pid` (from `broker start`'s pid file).
pub fn stop_pid(pid: u32, grace: Duration) -> Result<()> {
    if !signal(pid, 0) {
        bail!("no broker process {pid} is running");
    }
    term_then_kill(pid, grace, || Ok(!signal(pid, 0)))
}

/// Leaks the child handle of a broker that must outlive this process (`tidemark broker
/// start`); returns its pid.
pub fn detach(mut b: LocalBroker) -> Option<u32> {
    let pid = b.pid();
    if let Some(c) = b.child.take() {
        std::mem::forget(c);
    }
    pid
}

/// Whether a broker answers a metadata request at `addr`.
pub fn answers(addr: &str, timeout: Duration) -> bool {
    let c: Result<BaseConsumer, _> = KafkaConn::new(addr).client_config().create();
    match c {
        Ok(c) => {
            use rdkafka::consumer::Consumer;
            c.fetch_metadata(None, timeout).is_ok()
        }
        Err(_) => false,
    }
}

/// Creates the profile's topics on `conn` (existing topics are kept), then checks that every
/// topic exists with the expected partition count. The ingress topic is created with the
/// profile's `wiring.ingress_timestamps` as its `message.timestamp.type`.
pub fn ensure_topics(conn: &KafkaConn, profile: &Profile) -> Result<()> {
    conn.check()?;
    let layout = topic_layout(profile);
    let stamp = profile.wiring.ingress_timestamps.topic_config();
    let admin: AdminClient<DefaultClientContext> = conn
        .client_config()
        .create()
        .map_err(|e| anyhow!("cannot create a Kafka admin client: {e}"))?;
    let new: Vec<NewTopic> = layout
        .iter()
        .map(|(name, n)| {
            let t = NewTopic::new(name, *n as i32, TopicReplication::Fixed(1));
            if *name == topics::INGRESS {
                t.set("message.timestamp.type", stamp)
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(conn.request_timeout));
    let results = futures::executor::block_on(admin.create_topics(&new, &opts))
        .map_err(|e| anyhow!("cannot create topics on {}: {e}", conn.brokers))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("cannot create topic {t}: {e}"),
        }
    }
    let c: BaseConsumer = conn
        .client_config()
        .create()
        .map_err(|e| anyhow!("cannot create a Kafka client: {e}"))?;
    let t0 = Instant::now();
    for (name, want) in &layout {
        loop {
            match topic_partitions(&c, name, conn.request_timeout) {
                Ok(n) if n == *want => break,
                Ok(n) => bail!("topic {name} has {n} partitions, the profile says {want}"),
                Err(SourceError::MissingTopic(_)) if t0.elapsed() < Duration::from_secs(30) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

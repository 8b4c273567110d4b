//! Profiles (SPEC §11): typed, layered (defaults → profile TOML → `TIDEMARK__WIRING__…` env
//! vars), unknown keys rejected with their path. Each policy section has a revision and a
//! sha256 digest of its canonical JSON; `policy_rev` cites them all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use tidemark_dataflows::df::{DfPolicy, LoadedBundle};
use tidemark_dataflows::ieg::GraphPolicy;
use tidemark_dataflows::ig::IgPolicy;
use tidemark_dataflows::ofp::{validate_features, FeatureDef, OfpPolicy};
use tidemark_operators::hashing::sha256_hex;
use tidemark_sinks::Root;

/// Deployment wiring: where things run. May be overridden by environment variables
/// (`TIDEMARK__WIRING__WORKERS=2`); never changes semantics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wiring {
    /// Timely worker threads per process. Default 1.
    pub workers: usize,
    /// Ingress partitions (topic partition count). Default 4.
    pub ingress_partitions: u32,
    /// The data root: `file` (default: the local directory given by `--data`) or
    /// `s3://BUCKET/PREFIX`, which every command then reads and writes unless `--data` names
    /// the same root (a different `--data` is refused). S3 endpoint, region and credentials
    /// come from the `AWS_*` environment variables only, never from a profile.
    pub object_store: String,
    /// S3 roots: the run's lease on the root expires this long after its last renewal (it
    /// renews every third of it); a crashed run's root is free again after it. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Kafka bootstrap servers. Default `127.0.0.1:9092` (the local tansu broker).
    pub brokers: String,
    /// Partitions of the output topics (traffic, control, decisions, audit). Default 4.
    pub topic_partitions: u32,
    /// Records read per partition per source activation. Default 4096.
    pub source_batch: usize,
    /// The online run writes a commit point (`ckpt/commits/`) each time its frontier passes
    /// a multiple of this; a restart resumes from the latest one. Must be a multiple of
    /// `archive.interval` and `dla.audit_interval`. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// The record timestamps of the ingress topic that `broker topics` creates:
    /// `log_append_time` (default; the broker stamps each record as it appends it, so no
    /// producer clock can move a partition's watermark) or `create_time` (the producer's
    /// timestamp, for loading historic worlds into a broker that honours append time).
    /// Brokers without append time (tansu 0.6) keep the producer's timestamp either way.
    pub ingress_timestamps: IngressTimestamps,
    /// Where `run` serves `/metrics` (Prometheus), `/healthz` and `/readyz`; empty turns it
    /// off. Process `i` of a cluster listens on port + i. Default `127.0.0.1:9464`.
    pub metrics_addr: String,
    /// Kafka client security, passed to every client (source, producer, admin). Secrets are
    /// never here: the SASL password comes from `TIDEMARK_KAFKA_SASL_PASSWORD`.
    pub kafka: KafkaSecurity,
    /// `/readyz` is yellow when any ingress partition lags by more than this many records.
    /// Default 100000.
    pub ready_max_lag: u64,
    /// `/readyz` is yellow when any partition's watermark is older than this (wall clock).
    /// Default `5m`.
    #[serde(with = "humantime_serde")]
    pub ready_max_watermark_age: Duration,
    /// Diagnostic: log (`warn`, target `tidemark::slow`) every operator activation that holds
    /// a worker thread longer than this, naming the operator. `0s` (default) turns it off;
    /// timing every activation costs a little CPU.
    #[serde(with = "humantime_serde")]
    pub slow_activation: Duration,
}

/// Kafka client security settings (librdkafka `security.protocol`, `sasl.*`, `ssl.*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSecurity {
    /// `security.protocol`. Default `PLAINTEXT`.
    pub security_protocol: SecurityProtocol,
    /// `sasl.mechanism` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`); required with a SASL
    /// protocol. Default none.
    pub sasl_mechanism: Option<SaslMechanism>,
    /// `sasl.username`; required with a SASL protocol. Default empty.
    pub sasl_username: String,
    /// `ssl.ca.location`: a PEM file of the CA certificates that sign the brokers'
    /// certificates. Default empty: the system's CA store.
    pub ssl_ca_location: String,
}

/// `security.protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    #[default]
    Plaintext,
    /// TLS, no SASL.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

/// `sasl.mechanism`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// `PLAIN` (use only over TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256`.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// The environment variable holding the SASL password.
pub const SASL_PASSWORD_ENV: &str = "TIDEMARK_KAFKA_SASL_PASSWORD";

impl KafkaSecurity {
    fn sasl(&self) -> bool {
        matches!(
            self.security_protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Refuses incomplete settings (a SASL protocol without mechanism or username).
    pub fn validate(&self) -> Result<()> {
        if self.sasl() && (self.sasl_mechanism.is_none() || self.sasl_username.is_empty()) {
            bail!("wiring.kafka: a SASL security_protocol needs sasl_mechanism and sasl_username (the password comes from {SASL_PASSWORD_ENV})");
        }
        Ok(())
    }

    /// The librdkafka properties.
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let protocol = match self.security_protocol {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        };
        out.push(("security.protocol", protocol.to_owned()));
        if let Some(m) = self.sasl_mechanism {
            let m = match m {
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            };
            out.push(("sasl.mechanism", m.to_owned()));
        }
        if !self.sasl_username.is_empty() {
            out.push(("sasl.username", self.sasl_username.clone()));
        }
        if !self.ssl_ca_location.is_empty() {
            out.push(("ssl.ca.location", self.ssl_ca_location.clone()));
        }
        out
    }
}

/// Which clock stamps ingress records (Kafka's `message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IngressTimestamps {
    /// The broker's append time (`LogAppendTime`).
    #[default]
    LogAppendTime,
    /// The producer's create time (`CreateTime`).
    CreateTime,
}

impl IngressTimestamps {
    /// The value of the topic config `message.timestamp.type`.
    pub fn topic_config(self) -> &'static str {
        match self {
            IngressTimestamps::LogAppendTime => "LogAppendTime",
            IngressTimestamps::CreateTime => "CreateTime",
        }
    }
}

impl Default for Wiring {
    fn default() -> Self {
        Wiring {
            workers: 1,
            ingress_partitions: 4,
            object_store: "file".into(),
            lease_ttl: Duration::from_secs(30),
            brokers: "127.0.0.1:9092".into(),
            topic_partitions: 4,
            source_batch: 4096,
            commit_interval: Duration::from_secs(3600),
            ingress_timestamps: IngressTimestamps::LogAppendTime,
            kafka: KafkaSecurity::default(),
            metrics_addr: "127.0.0.1:9464".into(),
            ready_max_lag: 100_000,
            ready_max_watermark_age: Duration::from_secs(300),
            slow_activation: Duration::ZERO,
        }
    }
}

/// Archive layout policy: how admitted events are cut into files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchivePolicy {
    /// Revision of this section. Default 1.
    pub revision: u32,
    /// Files close per this interval of logical time. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Fixed number of buckets per interval (independent of worker count). Default 4.
    pub buckets: u32,
    /// Receipts per receipt file (offset chunk size). Default 100000.
    pub receipts_chunk: u64,
}

impl Default for ArchivePolicy {
    fn default() -> Self {
        ArchivePolicy {
            revision: 1,
            interval: Duration::from_secs(3600),
            buckets: 4,
            receipts_chunk: 100_000,
        }
    }
}

/// DLA policy: how audit records are cut into files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlaPolicy {
    /// Revision. Default 1.
    pub revision: u32,
    /// Audit files close per this interval of logical time. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub audit_interval: Duration,
    /// Fixed audit buckets (independent of worker count). Default 4.
    pub buckets: u32,
}

impl Default for DlaPolicy {
    fn default() -> Self {
        DlaPolicy {
            revision: 1,
            audit_interval: Duration::from_secs(3600),
            buckets: 4,
        }
    }
}

/// A whole profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// Profile name (`local`, `dev`, `prod`).
    pub name: String,
    /// Wiring.
    pub wiring: Wiring,
    /// IG policy.
    pub ig: IgPolicy,
    /// Archive policy.
    pub archive: ArchivePolicy,
    /// OFP policy (revision, snapshot interval).
    pub ofp: OfpPolicy,
    /// Feature definitions (`[[features]]`).
    pub features: Vec<FeatureDef>,
    /// IEG policy.
    pub graph: GraphPolicy,
    /// DF policy (thresholds, active bundle).
    pub df: DfPolicy,
    /// DLA policy.
    pub dla: DlaPolicy,
    /// Directory the profile was loaded from (bundles are looked up in `bundles/` beside it).
    #[serde(skip)]
    pub source_dir: Option<PathBuf>,
    /// What `--profile` resolved to: an absolute file path or an embedded profile's name
    /// (recorded in run records so `replay` can use the same profile).
    #[serde(skip)]
    pub source: Option<String>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            name: "default".into(),
            wiring: Wiring::default(),
            ig: IgPolicy::default(),
            archive: ArchivePolicy::default(),
            ofp: OfpPolicy::default(),
            features: Vec::new(),
            graph: GraphPolicy::default(),
            df: DfPolicy::default(),
            dla: DlaPolicy::default(),
            source_dir: None,
            source: None,
        }
    }
}

/// Bundles shipped with tidemark, embedded.
pub const EMBEDDED_BUNDLES: [(&str, &str); 1] = [(
    "default",
    include_str!("../../profiles/bundles/default.toml"),
)];

/// The profiles shipped with tidemark, embedded so the binary works from any directory.
pub const EMBEDDED: [(&str, &str); 4] = [
    ("local", include_str!("../../profiles/local.toml")),
    ("lowlatency", include_str!("../../profiles/lowlatency.toml")),
    ("dev", include_str!("../../profiles/dev.toml")),
    ("prod", include_str!("../../profiles/prod.toml")),
];

/// Where a profile came from.
#[derive(Clone, Debug)]
pub enum ProfileSource {
    /// A file on disk.
    File(PathBuf),
    /// A profile embedded in the binary.
    Embedded(&'static str),
}

/// Resolves `--profile NAME|PATH`: a path (contains `/` or ends in `.toml`) must exist; a name
/// is looked up as `profiles/NAME.toml` in the working directory, then among the embedded ones.
pub fn resolve(profile: &str) -> Result<ProfileSource> {
    if profile.contains('/') || profile.ends_with(".toml") {
        let p = PathBuf::from(profile);
        if !p.is_file() {
            bail!("profile file {} does not exist", p.display());
        }
        return Ok(ProfileSource::File(p));
    }
    let local = Path::new("profiles").join(format!("{profile}.toml"));
    if local.is_file() {
        return Ok(ProfileSource::File(local));
    }
    match EMBEDDED.iter().find(|(n, _)| *n == profile) {
        Some((_, text)) => Ok(ProfileSource::Embedded(text)),
        None => bail!(
            "unknown profile {profile:?}: no profiles/{profile}.toml here and no embedded profile of that name (known: local, lowlatency, dev, prod)"
        ),
    }
}

/// Loads a profile in layers: defaults → profile TOML → `TIDEMARK__WIRING__*` env vars.
pub fn load(profile: &str) -> Result<Profile> {
    let source = resolve(profile)?;
    let base = Figment::from(Serialized::defaults(Profile::default()));
    let fig = match &source {
        ProfileSource::File(p) => base.merge(Toml::file_exact(p)),
        ProfileSource::Embedded(text) => base.merge(Toml::string(text)),
    };
    let fig = fig.merge(
        Env::prefixed("TIDEMARK__")
            .split("__")
            .filter(|k| k.as_str().to_ascii_lowercase().starts_with("wiring")),
    );
    let mut loaded: Profile = fig.extract().map_err(|e| {
        let msgs: Vec<String> = e
            .into_iter()
            .map(|e| {
                let path = e.path.join(".");
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("{e} (at key `{path}`)")
                }
            })
            .collect();
        anyhow::anyhow!("invalid profile {profile}: {}", msgs.join("; "))
    })?;
    match &source {
        ProfileSource::File(p) => {
            loaded.source_dir = p.parent().map(Path::to_path_buf);
            loaded.source = Some(
                std::fs::canonicalize(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string(),
            );
        }
        ProfileSource::Embedded(_) => loaded.source = Some(profile.to_owned()),
    }
    validate(&loaded).with_context(|| format!("invalid profile {profile}"))?;
    let bundle = loaded
        .load_bundle()
        .with_context(|| format!("invalid profile {profile}"))?;
    for f in &bundle.bundle.features {
        let known = loaded.features.iter().any(|d| d.name == f.name)
            || tidemark_dataflows::df::GRAPH_FEATURES.contains(&f.name.as_str());
        if !known {
            bail!(
                "invalid profile {profile}: bundle {} uses unknown feature {}",
                bundle.bundle.id,
                f.name
            );
        }
    }
    Ok(loaded)
}

/// Checks a loaded profile (interval relations, feature definitions).
pub fn validate(p: &Profile) -> Result<()> {
    if p.wiring.workers == 0 {
        bail!("wiring.workers must be at least 1");
    }
    if p.archive.buckets == 0 {
        bail!("archive.buckets must be at least 1");
    }
    if p.archive.interval.as_millis() == 0 || p.dla.audit_interval.as_millis() == 0 {
        bail!("archive.interval and dla.audit_interval must be positive");
    }
    if p.dla.buckets == 0 {
        bail!("dla.buckets must be at least 1");
    }
    let commit = p.wiring.commit_interval.as_millis();
    let (archive, audit) = (
        p.archive.interval.as_millis(),
        p.dla.audit_interval.as_millis(),
    );
    if commit == 0 || !commit.is_multiple_of(archive) || !commit.is_multiple_of(audit) {
        bail!(
            "wiring.commit_interval ({}) must be a positive multiple of archive.interval ({}) and dla.audit_interval ({}): a commit point closes whole file intervals",
            humantime::format_duration(p.wiring.commit_interval),
            humantime::format_duration(p.archive.interval),
            humantime::format_duration(p.dla.audit_interval)
        );
    }
    validate_features(&p.features).map_err(|e| anyhow::anyhow!("features: {e}"))?;
    p.wiring.kafka.validate()?;
    Ok(())
}

/// The keyring of the profile's `[ig.signing]` policy with key material from the environment
/// (`TIDEMARK_SIGNING_KEY_<ID>`), or `None` when signing is not required.
pub fn signing_keys(
    p: &Profile,
) -> Result<Option<std::sync::Arc<tidemark_dataflows::ig::Keyring>>> {
    if !p.ig.signing.required {
        return Ok(None);
    }
    let ring = tidemark_dataflows::ig::Keyring::load(&p.ig.signing, |var| std::env::var(var).ok())
        .with_context(|| format!("profile {}: producer signatures are required", p.name))?;
    Ok(Some(std::sync::Arc::new(ring)))
}

/// sha256 (hex) of a section's canonical JSON (serde_json, struct field order, durations as
/// humantime strings).
pub fn digest<T: Serialize>(section: &T) -> String {
    sha256_hex(&serde_json::to_vec(section).unwrap_or_default())
}

impl Profile {
    /// `policy_rev`: `ig@<rev>:<d>,archive@<rev>:<d>` — the IG and archive sections only, so
    /// receipts and the archive do not change when downstream policy changes.
    pub fn policy_rev(&self) -> String {
        format!(
            "ig@{}:{},archive@{}:{}",
            self.ig.revision,
            &digest(&self.ig)[..12],
            self.archive.revision,
            &digest(&self.archive)[..12]
        )
    }

    /// `features@<ofp rev>:<digest of (ofp, features)>`.
    pub fn feature_rev(&self) -> String {
        format!(
            "features@{}:{}",
            self.ofp.revision,
            &digest(&(&self.ofp, &self.features))[..12]
        )
    }

    /// The decision policy revision cited by every decision: `policy_rev()` plus features,
    /// graph, df and dla sections and the bundle (`bundle@<id>:<version>:<digest[..12]>`).
    pub fn decision_policy_rev(&self, bundle: &LoadedBundle) -> String {
        format!(
            "{},{},graph@{}:{},df@{}:{},dla@{}:{},bundle@{}:{}:{}",
            self.policy_rev(),
            self.feature_rev(),
            self.graph.revision,
            &digest(&self.graph)[..12],
            self.df.revision,
            &digest(&self.df)[..12],
            self.dla.revision,
            &digest(&self.dla)[..12],
            bundle.bundle.id,
            bundle.bundle.version,
            &bundle.digest[..12]
        )
    }

    /// Loads the active bundle: `bundles/<name>.toml` beside the profile file, then
    /// `profiles/bundles/<name>.toml` in the working directory, then the embedded copy.
    pub fn load_bundle(&self) -> Result<LoadedBundle> {
        let name = &self.df.bundle;
        let file = format!("{name}.toml");
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(d) = &self.source_dir {
            candidates.push(d.join("bundles").join(&file));
        }
        candidates.push(Path::new("profiles").join("bundles").join(&file));
        for c in candidates {
            if c.is_file() {
                let text = std::fs::read_to_string(&c)
                    .with_context(|| format!("reading bundle {}", c.display()))?;
                return LoadedBundle::parse(&text)
                    .map_err(|e| anyhow::anyhow!("bundle {}: {e}", c.display()));
            }
        }
        match EMBEDDED_BUNDLES.iter().find(|(n, _)| n == name) {
            Some((_, text)) => LoadedBundle::parse(text)
                .map_err(|e| anyhow::anyhow!("embedded bundle {name}: {e}")),
            None => bail!("bundle {name:?} not found (looked for bundles/{file})"),
        }
    }
}

impl Profile {
    /// The Kafka connection of this profile: `wiring.brokers` (or `brokers` when given), plus
    /// librdkafka properties from `TIDEMARK_KAFKA_<PROPERTY>` environment variables
    /// (`TIDEMARK_KAFKA_SASL_PASSWORD` → `sasl.password`). Secrets come only from there.
    pub fn kafka_conn(&self, brokers: Option<&str>) -> tidemark_sources::KafkaConn {
        let mut conn =
            tidemark_sources::KafkaConn::new(brokers.unwrap_or(&self.wiring.brokers).to_owned());
        for (k, v) in self.wiring.kafka.properties() {
            conn.extra.insert(k.to_owned(), v);
        }
        // The password (`TIDEMARK_KAFKA_SASL_PASSWORD`) and any other librdkafka property
        // (`TIDEMARK_KAFKA_<PROPERTY>`) come from the environment, and override the profile.
        for (k, v) in std::env::vars() {
            if let Some(prop) = k.strip_prefix("TIDEMARK_KAFKA_") {
                conn.extra
                    .insert(prop.to_ascii_lowercase().replace('_', "."), v);
            }
        }
        conn
    }
}

/// The data root of a command: `--data` if given, else `object_store` (a profile's
/// `wiring.object_store`). `file` means "the directory given by `--data`". A `--data` naming
/// another root than a configured `s3://…` one is refused rather than silently preferred.
pub fn data_root(data: Option<Root>, object_store: &str) -> Result<Root> {
    let configured = match object_store.trim() {
        "" | "file" => None,
        s => Some(
            s.parse::<Root>()
                .with_context(|| "wiring.object_store (or TIDEMARK__WIRING__OBJECT_STORE)")?,
        ),
    };
    match (data, configured) {
        (Some(d), Some(c)) if d != c => bail!(
            "--data {d} names another root than wiring.object_store ({c}): drop --data, or set TIDEMARK__WIRING__OBJECT_STORE={d}"
        ),
        (Some(d), _) => Ok(d),
        (None, Some(c)) => Ok(c),
        (None, None) => bail!(
            "no data root: pass --data DIR (or s3://BUCKET/PREFIX), or set wiring.object_store / TIDEMARK__WIRING__OBJECT_STORE"
        ),
    }
}

/// [`data_root`] for commands without a profile: `object_store` from
/// `TIDEMARK__WIRING__OBJECT_STORE`.
pub fn data_root_from_env(data: Option<Root>) -> Result<Root> {
    let env = std::env::var("TIDEMARK__WIRING__OBJECT_STORE").unwrap_or_default();
    data_root(data, &env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rev_changes_with_policy_not_wiring() {
        let a = Profile::default();
        let mut b = a.clone();
        b.wiring.workers = 8;
        assert_eq!(a.policy_rev(), b.policy_rev());
        b.ig.allowed_lateness = Duration::from_secs(1);
        assert_ne!(a.policy_rev(), b.policy_rev());
    }

    #[test]
    fn data_root_resolution() {
        let s3: Root = "s3://bkt/p".parse().unwrap();
        let dir = Root::Local("/tmp/x".into());
        assert_eq!(data_root(Some(dir.clone()), "file").unwrap(), dir);
        assert_eq!(data_root(None, "s3://bkt/p").unwrap(), s3);
        assert_eq!(data_root(Some(s3.clone()), "s3://bkt/p/").unwrap(), s3);
        assert_eq!(data_root(Some(s3.clone()), "").unwrap(), s3);
        let e = data_root(Some(dir), "s3://bkt/p").unwrap_err().to_string();
        assert!(e.contains("names another root"), "{e}");
        assert!(data_root(None, "file").is_err());
        assert!(data_root(None, "s3://B/x").is_err());
    }
}

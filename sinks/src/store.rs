//! A write-once view of an object store (SPEC §2).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::runtime::Handle;

use crate::error::SinkError;
use crate::root::Root;
use tidemark_operators::hashing::sha256_hex;

/// What a write-once put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was created.
    Created,
    /// An identical object already existed; nothing was written.
    Unchanged,
}

/// How a store retries requests that failed for a reason that may pass (connection refused,
/// timeouts, 5xx): exponential backoff from `first` doubling up to `max`, for at most `for_`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First pause. Default 200 ms.
    pub first: Duration,
    /// Longest pause. Default 5 s.
    pub max: Duration,
    /// Give up (and report the error) after this long. Default 5 min, so a store restarted
    /// or briefly unreachable does not stop a run.
    pub for_: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_millis(200),
            max: Duration::from_secs(5),
            for_: Duration::from_secs(300),
        }
    }
}

/// Counters of a store's retries, for metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    retries: AtomicU64,
    gave_up: AtomicU64,
}

impl StoreStats {
    /// Requests retried (one per retry).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Requests that failed after every retry.
    pub fn gave_up(&self) -> u64 {
        self.gave_up.load(Ordering::Relaxed)
    }
}

/// True for object-store errors that retrying may cure.
fn retryable(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        e,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::InvalidPath { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

/// Blocking, write-once access to an object store, usable from timely worker threads (which
/// are not tokio threads) through a runtime handle. Requests that fail transiently are retried
/// with backoff, logged as they happen and counted in [`StoreStats`].
#[derive(Clone, Debug)]
pub struct WriteOnceStore {
    store: Arc<dyn ObjectStore>,
    rt: Handle,
    description: String,
    retry: RetryPolicy,
    stats: Arc<StoreStats>,
}

impl WriteOnceStore {
    /// Wraps any object store.
    pub fn new(store: Arc<dyn ObjectStore>, rt: Handle, description: impl Into<String>) -> Self {
        WriteOnceStore {
            store,
            rt,
            description: description.into(),
            retry: RetryPolicy::default(),
            stats: Arc::default(),
        }
    }

    /// Opens a data root: a local directory (created if missing) or an S3 prefix, whose
    /// endpoint, region and credentials come from the `AWS_*` environment variables
    /// (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, …). Writes on S3 are conditional (`If-None-Match: *`).
    pub fn open(root: &Root, rt: Handle) -> Result<Self, SinkError> {
        Self::open_with(root, rt, &[])
    }

    /// [`WriteOnceStore::open`] with S3 settings given here on top of the environment
    /// (`object_store`'s keys, e.g. `("aws_endpoint", "http://127.0.0.1:9000")`), for
    /// programs that configure S3 themselves. Ignored for local roots.
    pub fn open_with(root: &Root, rt: Handle, s3: &[(&str, &str)]) -> Result<Self, SinkError> {
        match root {
            Root::Local(dir) => Self::local(dir, rt),
            Root::S3 { bucket, prefix } => {
                let bad = |message: String| SinkError::BadRoot {
                    root: root.to_string(),
                    message,
                };
                let mut builder = AmazonS3Builder::from_env();
                for (k, v) in s3 {
                    let key = k.parse().map_err(|e| bad(format!("S3 setting {k}: {e}")))?;
                    builder = builder.with_config(key, *v);
                }
                let s3 = builder
                    .with_bucket_name(bucket)
                    // A short inner retry; the outer one (RetryPolicy) reports and backs off.
                    .with_retry(object_store::RetryConfig {
                        max_retries: 2,
                        retry_timeout: Duration::from_secs(10),
                        ..Default::default()
                    })
                    .build()
                    .map_err(|e| {
                        bad(format!(
                            "cannot configure S3 from the AWS_* environment: {e}"
                        ))
                    })?;
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix.as_str()))
                };
                Ok(Self::new(store, rt, root.to_string()))
            }
        }
    }

    /// A store on the local filesystem rooted at `dir` (created if missing).
    pub fn local(dir: &std::path::Path, rt: Handle) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|e| SinkError::Corrupt {
            path: dir.display().to_string(),
            message: format!("cannot create data directory: {e}"),
        })?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(|source| SinkError::Transient {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self::new(Arc::new(fs), rt, dir.display().to_string()))
    }

    /// The same store with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Where this store points (for messages).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Retry counters (shared by clones).
    pub fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }

    /// The underlying store and runtime, for the lease.
    pub(crate) fn raw(&self) -> (&Arc<dyn ObjectStore>, &Handle) {
        (&self.store, &self.rt)
    }

    fn path(p: &str) -> Result<Path, SinkError> {
        Path::parse(p).map_err(|e| SinkError::Bug(format!("invalid object path {p}: {e}")))
    }

    /// Runs `op` until it succeeds, fails for good, or the retry policy runs out.
    pub(crate) fn retrying<T, F, Fut>(
        &self,
        what: &str,
        path: &str,
        op: F,
    ) -> Result<T, object_store::Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, object_store::Error>>,
    {
        let t0 = Instant::now();
        let mut pause = self.retry.first;
        let mut attempt = 1u32;
        loop {
            match self.rt.block_on(op()) {
                Err(e) if retryable(&e) && t0.elapsed() + pause <= self.retry.for_ => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(store = %self.description, path, op = what, attempt, error = %e, retry_in_ms = pause.as_millis() as u64, "object store request failed; retrying");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(self.retry.max);
                    attempt += 1;
                }
                Err(e) => {
                    if retryable(&e) {
                        self.stats.gave_up.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(store = %self.description, path, op = what, attempt, error = %e, "object store request failed; giving up");
                    }
                    return Err(e);
                }
                Ok(v) => {
                    if attempt > 1 {
                        tracing::info!(store = %self.description, path, op = what, attempt, "object store request succeeded after retries");
                    }
                    return Ok(v);
                }
            }
        }
    }

    fn classify(path: &str, source: object_store::Error) -> SinkError {
        match source {
            object_store::Error::NotFound { .. } => SinkError::NotFound(path.to_owned()),
            source if retryable(&source) => SinkError::Transient {
                path: path.to_owned(),
                source,
            },
            source => SinkError::Denied {
                path: path.to_owned(),
                source,
            },
        }
    }

    /// Writes `bytes` at `path` unless an object exists there: identical bytes are a no-op,
    /// different bytes are [`SinkError::Conflict`]. The write is one conditional request
    /// (`PutMode::Create`), so of two writers racing for a path exactly one creates it; a
    /// retried request whose first attempt did land finds its own bytes and is `Unchanged`.
    pub fn put_once(&self, path: &str, bytes: Vec<u8>) -> Result<PutOutcome, SinkError> {
        let location = Self::path(path)?;
        let payload = PutPayload::from(Bytes::from(bytes));
        let result = self.retrying("put", path, || {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            self.store.put_opts(&location, payload.clone(), opts)
        });
        match result {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self.get(path)?;
                let bytes: Bytes = payload.into();
                if existing == bytes {
                    Ok(PutOutcome::Unchanged)
                } else {
                    Err(SinkError::Conflict {
                        path: path.to_owned(),
                        existing: sha256_hex(&existing),
                        new: sha256_hex(&bytes),
                    })
                }
            }
            Err(source) => Err(Self::classify(path, source)),
        }
    }

    /// Reads an object.
    pub fn get(&self, path: &str) -> Result<Bytes, SinkError> {
        let location = Self::path(path)?;
        self.retrying("get", path, || async {
            self.store.get(&location).await?.bytes().await
        })
        .map_err(|source| Self::classify(path, source))
    }

    /// Lists object paths under `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let location = Self::path(prefix)?;
        let metas: Vec<object_store::ObjectMeta> = self
            .retrying("list", prefix, || {
                self.store.list(Some(&location)).try_collect()
            })
            .map_err(|source| Self::classify(prefix, source))?;
        let mut paths: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
        paths.sort();
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_once_semantics() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = WriteOnceStore::local(dir.path(), rt.handle().clone()).unwrap();
        assert_eq!(
            store.put_once("a/b.bin", b"x".to_vec()).unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            store.put_once("a/b.bin", b"x".to_vec()).unwrap(),
            PutOutcome::Unchanged
        );
        let err = store.put_once("a/b.bin", b"y".to_vec()).unwrap_err();
        assert!(matches!(err, SinkError::Conflict { .. }), "{err}");
        assert_eq!(store.get("a/b.bin").unwrap().as_ref(), b"x");
        assert_eq!(store.list("a").unwrap(), vec!["a/b.bin".to_string()]);
        assert!(matches!(
            store.get("a/none").unwrap_err(),
            SinkError::NotFound(_)
        ));
    }
}

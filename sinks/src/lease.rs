//! One writer per data root (SPEC §12).
//!
//! - **Local directory**: a `flock` on `<root>/.tidemark.lock`, released by the kernel when the
//!   holder exits or dies. Taking it also removes the staging files (`<name>#<n>`) a killed
//!   holder left: the local store writes an object there and renames it into place, so a
//!   staging file is a write that never finished (never an object under its final name).
//! - **S3**: a lease object `_lease.json` holding the holder, a random token and an expiry.
//!   It is created with `If-None-Match: *`, renewed every `ttl / 3` with `If-Match: <etag>`,
//!   and taken over only once expired, again with `If-Match`, so of two runs racing for a
//!   root exactly one wins. A holder that cannot renew before its expiry, or finds its lease
//!   taken, reports the loss through a callback (the run stops). A clean exit deletes the
//!   object. Expiry compares wall clocks of different hosts: keep them NTP-synchronised and
//!   the TTL well above their skew. A holder paused past its expiry (a zombie) can still
//!   write, but only write-once objects, which are deterministic: identical bytes are a
//!   no-op and anything else is a conflict, so it cannot corrupt the root.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::SinkError;
use crate::root::Root;
use crate::store::WriteOnceStore;

/// The lease object of an S3 root.
pub const LEASE_OBJECT: &str = "_lease.json";

/// Why a lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another run holds the root.
    #[error("data root {root} is held by another run ({holder}): one writer per data root; stop that run first")]
    Held {
        /// The root.
        root: String,
        /// Who holds it, as the holder wrote it.
        holder: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] SinkError),
    /// The local lease file could not be used.
    #[error("lease file {path}: {source}")]
    Io {
        /// The lease file.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// What a lease object says.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    holder: String,
    token: String,
    expires_unix_ms: u64,
    ttl_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An exclusive lease on a data root, held until dropped.
pub struct Lease {
    /// Held for its `Drop`: the flock closes, the lease object is released.
    _held: Inner,
}

enum Inner {
    Local { _file: File },
    Object { _lease: ObjectLease },
}

impl Lease {
    /// Takes the lease of `root` (whose store is `store`) for `holder` (a description such as
    /// `pid 123 on host-a since …`). `ttl` and `on_lost` apply to S3 roots: the lease expires
    /// `ttl` after its last renewal, and `on_lost` is called once if it is lost while held.
    pub fn acquire(
        root: &Root,
        store: &WriteOnceStore,
        holder: &str,
        ttl: Duration,
        on_lost: Box<dyn Fn(String) + Send>,
    ) -> Result<Lease, LeaseError> {
        let inner = match root {
            Root::Local(dir) => {
                let file = flock(dir, holder)?;
                Inner::Local { _file: file }
            }
            Root::S3 { .. } => Inner::Object {
                _lease: ObjectLease::acquire(store, holder, ttl, on_lost)?,
            },
        };
        Ok(Lease { _held: inner })
    }
}

/// True for the local object store's staging name of an object being written (`<name>#<n>`).
fn is_staging(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(base, n)| {
        !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Removes writes a dead holder of the lease left unfinished. Called with the lease held.
fn remove_staging(root: &Path) -> std::io::Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() && entry.file_name().to_str().is_some_and(is_staging) {
                std::fs::remove_file(entry.path())?;
                tracing::info!(path = %entry.path().display(), "removed an unfinished write of a previous run");
            }
        }
    }
    Ok(())
}

fn flock(root: &Path, holder: &str) -> Result<File, LeaseError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = root.join(".tidemark.lock");
    let io = |source| LeaseError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(root).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(LeaseError::Held {
            root: root.display().to_string(),
            holder: holder.trim().to_owned(),
        });
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{holder}").map_err(io)?;
    remove_staging(root).map_err(io)?;
    Ok(file)
}

/// A lease object on S3 and the thread renewing it.
struct ObjectLease {
    store: WriteOnceStore,
    token: String,
    stop: Arc<AtomicBool>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl LeaseBody {
    fn payload(&self, expires_unix_ms: u64) -> Result<PutPayload, SinkError> {
        let body = LeaseBody {
            expires_unix_ms,
            holder: self.holder.clone(),
            token: self.token.clone(),
            ttl_ms: self.ttl_ms,
        };
        serde_json::to_vec(&body)
            .map(|v| PutPayload::from(Bytes::from(v)))
            .map_err(|e| SinkError::Bug(format!("lease body: {e}")))
    }
}

impl ObjectLease {
    fn acquire(
        store: &WriteOnceStore,
        holder: &str,
        ttl: Duration,
        on_lost: Box<dyn Fn(String) + Send>,
    ) -> Result<ObjectLease, LeaseError> {
        let (raw, _) = store.raw();
        let path = object_store::path::Path::from(LEASE_OBJECT);
        let ttl_ms = ttl.as_millis() as u64;
        let ours = LeaseBody {
            holder: holder.to_owned(),
            token: hex::encode(rand_token()),
            expires_unix_ms: 0,
            ttl_ms,
        };
        let put = |mode: PutMode, payload: PutPayload| {
            store.retrying("lease", LEASE_OBJECT, || {
                raw.put_opts(
                    &path,
                    payload.clone(),
                    PutOptions {
                        mode: mode.clone(),
                        ..Default::default()
                    },
                )
            })
        };
        let store_err = |source| SinkError::Transient {
            path: LEASE_OBJECT.to_owned(),
            source,
        };
        for _ in 0..3 {
            match put(PutMode::Create, ours.payload(now_ms() + ttl_ms)?) {
                Ok(r) => return Ok(Self::hold(store, ours, r.e_tag, ttl, on_lost)),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(store_err(e).into()),
            }
            let current = store.retrying("lease", LEASE_OBJECT, || async {
                let r = raw.get(&path).await?;
                let e_tag = r.meta.e_tag.clone();
                Ok((r.bytes().await?, e_tag))
            });
            let (bytes, e_tag) = match current {
                Ok(c) => c,
                Err(object_store::Error::NotFound { .. }) => continue, // released meanwhile
                Err(e) => return Err(store_err(e).into()),
            };
            let held: Option<LeaseBody> = serde_json::from_slice(&bytes).ok();
            if let Some(h) = &held {
                let now = now_ms();
                if h.expires_unix_ms > now {
                    return Err(LeaseError::Held {
                        root: store.description().to_owned(),
                        holder: format!(
                            "{}; its lease runs {} ms more",
                            h.holder,
                            h.expires_unix_ms - now
                        ),
                    });
                }
            }
            let mode = PutMode::Update(UpdateVersion {
                e_tag,
                version: None,
            });
            match put(mode, ours.payload(now_ms() + ttl_ms)?) {
                Ok(r) => {
                    tracing::warn!(root = store.description(), previous = ?held.map(|h| h.holder), "took over an expired lease");
                    return Ok(Self::hold(store, ours, r.e_tag, ttl, on_lost));
                }
                Err(object_store::Error::Precondition { .. }) => continue, // someone was faster
                Err(e) => return Err(store_err(e).into()),
            }
        }
        Err(LeaseError::Held {
            root: store.description().to_owned(),
            holder: "another run taking it at the same moment".into(),
        })
    }

    /// Starts the renewal thread for a lease just written with `e_tag`.
    fn hold(
        store: &WriteOnceStore,
        body: LeaseBody,
        e_tag: Option<String>,
        ttl: Duration,
        on_lost: Box<dyn Fn(String) + Send>,
    ) -> ObjectLease {
        let stop = Arc::new(AtomicBool::new(false));
        let token = body.token.clone();
        let renewer = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::Builder::new()
                .name("tidemark-lease".into())
                .spawn(move || renew_loop(&store, &body, e_tag, ttl, &stop, on_lost))
                .ok()
        };
        ObjectLease {
            store: store.clone(),
            token,
            stop,
            renewer,
        }
    }
}

fn rand_token() -> [u8; 16] {
    // Uniqueness, not secrecy: the pid, the clock and the address of a stack value.
    let seed = format!(
        "{}-{}-{:p}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        &0u8
    );
    let digest = tidemark_operators::hashing::sha256_hex(seed.as_bytes());
    let mut out = [0u8; 16];
    if let Ok(b) = hex::decode(&digest[..32]) {
        out.copy_from_slice(&b);
    }
    out
}

fn renew_loop(
    store: &WriteOnceStore,
    body: &LeaseBody,
    mut e_tag: Option<String>,
    ttl: Duration,
    stop: &AtomicBool,
    on_lost: Box<dyn Fn(String) + Send>,
) {
    let (raw, rt) = store.raw();
    let path = object_store::path::Path::from(LEASE_OBJECT);
    let ttl_ms = ttl.as_millis() as u64;
    let mut expires = now_ms() + ttl_ms;
    let every = ttl / 3;
    let mut next_renewal = Instant::now() + every;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() < next_renewal {
            continue;
        }
        let next = now_ms() + ttl_ms;
        let payload = match body.payload(next) {
            Ok(p) => p,
            Err(e) => {
                on_lost(e.to_string());
                return;
            }
        };
        let mode = PutMode::Update(UpdateVersion {
            e_tag: e_tag.clone(),
            version: None,
        });
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match rt.block_on(raw.put_opts(&path, payload, opts)) {
            Ok(r) => {
                e_tag = r.e_tag;
                expires = next;
                next_renewal = Instant::now() + every;
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {
                on_lost(format!(
                    "the lease on {} was taken by another run",
                    store.description()
                ));
                return;
            }
            Err(e) if now_ms() >= expires => {
                on_lost(format!(
                    "the lease on {} expired before it could be renewed: {e}",
                    store.description()
                ));
                return;
            }
            Err(e) => {
                tracing::warn!(root = store.description(), error = %e, "lease renewal failed; retrying in 1 s");
                next_renewal = Instant::now() + Duration::from_secs(1);
            }
        }
    }
}

impl Drop for ObjectLease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        // Release: delete the object if it is still ours (another run may have taken an
        // expired lease meanwhile; its object stays).
        let (raw, rt) = self.store.raw();
        let path = object_store::path::Path::from(LEASE_OBJECT);
        let ours = rt
            .block_on(async { raw.get(&path).await?.bytes().await })
            .ok()
            .and_then(|b| serde_json::from_slice::<LeaseBody>(&b).ok())
            .is_some_and(|b| b.token == self.token);
        if ours {
            if let Err(e) = rt.block_on(raw.delete(&path)) {
                tracing::warn!(root = self.store.description(), error = %e, "could not release the lease; it expires by itself");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_writes_are_removed_when_the_lease_is_taken() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("ig/receipts/partition=00001");
        std::fs::create_dir_all(&sub).expect("mkdir");
        for name in ["a.parquet", "a.parquet#1", "b.parquet#12", "c#x", "#3"] {
            std::fs::write(sub.join(name), b"x").expect("write");
        }
        let root = Root::Local(dir.path().to_path_buf());
        let store = WriteOnceStore::open(&root, rt.handle().clone()).expect("store");
        let take = |holder: &str| {
            Lease::acquire(
                &root,
                &store,
                holder,
                Duration::from_secs(30),
                Box::new(|_| {}),
            )
        };
        let lease = take("test").expect("lease");
        let mut left: Vec<String> = std::fs::read_dir(&sub)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["#3", "a.parquet", "c#x"]);
        let again = take("second");
        assert!(
            matches!(again, Err(LeaseError::Held { ref holder, .. }) if holder == "test"),
            "{:?}",
            again.err()
        );
        drop(lease);
        assert!(take("third").is_ok());
    }
}

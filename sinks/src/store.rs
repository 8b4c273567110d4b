//! A write-once view of an object store (SPEC §2).

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::runtime::Handle;

use crate::error::SinkError;
use tidemark_operators::hashing::sha256_hex;

/// What a write-once put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was created.
    Created,
    /// An identical object already existed; nothing was written.
    Unchanged,
}

/// Blocking, write-once access to an object store, usable from timely worker threads (which
/// are not tokio threads) through a runtime handle.
#[derive(Clone, Debug)]
pub struct WriteOnceStore {
    store: Arc<dyn ObjectStore>,
    rt: Handle,
    description: String,
}

impl WriteOnceStore {
    /// Wraps any object store.
    pub fn new(store: Arc<dyn ObjectStore>, rt: Handle, description: impl Into<String>) -> Self {
        WriteOnceStore {
            store,
            rt,
            description: description.into(),
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
        Ok(Self::new(
            Arc::new(fs),
            rt,
            format!("file://{}", dir.display()),
        ))
    }

    /// Where this store points (for messages).
    pub fn description(&self) -> &str {
        &self.description
    }

    fn path(p: &str) -> Result<Path, SinkError> {
        Path::parse(p).map_err(|e| SinkError::Bug(format!("invalid object path {p}: {e}")))
    }

    /// Writes `bytes` at `path` unless an object exists there: identical bytes are a no-op,
    /// different bytes are [`SinkError::Conflict`].
    pub fn put_once(&self, path: &str, bytes: Vec<u8>) -> Result<PutOutcome, SinkError> {
        let location = Self::path(path)?;
        let bytes = Bytes::from(bytes);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let result = self.rt.block_on(self.store.put_opts(
            &location,
            PutPayload::from(bytes.clone()),
            opts,
        ));
        match result {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self.get(path)?;
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
            Err(source) => Err(SinkError::Transient {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Reads an object.
    pub fn get(&self, path: &str) -> Result<Bytes, SinkError> {
        let location = Self::path(path)?;
        let store = self.store.clone();
        self.rt
            .block_on(async move { store.get(&location).await?.bytes().await })
            .map_err(|source| match source {
                object_store::Error::NotFound { .. } => SinkError::NotFound(path.to_owned()),
                source => SinkError::Transient {
                    path: path.to_owned(),
                    source,
                },
            })
    }

    /// Lists object paths under `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let location = Self::path(prefix)?;
        let store = self.store.clone();
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(async move { store.list(Some(&location)).try_collect().await })
            .map_err(|source| SinkError::Transient {
                path: prefix.to_owned(),
                source,
            })?;
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

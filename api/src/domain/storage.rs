//! Object storage for asset bytes, behind the `object_store` crate: local files under
//! `<data dir>/objects` by default, or an S3-compatible bucket. Uploads stream through in
//! bounded parts while the sha256 and size are computed; nothing holds a whole file in memory.

use std::fmt::Display;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, MultipartUpload, ObjectStore, PutPayload,
};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use super::error::{Error, Result};

/// Size of each part of a multipart upload. S3 wants at least 5 MiB for all parts but the
/// last, and some S3-compatible stores want them all equal: every part but the last is
/// exactly this long. Objects up to this size are written with one `put`.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one upload in flight at once: bounds an upload's memory to about
/// `(MAX_PARTS_IN_FLIGHT + 1) * PART_SIZE`.
const MAX_PARTS_IN_FLIGHT: usize = 3;

/// Size of the chunks a local file is read in when streamed out.
const READ_CHUNK: usize = 1024 * 1024;

/// Where objects live.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// A directory (created if missing).
    Local { root: PathBuf },
    /// An S3-compatible bucket; credentials come from the usual `AWS_*` variables.
    S3 {
        bucket: String,
        /// `http://` endpoints (a local S3-compatible server) are allowed.
        endpoint: Option<String>,
        region: Option<String>,
    },
}

/// What an upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// The object store, shared by every request of the process.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Storage {
    pub fn open(config: &StorageConfig) -> Result<Storage> {
        match config {
            StorageConfig::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    Error::internal(format!("cannot create {}: {e}", root.display()))
                })?;
                let store = LocalFileSystem::new_with_prefix(root).map_err(storage_error)?;
                Ok(Storage {
                    store: Arc::new(store),
                    description: format!("local files under {}", root.display()),
                })
            }
            StorageConfig::S3 {
                bucket,
                endpoint,
                region,
            } => {
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(region) = region {
                    builder = builder.with_region(region);
                }
                let store = builder.build().map_err(storage_error)?;
                Ok(Storage {
                    store: Arc::new(store),
                    description: format!(
                        "S3 bucket {bucket}{}",
                        endpoint
                            .as_deref()
                            .map(|e| format!(" at {e}"))
                            .unwrap_or_default()
                    ),
                })
            }
        }
    }

    /// Where objects live, for logs.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Streams `body` into the object `key` while hashing and counting it. Over `limit`
    /// bytes: `PayloadTooLarge`. On any failure (the body breaks off, the limit, the store)
    /// whatever was written is removed before the error is returned: no partial object stays.
    pub async fn put_stream<S, E>(&self, key: &str, body: S, limit: u64) -> Result<Stored>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let mut upload = Upload {
            store: self.store.clone(),
            path: Path::from(key),
            multipart: None,
            tasks: JoinSet::new(),
            pending: Vec::new(),
            pending_len: 0,
        };
        match upload.run(body, limit).await {
            Ok(stored) => Ok(stored),
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }

    /// Streams `range` (or the whole object) of `key`.
    pub async fn read(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&Path::from(key), options)
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    Error::internal(format!("the object {key} is missing from storage"))
                }
                e => storage_error(e),
            })?;
        let range = result.range.clone();
        Ok(match result.payload {
            // object_store reads local files in 8 KiB pieces, one blocking task each; larger
            // pieces keep a download from being dominated by task hand-offs.
            GetResultPayload::File(file, _) => file_stream(file, range),
            GetResultPayload::Stream(s) => s.map_err(std::io::Error::other).boxed(),
        })
    }

    /// Removes an object; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage_error(e)),
        }
    }

    /// Removes an object, logging instead of failing: for clean-up after another error.
    pub async fn delete_quietly(&self, key: &str) {
        if let Err(e) = self.delete(key).await {
            tracing::warn!(key, error = %e, "could not remove an object; it is orphaned");
        }
    }

    /// The keys under `prefix` (tests and operators check for orphans with it).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = Path::from(prefix);
        self.store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(storage_error)
    }
}

/// One upload in progress: parts are written by spawned tasks while the body streams in.
struct Upload {
    store: Arc<dyn ObjectStore>,
    path: Path,
    multipart: Option<Box<dyn MultipartUpload>>,
    tasks: JoinSet<object_store::Result<()>>,
    /// Received bytes not yet handed to a part (at most `PART_SIZE`).
    pending: Vec<Bytes>,
    pending_len: usize,
}

impl Upload {
    async fn run<S, E>(&mut self, mut body: S, limit: u64) -> Result<Stored>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| Error::BadRequest {
                code: "upload_incomplete",
                detail: format!("the request body broke off: {e}"),
            })?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(Error::PayloadTooLarge {
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                });
            }
            hasher.update(&chunk);
            // Fill the pending part; a full part goes out only once more bytes arrive, so
            // an object of at most one part is written with a single `put`.
            while self.pending_len + chunk.len() > PART_SIZE {
                let room = PART_SIZE - self.pending_len;
                self.pending.push(chunk.split_to(room));
                self.pending_len = PART_SIZE;
                self.send_part().await?;
            }
            if !chunk.is_empty() {
                self.pending_len += chunk.len();
                self.pending.push(chunk);
            }
        }
        let payload: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
        self.pending_len = 0;
        match self.multipart.as_mut() {
            None => {
                self.store
                    .put(&self.path, payload)
                    .await
                    .map_err(storage_error)?;
            }
            Some(upload) => {
                if payload.content_length() > 0 {
                    self.tasks.spawn(upload.put_part(payload));
                }
                self.wait_for_parts(0).await?;
                let mut upload = self
                    .multipart
                    .take()
                    .ok_or_else(|| Error::internal("multipart upload missing"))?;
                if let Err(e) = upload.complete().await {
                    self.multipart = Some(upload);
                    return Err(storage_error(e));
                }
            }
        }
        Ok(Stored {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Hands the pending bytes to a new part, starting the multipart upload if needed and
    /// waiting while too many parts are in flight.
    async fn send_part(&mut self) -> Result<()> {
        if self.multipart.is_none() {
            self.multipart = Some(
                self.store
                    .put_multipart(&self.path)
                    .await
                    .map_err(storage_error)?,
            );
        }
        self.wait_for_parts(MAX_PARTS_IN_FLIGHT - 1).await?;
        let part: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
        self.pending_len = 0;
        let upload = self
            .multipart
            .as_mut()
            .ok_or_else(|| Error::internal("multipart upload missing"))?;
        self.tasks.spawn(upload.put_part(part));
        Ok(())
    }

    /// Waits until at most `at_most` parts are in flight; the first failed part fails all.
    async fn wait_for_parts(&mut self, at_most: usize) -> Result<()> {
        while self.tasks.len() > at_most {
            match self.tasks.join_next().await {
                Some(Ok(Ok(()))) | None => {}
                Some(Ok(Err(e))) => return Err(storage_error(e)),
                Some(Err(e)) => return Err(Error::internal(format!("upload task failed: {e}"))),
            }
        }
        Ok(())
    }

    /// Stops the parts in flight and removes what was written (a multipart upload's parts,
    /// or the object itself if it was already complete).
    async fn abort(&mut self) {
        self.tasks.shutdown().await;
        self.pending.clear();
        match self.multipart.take() {
            Some(mut upload) => {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(path = %self.path, error = %e, "could not abort a multipart upload");
                }
            }
            None => {
                // A single `put` is atomic: either nothing or the whole object exists.
                match self.store.delete(&self.path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        tracing::warn!(path = %self.path, error = %e, "could not remove a partial object")
                    }
                }
            }
        }
    }
}

/// Reads `range` of a local file in `READ_CHUNK` pieces on the blocking pool.
fn file_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    let start = range.start;
    let remaining = range.end.saturating_sub(range.start);
    stream::try_unfold(
        (Some(file), start, remaining, true),
        |(file, offset, remaining, first)| async move {
            let Some(mut file) = file else {
                return Ok(None);
            };
            if remaining == 0 {
                return Ok(None);
            }
            let (file, buffer) = tokio::task::spawn_blocking(move || {
                if first {
                    file.seek(SeekFrom::Start(offset))?;
                }
                let want = remaining.min(READ_CHUNK as u64);
                let mut buffer = Vec::with_capacity(want as usize);
                (&mut file).take(want).read_to_end(&mut buffer)?;
                Ok::<_, std::io::Error>((file, buffer))
            })
            .await
            .map_err(std::io::Error::other)??;
            if buffer.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the object is shorter than recorded",
                ));
            }
            let read = buffer.len() as u64;
            Ok(Some((
                Bytes::from(buffer),
                (Some(file), offset + read, remaining - read, false),
            )))
        },
    )
    .boxed()
}

/// Storage failures are the service's, not the client's: 503 (retry) or a logged 500.
fn storage_error(e: object_store::Error) -> Error {
    match e {
        object_store::Error::Generic { .. } => Error::Unavailable(format!("object storage: {e}")),
        e => Error::internal(format!("object storage: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> (Storage, PathBuf) {
        let root = std::env::temp_dir().join(format!(
            "mkt-storage-{}",
            crate::domain::ids::random_token(10)
        ));
        let storage = Storage::open(&StorageConfig::Local { root: root.clone() }).unwrap();
        (storage, root)
    }

    fn chunks(data: &[u8], size: usize) -> Vec<std::result::Result<Bytes, String>> {
        data.chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    async fn read_all(storage: &Storage, key: &str, range: Option<Range<u64>>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = storage.read(key, range).await.unwrap();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn small_and_multipart_uploads_round_trip() {
        let (storage, root) = local();
        for len in [0, 1, PART_SIZE, PART_SIZE + 1, 2 * PART_SIZE + 12345] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let key = format!("org/rev/obj{len}");
            let stored = storage
                .put_stream(&key, stream::iter(chunks(&data, 100_003)), u64::MAX)
                .await
                .unwrap();
            assert_eq!(stored.size, len as u64);
            assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
            assert_eq!(read_all(&storage, &key, None).await, data);
            if len > 10 {
                let r = 3..(len as u64 - 2);
                assert_eq!(
                    read_all(&storage, &key, Some(r.clone())).await,
                    &data[r.start as usize..r.end as usize]
                );
            }
        }
        std::fs::remove_dir_all(root).ok();
    }

    #[tokio::test]
    async fn failed_uploads_leave_nothing() {
        let (storage, root) = local();
        let data = vec![7u8; 2 * PART_SIZE + 10];
        let over = storage
            .put_stream(
                "o/r/big",
                stream::iter(chunks(&data, 65_536)),
                PART_SIZE as u64 + 5,
            )
            .await;
        assert!(matches!(over, Err(Error::PayloadTooLarge { .. })));
        let mut broken = chunks(&data, 65_536);
        broken.truncate(200);
        broken.push(Err("connection reset".into()));
        let cut = storage
            .put_stream("o/r/cut", stream::iter(broken), u64::MAX)
            .await;
        assert!(matches!(cut, Err(Error::BadRequest { .. })));
        let small = vec![Ok(Bytes::from_static(b"abc")), Err("reset".to_string())];
        assert!(storage
            .put_stream("o/r/small", stream::iter(small), u64::MAX)
            .await
            .is_err());
        let left: Vec<_> = walk(&root);
        assert!(left.is_empty(), "left behind: {left:?}");
        std::fs::remove_dir_all(root).ok();
    }

    fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    out.extend(walk(&p));
                } else {
                    out.push(p);
                }
            }
        }
        out
    }
}

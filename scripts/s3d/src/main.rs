//! `tidemark-s3d`: the S3-protocol server tidemark's tests start on loopback.
//!
//! It is `s3s-fs` (the `s3s` crate's S3 protocol — SigV4 authentication, XML, conditional
//! headers — over a directory) with one change: `s3s-fs` checks `If-None-Match: *` and
//! `If-Match` before it streams the body and renames the file into place, so two writers
//! racing for a key can both pass the check. Real S3, MinIO and R2 decide conditional writes
//! atomically; here every mutating object request holds one lock, which gives the same
//! guarantee. Objects live as plain files under `ROOT/<bucket>/<key>`, so a restarted server
//! serves what it had.
//!
//! Usage: `tidemark-s3d ROOT --host 127.0.0.1 --port 0 --access-key K --secret-key S`.
//! Prints `listening on HOST:PORT` on stdout once it accepts connections.

use std::io::Write;
use std::path::PathBuf;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3Request, S3Response, S3Result, S3};
use s3s_fs::FileSystem;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// `s3s-fs` with its mutating object requests serialised.
struct Atomic {
    fs: FileSystem,
    writes: Mutex<()>,
}

/// Writes the `S3` impl: the macro expands before `async_trait` rewrites the methods.
macro_rules! impl_s3 {
    (delegate { $($d:ident: $di:ty => $do:ty;)* } serialised { $($s:ident: $si:ty => $so:ty;)* }) => {
        #[async_trait::async_trait]
        impl S3 for Atomic {
            $(async fn $d(&self, req: S3Request<$di>) -> S3Result<S3Response<$do>> {
                self.fs.$d(req).await
            })*
            $(async fn $s(&self, req: S3Request<$si>) -> S3Result<S3Response<$so>> {
                let _one_at_a_time = self.writes.lock().await;
                self.fs.$s(req).await
            })*
        }
    };
}

impl_s3! {
    delegate {
        create_bucket: CreateBucketInput => CreateBucketOutput;
        delete_bucket: DeleteBucketInput => DeleteBucketOutput;
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
        get_object: GetObjectInput => GetObjectOutput;
        head_bucket: HeadBucketInput => HeadBucketOutput;
        head_object: HeadObjectInput => HeadObjectOutput;
        list_buckets: ListBucketsInput => ListBucketsOutput;
        list_objects: ListObjectsInput => ListObjectsOutput;
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
        upload_part: UploadPartInput => UploadPartOutput;
        list_parts: ListPartsInput => ListPartsOutput;
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    }
    serialised {
        put_object: PutObjectInput => PutObjectOutput;
        copy_object: CopyObjectInput => CopyObjectOutput;
        delete_object: DeleteObjectInput => DeleteObjectOutput;
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput;
    }
}

struct Opt {
    root: PathBuf,
    host: String,
    port: u16,
    access_key: Option<String>,
    secret_key: Option<String>,
}

fn parse() -> Result<Opt, String> {
    let mut args = std::env::args().skip(1);
    let mut opt = Opt {
        root: PathBuf::new(),
        host: "127.0.0.1".into(),
        port: 0,
        access_key: None,
        secret_key: None,
    };
    let mut root = None;
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--host" => opt.host = value()?,
            "--port" => opt.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--access-key" => opt.access_key = Some(value()?),
            "--secret-key" => opt.secret_key = Some(value()?),
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => root = Some(PathBuf::from(a)),
        }
    }
    opt.root = root
        .ok_or("usage: tidemark-s3d ROOT [--host H] [--port P] [--access-key K --secret-key S]")?;
    Ok(opt)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let opt = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tidemark-s3d: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&opt.root) {
        eprintln!("tidemark-s3d: cannot create {}: {e}", opt.root.display());
        std::process::exit(1);
    }
    let fs = match FileSystem::new(&opt.root) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("tidemark-s3d: {e:?}");
            std::process::exit(1);
        }
    };
    let service = {
        let mut b = S3ServiceBuilder::new(Atomic {
            fs,
            writes: Mutex::new(()),
        });
        if let (Some(ak), Some(sk)) = (opt.access_key, opt.secret_key) {
            b.set_auth(SimpleAuth::from_single(ak, sk));
        }
        b.build()
    };
    let listener = match TcpListener::bind((opt.host.as_str(), opt.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "tidemark-s3d: cannot listen on {}:{}: {e}",
                opt.host, opt.port
            );
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("tidemark-s3d: accept: {e}");
                continue;
            }
        };
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

//! The S3-protocol server of the tests: `tidemark-s3d` (scripts/s3d: s3s-fs with atomic
//! conditional writes) on a loopback port, with SigV4 credentials, storing objects as files
//! under `<dir>/<bucket>/<key>` so that it can be killed and restarted on the same data.
//! `scripts/install-s3d.sh` (run by the README's test command) builds it; a missing binary
//! fails the test, it never skips.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The bucket every test uses.
pub const BUCKET: &str = "tidemark-test";
/// The secret key: tests assert it appears in no log, record or file.
pub const SECRET: &str = "s3-secret-Zq8vX2pL9wR4tY6u";
const ACCESS: &str = "tidemark-test-access";

/// A running (or stopped) tidemark-s3d.
pub struct S3d {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("TIDEMARK_S3D") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = Path::new(&home).join(".cache/tidemark/s3d-current/bin/tidemark-s3d");
    assert!(
        p.exists(),
        "no S3 test server at {}: run scripts/install-s3d.sh (the README's test command does)",
        p.display()
    );
    p
}

impl S3d {
    /// Starts a server storing under `dir`, with the test bucket created.
    pub fn start(dir: &Path) -> S3d {
        std::fs::create_dir_all(dir.join(BUCKET)).unwrap();
        let mut s = S3d {
            dir: dir.to_path_buf(),
            port: 0,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut child = Command::new(binary())
            .arg(&self.dir)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS, "--secret-key", SECRET])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tidemark-s3d");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("tidemark-s3d did not start: {line:?}"));
        self.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Some(child);
    }

    /// SIGKILL (objects stay on disk).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The `AWS_*` variables a client needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// The same settings as `object_store` configuration keys (for in-process stores).
    pub fn config(&self) -> Vec<(&'static str, String)> {
        let keys = [
            "aws_endpoint",
            "aws_allow_http",
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_region",
        ];
        keys.into_iter()
            .zip(self.env().into_iter().map(|(_, v)| v))
            .collect()
    }

    /// The directory holding the objects under `s3://BUCKET/<prefix>`.
    pub fn objects(&self, prefix: &str) -> PathBuf {
        self.dir.join(BUCKET).join(prefix)
    }
}

impl Drop for S3d {
    fn drop(&mut self) {
        self.kill();
    }
}

//! Where generated records go.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tidemark_sources::filelog::partition_file_name;

/// Receives generated ingress records.
pub trait RecordSink {
    /// Appends one record to `partition`.
    fn write(&mut self, partition: u32, record_ts: u64, value: &[u8]) -> std::io::Result<()>;
    /// Flushes everything.
    fn finish(&mut self) -> std::io::Result<()>;
}

/// Writes a partitioned file log (see `tidemark_sources::filelog`).
pub struct FileLogSink {
    files: Vec<BufWriter<File>>,
}

impl FileLogSink {
    /// Creates `dir` and one empty file per partition; fails if partition files already exist.
    pub fn create(dir: &Path, partitions: u32) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        for p in 0..partitions {
            let path: PathBuf = dir.join(partition_file_name(p));
            let f = File::options()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            files.push(BufWriter::with_capacity(1 << 20, f));
        }
        Ok(FileLogSink { files })
    }
}

impl RecordSink for FileLogSink {
    fn write(&mut self, partition: u32, record_ts: u64, value: &[u8]) -> std::io::Result<()> {
        let n = self.files.len();
        let f = &mut self.files[partition as usize % n];
        f.write_all(itoa::Buffer::new().format(record_ts).as_bytes())?;
        f.write_all(b"\t")?;
        f.write_all(value)?;
        f.write_all(b"\n")
    }
    fn finish(&mut self) -> std::io::Result<()> {
        for f in &mut self.files {
            f.flush()?;
        }
        Ok(())
    }
}

/// Discards records (for measuring the generator alone).
pub struct NullSink(pub u64);

impl RecordSink for NullSink {
    fn write(&mut self, _p: u32, _ts: u64, value: &[u8]) -> std::io::Result<()> {
        self.0 += value.len() as u64;
        Ok(())
    }
    fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

//! A partitioned file log: the ingress format written by `tidemark world`.
//!
//! A log is a directory with one file per partition, `partition-00000.log`, … Each record is
//! one line `RECORD_TS<TAB>VALUE<LF>` where `RECORD_TS` is the producer/broker timestamp in
//! epoch milliseconds (like a Kafka record timestamp) and `VALUE` the raw bytes (which must not
//! contain a line feed). The offset of a record is its line index, starting at 0.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use tidemark_operators::{RawRecord, SourceCoord};

use crate::error::SourceError;
use crate::source::{PartitionReader, PartitionedSource, ReadStatus};

/// File name of partition `p` in a file log.
pub fn partition_file_name(p: u32) -> String {
    format!("partition-{p:05}.log")
}

/// A partitioned file log rooted at a directory.
#[derive(Clone, Debug)]
pub struct FileLog {
    dir: PathBuf,
}

impl FileLog {
    /// Opens the log at `dir`; fails if it is not a directory with at least one partition file.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SourceError> {
        let log = FileLog {
            dir: dir.as_ref().to_path_buf(),
        };
        log.partitions()?;
        Ok(log)
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl PartitionedSource for FileLog {
    fn partitions(&self) -> Result<Vec<u32>, SourceError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| SourceError::BadInput {
            path: self.dir.display().to_string(),
            message: format!("cannot read ingress directory: {e}"),
        })?;
        let mut parts = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SourceError::Transient {
                path: self.dir.display().to_string(),
                source: e,
            })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(num) = name
                .strip_prefix("partition-")
                .and_then(|s| s.strip_suffix(".log"))
            {
                let p: u32 = num.parse().map_err(|_| SourceError::BadInput {
                    path: entry.path().display().to_string(),
                    message: "partition file name is not partition-NNNNN.log".into(),
                })?;
                parts.push(p);
            }
        }
        parts.sort_unstable();
        if parts.is_empty() {
            return Err(SourceError::BadInput {
                path: self.dir.display().to_string(),
                message: "no partition-NNNNN.log files found".into(),
            });
        }
        let expected: Vec<u32> = (0..parts.len() as u32).collect();
        if parts != expected {
            return Err(SourceError::BadInput {
                path: self.dir.display().to_string(),
                message: format!("partitions must be numbered 0..N without gaps, found {parts:?}"),
            });
        }
        Ok(parts)
    }

    fn open(&self, partition: u32) -> Result<Box<dyn PartitionReader>, SourceError> {
        let path = self.dir.join(partition_file_name(partition));
        let file = File::open(&path).map_err(|e| SourceError::BadInput {
            path: path.display().to_string(),
            message: format!("cannot open partition file: {e}"),
        })?;
        Ok(Box::new(FilePartitionReader {
            path,
            partition,
            reader: BufReader::with_capacity(1 << 20, file),
            next_offset: 0,
            line: Vec::with_capacity(1024),
        }))
    }

    fn open_at(
        &self,
        partition: u32,
        offset: u64,
    ) -> Result<Box<dyn PartitionReader>, SourceError> {
        let mut r = self.open(partition)?;
        let mut skipped = Vec::new();
        while r.next_offset() < offset {
            skipped.clear();
            let want = (offset - r.next_offset()).min(4096) as usize;
            if r.poll(want, &mut skipped)? == ReadStatus::End && r.next_offset() < offset {
                return Err(SourceError::BadInput {
                    path: self
                        .dir
                        .join(partition_file_name(partition))
                        .display()
                        .to_string(),
                    message: format!(
                        "cannot resume at offset {offset}: the partition ends at {}",
                        r.next_offset()
                    ),
                });
            }
        }
        Ok(r)
    }
}

struct FilePartitionReader {
    path: PathBuf,
    partition: u32,
    reader: BufReader<File>,
    next_offset: u64,
    line: Vec<u8>,
}

impl FilePartitionReader {
    fn parse_line(&self, line: &[u8]) -> Result<(u64, Vec<u8>), SourceError> {
        let bad = |message: String| SourceError::BadInput {
            path: self.path.display().to_string(),
            message,
        };
        let tab = line.iter().position(|&b| b == b'\t').ok_or_else(|| {
            bad(format!(
                "offset {}: no TAB after record timestamp",
                self.next_offset
            ))
        })?;
        let ts = std::str::from_utf8(&line[..tab])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                bad(format!(
                    "offset {}: record timestamp is not an integer",
                    self.next_offset
                ))
            })?;
        Ok((ts, line[tab + 1..].to_vec()))
    }
}

impl PartitionReader for FilePartitionReader {
    fn partition(&self) -> u32 {
        self.partition
    }

    fn next_offset(&self) -> u64 {
        self.next_offset
    }

    fn poll(&mut self, max: usize, out: &mut Vec<RawRecord>) -> Result<ReadStatus, SourceError> {
        for _ in 0..max {
            self.line.clear();
            let n = self.reader.read_until(b'\n', &mut self.line).map_err(|e| {
                SourceError::Transient {
                    path: self.path.display().to_string(),
                    source: e,
                }
            })?;
            if n == 0 {
                return Ok(ReadStatus::End);
            }
            if self.line.last() != Some(&b'\n') {
                return Err(SourceError::BadInput {
                    path: self.path.display().to_string(),
                    message: format!(
                        "offset {}: truncated record (no trailing newline)",
                        self.next_offset
                    ),
                });
            }
            self.line.pop();
            let (record_ts, bytes) = self.parse_line(&self.line)?;
            out.push(RawRecord {
                coord: SourceCoord {
                    partition: self.partition,
                    offset: self.next_offset,
                },
                record_ts,
                bytes,
                headers: Vec::new(),
            });
            self.next_offset += 1;
        }
        Ok(ReadStatus::Records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_in_offset_order_and_reports_end() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(partition_file_name(0)),
            b"10\t{\"a\":1}\n20\tnot json\n",
        )
        .unwrap();
        let log = FileLog::open(dir.path()).unwrap();
        let mut r = log.open(0).unwrap();
        let mut out = Vec::new();
        assert_eq!(r.poll(10, &mut out).unwrap(), ReadStatus::End);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].coord.offset, 1);
        assert_eq!(out[1].record_ts, 20);
        assert_eq!(out[1].bytes, b"not json");
    }

    #[test]
    fn corrupt_frames_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(partition_file_name(0)), b"abc\tx\n").unwrap();
        let log = FileLog::open(dir.path()).unwrap();
        let err = log.open(0).unwrap().poll(10, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("record timestamp is not an integer"),
            "{err}"
        );
        std::fs::write(dir.path().join(partition_file_name(0)), b"1\tx").unwrap();
        let err = log.open(0).unwrap().poll(10, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn missing_dir_and_gaps_are_errors() {
        assert!(FileLog::open("/nonexistent/tidemark").is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(partition_file_name(1)), b"").unwrap();
        let err = FileLog::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("without gaps"), "{err}");
    }
}

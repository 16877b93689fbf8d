//! The snapshot file: every state-machine table, streamed, with a checksum.
//!
//! ```text
//! "VXSNAP01" ‖ meta_len (u32 BE) ‖ meta (codec) ‖ record* ‖ 0xFF ‖ sha256(all previous bytes)
//! record = table id (u8) ‖ key_len (u32 BE) ‖ key ‖ value_len (u32 BE) ‖ value
//! ```
//!
//! Files are written and read as streams, so neither building nor installing a snapshot holds
//! the state in memory. A file is only ever visible under its final name once it is complete and
//! synced (write to `*.tmp`, fsync, rename, fsync the directory); a torn file fails its checksum.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::StoreError;
use crate::limits::SNAPSHOT_RECORD_BYTES_MAX;
use crate::schema::Table;
use crate::txn::KvRead;
use crate::types::SnapshotMeta;

/// 02: deduplication records are keyed by generation (`codec::request_key`), and the
/// requests-by-revision index is gone; a 01 file is refused rather than misread.
const MAGIC: &[u8; 8] = b"VXSNAP02";
const END: u8 = 0xFF;
/// Entries fetched from the store per scan while writing.
const SCAN_CHUNK: usize = 1_024;
pub const SNAPSHOT_SUFFIX: &str = ".snap";
pub const TMP_SUFFIX: &str = ".tmp";

fn corrupt(msg: impl Into<String>) -> StoreError {
    StoreError::Snapshot(msg.into())
}

/// Writes bytes while hashing them.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.inner.write_all(bytes)
    }
}

/// Writes a complete snapshot of `view` to `dir/<file_stem>.snap`, atomically.
pub fn write_snapshot<R: KvRead + ?Sized>(
    view: &R,
    meta: &SnapshotMeta,
    dir: &Path,
    file_stem: &str,
) -> Result<PathBuf, StoreError> {
    let final_path = dir.join(format!("{file_stem}{SNAPSHOT_SUFFIX}"));
    let tmp_path = dir.join(format!("{file_stem}{SNAPSHOT_SUFFIX}{TMP_SUFFIX}"));
    let file = File::create(&tmp_path)?;
    let writer = write_stream(view, meta, BufWriter::new(file))?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    // Durability: contents on disk before the rename makes the file visible, and the rename on
    // disk (directory fsync) before anyone is told the snapshot exists.
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp_path, &final_path)?;
    sync_dir(dir)?;
    Ok(final_path)
}

/// Streams a complete snapshot of `view` into `w` (magic, meta, records, end mark, checksum)
/// and returns the writer.
pub fn write_stream<R: KvRead + ?Sized, W: Write>(view: &R, meta: &SnapshotMeta, w: W) -> Result<W, StoreError> {
    let mut w = HashingWriter { inner: w, hasher: Sha256::new() };
    w.put(MAGIC)?;
    let meta_bytes = codec::encode(meta)?;
    w.put(&len_u32(meta_bytes.len())?.to_be_bytes())?;
    w.put(&meta_bytes)?;
    for table in Table::ALL {
        let mut start: Vec<u8> = Vec::new();
        loop {
            let chunk = view.scan(table, &[], &start, SCAN_CHUNK)?;
            let Some((last, _)) = chunk.last() else { break };
            start = last.clone();
            start.push(0); // the smallest key after `last`
            let full = chunk.len() == SCAN_CHUNK;
            for (k, v) in &chunk {
                w.put(&[table.id()])?;
                w.put(&len_u32(k.len())?.to_be_bytes())?;
                w.put(k)?;
                w.put(&len_u32(v.len())?.to_be_bytes())?;
                w.put(v)?;
            }
            if !full {
                break;
            }
        }
    }
    w.put(&[END])?;
    let digest = w.hasher.finalize();
    let mut inner = w.inner;
    inner.write_all(&digest)?;
    Ok(inner)
}

fn len_u32(n: usize) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| corrupt(format!("record of {n} bytes is too large for a snapshot")))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One snapshot record: the table, the key and the value.
pub type Record = (Table, Vec<u8>, Vec<u8>);

/// Streams a snapshot file's records, checking the checksum at the end.
pub struct SnapshotReader<R: Read> {
    inner: R,
    hasher: Sha256,
    done: bool,
}

impl SnapshotReader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<(Self, SnapshotMeta), StoreError> {
        let file = OpenOptions::new().read(true).open(path)?;
        Self::new(BufReader::new(file))
    }
}

impl<R: Read> SnapshotReader<R> {
    pub fn new(inner: R) -> Result<(Self, SnapshotMeta), StoreError> {
        let mut r = SnapshotReader { inner, hasher: Sha256::new(), done: false };
        let mut magic = [0u8; 8];
        r.take(&mut magic)?;
        if &magic != MAGIC {
            return Err(corrupt("not a Vexil snapshot file (bad magic)"));
        }
        let meta_len = r.take_u32()? as usize;
        if meta_len > SNAPSHOT_RECORD_BYTES_MAX {
            return Err(corrupt(format!("meta length {meta_len} is implausible")));
        }
        let meta_bytes = r.take_vec(meta_len)?;
        let meta = codec::decode(&meta_bytes)?;
        Ok((r, meta))
    }

    fn take(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt("file ends early (torn or truncated)"),
            _ => StoreError::Io(e),
        })?;
        self.hasher.update(&*buf);
        Ok(())
    }

    fn take_u32(&mut self) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn take_vec(&mut self, len: usize) -> Result<Vec<u8>, StoreError> {
        let mut v = vec![0u8; len];
        self.take(&mut v)?;
        Ok(v)
    }

    /// The next record, or `None` after the last one once the checksum has verified.
    pub fn next_record(&mut self) -> Result<Option<Record>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.take(&mut tag)?;
        if tag[0] == END {
            let expected: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            let mut stored = [0u8; 32];
            self.inner.read_exact(&mut stored).map_err(|_| corrupt("checksum missing (torn file)"))?;
            if stored != expected {
                return Err(corrupt("checksum mismatch: the file is damaged"));
            }
            self.done = true;
            return Ok(None);
        }
        let table = Table::from_id(tag[0]).ok_or_else(|| corrupt(format!("unknown table id {}", tag[0])))?;
        let mut field = || -> Result<Vec<u8>, StoreError> {
            let len = self.take_u32()? as usize;
            if len > SNAPSHOT_RECORD_BYTES_MAX {
                return Err(corrupt(format!("record length {len} is implausible")));
            }
            self.take_vec(len)
        };
        let key = field()?;
        let value = field()?;
        Ok(Some((table, key, value)))
    }
}

/// Reads every record to check the checksum; returns the meta.
pub fn verify_file(path: &Path) -> Result<SnapshotMeta, StoreError> {
    let (mut r, meta) = SnapshotReader::open(path)?;
    while r.next_record()?.is_some() {}
    Ok(meta)
}

/// Only `[A-Za-z0-9_-]` of a snapshot id become part of a file name (ids come from the leader).
pub fn file_stem(snapshot_id: &str) -> String {
    snapshot_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::tests::MemKv;
    use crate::types::StoredMembership;

    fn sample() -> MemKv {
        let kv = MemKv::default();
        {
            let mut m = kv.0.borrow_mut();
            for i in 0..3000u32 {
                m.insert((Table::Flags, format!("ns\0f{i:05}").into_bytes()), vec![i as u8; 10]);
            }
            m.insert((Table::Meta, b"applied".to_vec()), vec![1, 2, 3]);
            m.insert((Table::Audit, vec![0, 1]), vec![]);
        }
        kv
    }

    fn meta() -> SnapshotMeta {
        SnapshotMeta { last_log_id: None, last_membership: StoredMembership::default(), snapshot_id: "1-2-3".into() }
    }

    #[test]
    fn round_trips_every_record_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = sample();
        let path = write_snapshot(&kv, &meta(), dir.path(), "s").expect("write");
        let (mut r, m) = SnapshotReader::open(&path).expect("open");
        assert_eq!(m, meta());
        let mut got = Vec::new();
        while let Some((t, k, v)) = r.next_record().expect("record") {
            got.push(((t, k), v));
        }
        let want: Vec<_> = kv.0.borrow().clone().into_iter().collect();
        assert_eq!(got, want);
        assert!(!dir.path().join("s.snap.tmp").exists());
    }

    #[test]
    fn a_damaged_or_torn_file_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_snapshot(&sample(), &meta(), dir.path(), "s").expect("write");
        let mut bytes = fs::read(&path).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&path, &bytes).expect("write");
        assert!(verify_file(&path).is_err(), "a flipped bit fails the checksum");
        bytes[mid] ^= 1;
        bytes.truncate(bytes.len() - 40);
        fs::write(&path, &bytes).expect("write");
        let err = verify_file(&path).expect_err("torn");
        assert!(err.to_string().contains("torn") || err.to_string().contains("early"), "{err}");
    }

    #[test]
    fn snapshot_ids_cannot_escape_the_directory() {
        assert_eq!(file_stem("../../etc/passwd"), "etcpasswd");
        assert_eq!(file_stem("3-17-abc_1"), "3-17-abc_1");
    }
}

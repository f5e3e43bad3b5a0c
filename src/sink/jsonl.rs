use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Delivery, Message, Sink, SinkError};

/// Appends one JSON object per message to a file (`id`, `key`, `version`,
/// `payload` as a JSON value when it parses, else a string), and flushes and
/// fsyncs before confirming.
///
/// A crash can leave a partly written last line; it was never confirmed, so
/// opening the file again truncates it.
#[derive(Clone)]
pub struct JsonLinesSink {
    path: PathBuf,
    /// One writer, so batches from concurrent lanes do not interleave lines;
    /// `None` until the first delivery opens the file.
    file: Arc<Mutex<Option<BufWriter<File>>>>,
}

impl JsonLinesSink {
    /// Opens (or creates) `path` for appending, now.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = open_for_append(&path)?;
        Ok(Self {
            path,
            file: Arc::new(Mutex::new(Some(file))),
        })
    }

    /// A sink that opens (or creates) `path` at its first delivery, so a
    /// run refused before it delivers anything leaves no file behind.
    /// [`Sink::check`] makes sure the directory exists.
    pub fn lazy(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            file: Arc::new(Mutex::new(None)),
        }
    }

    /// `pattern` with `{instance}` replaced by `instance_id`, so that
    /// several processes sharing a run each write a file of their own.
    pub fn instance_path(pattern: &Path, instance_id: &str) -> PathBuf {
        PathBuf::from(pattern.to_string_lossy().replace("{instance}", instance_id))
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_for_append(path: &Path) -> std::io::Result<BufWriter<File>> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    truncate_partial_line(&mut file)?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

fn truncate_partial_line(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // Scan back from the end for the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep != len {
                file.set_len(keep)?;
            }
            return Ok(());
        }
        end = start;
    }
    file.set_len(0)
}

#[async_trait]
impl Sink for JsonLinesSink {
    fn name(&self) -> &str {
        "jsonl"
    }

    async fn check(&self) -> Result<(), SinkError> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if dir.is_dir() {
            return Ok(());
        }
        Err(crate::model::ConfigError::new(
            "sink.path",
            format!(
                "{}: the directory {} does not exist",
                self.path.display(),
                dir.display()
            ),
        )
        .into())
    }

    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        let file = Arc::clone(&self.file);
        let path = self.path.clone();
        let batch = batch.to_vec();
        let err = |e: std::io::Error| SinkError::fatal("jsonl", e);
        // File I/O and fsync block: keep them off the async threads.
        tokio::task::spawn_blocking(move || {
            let mut slot = file.lock().unwrap_or_else(|e| e.into_inner());
            let w = match &mut *slot {
                Some(w) => w,
                empty => empty.insert(open_for_append(&path)?),
            };
            for m in &batch {
                let payload = serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&m.payload).into_owned())
                    });
                let line = serde_json::json!({
                    "id": m.id, "key": m.key, "version": m.version, "payload": payload,
                });
                serde_json::to_writer(&mut *w, &line).map_err(std::io::Error::other)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
            w.get_ref().sync_data()?;
            Ok::<_, std::io::Error>(batch.len() as u64)
        })
        .await
        .map_err(|e| SinkError::fatal("jsonl", e))?
        .map_err(err)
        .map(|n| Delivery {
            confirmed: n,
            duplicates: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        JsonLinesSink::open(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
        std::fs::write(&path, b"{\"a\":").unwrap();
        JsonLinesSink::open(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }
}

//! The audit spool: events on local disk between the change and BigQuery, so that neither a
//! crash nor a BigQuery outage loses one.
//!
//! A spool is a directory of segments, `<millis>-<pid>-<random>.jsonl`, one JSON event per line.
//! A process appends to its own open segment, holding an exclusive lock on it (`flock`), and
//! syncs each line to disk before the caller goes on. A flush first seals that segment (closes
//! it, which releases the lock) and then claims every segment it can lock — its own sealed ones
//! and those of processes that ended or crashed — so a segment still being written by a live
//! process is never taken. A claimed segment is deleted only after BigQuery took its rows.
//!
//! Limits: the directory must be local (locks on network filesystems are unreliable); a crash in
//! the middle of writing a line loses that one event (the torn line is skipped, with a warning).
//! In Kubernetes the chart mounts an `emptyDir` (survives container restarts, not pod deletion);
//! `audit.spool.persistentVolumeClaim` keeps it across pods.

use super::Event;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A process's side of the spool.
pub struct Spool {
    dir: PathBuf,
    current: Option<File>,
    in_current: usize,
}

impl Spool {
    /// Opens (creates) the spool directory.
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            current: None,
            in_current: 0,
        })
    }

    /// Appends one event and syncs it to disk.
    pub fn append(&mut self, e: &Event) -> std::io::Result<()> {
        if self.current.is_none() {
            let name = format!(
                "{}-{}-{:08x}.jsonl",
                chrono::Utc::now().timestamp_millis(),
                std::process::id(),
                fastrand::u32(..)
            );
            let f = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(self.dir.join(name))?;
            f.lock()?;
            self.current = Some(f);
            self.in_current = 0;
        }
        let mut line = serde_json::to_string(e).map_err(std::io::Error::other)?;
        line.push('\n');
        let f = self.current.as_mut().expect("opened above");
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        self.in_current += 1;
        Ok(())
    }

    /// Events in this process's open segment.
    pub fn pending(&self) -> usize {
        self.in_current
    }

    /// Closes the open segment (a flush may then claim it) and lists every segment.
    pub fn seal(&mut self) -> Vec<PathBuf> {
        self.current = None;
        self.in_current = 0;
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// A segment this process holds the lock of.
pub struct Claimed {
    path: PathBuf,
    file: File,
}

/// Claims `path` unless a live process is writing it (or another flush has it).
pub fn claim(path: &Path) -> Option<Claimed> {
    let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
    file.try_lock().ok()?;
    Some(Claimed {
        path: path.to_path_buf(),
        file,
    })
}

impl Claimed {
    /// The segment's events (a torn last line skipped).
    pub fn read(&mut self) -> std::io::Result<Vec<Event>> {
        let mut text = String::new();
        self.file.read_to_string(&mut text)?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str(line) {
                Ok(e) => out.push(e),
                Err(err) => tracing::warn!(segment = %self.path.display(), error = %err,
                    "audit spool: skipped a torn line (a crash while it was written)"),
            }
        }
        Ok(out)
    }

    /// Deletes the segment (its rows are in BigQuery).
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(segment = %self.path.display(), error = %e, "audit spool: could not delete a written segment; its rows would be skipped as duplicates");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Action;

    fn ev(n: &str) -> Event {
        Event::new(Action::ViewCreated, "IngestedTable a/b", n, "", "k")
    }

    #[test]
    fn a_live_segment_is_not_claimed_a_sealed_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Spool::open(dir.path()).unwrap();
        let e = ev("p.d.v1");
        writer.append(&e).unwrap();
        let mut other = Spool::open(dir.path()).unwrap();
        let listed = other.seal();
        assert_eq!(listed.len(), 1);
        assert!(claim(&listed[0]).is_none(), "the writer holds it");
        let listed = writer.seal();
        let mut c = claim(&listed[0]).expect("sealed");
        assert!(claim(&listed[0]).is_none(), "one claim at a time");
        assert_eq!(c.read().unwrap(), vec![e]);
        c.remove();
        assert!(writer.seal().is_empty());
    }

    #[test]
    fn a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Spool::open(dir.path()).unwrap();
        w.append(&ev("p.d.v1")).unwrap();
        let path = w.seal().remove(0);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"tor").unwrap();
        let mut c = claim(&path).unwrap();
        assert_eq!(c.read().unwrap().len(), 1);
    }
}

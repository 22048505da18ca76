//! `ProjectLock`: one writer per project. Every command that may write outputs, `wanx.lock` or the
//! blob store (`wanx build` except `--dry-run`, `wanx verify`, later `wanx watch`) holds an exclusive
//! OS file lock on `.wanx/lock` for as long as it runs. A second such command waits for it, saying so
//! on stderr, or with `--no-wait` stops at once with [`Error::Busy`] (exit 5).
//!
//! The lock is the operating system's (`flock` on Unix, `LockFileEx` on Windows, through std's
//! `File::lock`), so it is released when the process ends however it ends: a crash or a `kill -9`
//! never leaves a stale lock behind. The file is never deleted (deleting a lock file races with a
//! process that has just opened it); it holds the holder's pid, for the waiting message only.
//!
//! Why it matters: two builds that plan at the same time both see a task as missing and both pay
//! for it (DESIGN invariant 1), and both rewrite `wanx.lock` from their own snapshot.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::term::printer::Printer;

/// The lock file's name inside the state directory.
pub const FILE_NAME: &str = "lock";

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct ProjectLock {
    file: File,
}

impl ProjectLock {
    /// Takes the project's lock in `state_dir` (normally `.wanx`, created if needed). If another
    /// process holds it: with `wait`, prints who holds it and blocks until it is released; without,
    /// returns [`Error::Busy`]. Blocks the calling thread: from async code use [`ProjectLock::acquire_async`].
    pub fn acquire(state_dir: &Path, wait: bool, printer: &Printer) -> Result<ProjectLock> {
        crate::project::state_dir::create(state_dir)
            .map_err(|e| Error::io("could not create", state_dir, e))?;
        let path = state_dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("could not open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = holder_pid(&mut file);
                if !wait {
                    return Err(Error::Busy { pid });
                }
                let who = pid.map_or_else(
                    || "another wanx".to_owned(),
                    |pid| format!("another wanx (pid {pid})"),
                );
                printer.warn(
                    "Waiting",
                    &format!("for {who} to finish with this project…"),
                );
                file.lock()
                    .map_err(|e| Error::io("could not lock", &path, e))?;
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("could not lock", &path, e)),
        }
        // Ours now: record who holds it. A failure here only loses the pid in a waiter's message.
        let _ = write_pid(&mut file);
        Ok(ProjectLock { file })
    }

    /// [`ProjectLock::acquire`] on a blocking thread, so waiting never stalls the async runtime.
    pub async fn acquire_async(
        state_dir: &Path,
        wait: bool,
        printer: &Printer,
    ) -> Result<ProjectLock> {
        let state_dir = state_dir.to_path_buf();
        let printer = *printer;
        tokio::task::spawn_blocking(move || ProjectLock::acquire(&state_dir, wait, &printer))
            .await
            .map_err(|e| Error::Other(format!("taking the project lock failed: {e}")))?
    }
}

impl Drop for ProjectLock {
    fn drop(&mut self) {
        // Clear the pid while still holding the lock; closing the file releases it.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    write!(file, "{}", std::process::id())?;
    file.flush()
}

/// The pid the holder wrote, if it can be read (Windows locks forbid reading a locked range).
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> Printer {
        Printer {
            quiet: true,
            verbose: 0,
            color: false,
            tty: false,
        }
    }

    #[test]
    fn a_second_holder_is_refused_without_waiting_and_admitted_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".wanx");
        let first = ProjectLock::acquire(&state, false, &quiet()).unwrap();
        assert_eq!(
            std::fs::read_to_string(state.join(FILE_NAME)).unwrap(),
            std::process::id().to_string()
        );
        // std's file locks are per open file description, so a second open in this process conflicts.
        match ProjectLock::acquire(&state, false, &quiet()) {
            Err(Error::Busy { pid }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(first);
        let again = ProjectLock::acquire(&state, false, &quiet()).unwrap();
        drop(again);
    }

    #[test]
    fn a_waiter_gets_the_lock_when_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".wanx");
        let first = ProjectLock::acquire(&state, false, &quiet()).unwrap();
        let state2 = state.clone();
        let waiter = std::thread::spawn(move || ProjectLock::acquire(&state2, true, &quiet()));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            !waiter.is_finished(),
            "the waiter waits while the lock is held"
        );
        drop(first);
        waiter.join().unwrap().unwrap();
    }
}

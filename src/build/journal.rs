//! Resuming the journal before planning: the tasks an earlier build submitted but never saw through
//! are finished and their images cached, so planning restores them instead of paying again.

use super::connect::{connect, latency_history, poll_policy, task_timeout};
use super::events::event_printer;
use crate::cli::BuildArgs;
use crate::compile::cache_key::Provider;
use crate::error::Result;

use crate::executor::{Executor, PollPolicy, Resumed, ResumedKey};
use crate::money::Money;
use crate::planner::Project;
use crate::project::lock::LockFile;
use crate::store::JournalEntry;
use crate::store::Store;
use crate::store::blob_store::BlobStore;
use crate::term::printer::Printer;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Finishes tasks an earlier build journaled but never saw through (a crash, a kill, a second
/// Ctrl-C): their images go into the cache, so planning restores them instead of paying again.
pub(super) async fn resume_journal(
    project: &Project,
    args: &BuildArgs,
    printer: &Printer,
    cancel: &Arc<AtomicBool>,
) -> Result<Resumption> {
    let mut resumption = Resumption::default();
    let state_dir = project.manifest.state_dir();
    if !state_dir.join(crate::store::DB_FILE).exists() {
        return Ok(resumption);
    }
    let mut store = Store::open(&state_dir)?;
    let entries = store.journal_open()?;
    if entries.is_empty() {
        return Ok(resumption);
    }
    announce(printer, &entries);
    // Warn first, then forget: a crash in between repeats the warning instead of losing it (the
    // executor would close these entries at once but their warnings print only after every other
    // journaled task has been resumed).
    let (unsent, entries): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|e| e.remote_task_id.is_none());
    for entry in unsent {
        warn_billed_twice(printer, &entry.task_id);
        store.journal_finish(&[entry.id])?;
    }
    if entries.is_empty() {
        return Ok(resumption);
    }
    let (client, emulator) = match connect(project, args.selection.emulate, printer).await {
        Ok(connected) => connected,
        Err(e) => {
            printer.warn(
                "Skipping",
                &format!("cannot resume journaled tasks now: {e}"),
            );
            return Ok(resumption);
        }
    };
    let emulated =
        args.selection.emulate || Provider::from_base_url(client.base_url()).is_emulated();
    let models: Vec<&str> = entries.iter().map(|e| e.model.as_str()).collect();
    let latency_history = latency_history(&store, &models)?;
    let executor = Executor {
        root: project.manifest.root.clone(),
        store: Arc::new(Mutex::new(store)),
        blobs: Arc::new(BlobStore::new(state_dir.join("blobs"))),
        lock: Arc::new(Mutex::new(LockFile::default())),
        lock_path: project.manifest.lock_path(),
        client: Some(client),
        provider: project.provider(args.selection.emulate).identity(),
        poll: if emulated {
            PollPolicy::EMULATED
        } else {
            poll_policy(project)
        },
        task_timeout: task_timeout(project),
        jobs: 64,
        on_event: event_printer(printer),
        cancel: Arc::clone(cancel),
        latency_history,
        before_submit: None,
        resumed: HashMap::new(),
        journaled: HashSet::new(),
    };
    for resumed in executor.resume(entries, &project.registry).await {
        resumption.book(resumed, printer);
    }
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    Ok(resumption)
}

/// What resuming the journal booked, for the build's figures: a task an earlier build submitted is a
/// generation, paid once, by whichever build first saw the service bill it.
#[derive(Default)]
pub(super) struct Resumption {
    /// Keys whose images the resume cached, with what this build booked for each.
    pub(super) keys: HashMap<String, (Money, u32)>,
    /// Keys still journaled: not to be submitted again by this build.
    pub(super) journaled: HashSet<String>,
    pub(super) spent: Money,
    pub(super) images_billed: u32,
}

impl Resumption {
    /// Books what resuming one key brought (its images cached, kept in part, lost, or still
    /// pending) and says so.
    fn book(&mut self, resumed: ResumedKey, printer: &Printer) {
        self.spent += resumed.spent;
        self.images_billed += resumed.images_billed;
        let booked = if resumed.spent > Money::ZERO {
            format!("billed {}, counted in this build's spend", resumed.spent)
        } else {
            "paid for, and counted, by an earlier build".to_owned()
        };
        match resumed.outcome {
            Resumed::Recovered { task_id, images } => {
                printer.status(
                "Recovered",
                &format!("{task_id}: {images} image(s) of a task an earlier build submitted ({booked})"),
            );
                self.keys
                    .insert(resumed.key, (resumed.spent, resumed.images_billed));
            }
            Resumed::Partial {
                task_id,
                images,
                of,
            } => {
                printer.status(
                "Kept",
                &format!(
                    "{task_id}: {images} of {of} images of a task an earlier build submitted ({booked}); only the {} missing will be requested",
                    of - images
                ),
            );
            }
            Resumed::Lost { task_id, reason } => {
                printer.warn("Lost", &format!("{task_id}: {reason}"));
            }
            Resumed::MaybeBilledTwice { task_id } => warn_billed_twice(printer, &task_id),
            Resumed::Pending { task_id, reason } => {
                self.journaled.insert(resumed.key);
                printer.warn("Pending", &format!("{task_id}: {reason}; still journaled"));
            }
        }
    }
}

/// Says how many tasks (and requests) earlier builds left journaled.
fn announce(printer: &Printer, entries: &[JournalEntry]) {
    let tasks: HashSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    printer.status(
        "Resuming",
        &format!(
            "{} task(s) journaled by an earlier build{}",
            tasks.len(),
            if tasks.len() == entries.len() {
                String::new()
            } else {
                format!(" ({} requests)", entries.len())
            }
        ),
    );
}

pub(super) fn warn_billed_twice(printer: &Printer, task_id: &str) {
    printer.warn(
        "Warning",
        &format!("{task_id}: an earlier build was stopped while submitting it; it may have been billed twice"),
    );
}

//! `Session`: what a build has done so far (its summary, the reports, what failed and what was
//! built, what the resume of the journal booked), and what a waiting task needs once the tasks it
//! consumes have finished ([`Next`]), down to the executor's [`job`] for a decision.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::executor::dashscope::ProviderError;
use crate::executor::{Failure, FailureKind, Job, JobKind, Outcome};
use crate::money::Money;
use crate::planner::reconcile::{Action, Decision};
use crate::planner::{Project, Settled, Unit, Waiting};
use crate::report::{Summary, TaskReport, waiting_report};

use super::journal::Resumption;

/// What a build has done so far.
#[derive(Default)]
pub(super) struct Session {
    pub(super) summary: Summary,
    pub(super) reports: Vec<TaskReport>,
    pub(super) reported: HashSet<String>,
    /// Tasks that ended unsent (skipped, dropped): their dependants are skipped too, not failed.
    pub(super) unsent: HashSet<String>,
    pub(super) fatal: Option<ProviderError>,
    /// Keys the resume of the journal cached, with what it booked (see [`Executor::resumed`]).
    pub(super) resumed: HashMap<String, (Money, u32)>,
    /// Keys left journaled by the resume (see [`Executor::journaled`]).
    pub(super) journaled: HashSet<String>,
    /// Why each task is not fresh (src/planner/why.rs).
    pub(super) why: HashMap<String, Vec<crate::planner::why::Change>>,
    /// What restores saved, by model: images and their price (`wanx stats`).
    pub(super) saved_by_model: BTreeMap<String, (u32, Money)>,
    /// Tasks that failed in this build (id, key hex, message) and tasks that were built: the
    /// store keeps each task's last failure until it is built (`wanx gallery` shows it).
    pub(super) failures: Vec<(String, String, String)>,
    pub(super) built: Vec<String>,
}

impl Session {
    /// A session that starts with what the resume of the journal booked: it is this build's spend,
    /// whether or not a task still wants the key.
    pub(super) fn resumed(resumption: Resumption, emulated: bool) -> Session {
        Session {
            summary: Summary {
                currency: "CNY",
                emulated,
                spent: resumption.spent,
                images_generated: resumption.images_billed,
                ..Summary::default()
            },
            resumed: resumption.keys,
            journaled: resumption.journaled,
            ..Session::default()
        }
    }

    pub(super) fn report(&mut self, report: TaskReport) {
        if self.reported.insert(report.id.clone()) {
            self.reports.push(report);
        }
    }

    /// Reports a waiting task that ended unbuilt: skipped (never sent) or failed.
    pub(super) fn unbuilt(&mut self, w: &Waiting<'_>, failure: &Failure) {
        let status = if failure.unsent() {
            self.summary.skipped += 1;
            self.unsent.insert(w.task.id.clone());
            "skipped"
        } else {
            self.summary.failed += 1;
            "failed"
        };
        self.report(waiting_report(w, status, Some(failure.message.clone())));
    }

    /// Acts on a waiting task that a finished task settled: a decided one joins `decided` (and
    /// starts, if it needs work); one that can never be built is reported here and its outcome
    /// returned for the event printer.
    pub(super) fn settle<'a>(
        &mut self,
        project: &Project,
        settled: Settled<'a>,
        halted: bool,
        decided: &mut Vec<(Unit<'a>, Decision)>,
    ) -> Next {
        let (w, failure) = match settled {
            Settled::Decided(unit, d) => {
                let job = job(project, &unit, &d);
                decided.push((unit, d));
                return job.map_or(Next::Fresh, Next::Start);
            }
            Settled::Blocked(w, _) if halted => (
                w,
                Failure::skipped("not submitted: the build stopped before its inputs were ready"),
            ),
            // Dropped unsent (a newer save in `wanx watch`): nothing failed.
            Settled::Blocked(w, upstream) if self.unsent.contains(&upstream) => (
                w,
                Failure::skipped(&format!("not submitted: input `{upstream}` was not built")),
            ),
            Settled::Blocked(w, upstream) => (
                w,
                Failure::new(
                    FailureKind::Blocked,
                    format!("input `{upstream}` was not built"),
                ),
            ),
            Settled::Invalid(w, why) => (w, Failure::new(FailureKind::Blocked, why)),
        };
        self.unbuilt(&w, &failure);
        Next::Ended(Outcome {
            id: w.task.id.clone(),
            result: Err(failure),
        })
    }
}

/// What a settled waiting task needs next.
pub(super) enum Next {
    /// Its job: generate or restore.
    Start(Job),
    /// Nothing: it is fresh.
    Fresh,
    /// It ended unbuilt.
    Ended(Outcome),
}

/// The executor's job for a decision: `None` for a fresh task, which needs nothing done.
pub(super) fn job(project: &Project, u: &Unit<'_>, d: &Decision) -> Option<Job> {
    let kind = match &d.action {
        Action::Fresh => return None,
        Action::Restore {
            images,
            generated_at,
        } => JobKind::Restore {
            images: images.clone(),
            generated_at: *generated_at,
        },
        Action::Generate => JobKind::Generate,
    };
    Some(Job {
        id: u.task.id.clone(),
        key: u.key,
        compiled: u.compiled.clone(),
        output: u.task.output.clone(),
        pick: u.task.pick.clone().map(Arc::new),
        kind,
        media: u
            .compiled
            .media
            .iter()
            .map(|slot| slot.pointer.clone())
            .zip(u.media.iter().cloned())
            .collect(),
        inline_media: project.registry.takes_inline_media(&u.task.model),
    })
}

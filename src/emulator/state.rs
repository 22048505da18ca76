//! The emulator's memory: one [`Task`] per accepted submission, whose status is a function of time
//! (so nothing has to drive it), the quota windows, the uploads, and the books ([`State`]); plus
//! the service-shaped ids and timestamps.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::emulator::faults::FaultPlan;
use crate::emulator::ledger::{Ledger, ModelLedger, RecordedRequest, TaskSpan};
use crate::emulator::request::Submission;
use crate::money::Money;
use crate::registry::Family;
use crate::size::Size;

/// The window of the submit-rate quota.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "PENDING",
            Phase::Running => "RUNNING",
            Phase::Succeeded => "SUCCEEDED",
            Phase::Failed => "FAILED",
            Phase::Canceled => "CANCELED",
        }
    }

    pub(crate) fn is_terminal(self) -> bool {
        !matches!(self, Phase::Pending | Phase::Running)
    }
}

/// How a task ends once its latency has passed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    Success,
    /// The whole task fails with `output.code`/`message`.
    Failed {
        code: String,
        message: String,
    },
    /// The last `failed` images fail (all of them: the task fails).
    Partial {
        failed: u32,
    },
}

/// The `results[]` entry of an image that failed, as the service writes it (§3).
const PARTIAL_CODE: &str = "InternalError.Timeout";
const PARTIAL_MESSAGE: &str = "An internal timeout error has occured during execution, please try again later or contact service support.";

/// One submitted task.
#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) id: String,
    pub(crate) model: String,
    family: Family,
    price: Money,
    pub(crate) n: u32,
    pub(crate) size: Size,
    prompt: Option<String>,
    prompt_extend: bool,
    seed: Option<u64>,
    digest: blake3::Hash,
    submitted: Instant,
    submitted_wall: SystemTime,
    latency: Duration,
    outcome: Outcome,
    canceled: Option<Instant>,
    /// Its entry in its model's ledger timeline.
    timeline_index: usize,
}

impl Task {
    /// A task for `s`, rendering at `size`, that ends `latency` after `now` with `outcome`.
    pub(crate) fn new(
        id: String,
        s: Submission,
        size: Size,
        latency: Duration,
        outcome: Outcome,
        now: Instant,
    ) -> Task {
        Task {
            id,
            model: s.model,
            family: s.family,
            price: s.price,
            n: s.n,
            size,
            prompt: s.prompt,
            prompt_extend: s.prompt_extend,
            seed: s.seed,
            digest: s.digest,
            submitted: now,
            submitted_wall: SystemTime::now(),
            latency,
            outcome,
            canceled: None,
            timeline_index: 0,
        }
    }

    /// The time spent queued before RUNNING: the first tenth of the latency.
    fn queued(&self) -> Duration {
        self.latency / 10
    }

    pub(crate) fn phase(&self, now: Instant) -> Phase {
        if self.canceled.is_some_and(|at| now >= at) {
            return Phase::Canceled;
        }
        let elapsed = now.saturating_duration_since(self.submitted);
        if elapsed >= self.latency {
            if self.failed() == self.n {
                Phase::Failed
            } else {
                Phase::Succeeded
            }
        } else if elapsed >= self.queued() {
            Phase::Running
        } else {
            Phase::Pending
        }
    }

    /// When the task ended or will end.
    fn ended(&self) -> Instant {
        self.canceled.unwrap_or(self.submitted + self.latency)
    }

    /// The images that fail.
    fn failed(&self) -> u32 {
        match &self.outcome {
            Outcome::Success => 0,
            Outcome::Failed { .. } => self.n,
            Outcome::Partial { failed } => (*failed).min(self.n),
        }
    }

    /// Whether image `index` exists: the failed images are the last ones.
    pub(crate) fn has_image(&self, now: Instant, index: u32) -> bool {
        self.phase(now) == Phase::Succeeded && index < self.n - self.failed()
    }

    /// Whether the task is forgotten: `ttl` after its submission (§3, 24 h on the service).
    pub(crate) fn expired(&self, now: Instant, ttl: Duration) -> bool {
        now >= self.submitted + ttl
    }

    /// Whether its result URLs have expired: `ttl` after the task ended.
    pub(crate) fn urls_expired(&self, now: Instant, ttl: Duration) -> bool {
        now >= self.ended() + ttl
    }

    /// The seed material of image `index`. With a seed, image `i` is the picture of seed `seed + i`,
    /// as on the service (§2): `n=2, seed=42` repeats `n=1, seed=43` in its second image.
    pub(crate) fn image_material(&self, index: u32) -> Vec<u8> {
        let (tag, value) = self.seed.map_or((&b"index"[..], u64::from(index)), |seed| {
            (&b"seed"[..], seed + u64::from(index))
        });
        let mut material = self.digest.as_bytes().to_vec();
        material.extend_from_slice(tag);
        material.extend_from_slice(&value.to_le_bytes());
        material
    }

    /// When it was created, in milliseconds since the Unix epoch.
    pub(crate) fn created_ms(&self) -> u64 {
        epoch_ms(self.submitted_wall)
    }

    /// Its entry in `GET /tasks`, shaped as the service's recorded list (§3 "List").
    pub(crate) fn list_entry(&self, now: Instant, api_key_id: &str) -> Value {
        let phase = self.phase(now);
        let wall = |at: Instant| {
            epoch_ms(self.submitted_wall + at.saturating_duration_since(self.submitted))
        };
        let started = (phase != Phase::Pending).then(|| wall(self.submitted + self.queued()));
        let ended = phase.is_terminal().then(|| wall(self.ended()));
        json!({
            "api_key_id": api_key_id,
            "caller_parent_id": "1000000000000000",
            "caller_uid": "1000000000000000",
            "end_time": ended,
            "gmt_create": self.created_ms(),
            "model_name": self.model,
            "region": REGION,
            "request_id": self.id,
            "start_time": started,
            "status": phase.as_str(),
            "task_id": self.id,
            "user_api_unique_key": format!("apikey:v1:aigc:image-synthesis:{}", self.model),
        })
    }

    /// The task-query answer (without `request_id`), shaped as §3.
    pub(crate) fn to_json(&self, now: Instant, files_base: &str) -> Value {
        let phase = self.phase(now);
        let mut output = json!({
            "task_id": self.id,
            "task_status": phase.as_str(),
            "submit_time": format_time(self.submitted_wall),
        });
        if phase == Phase::Pending {
            return json!({ "output": output });
        }
        let wall = |at: Instant| {
            format_time(self.submitted_wall + at.saturating_duration_since(self.submitted))
        };
        if phase == Phase::Canceled {
            output["end_time"] = json!(wall(self.ended()));
            return json!({ "output": output });
        }
        output["scheduled_time"] = json!(wall(self.submitted + self.queued()));
        if phase == Phase::Running {
            output["task_metrics"] = json!({"TOTAL": self.n, "SUCCEEDED": 0, "FAILED": 0});
            return json!({ "output": output });
        }
        let failed = self.failed();
        let succeeded = self.n - failed;
        output["end_time"] = json!(wall(self.ended()));
        output["task_metrics"] = json!({"TOTAL": self.n, "SUCCEEDED": succeeded, "FAILED": failed});
        if phase == Phase::Failed {
            let (code, message) = match &self.outcome {
                Outcome::Failed { code, message } => (code.as_str(), message.as_str()),
                _ => (PARTIAL_CODE, PARTIAL_MESSAGE),
            };
            output["code"] = json!(code);
            output["message"] = json!(message);
            return json!({ "output": output });
        }
        output["results"] = (0..self.n)
            .map(|i| {
                if i < succeeded {
                    self.result(i, files_base)
                } else {
                    json!({"code": PARTIAL_CODE, "message": PARTIAL_MESSAGE})
                }
            })
            .collect();
        json!({"output": output, "usage": {"image_count": succeeded}})
    }

    /// One entry of `results`: the URL, and for the families that rewrite prompts, the prompts.
    fn result(&self, index: u32, files_base: &str) -> Value {
        let mut result = json!({"url": format!("{files_base}/{}/{index}.png", self.id)});
        let rewrites = matches!(
            self.family,
            Family::WanV2 | Family::Wan25 | Family::Qwen | Family::Wan25I2i
        );
        if let (true, Some(prompt)) = (rewrites, &self.prompt) {
            result["orig_prompt"] = json!(prompt);
            if self.prompt_extend {
                result["actual_prompt"] = json!(extended_prompt(prompt));
            }
        }
        result
    }
}

/// What the emulated prompt rewriter makes of a prompt: the prompt plus a fixed embellishment.
fn extended_prompt(prompt: &str) -> String {
    format!("{prompt}. Rich detail, soft natural light, balanced composition, high definition.")
}

/// An upload credential issued by `getPolicy` (§8).
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) model: String,
    pub(crate) upload_dir: String,
    pub(crate) signature: String,
    pub(crate) access_key_id: String,
    pub(crate) issued: Instant,
}

/// An object stored by `POST /oss`, addressed as `oss://KEY`.
#[derive(Debug)]
pub(crate) struct StoredObject {
    pub(crate) model: String,
    pub(crate) bytes: Bytes,
    pub(crate) stored: Instant,
}

/// Why a submission was not admitted.
#[derive(Debug, PartialEq)]
pub(crate) enum OverQuota {
    Concurrency,
    Rate,
}

/// The tasks, the quota windows, the uploads and the books.
pub(crate) struct State {
    /// Where the ledger's millisecond offsets count from.
    pub(crate) epoch: Instant,
    pub(crate) tasks: HashMap<String, Task>,
    /// Tasks not yet terminal, oldest first.
    active: Vec<String>,
    /// Per model, the accepted submissions of the last second.
    windows: HashMap<String, VecDeque<Instant>>,
    /// Per model, the submissions accepted so far (numbers the latency jitter).
    pub(crate) accepted: HashMap<String, u64>,
    pub(crate) faults: FaultPlan,
    /// Upload credentials by their `policy` string.
    pub(crate) policies: HashMap<String, Policy>,
    /// Uploaded objects by key.
    pub(crate) objects: HashMap<String, StoredObject>,
    pub(crate) ledger: Ledger,
    /// The exact sums behind the ledger's `amount` fields.
    spent: Money,
    spent_per_model: BTreeMap<String, Money>,
}

impl State {
    pub(crate) fn new(epoch: Instant, faults: FaultPlan) -> State {
        State {
            epoch,
            tasks: HashMap::new(),
            active: Vec::new(),
            windows: HashMap::new(),
            accepted: HashMap::new(),
            faults,
            policies: HashMap::new(),
            objects: HashMap::new(),
            ledger: Ledger::default(),
            spent: Money::ZERO,
            spent_per_model: BTreeMap::new(),
        }
    }

    /// Forgets every task, upload, window and count, and restarts the clock and the fault schedule.
    pub(crate) fn reset(&mut self, now: Instant) {
        let mut faults = std::mem::take(&mut self.faults);
        faults.reset();
        *self = State::new(now, faults);
    }

    fn offset_ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    pub(crate) fn record(&mut self, request: RecordedRequest) {
        self.ledger.submissions += 1;
        self.model_ledger(&request.model).submissions += 1;
        self.ledger.requests.push(request);
    }

    /// Counts a submission refused for its quota (the caller counts it as rejected too).
    pub(crate) fn throttled(&mut self, model: &str) {
        self.ledger.throttled += 1;
        self.model_ledger(model).throttled += 1;
    }

    /// Admits a submission for `model` at `now` under `(concurrency, submit_rps)`, counting it in
    /// the rate window; settles first, so tasks that ended by `now` free their slot.
    pub(crate) fn admit(
        &mut self,
        model: &str,
        now: Instant,
        (concurrency, submit_rps): (u32, u32),
    ) -> Result<(), OverQuota> {
        self.settle(now);
        if self.in_flight(model) >= concurrency as usize {
            return Err(OverQuota::Concurrency);
        }
        let window = self.windows.entry(model.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            window.pop_front();
        }
        if window.len() >= submit_rps as usize {
            return Err(OverQuota::Rate);
        }
        window.push_back(now);
        Ok(())
    }

    /// Tasks of `model` in progress, as of the last settle.
    fn in_flight(&self, model: &str) -> usize {
        self.active
            .iter()
            .filter(|id| self.tasks.get(*id).is_some_and(|t| t.model == model))
            .count()
    }

    pub(crate) fn insert(&mut self, mut task: Task) {
        let span = TaskSpan {
            task_id: task.id.clone(),
            submitted_ms: self.offset_ms(task.submitted),
            finished_ms: None,
        };
        let model = task.model.clone();
        let entry = self.model_ledger(&model);
        task.timeline_index = entry.timeline.len();
        entry.timeline.push(span);
        self.active.push(task.id.clone());
        self.tasks.insert(task.id.clone(), task);
        let in_flight = self.in_flight(&model) as u64;
        let entry = self.model_ledger(&model);
        entry.max_in_flight = entry.max_in_flight.max(in_flight);
    }

    /// Cancels a PENDING task (§3); `false` for any other task.
    pub(crate) fn cancel(&mut self, task_id: &str, now: Instant) -> bool {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return false;
        };
        if task.phase(now) != Phase::Pending {
            return false;
        }
        task.canceled = Some(now);
        self.ledger.canceled += 1;
        self.settle(now);
        true
    }

    /// Closes every task that has ended by `now`: frees its slot, times it, and bills its successful
    /// images, exactly once each.
    pub(crate) fn settle(&mut self, now: Instant) {
        let mut done = Vec::new();
        self.active.retain(|id| {
            let ended = self
                .tasks
                .get(id)
                .is_none_or(|task| task.phase(now).is_terminal());
            if ended {
                done.push(id.clone());
            }
            !ended
        });
        for id in done {
            self.close(&id, now);
        }
    }

    fn close(&mut self, task_id: &str, now: Instant) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let finished_ms = self.offset_ms(task.ended());
        let (model, index) = (task.model.clone(), task.timeline_index);
        let images = if task.phase(now) == Phase::Succeeded {
            task.n - task.failed()
        } else {
            0
        };
        let cost = task.price.times(images);
        if let Some(span) = self.model_ledger(&model).timeline.get_mut(index) {
            span.finished_ms = Some(finished_ms);
        }
        if images == 0 {
            return;
        }
        self.spent += cost;
        let model_spent = self.spent_per_model.entry(model.clone()).or_default();
        *model_spent += cost;
        let model_amount = model_spent.as_yuan();
        self.ledger.images_billed += u64::from(images);
        self.ledger.amount = self.spent.as_yuan();
        let entry = self.model_ledger(&model);
        entry.images_billed += u64::from(images);
        entry.amount = model_amount;
    }

    pub(crate) fn model_ledger(&mut self, model: &str) -> &mut ModelLedger {
        self.ledger.per_model.entry(model.to_owned()).or_default()
    }
}

/// Ids shaped like the service's (`8-4-4-4-12` hex), unique per emulator instance and across
/// restarts: blake3 of an instance nonce, a kind and a counter.
pub(crate) struct IdGenerator {
    nonce: [u8; 32],
    counter: AtomicU64,
}

impl IdGenerator {
    pub(crate) fn new(addr: SocketAddr) -> IdGenerator {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"wanx emulator ids");
        hasher.update(&started.to_le_bytes());
        hasher.update(&std::process::id().to_le_bytes());
        hasher.update(&INSTANCES.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        hasher.update(addr.to_string().as_bytes());
        IdGenerator {
            nonce: *hasher.finalize().as_bytes(),
            counter: AtomicU64::new(0),
        }
    }

    pub(crate) fn next(&self, kind: &str) -> String {
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.nonce);
        hasher.update(kind.as_bytes());
        hasher.update(&count.to_le_bytes());
        uuid_like(&hasher.finalize())
    }
}

/// The first 16 bytes as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
fn uuid_like(hash: &blake3::Hash) -> String {
    let hex = hash.to_hex();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The region the emulator says its tasks ran in.
pub(crate) const REGION: &str = "cn-beijing";

fn epoch_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch of the task list's `YYYYMMDDhhmmss` (read as UTC).
pub(crate) fn parse_list_time(text: &str) -> Option<u64> {
    if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |range: std::ops::Range<usize>| text[range].parse::<i64>().ok();
    let (y, mo, d) = (field(0..4)?, field(4..6)?, field(6..8)?);
    let (h, mi, s) = (field(8..10)?, field(10..12)?, field(12..14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + s).ok()
}

/// `2024-03-01 17:38:24.817`, in UTC.
pub(crate) fn format_time(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = crate::clock::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::request::{flash, validate};
    use crate::registry::TEXT2IMAGE;

    #[test]
    fn parses_list_times_as_utc() {
        assert_eq!(parse_list_time("20240301023804"), Some(1_709_260_684));
        assert_eq!(parse_list_time("19700101000000"), Some(0));
        assert_eq!(parse_list_time("2024030102380"), None);
        assert_eq!(parse_list_time("20241301023804"), None);
    }

    #[test]
    fn formats_times_like_the_service_in_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_709_314_704_817);
        assert_eq!(format_time(t), "2024-03-01 17:38:24.817");
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00.000");
        assert_eq!(crate::clock::civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(crate::clock::civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn ids_are_uuid_shaped_and_unique() {
        let ids = IdGenerator::new(SocketAddr::from(([127, 0, 0, 1], 1)));
        let a = ids.next("task");
        let b = ids.next("task");
        assert_ne!(a, b);
        let lengths: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12]);
        let other = IdGenerator::new(SocketAddr::from(([127, 0, 0, 1], 1)));
        assert_ne!(
            other.next("task"),
            IdGenerator::new(SocketAddr::from(([127, 0, 0, 1], 1))).next("task")
        );
    }

    fn task(latency_ms: u64, parameters: &Value, now: Instant) -> Task {
        let submission = validate(TEXT2IMAGE, &flash(parameters)).unwrap();
        let size = submission.size;
        Task::new(
            "t-1".into(),
            submission,
            size,
            Duration::from_millis(latency_ms),
            Outcome::Success,
            now,
        )
    }

    #[test]
    fn a_task_is_pending_then_running_then_succeeded() {
        let t0 = Instant::now();
        let task = task(1000, &json!({"n": 2}), t0);
        let at = |ms| task.to_json(t0 + Duration::from_millis(ms), "http://h/files");
        let pending = at(50);
        assert_eq!(pending["output"]["task_status"], "PENDING");
        assert!(pending["output"].get("scheduled_time").is_none());
        let running = at(500);
        assert_eq!(running["output"]["task_status"], "RUNNING");
        assert_eq!(
            running["output"]["task_metrics"],
            json!({"TOTAL": 2, "SUCCEEDED": 0, "FAILED": 0})
        );
        assert!(running["output"].get("results").is_none() && running.get("usage").is_none());
        let done = at(1000);
        assert_eq!(done["output"]["task_status"], "SUCCEEDED");
        assert_eq!(done["usage"], json!({"image_count": 2}));
        let results = done["output"]["results"].as_array().unwrap();
        assert_eq!(results[1]["url"], "http://h/files/t-1/1.png");
        assert_eq!(results[0]["orig_prompt"], "a cat");
        assert!(
            results[0]["actual_prompt"]
                .as_str()
                .unwrap()
                .starts_with("a cat")
        );
        assert!(done["output"]["end_time"].as_str().unwrap().len() == 23);
    }

    #[test]
    fn no_actual_prompt_without_prompt_extend() {
        let t0 = Instant::now();
        let done = task(0, &json!({"prompt_extend": false}), t0).to_json(t0, "http://h/files");
        let result = &done["output"]["results"][0];
        assert_eq!(result["orig_prompt"], "a cat");
        assert!(result.get("actual_prompt").is_none());
    }

    #[test]
    fn image_i_of_seed_s_is_image_0_of_seed_s_plus_i() {
        let t0 = Instant::now();
        let two = task(0, &json!({"n": 2, "seed": 42}), t0);
        let one = task(0, &json!({"n": 1, "seed": 43}), t0);
        assert_eq!(two.image_material(1), one.image_material(0));
        assert_ne!(two.image_material(0), two.image_material(1));
    }

    #[test]
    fn settling_bills_each_task_once() {
        let t0 = Instant::now();
        let mut state = State::new(t0, FaultPlan::default());
        state.insert(task(100, &json!({"n": 3}), t0));
        state.settle(t0);
        assert_eq!(state.ledger.images_billed, 0);
        state.settle(t0 + Duration::from_millis(100));
        state.settle(t0 + Duration::from_millis(200));
        assert_eq!(state.ledger.images_billed, 3);
        assert!((state.ledger.amount - 0.42).abs() < 1e-12);
        assert_eq!(state.ledger.per_model["wan2.2-t2i-flash"].images_billed, 3);
    }

    fn failing(outcome: Outcome, n: u32, t0: Instant) -> Task {
        let submission = validate(TEXT2IMAGE, &flash(&json!({"n": n}))).unwrap();
        let size = submission.size;
        Task::new("t-2".into(), submission, size, Duration::ZERO, outcome, t0)
    }

    #[test]
    fn a_partial_failure_succeeds_with_error_entries_and_bills_the_successes() {
        let t0 = Instant::now();
        let mut state = State::new(t0, FaultPlan::default());
        state.insert(failing(Outcome::Partial { failed: 1 }, 3, t0));
        state.settle(t0);
        let done = state.tasks["t-2"].to_json(t0, "http://h/files");
        assert_eq!(done["output"]["task_status"], "SUCCEEDED");
        assert_eq!(done["usage"]["image_count"], 2);
        assert_eq!(done["output"]["task_metrics"]["FAILED"], 1);
        let results = done["output"]["results"].as_array().unwrap();
        assert!(results[1]["url"].is_string() && results[2].get("url").is_none());
        assert_eq!(results[2]["code"], PARTIAL_CODE);
        assert!(!state.tasks["t-2"].has_image(t0, 2));
        assert_eq!(state.ledger.images_billed, 2);
    }

    #[test]
    fn a_failed_task_has_its_code_and_no_usage_and_bills_nothing() {
        let t0 = Instant::now();
        let mut state = State::new(t0, FaultPlan::default());
        let outcome = Outcome::Failed {
            code: "DataInspectionFailed".into(),
            message: "Output data may contain inappropriate content.".into(),
        };
        state.insert(failing(outcome, 2, t0));
        state.settle(t0);
        let done = state.tasks["t-2"].to_json(t0, "http://h/files");
        assert_eq!(done["output"]["task_status"], "FAILED");
        assert_eq!(done["output"]["code"], "DataInspectionFailed");
        assert!(done.get("usage").is_none() && done["output"].get("results").is_none());
        assert_eq!(state.ledger.images_billed, 0);
        let all = failing(Outcome::Partial { failed: 9 }, 2, t0).to_json(t0, "http://h");
        assert_eq!(
            all["output"]["task_status"], "FAILED",
            "no image left: the task fails"
        );
    }

    #[test]
    fn quotas_count_tasks_in_progress_and_a_sliding_second() {
        let t0 = Instant::now();
        let mut state = State::new(t0, FaultPlan::default());
        let model = "wan2.2-t2i-flash";
        assert_eq!(state.admit(model, t0, (1, 2)), Ok(()));
        state.insert(task(100, &json!({"n": 1}), t0));
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            state.admit(model, at(50), (1, 2)),
            Err(OverQuota::Concurrency)
        );
        assert_eq!(
            state.admit(model, at(100), (1, 2)),
            Ok(()),
            "the task ended at 100 ms"
        );
        assert_eq!(state.admit(model, at(200), (5, 2)), Err(OverQuota::Rate));
        assert_eq!(
            state.admit(model, at(1000), (5, 2)),
            Ok(()),
            "the first left the window"
        );
        assert_eq!(state.ledger.per_model[model].max_in_flight, 1);
        assert_eq!(
            state.ledger.per_model[model].timeline,
            [TaskSpan {
                task_id: "t-1".into(),
                submitted_ms: 0,
                finished_ms: Some(100)
            }]
        );
    }

    #[test]
    fn only_a_pending_task_can_be_canceled() {
        let t0 = Instant::now();
        let mut state = State::new(t0, FaultPlan::default());
        state.insert(task(1000, &json!({"n": 1}), t0));
        assert!(!state.cancel("nope", t0));
        assert!(state.cancel("t-1", t0 + Duration::from_millis(10)));
        assert!(!state.cancel("t-1", t0 + Duration::from_millis(20)));
        let later = t0 + Duration::from_secs(5);
        let body = state.tasks["t-1"].to_json(later, "http://h");
        assert_eq!(body["output"]["task_status"], "CANCELED");
        state.settle(later);
        assert_eq!((state.ledger.canceled, state.ledger.images_billed), (1, 0));
        state.insert(Task {
            id: "t-3".into(),
            ..task(1000, &json!({"n": 1}), t0)
        });
        assert!(
            !state.cancel("t-3", t0 + Duration::from_millis(500)),
            "RUNNING"
        );
    }
}

//! `Project`: a temp project, an emulator for it, and a way to run `wanx` in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wanx::emulator::{Emulator, EmulatorConfig, Ledger};

/// `wanx.lock` (the format the README documents).
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    #[serde(rename = "task", default)]
    pub tasks: BTreeMap<String, LockedTask>,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct LockedTask {
    pub key: String,
    pub model: String,
    pub images: u32,
    pub cost: String,
    pub generated_at: i64,
    pub outputs: Vec<LockedOutput>,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct LockedOutput {
    pub path: String,
    pub blake3: String,
    pub size: u64,
}

pub struct Project {
    dir: tempfile::TempDir,
    emulator: Emulator,
    runtime: tokio::runtime::Runtime,
}

/// What one run of `wanx` did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn success(&self) -> &Run {
        assert_eq!(
            self.code, 0,
            "wanx failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn status(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A `wanx` started in the background.
pub struct Running(std::process::Child);

impl Running {
    pub fn wait(self) -> Run {
        self.0.wait_with_output().unwrap().into()
    }
}

/// Starts a command with its output captured, without waiting for it.
pub trait SpawnCaptured {
    fn output_async(&mut self) -> Running;
}

impl SpawnCaptured for Command {
    fn output_async(&mut self) -> Running {
        Running(
            self.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Project {
    /// An empty project (`wanx.toml` empty) with an emulator of negligible latency.
    pub fn new() -> Project {
        Project::with_emulator(EmulatorConfig {
            latency: std::time::Duration::from_millis(20),
            ..EmulatorConfig::default()
        })
    }

    /// A project whose emulator is configured by `toml` (the `wanx emulator --config` format); the
    /// latency is 20 ms unless it says otherwise.
    pub fn with_emulator_toml(toml: &str) -> Project {
        let text = if toml.contains("latency_ms") {
            toml.to_owned()
        } else {
            format!("latency_ms = 20\n{toml}")
        };
        Project::with_emulator(
            EmulatorConfig::from_toml(&text).unwrap_or_else(|e| panic!("bad emulator config: {e}")),
        )
    }

    /// An empty project whose emulator takes `latency` from submission to result.
    pub fn with_latency(latency: std::time::Duration) -> Project {
        Project::with_emulator(EmulatorConfig {
            latency,
            ..EmulatorConfig::default()
        })
    }

    pub fn with_emulator(config: EmulatorConfig) -> Project {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emulator = runtime
            .block_on(Emulator::start(config, ([127, 0, 0, 1], 0).into()))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wanx.toml"), "").unwrap();
        Project {
            dir,
            emulator,
            runtime,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn file(&self, rel: &str, contents: &str) -> &Project {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    /// `wanx.lock` as a user's tool reads it: TOML, every field known (an unknown one fails).
    #[track_caller]
    pub fn lock(&self) -> Lock {
        let text = self.read("wanx.lock");
        let lock: Lock = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("wanx.lock is not valid ({e}):\n{text}"));
        assert_eq!(lock.version, 1, "{text}");
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        for (id, task) in &lock.tasks {
            let valid = hex64(&task.key)
                && !task.model.is_empty()
                && task.images > 0
                && task.cost.parse::<f64>().is_ok_and(|c| c >= 0.0)
                && task.generated_at > 0
                && task.outputs.iter().all(|o| {
                    hex64(&o.blake3)
                        && o.size > 0
                        && !o.path.starts_with('/')
                        && !o.path.split('/').any(|part| part == "..")
                });
            assert!(valid, "task `{id}` in wanx.lock is not valid:\n{text}");
        }
        lock
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// Replaces `from` with `to` in a file.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "`{from}` is not in {rel}");
        std::fs::write(self.path(rel), text.replacen(from, to, 1)).unwrap();
    }

    /// Sets a file's mtime to `at`.
    pub fn set_mtime(&self, rel: &str, at: std::time::SystemTime) {
        let file = std::fs::File::options()
            .write(true)
            .open(self.path(rel))
            .unwrap();
        file.set_modified(at).unwrap();
    }

    /// Replaces `from` by `to` (of the same length) in `rel`, in place, and puts its mtime back:
    /// only the bytes differ.
    pub fn edit_keeping_stat(&self, rel: &str, from: &str, to: &str) {
        assert_eq!(from.len(), to.len());
        let meta = std::fs::metadata(self.path(rel)).unwrap();
        self.edit(rel, from, to);
        self.set_mtime(rel, meta.modified().unwrap());
        let after = std::fs::metadata(self.path(rel)).unwrap();
        assert_eq!(
            (after.len(), after.modified().unwrap()),
            (meta.len(), meta.modified().unwrap())
        );
    }

    /// Runs `wanx ARGS` in the project, pointed at this project's emulator with a fake key.
    pub fn wanx(&self, args: &[&str]) -> Run {
        self.command(args).output().unwrap().into()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wanx"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("DASHSCOPE_HTTP_BASE_URL", self.emulator.base_url())
            .env("DASHSCOPE_API_KEY", "sk-test-not-a-real-key")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null());
        cmd
    }

    pub fn ledger(&self) -> Ledger {
        self.emulator.ledger()
    }

    /// Every file under the project (except `.wanx/`), with its bytes: to prove nothing changed.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.files(false)
    }

    /// Every file under the project, `.wanx/` included.
    pub fn snapshot_all(&self) -> BTreeMap<String, Vec<u8>> {
        self.files(true)
    }

    fn files(&self, with_state: bool) -> BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, with_state: bool, out: &mut BTreeMap<String, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if !with_state && path.file_name().is_some_and(|n| n == ".wanx") {
                    continue;
                }
                if path.is_dir() {
                    walk(root, &path, with_state, out);
                } else {
                    out.insert(
                        path.strip_prefix(root).unwrap().display().to_string(),
                        std::fs::read(&path).unwrap(),
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.root(), self.root(), with_state, &mut out);
        out
    }

    /// The width and height of a PNG in the project.
    pub fn png_size(&self, rel: &str) -> (u32, u32) {
        let file = std::fs::File::open(self.path(rel))
            .unwrap_or_else(|e| panic!("cannot open {rel}: {e}"));
        let decoder = png::Decoder::new(std::io::BufReader::new(file));
        let reader = decoder
            .read_info()
            .unwrap_or_else(|e| panic!("{rel} is not a valid PNG: {e}"));
        let info = reader.info();
        (info.width, info.height)
    }

    #[allow(dead_code)]
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }
}

/// Two small tasks in one TOML plan.
pub const TWO_TASKS: &str = r#"[defaults]
model = "wan2.2-t2i-flash"
size = "512*512"

[[task]]
id = "lighthouse"
prompt = "a lighthouse at dusk"

[[task]]
id = "harbor"
prompt = "a quiet harbor"
n = 2
filename = "{id}_{index}.png"
"#;

/// Asserts that a whole output is `expected`, as just's `Test` builder does: a check that a string is
/// contained would let a wrong or extra line through. On a difference, shows both.
#[track_caller]
pub fn assert_output(actual: &str, expected: &str) {
    assert!(
        actual == expected,
        "the output differs\n--- expected\n{expected}--- actual\n{actual}--- actual, quoted\n{actual:?}"
    );
}

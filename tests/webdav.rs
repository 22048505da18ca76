//! `Nginx`: a real WebDAV server (nginx with its DAV module, the documented Bazel HTTP cache set-up)
//! on 127.0.0.1, with its own configuration and root in a temp dir, run as a child process and
//! killed when dropped. `.ci/run` installs it; without it, tests say so and skip (under `CI=true`
//! a missing nginx fails them).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

const BINARIES: [&str; 2] = ["/usr/sbin/nginx", "/usr/bin/nginx"];

impl Nginx {
    /// Starts nginx serving `/cache/` as a WebDAV store (PUT and GET), or `None` (after saying so)
    /// when nginx is not installed and this is not CI.
    pub fn start(test: &str) -> Option<Nginx> {
        Nginx::start_with(test, "")
    }

    /// [`Nginx::start`] with `directives` added to the cache's `location` block.
    pub fn start_with(test: &str, directives: &str) -> Option<Nginx> {
        let Some(binary) = BINARIES.iter().map(Path::new).find(|p| p.exists()) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "nginx is not installed (`.ci/run` installs it with apt-get)"
            );
            eprintln!("skipping {test}: nginx is not installed (apt-get install nginx)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::create_dir_all(dir.path().join("root/cache")).unwrap();
        // A free port: the OS picks it, we release it and nginx binds it at once.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            r"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    log_format cache '$request_method $uri $status user=$remote_user';
    access_log {d}/access.log cache;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        location /cache/ {{
            root {d}/root;
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            {directives}
        }}
    }}
}}
"
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child, dir, port };
        // Ready when it accepts a connection (bounded: a broken config exits at once).
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                let mut err = String::new();
                nginx
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("nginx exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "nginx did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(nginx)
    }

    /// The remote cache URL wanx is given.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/cache", self.port)
    }

    /// Where the server keeps what was PUT under `/cache/`.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("root/cache")
    }

    /// Every file the server holds, relative to `/cache/` (`ac/…`, `cas/…`).
    pub fn files(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    out.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.store(), &self.store(), &mut out);
        out.sort();
        out
    }

    /// The access log: one `METHOD URI STATUS user=NAME` line per request.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

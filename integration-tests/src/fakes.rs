//! Stand-ins for services that cannot run here (a Kubernetes API server, a Consul agent):
//! the Python programs in `integration-tests/fakes/`, started on a free port and stopped
//! by PID. Each program's docstring says what the real service does differently.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Fake {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub log_path: PathBuf,
    http: reqwest::Client,
}

impl Fake {
    /// Starts `integration-tests/fakes/<script>` with `args`; its log goes to a file
    /// beside the system's temp files.
    pub fn start(script: &str, args: &[&str]) -> Fake {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fakes").join(script);
        // Tests of one binary run as threads of one process: the port-free name needs a
        // random part.
        let log_path = std::env::temp_dir().join(format!(
            "hangar-fake-{script}-{}-{:08x}.log",
            std::process::id(),
            rand::random::<u32>()
        ));
        let log = std::fs::File::create(&log_path).expect("create fake's log");
        let mut child = Command::new("python3")
            .arg(&path)
            .args(["--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start python3 {}: {e}", path.display()));
        let mut first = String::new();
        let stdout = child.stdout.take().expect("fake's stdout");
        BufReader::new(stdout).read_line(&mut first).expect("read the fake's first line");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{script} said `{first}`, not `listening on ADDR`"))
            .to_string();
        Fake { child, url: format!("http://{addr}"), log_path, http: reqwest::Client::new() }
    }

    /// The tail of the fake's log, for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A request to the fake; answers (status, body as JSON or Null).
    pub async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        self.call_with(method, path, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_string());
        }
        let resp = r.send().await.unwrap_or_else(|e| panic!("{path}: {e}\n{}", self.log()));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

//! Real etcd servers for tests: members on loopback with free ports, data in a temp dir,
//! started from the etcd binary the `etcd-bin-vendored` dev-dependency carries and killed by
//! pid when dropped. A missing binary fails the test; nothing here skips.
//!
//! Fast timings (`--heartbeat-interval 10 --election-timeout 100`) make the smallest lease
//! TTL 1 s and elections quick; tests add `--unsafe-no-fsync`, which only trades durability
//! across power loss that no test needs (a killed process's writes are in the page cache);
//! benchmarks keep fsync.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member of a test cluster.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// Plain HTTP `/health` and `/metrics`, also when clients must use TLS.
    pub metrics_port: u16,
    child: Option<Child>,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with `openssl`.
pub struct TestCertificates {
    pub dir: tempfile::TempDir,
}

impl TestCertificates {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl (scripts/setup installs it)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
        ]);
        for (name, ext) in [
            ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.path().join(format!("{name}.ext")), ext).unwrap();
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        Self { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// A cluster of real etcd processes.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    token: String,
    dir: tempfile::TempDir,
    binary: PathBuf,
    /// Whether members fsync (benchmarks) or not (tests).
    durable: bool,
    /// Clients must use TLS with a certificate signed by this CA (server and client files).
    tls: Option<PathBuf>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl EtcdCluster {
    /// Starts `size` members without fsync (for tests) and waits until the cluster has a
    /// leader.
    pub fn start(size: usize) -> Self {
        Self::launch(size, false, None)
    }

    /// Starts `size` members that fsync as a production server does (for benchmarks).
    pub fn start_durable(size: usize) -> Self {
        Self::launch(size, true, None)
    }

    /// Starts one member that serves clients over TLS only and asks for a client
    /// certificate signed by the test CA.
    pub fn start_tls(certificates: &TestCertificates) -> Self {
        Self::launch(1, false, Some(certificates.dir.path().to_owned()))
    }

    /// Starts a cluster on fresh ports, again (up to three times) if a member cannot start:
    /// a port found free may be taken by another process before etcd binds it.
    fn launch(size: usize, durable: bool, tls: Option<PathBuf>) -> Self {
        let mut last_logs = String::new();
        for _ in 0..3 {
            let cluster = Self::launch_once(size, durable, tls.clone());
            if cluster.healthy_within(Duration::from_secs(30)) {
                return cluster;
            }
            last_logs = cluster.logs();
        }
        panic!("etcd did not start on three sets of ports; its logs:\n{last_logs}");
    }

    fn launch_once(size: usize, durable: bool, tls: Option<PathBuf>) -> Self {
        let binary = etcd_bin_vendored::etcd_bin_path().expect("an etcd binary for this platform").to_owned();
        assert!(binary.is_file(), "no etcd binary at {}", binary.display());
        let token = format!("t{}-{}", std::process::id(), free_port());
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = Self { members, token, dir: tempfile::tempdir().expect("a temp dir"), binary, durable, tls };
        for i in 0..size {
            cluster.spawn(i, "new");
        }
        // Health is [`Self::launch`]'s to judge: it starts again on fresh ports if a port
        // was taken meanwhile (waiting here, with a panic, made its retries dead code).
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial = self.initial_cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let member = &mut self.members[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", member.client_port);
        let metrics = format!("http://127.0.0.1:{}", member.metrics_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let mut command = Command::new(&self.binary);
        if !self.durable {
            command.arg("--unsafe-no-fsync");
        }
        if let Some(certs) = &self.tls {
            command.arg("--cert-file").arg(certs.join("server.pem")).arg("--key-file").arg(certs.join("server.key"));
            command.arg("--trusted-ca-file").arg(certs.join("ca.pem")).arg("--client-cert-auth");
        }
        command.args(["--listen-metrics-urls", &metrics]);
        let child = command
            .args(["--name", &member.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .args([
                "--logger",
                "zap",
                "--log-level",
                &std::env::var("TEST_ETCD_LOG_LEVEL").unwrap_or_else(|_| "error".into()),
            ])
            .stdout(Stdio::null())
            .stderr(member_log(&self.dir, &self.token, &member.name))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd from {}: {e}", self.binary.display()));
        member.child = Some(child);
    }

    /// `etcd://` URL of every member, under a prefix unique to this cluster.
    pub fn url(&self) -> String {
        self.url_with_prefix("test")
    }

    pub fn url_with_prefix(&self, prefix: &str) -> String {
        let hosts: Vec<String> = self.members.iter().map(|m| format!("127.0.0.1:{}", m.client_port)).collect();
        format!("etcd://{}/{prefix}", hosts.join(","))
    }

    /// True once member `i` answers `/health` with a leader.
    pub fn healthy(&self, i: usize) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.members[i].metrics_port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    /// How many gRPC requests member `i` has handled so far (etcd's own
    /// `grpc_server_handled_total`, summed).
    pub fn handled_requests(&self, i: usize) -> std::io::Result<u64> {
        Ok(self.metric(i, "grpc_server_handled_total", "")? as u64)
    }

    /// The sum of member `i`'s metric `name` over its series whose labels contain `labels`
    /// (`""` for all), read off its `/metrics`.
    pub fn metric(&self, i: usize, name: &str, labels: &str) -> std::io::Result<f64> {
        let text = self.metrics_text(i)?;
        Ok(text
            .lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>())
    }

    /// Member `i`'s `/metrics` page.
    pub fn metrics_text(&self, i: usize) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.members[i].metrics_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    }

    /// Member `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Waits (up to 30 s) until every running member is healthy.
    pub fn wait_healthy(&self) {
        assert!(
            self.healthy_within(Duration::from_secs(30)),
            "etcd did not become healthy within 30 s:\n{}",
            self.logs()
        );
    }

    /// Whether every running member is healthy within `limit`.
    fn healthy_within(&self, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            let running: Vec<usize> = (0..self.members.len()).filter(|&i| self.members[i].child.is_some()).collect();
            if running.iter().all(|&i| self.healthy(i)) {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every member's log (errors only).
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name))).unwrap_or_default();
                format!(
                    "--- {}\n{}",
                    m.name,
                    log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to member `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let child = self.members[i].child.as_ref().expect("the member runs");
        let status = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Kills member `i` (SIGKILL) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Member `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(child) = &self.members[i].child {
                // A stopped member must be continued to die promptly on SIGKILL's reaping.
                let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
            }
            self.kill(i);
        }
    }
}

/// A member's log, appended to across restarts: in the cluster's directory, or under
/// `$TEST_ETCD_LOG_DIR/<token>/` when that is set (to read the logs of a failed run).
fn member_log(dir: &tempfile::TempDir, token: &str, name: &str) -> std::fs::File {
    let path = match std::env::var_os("TEST_ETCD_LOG_DIR") {
        Some(root) => {
            let root = std::path::PathBuf::from(root).join(token);
            std::fs::create_dir_all(&root).expect("the log directory");
            root.join(format!("{name}.log"))
        }
        None => dir.path().join(format!("{name}.log")),
    };
    std::fs::OpenOptions::new().create(true).append(true).open(path).expect("a member log")
}

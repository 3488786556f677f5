//! A throwaway PostgreSQL server for tests: a fresh cluster in a temporary
//! directory, on a free port of 127.0.0.1, run as the `postgres` user when
//! this process is root (the server refuses root). Never skipped: a test
//! that asks for a server fails if none can be started.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running throwaway server; stopped (immediately) when dropped.
pub struct PgServer {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

/// Where `initdb`, `pg_ctl` and `postgres` live: on the `PATH`, else the
/// newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some(dir) = versions
        .into_iter()
        .rev()
        .find(|d| d.join("pg_ctl").exists())
    {
        return dir;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|d| d.join("pg_ctl").exists())
        .expect("PostgreSQL's pg_ctl: not on PATH nor in /usr/lib/postgresql/*/bin")
}

/// `program args` as the server's user.
fn as_server_user(program: &Path) -> Command {
    if super::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgServer {
    /// Makes and starts a cluster; panics (failing the test) if it cannot.
    pub fn start() -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("async-filelock-pg")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        let log = dir.path().join("log");
        if super::is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the cluster dir to postgres");
        }
        let bin = bin_dir();
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = PgServer {
            _dir: dir,
            data,
            log,
            bin,
            port: free_port(),
        };
        server.start_again();
        server.stop_when_this_process_ends();
        server
    }

    /// A server kept in a `static` is never dropped: a small watchdog
    /// stops it (and removes its cluster) once this process has exited, so
    /// that test runs leave no server behind.
    fn stop_when_this_process_ends(&self) {
        let stop = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; {pg_ctl} -D {data} -m immediate -w stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data.display(),
            dir = self._dir.path().display(),
        );
        let mut watchdog = if super::is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &stop]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &stop]);
            c
        };
        let _ = watchdog
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }

    /// Starts the server (after [`PgServer::stop`]).
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.data.display()
        );
        let out = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Stops the server at once (sessions are cut).
    pub fn stop(&self) {
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    /// The connection string of the server.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Runs `sql` on a connection of its own and returns the first column
    /// of each row, as text.
    pub async fn query(&self, sql: &str) -> Vec<String> {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        let driver = tokio::spawn(connection);
        let rows = client.simple_query(sql).await.expect("query");
        drop(client);
        let _ = driver.await;
        rows.into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some(r.get(0).unwrap_or("").to_owned())
                }
                _ => None,
            })
            .collect()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

//! A throwaway PostgreSQL cluster per test: `initdb` into a fresh directory, trust auth,
//! listening on 127.0.0.1:<free port> with its unix socket inside that directory, no
//! fsync (tests need speed, not durability). Stopped with `pg_ctl stop -m immediate` on
//! Drop.
//!
//! [`Postgres::start_tls`] turns `ssl` on with a test CA's certificate and lets TCP clients
//! in through `hostssl` lines only: a connection without TLS is refused. The helper's
//! own connections ([`Postgres::socket_url`]) go through the unix socket.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, every command runs as
//! the `postgres` OS user (`runuser`, else `su`), and the directory is chowned to it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use super::process::{find_binary, free_port, log_tail};

const INSTALL_HINT: &str = "PostgreSQL (initdb, pg_ctl, postgres) not found on PATH, in \
     /usr/local/bin or /usr/lib/postgresql/*/bin. Integration tests need a real PostgreSQL: \
     run ./scripts/test.sh (installs it), or `apt-get install -y postgresql`.";

pub struct Postgres {
    port: u16,
    /// Holds `data/` (the cluster), the socket and `postgres.log`.
    dir: TempDir,
    /// Directory holding initdb, pg_ctl and postgres.
    bin: PathBuf,
    /// Set when running as root: the OS user every command runs as.
    run_as: Option<&'static str>,
    /// `ssl = on`, `hostssl`-only TCP (see [`Postgres::start_tls`]).
    tls: bool,
}

impl Postgres {
    /// Creates and starts a cluster; panics (with an install hint) when PostgreSQL is
    /// missing.
    pub fn start() -> Postgres {
        Self::start_inner(None)
    }

    /// Like [`Postgres::start`], with `ssl = on` presenting `ca`'s server certificate
    /// (which must name 127.0.0.1), and a pg_hba.conf that admits TCP clients over TLS
    /// only (`hostssl`); unix-socket clients are trusted as before.
    pub fn start_tls(ca: &super::TestCa) -> Postgres {
        Self::start_inner(Some(ca))
    }

    fn start_inner(tls: Option<&super::TestCa>) -> Postgres {
        let bin = bin_dir().unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        let dir = tempfile::Builder::new()
            .prefix("flashgate-pg-")
            .tempdir()
            .expect("tempdir for postgres");
        // The directory is ours, so its owner is our effective uid.
        let root = std::fs::metadata(dir.path()).expect("stat tempdir").uid() == 0;
        let run_as = root.then_some("postgres");
        if let Some(ca) = tls {
            ca.write_files(dir.path());
            let hba = "local all all trust\n\
                       hostssl all all 127.0.0.1/32 trust\n\
                       hostssl all all ::1/128 trust\n";
            std::fs::write(dir.path().join("pg_hba_tls.conf"), hba).expect("write pg_hba");
        }
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown to the `postgres` user failed: running as root needs that OS user \
                 (created by `apt-get install postgresql`)"
            );
        }
        let mut pg = Postgres {
            port: 0,
            dir,
            bin,
            run_as,
            tls: tls.is_some(),
        };
        pg.initdb();
        let mut last = String::new();
        // A free port can be taken before the postmaster binds it: retry with another.
        for _ in 0..5 {
            pg.port = free_port();
            match pg.pg_ctl_start() {
                Ok(()) => return pg,
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start after 5 attempts:\n{last}");
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres?sslmode=<mode>`
    pub fn url_with_sslmode(&self, mode: &str) -> String {
        format!("{}?sslmode={mode}", self.url())
    }

    /// A key-value connection string through the unix socket (no TLS there; trusted).
    pub fn socket_url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (`pg_ctl stop -m fast`: open connections are closed), keeping its
    /// data, for "PostgreSQL is down for a while" tests. [`Postgres::restart`] brings it back.
    pub fn stop(&self) {
        let data = self.data();
        let out = self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed:\n{}",
            output_text(&out)
        );
    }

    /// Starts the stopped server again on the same port and data directory.
    pub fn restart(&self) {
        let mut last = String::new();
        // The port was ours a moment ago; give the OS a few tries to release it.
        for _ in 0..20 {
            match self.pg_ctl_start() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("PostgreSQL did not restart on port {}:\n{last}", self.port);
    }

    fn data(&self) -> String {
        self.path("data")
    }

    fn log(&self) -> String {
        self.path("postgres.log")
    }

    fn path(&self, name: &str) -> String {
        let p = self.dir.path().join(name);
        p.to_str().expect("tempdir paths are UTF-8").to_owned()
    }

    fn initdb(&self) {
        let data = self.data();
        let out = self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        if !out.status.success() {
            panic!("initdb failed:\n{}", output_text(&out));
        }
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            let d = self.dir.path().display();
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={d}/server.pem -c ssl_key_file={d}/server.key \
                 -c hba_file={d}/pg_hba_tls.conf"
            ));
        }
        let (data, log) = (self.data(), self.log());
        let out = self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "30", "start",
            ],
        );
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{}\nlog:\n{}",
            output_text(&out),
            log_tail(Path::new(&log), 20)
        ))
    }

    /// Runs `program` from the PostgreSQL bin directory with `args`, as
    /// `run_as` when set, in the cluster directory (the `postgres` user may not be able
    /// to enter our working directory).
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let exe = exe.to_str().expect("UTF-8 path");
        let words = || std::iter::once(exe).chain(args.iter().copied());
        let sbin = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
        let mut cmd = match self.run_as {
            None => {
                let mut c = Command::new(exe);
                c.args(args);
                c
            }
            Some(user) => match find_binary("runuser", &sbin) {
                Some(runuser) => {
                    let mut c = Command::new(runuser);
                    c.args(["-u", user, "--"]).args(words());
                    c
                }
                None => {
                    // su takes one shell command line: quote every word.
                    let line: Vec<String> = words().map(shell_quote).collect();
                    let mut c = Command::new("su");
                    c.args([user, "-s", "/bin/sh", "-c"]).arg(line.join(" "));
                    c
                }
            },
        };
        cmd.current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

/// The directory holding initdb, pg_ctl and postgres: PATH, /usr/local/bin, then the
/// newest /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH). Symlinks are
/// resolved so that pg_ctl finds its sibling `postgres`.
fn bin_dir() -> Option<PathBuf> {
    let mut extra = vec![PathBuf::from("/usr/local/bin")];
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    extra.extend(versions.into_iter().rev().map(|(_, p)| p));
    let initdb = find_binary("initdb", &extra)?;
    let dir = std::fs::canonicalize(initdb).ok()?.parent()?.to_path_buf();
    ["pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
        .then_some(dir)
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn output_text(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

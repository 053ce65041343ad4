//! Child-process plumbing shared by the Redis and PostgreSQL helpers: free ports,
//! finding binaries, signalling and waiting with a deadline.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1. Another process may take it before
/// the caller binds it, so callers retry with a new port when the bind fails.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// The first `name` found on PATH, then in each of `extra_dirs` (glob-free).
pub fn find_binary(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Sends SIGTERM through the shell's `kill` builtin (present even where procps is not),
/// so the harness needs no libc bindings.
pub fn sigterm(child: &Child) {
    let _ = Command::new("sh")
        .args(["-c", "kill -TERM \"$1\" 2>/dev/null", "sh"])
        .arg(child.id().to_string())
        .status();
}

/// Waits up to `timeout` for `child` to exit; SIGKILLs it after that. Returns whether
/// it exited on its own.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// The last `lines` lines of a log file, for panic messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

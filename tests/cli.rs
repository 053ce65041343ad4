//! The `flashgate` binary as users run it: `--version`, `check` (summary, exit 1 with
//! `file:line:col` on errors) and `serve` (non-zero on a bad config, clean exit on SIGTERM).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_flashgate");

/// The binary with the test secrets in its environment and no inherited log filter.
fn flashgate(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("FLASHGATE_JWT_SECRET", JWT_SECRET)
        .env("FLASHGATE_PAYMENT_SECRET", PAYMENT_SECRET)
        .env("FLASHGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("FLASHGATE_SINK_SECRET", SINK_SECRET)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// Runs to completion, killing it (and failing) after 20 s.
fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flashgate");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("flashgate {:?} did not exit within 20s", cmd.get_args());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A valid gateway + campaign pair written by the harness (no Redis needed for `check`).
fn valid_config() -> TestConfig {
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", "http://127.0.0.1:2");
    cfg.campaign(
        CampaignSpec::new("phones")
            .per_user_limit(2)
            .item("phone-black", 100, 99900)
            .item("phone-white", 50, 89900),
    );
    cfg.write();
    cfg
}

fn check(config: &Path) -> Output {
    run(flashgate(&["check", "--config", config.to_str().unwrap()]))
}

/// Asserts exit 1 and a stderr line `error: <path ending in file>:<line>:<col>: ...`;
/// returns stderr.
#[track_caller]
fn assert_check_error(out: &Output, file: &str, line: u32) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let at = format!("{file}:{line}:");
    let pos = stderr
        .find(&at)
        .unwrap_or_else(|| panic!("no {at}<col> in stderr: {stderr}"));
    let col: String = stderr[pos + at.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(
        col.parse::<u32>().is_ok_and(|c| c >= 1),
        "no column: {stderr}"
    );
    stderr
}

#[test]
fn version_prints_name_and_version() {
    let out = run(flashgate(&["--version"]));
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("flashgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_the_example_config() {
    let out = run(flashgate(&["check", "--config", "config/gateway.toml"]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("config/gateway.toml"), "{stdout}");
    for want in [
        "demo",
        "phone-x-128g-black",
        "phone-x-128g-white",
        "100",
        "50",
    ] {
        assert!(stdout.contains(want), "summary lacks {want:?}: {stdout}");
    }
}

#[test]
fn check_prints_a_summary_of_a_valid_config() {
    let cfg = valid_config();
    let out = check(&cfg.path());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("config OK"), "{stdout}");
    assert!(stdout.contains("campaigns: 1"), "{stdout}");
    let item_line = |sku: &str| {
        stdout
            .lines()
            .find(|l| l.contains(sku))
            .unwrap_or_else(|| panic!("no line for {sku}: {stdout}"))
            .to_owned()
    };
    assert!(item_line("phone-black").contains("100"), "{stdout}");
    assert!(item_line("phone-white").contains("50"), "{stdout}");
    assert!(stdout.contains("phones"), "{stdout}");
    assert!(stdout.contains("per-user limit 2"), "{stdout}");
    // Secrets are never printed.
    assert!(!stdout.contains(JWT_SECRET) && !stderr.contains(JWT_SECRET));
}

#[test]
fn check_names_file_line_and_column_of_a_campaign_error() {
    let cfg = valid_config();
    cfg.write_campaign_file(
        "broken.toml",
        "id = \"broken\"\nname = \"Broken\"\ncolour = \"red\"\n",
    );
    let stderr = assert_check_error(&check(&cfg.path()), "broken.toml", 3);
    assert!(stderr.contains("colour"), "names the unknown key: {stderr}");
    assert!(
        stderr.contains(
            &cfg.campaigns_dir()
                .join("broken.toml")
                .display()
                .to_string()
        ),
        "{stderr}"
    );
}

/// A campaign whose item on line 10 has `stock = "ten"`.
fn campaign_with_bad_stock() -> &'static str {
    "id = \"typed\"\nname = \"Typed\"\n\
     starts_at = 2026-01-01T00:00:00Z\nends_at = 2027-01-01T00:00:00Z\n\
     payment_window = \"1m\"\nper_user_limit = 1\n\n\
     [[items]]\nsku = \"a\"\nstock = \"ten\"\nprice_cents = 1\n"
}

#[test]
fn check_names_the_line_of_a_type_error() {
    let cfg = valid_config();
    cfg.write_campaign_file("typed.toml", campaign_with_bad_stock());
    assert_check_error(&check(&cfg.path()), "typed.toml", 10);
}

#[test]
fn check_names_the_field_of_a_type_error() {
    let cfg = valid_config();
    cfg.write_campaign_file("typed.toml", campaign_with_bad_stock());
    let stderr = assert_check_error(&check(&cfg.path()), "typed.toml", 10);
    assert!(stderr.contains("stock"), "names the field: {stderr}");
}

#[test]
fn check_names_file_line_and_column_of_a_gateway_error() {
    let mut cfg = valid_config();
    cfg.set("server", "max_inflght", "10");
    cfg.write();
    let stderr = assert_check_error(&check(&cfg.path()), "gateway.toml", {
        let text = cfg.gateway_toml();
        let line = text.lines().position(|l| l.starts_with("max_inflght"));
        u32::try_from(line.unwrap()).unwrap() + 1
    });
    assert!(stderr.contains("max_inflght"), "{stderr}");
}

#[test]
fn check_refuses_a_missing_secret_and_names_the_variable() {
    let cfg = valid_config();
    let mut cmd = flashgate(&["check", "--config", cfg.path().to_str().unwrap()]);
    cmd.env_remove("FLASHGATE_JWT_SECRET");
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FLASHGATE_JWT_SECRET"), "{stderr}");
    assert!(stderr.contains("gateway.toml:"), "{stderr}");
}

#[test]
fn check_of_a_missing_file_fails() {
    let out = run(flashgate(&[
        "check",
        "--config",
        "/nonexistent/gateway.toml",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/gateway.toml"));
}

#[test]
fn serve_with_a_bad_config_exits_non_zero_at_once() {
    let cfg = valid_config();
    cfg.write_campaign_file("broken.toml", "id = \"broken\"\nbogus = 1\n");
    let started = Instant::now();
    let out = run(flashgate(&[
        "serve",
        "--config",
        cfg.path().to_str().unwrap(),
    ]));
    assert!(!out.status.success(), "serve ran with a broken config");
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("broken.toml:2:"), "{stderr}");

    let out = run(flashgate(&[
        "serve",
        "--config",
        "/nonexistent/gateway.toml",
    ]));
    assert!(!out.status.success());
}

/// Kills the child on drop so a failing test leaves no server behind.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_gateway_and_drains_on_sigterm() {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(CampaignSpec::new("live").item("a", 5, 100));
    cfg.write();

    let mut child = Serve(
        flashgate(&[
            "serve",
            "--log-format",
            "json",
            "--config",
            cfg.path().to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flashgate serve"),
    );
    // The log line `flashgate listening` carries the bound addresses (ports were 0).
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let listening = loop {
        let v = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a `flashgate listening` log line within 20s");
        if v["fields"]["message"] == "flashgate listening" {
            break v;
        }
    };
    let addr = |k: &str| {
        listening["fields"][k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k} in {listening}"))
            .to_owned()
    };
    let (public, admin) = (addr("public_addr"), addr("admin_addr"));

    eventually("/readyz 200", Duration::from_secs(10), || async {
        let r = send("GET", &format!("http://{admin}/readyz"), &[], None).await;
        (r.status == 200).then_some(())
    })
    .await;
    let auth = bearer("cli-user");
    let res = send(
        "POST",
        &format!("http://{public}/seckill/campaigns/live/items/a/orders"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let res = send("GET", &format!("http://{public}/shop?x=1"), &[], None).await;
    assert_eq!(res.json()["path"], "/shop?x=1");

    let pid = child.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 15s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

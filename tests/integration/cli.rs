//! The `flashgate` binary as users run it: `--version`, `check` (summary, exit 1 with
//! `file:line:col` on errors) and `serve` (exit 64 on a bad config, clean exit on SIGTERM).
//! `check` and `serve` refuse the same files; see also `cli_check.rs` for what `check`
//! reports (every error, warnings, secrets, `--no-secrets`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;

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
    assert!(
        wait_or_kill(&mut child, Duration::from_secs(20)),
        "flashgate {:?} did not exit within 20s",
        cmd.get_args()
    );
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
    assert_eq!(
        out.status.code(),
        Some(64),
        "serve ran with a broken config"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("broken.toml:2:"), "{stderr}");

    let out = run(flashgate(&[
        "serve",
        "--config",
        "/nonexistent/gateway.toml",
    ]));
    assert_eq!(out.status.code(), Some(64));
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
    let status = eventually(
        "an exit within 15s of SIGTERM",
        Duration::from_secs(15),
        || {
            let exited = child.0.try_wait().unwrap();
            async move { exited }
        },
    )
    .await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

// === check and serve refuse the same files, and check reports everything ===

fn serve(config: &Path) -> Output {
    run(flashgate(&["serve", "--config", config.to_str().unwrap()]))
}

/// `check` exits 1 and `serve` exits 64, before binding, both naming `file:line:` and
/// `needle`; returns check's stderr.
#[track_caller]
fn both_refuse(cfg: &TestConfig, file: &str, line: u32, needle: &str) -> String {
    let stderr = assert_check_error(&check(&cfg.path()), file, line);
    assert!(stderr.contains(needle), "check: {stderr}");
    let out = serve(&cfg.path());
    let serve_err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "serve: {serve_err}");
    assert!(
        serve_err.contains(&format!("{file}:{line}:")),
        "serve: {serve_err}"
    );
    assert!(serve_err.contains(needle), "serve: {serve_err}");
    assert!(
        !serve_err.contains("listening"),
        "serve bound a port: {serve_err}"
    );
    stderr
}

/// The 1-based line of gateway.toml that starts with `prefix`.
fn gateway_line(cfg: &TestConfig, prefix: &str) -> u32 {
    let text = cfg.gateway_toml();
    let i = text
        .lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in {text}"));
    i as u32 + 1
}

#[test]
fn a_bad_sink_url_is_refused_by_check_and_serve() {
    let mut cfg = valid_config();
    cfg.set_str("orders", "http_url", "ftp://127.0.0.1:2/orders");
    cfg.write();
    let line = gateway_line(&cfg, "http_url");
    both_refuse(&cfg, "gateway.toml", line, "orders.http_url");
}

#[test]
fn a_bad_identity_header_is_refused_by_check_and_serve() {
    let mut cfg = valid_config();
    cfg.header_identity("X User Id");
    cfg.write();
    let line = gateway_line(&cfg, "header =");
    both_refuse(&cfg, "gateway.toml", line, "identity.header");
}

#[test]
fn an_upstream_that_is_no_url_is_refused_by_check_and_serve() {
    let mut cfg = valid_config();
    cfg.set_str("upstream", "url", "store.internal:3000");
    cfg.write();
    let line = gateway_line(&cfg, "url = \"store");
    both_refuse(&cfg, "gateway.toml", line, "upstream.url");
}

#[test]
fn check_accepts_an_https_upstream() {
    let mut cfg = valid_config();
    cfg.set_str("upstream", "url", "https://shop.example");
    cfg.write();
    let out = check(&cfg.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Each named secret, unset or empty: `check` exits 1 and `serve` 64, naming the key's
/// line and the variable.
#[test]
fn every_named_secret_that_is_unset_or_empty_is_refused() {
    let cfg = valid_config();
    for (var, key) in [
        ("FLASHGATE_JWT_SECRET", "jwt_secret_env"),
        ("FLASHGATE_PAYMENT_SECRET", "secret_env"),
        ("FLASHGATE_ADMIN_TOKEN", "token_env"),
        ("FLASHGATE_SINK_SECRET", "http_secret_env"),
    ] {
        let line = gateway_line(&cfg, key);
        for empty in [false, true] {
            for command in ["check", "serve"] {
                let mut cmd = flashgate(&[command, "--config", cfg.path().to_str().unwrap()]);
                if empty {
                    cmd.env(var, "");
                } else {
                    cmd.env_remove(var);
                }
                let out = run(cmd);
                let stderr = text(&out.stderr);
                let code = if command == "check" { 1 } else { 64 };
                assert_eq!(
                    out.status.code(),
                    Some(code),
                    "{command} without {var}: {stderr}"
                );
                assert!(
                    stderr.contains(&format!("gateway.toml:{line}:1: ")) && stderr.contains(var),
                    "{command} without {var}: {stderr}"
                );
            }
        }
    }
}

#[test]
fn the_postgres_url_is_a_required_secret_of_the_postgres_sink() {
    let mut cfg = valid_config();
    cfg.postgres_sink("postgres://127.0.0.1:1/db");
    cfg.write();
    let out = check(&cfg.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = gateway_line(&cfg, "postgres_url_env");
    assert!(
        stderr.contains(&format!("gateway.toml:{line}:1: ")),
        "{stderr}"
    );
    assert!(stderr.contains("FLASHGATE_POSTGRES_URL"), "{stderr}");
    // The http sink's secret is not needed by the postgres sink.
    let mut cmd = flashgate(&["check", "--config", cfg.path().to_str().unwrap()]);
    cmd.env("FLASHGATE_POSTGRES_URL", "postgres://127.0.0.1:1/db")
        .env_remove("FLASHGATE_SINK_SECRET");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn check_no_secrets_reads_no_environment() {
    let cfg = valid_config();
    let mut cmd = flashgate(&[
        "check",
        "--no-secrets",
        "--config",
        cfg.path().to_str().unwrap(),
    ]);
    for var in [
        "FLASHGATE_JWT_SECRET",
        "FLASHGATE_PAYMENT_SECRET",
        "FLASHGATE_ADMIN_TOKEN",
        "FLASHGATE_SINK_SECRET",
    ] {
        cmd.env_remove(var);
    }
    let out = run(cmd);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("config OK"), "{stdout}");
    assert!(
        stdout.contains("secrets not read (--no-secrets)"),
        "{stdout}"
    );
}

#[test]
fn check_no_secrets_still_refuses_a_bad_campaign() {
    let cfg = valid_config();
    cfg.write_campaign_file("typed.toml", campaign_with_bad_stock());
    let mut cmd = flashgate(&[
        "check",
        "--no-secrets",
        "--config",
        cfg.path().to_str().unwrap(),
    ]);
    cmd.env_remove("FLASHGATE_JWT_SECRET");
    let out = run(cmd);
    let stderr = assert_check_error(&out, "typed.toml", 10);
    assert!(!stderr.contains("FLASHGATE_JWT_SECRET"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_admin_token_env_warns_loudly_at_start() {
    let mut cfg = valid_config();
    cfg.without_admin_token();
    cfg.write();
    let mut child = Serve(
        flashgate(&["serve", "--config", cfg.path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn flashgate serve"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let warn = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no admin warning within 20s: {seen:#?}"));
        if line.contains("no `admin.token_env`") {
            break line;
        }
        seen.push(line);
    };
    assert!(warn.contains("WARN"), "{warn}");
    assert!(warn.contains("open to anyone"), "{warn}");
}

#[test]
fn check_reports_every_error_of_every_file() {
    let mut cfg = valid_config();
    cfg.set_str("server", "header_read_timeout", "5 parsecs");
    cfg.set("redis", "colour", "\"red\"");
    cfg.write();
    cfg.write_campaign_file("typed.toml", campaign_with_bad_stock());
    cfg.write_campaign_file(
        "broken.toml",
        "id = \"broken\"\nname = \"Broken\"\ncolour = \"red\"\n",
    );
    let out = check(&cfg.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    for want in [
        "field `server.header_read_timeout`",
        "unknown key `colour`",
        "typed.toml:10:",
        "broken.toml:3:",
        "broken.toml:1:1: missing required key `starts_at`",
        "broken.toml:1:1: missing required key `items`",
    ] {
        assert!(
            errors.iter().any(|l| l.contains(want)),
            "no {want:?}: {stderr}"
        );
    }
    // broken.toml also lacks five required keys: each is an error of this one run.
    assert_eq!(errors.len(), 9, "{stderr}");
    assert!(stderr.contains("9 errors"), "{stderr}");
}

#[test]
fn check_words_errors_plainly_and_names_the_sku() {
    let cfg = valid_config();
    cfg.write_campaign_file("typed.toml", campaign_with_bad_stock());
    let stderr = assert_check_error(&check(&cfg.path()), "typed.toml", 10);
    assert!(
        stderr.contains(
            "field `items.stock` (sku `a`): expected an integer, found the string \"ten\""
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("i64"), "{stderr}");

    let mut cfg = valid_config();
    cfg.set("limits", "per_user", "5");
    cfg.write();
    let out = check(&cfg.path());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("expected a table, found the integer 5"),
        "{stderr}"
    );
    assert!(!stderr.contains("struct"), "{stderr}");
}

#[test]
fn check_suggests_the_key_a_typo_meant() {
    let mut cfg = valid_config();
    cfg.set("server", "max_inflght", "10");
    cfg.write();
    let out = check(&cfg.path());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("did you mean `max_inflight`?"), "{stderr}");
}

#[test]
fn check_names_both_files_of_a_duplicate_campaign_id() {
    let cfg = valid_config();
    let phones = std::fs::read_to_string(cfg.campaigns_dir().join("phones.toml")).unwrap();
    cfg.write_campaign_file("zz-copy.toml", &phones);
    let stderr = assert_check_error(&check(&cfg.path()), "zz-copy.toml", 1);
    assert!(stderr.contains("phones.toml:1:"), "{stderr}");
}

#[test]
fn check_warns_on_an_ended_campaign_and_still_succeeds() {
    let mut cfg = valid_config();
    cfg.campaign(
        CampaignSpec::new("over")
            .ended_ago(Duration::from_secs(60))
            .item("x", 1, 1),
    );
    cfg.write();
    let out = check(&cfg.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("over.toml:4:")
            && stderr.contains("ended at"),
        "{stderr}"
    );
}

#[test]
fn check_warns_on_an_empty_campaigns_dir() {
    let cfg = TestConfig::new("redis://127.0.0.1:1/0", "http://127.0.0.1:2");
    cfg.write();
    let out = check(&cfg.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: ") && stderr.contains("no campaign files"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("campaigns: 0"));
}

#[test]
fn check_prints_windows_as_rfc3339() {
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", "http://127.0.0.1:2");
    let start = time::macros::datetime!(2036-11-11 0:00 +8);
    cfg.campaign(
        CampaignSpec::new("fixed")
            .window(start, start + Duration::from_secs(1800))
            .item("x", 1, 1),
    );
    cfg.write();
    let out = check(&cfg.path());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("2036-11-11T00:00:00+08:00 .. 2036-11-11T00:30:00+08:00")
            || stdout.contains("2036-11-10T16:00:00Z .. 2036-11-10T16:30:00Z"),
        "{stdout}"
    );
}

#[test]
fn demo_store_help_prints_usage_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--help", "-h"] {
        let mut cmd = Command::new(demo_store_bin());
        cmd.arg(flag).current_dir(dir.path()).stdin(Stdio::null());
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("Usage: demo_store"),
            "{}",
            text(&out.stdout)
        );
        assert!(!dir.path().join("var").exists(), "--help wrote var/");
    }
}

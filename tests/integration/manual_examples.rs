//! The manual cannot rot: the examples of `docs/api.md` and `README.md` marked
//! `<!-- test: name -->` are cut out of the file and run, exactly as written, with `sh`,
//! `python3` and `node` against a real gateway (Redis, the test store or the demo store),
//! and what they claim is checked: the worked signature example, a token minted in shell,
//! callbacks that pay an order, the README's quickstart from campaign to the store.
//! `scripts/test.sh` installs curl, openssl, python3 and nodejs when they are missing.

use std::process::Output;
use std::time::Duration;

use crate::common::*;

const API_MD: &str = include_str!("../../docs/api.md");
const README_MD: &str = include_str!("../../README.md");

/// The fenced code block that follows `<!-- test: <name> -->` in docs/api.md or README.md.
fn example(name: &str) -> String {
    let marker = format!("<!-- test: {name} -->");
    let after = [API_MD, README_MD]
        .iter()
        .find_map(|doc| doc.split_once(&marker))
        .unwrap_or_else(|| panic!("neither docs/api.md nor README.md has {marker}"))
        .1;
    let mut lines = after.lines().skip_while(|l| l.trim().is_empty());
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.starts_with("```"),
        "{marker} is not followed by a code block"
    );
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    body.join("\n") + "\n"
}

/// Runs an example with `interpreter` (`sh`, `python3`, `node`) and `env`; panics with
/// its output unless it exits 0.
async fn run(interpreter: &str, name: &str, env: &[(&str, &str)]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    run_in(cwd.path(), interpreter, name, env).await
}

/// [`run`] in the working directory `cwd`.
async fn run_in(
    cwd: &std::path::Path,
    interpreter: &str,
    name: &str,
    env: &[(&str, &str)],
) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let ext = match interpreter {
        "python3" => "py",
        "node" => "cjs",
        _ => "sh",
    };
    let file = dir.path().join(format!("{name}.{ext}"));
    std::fs::write(&file, example(name)).unwrap();
    let mut cmd = tokio::process::Command::new(interpreter);
    cmd.arg(&file)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish in 30s"))
        .unwrap_or_else(|e| panic!("cannot run {interpreter} (scripts/test.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{name} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_worked_signature_example_is_right() {
    let body = r#"{"order_id":"01JCDX4T6Q8ZQ3V5W7Y9A1B2C3.demo","payment_id":"pay_123","amount_cents":99900,"status":"succeeded"}"#;
    let header = sign_callback("whsec_example", body.as_bytes(), 1_762_790_400);
    assert!(
        API_MD.contains(&format!("\n{body}\n")),
        "docs/api.md lost the example body"
    );
    assert!(
        API_MD.contains(&format!("Flashgate-Signature: {header}\n")),
        "docs/api.md's worked example should read Flashgate-Signature: {header}"
    );
}

/// A campaign on sale, a gateway, and the environment the examples read.
struct Sale {
    _redis: RedisServer,
    _store: TestStore,
    _cfg: TestConfig,
    gw: Gateway,
}

const PRICE: u64 = 99900;

impl Sale {
    async fn start() -> Sale {
        let redis = RedisServer::start();
        let store = TestStore::start().await;
        let mut cfg = TestConfig::new(&redis.url(), &store.url());
        cfg.campaign(CampaignSpec::new("docs").item("phone", 100, PRICE));
        let gw = Gateway::start(cfg.load()).await;
        gw.wait_ready().await;
        Sale {
            _redis: redis,
            _store: store,
            _cfg: cfg,
            gw,
        }
    }

    /// Buys one phone with `authorization`; returns the order id.
    async fn buy(&self, authorization: &str) -> String {
        let res = send(
            "POST",
            &self.gw.buy_url("docs", "phone"),
            &[("authorization", authorization)],
            None,
        )
        .await;
        assert_eq!(res.status, 201, "{}", res.text());
        res.json()["order_id"].as_str().unwrap().to_owned()
    }

    async fn order_status(&self, user: &str, order_id: &str) -> String {
        let res = send(
            "GET",
            &self.gw.url(&format!("/seckill/orders/{order_id}")),
            &[("authorization", &bearer(user))],
            None,
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        res.json()["status"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_examples_pay_an_order() {
    let sale = Sale::start().await;
    let gateway = sale.gw.url("");
    let amount = PRICE.to_string();
    for (name, interpreter) in [
        ("pay-sh", "sh"),
        ("pay-python", "python3"),
        ("pay-node", "node"),
    ] {
        let user = format!("docs-{name}");
        let order_id = sale.buy(&bearer(&user)).await;
        let env = [
            ("GATEWAY", gateway.as_str()),
            ("FLASHGATE_PAYMENT_SECRET", PAYMENT_SECRET),
            ("ORDER_ID", order_id.as_str()),
            ("AMOUNT_CENTS", amount.as_str()),
        ];
        let out = stdout(&run(interpreter, name, &env).await);
        assert!(out.contains(r#""status":"paid""#), "{name} printed {out:?}");
        assert_eq!(sale.order_status(&user, &order_id).await, "paid", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_as_the_manual_shows_buys() {
    let sale = Sale::start().await;
    for (user, token) in [
        (
            "docs-jwt-sh",
            stdout(
                &run(
                    "sh",
                    "jwt-sh",
                    &[
                        ("FLASHGATE_JWT_SECRET", JWT_SECRET),
                        ("USER_ID", "docs-jwt-sh"),
                    ],
                )
                .await,
            ),
        ),
        ("docs-dev-jwt", dev_jwt("docs-dev-jwt").await),
    ] {
        let order_id = sale.buy(&format!("Bearer {token}")).await;
        assert_eq!(sale.order_status(user, &order_id).await, "pending_payment");
    }
}

/// `scripts/dev-jwt.sh <user>`, which the README's quickstart uses.
async fn dev_jwt(user: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dev-jwt.sh");
    let out = tokio::process::Command::new("sh")
        .args([script, user])
        .env("FLASHGATE_JWT_SECRET", JWT_SECRET)
        .output()
        .await
        .expect("run scripts/dev-jwt.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// The manual says `sub` is required and that the 401 says which claim is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_sub_is_refused_naming_the_claim() {
    let sale = Sale::start().await;
    let claims = serde_json::json!({ "exp": unix_now() + 600 });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let res = send(
        "POST",
        &sale.gw.buy_url("docs", "phone"),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(res.status, 401, "{}", res.text());
    let body = res.json();
    assert_eq!(body["type"], "urn:flashgate:problem:unauthenticated");
    assert!(body["detail"].as_str().unwrap().contains("`sub`"), "{body}");
}

/// The demo store binary, in `dir`, on a free port; killed on drop.
struct DemoStore {
    child: std::process::Child,
    port: u16,
}

impl DemoStore {
    fn start(dir: &std::path::Path) -> DemoStore {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(demo_store_bin())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir)
            .env("FLASHGATE_SINK_SECRET", SINK_SECRET)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start demo_store");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "demo_store did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        DemoStore { child, port }
    }
}

impl Drop for DemoStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// README's five quickstart lines, against the example campaign and the demo store:
/// the campaign, a buy, the order, the payment, and the paid order in the store's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quickstart_ends_with_the_order_at_the_store() {
    let cwd = tempfile::tempdir().unwrap();
    let store = DemoStore::start(cwd.path());
    let redis = RedisServer::start();
    let store_url = format!("http://127.0.0.1:{}", store.port);
    let cfg = TestConfig::new(&redis.url(), &store_url);
    let demo = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/campaigns/demo.toml"
    ))
    .unwrap();
    cfg.write();
    cfg.write_campaign_file("demo.toml", &demo);
    let gw = Gateway::start(cfg.load()).await;
    gw.wait_ready().await;

    let gateway = gw.url("");
    let jwt = jwt("quickstart-user");
    let env = [
        ("GW", gateway.as_str()),
        ("JWT", jwt.as_str()),
        ("FLASHGATE_PAYMENT_SECRET", PAYMENT_SECRET),
    ];
    let out = stdout(&run_in(cwd.path(), "sh", "quickstart", &env).await);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains(r#""state":"open""#), "{out}");
    let order_id = lines[1];
    assert!(order_id.ends_with(".demo"), "no order id on line 2: {out}");
    assert!(out.contains(r#""status":"pending_payment""#), "{out}");
    assert!(out.contains(r#""status":"paid""#), "{out}");
    let at_store: serde_json::Value = serde_json::from_str(lines.last().unwrap())
        .unwrap_or_else(|e| panic!("the last line is not the store's order ({e}): {out}"));
    assert_eq!(at_store["order_id"], order_id, "{out}");
    assert_eq!(at_store["status"], "paid", "{out}");
}

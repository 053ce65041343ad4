//! The `rabbitmq` sink end to end against a real broker (`rabbitmq-server`): paid orders
//! and refund events arrive as persistent JSON messages identified by `message_id`, read
//! by a consumer written with a client we did not write (Python `pika`); `amqps://` is
//! verified against the gateway's trust roots; an exchange and queue the operator made are
//! used as they are; a broker killed mid-delivery loses nothing once it is back; a broker
//! that is down is not hammered; configuration mistakes are named at file:line.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use crate::lifecycle::*;
use flashgate::config::RabbitmqConfig;
use flashgate::sink::rabbitmq::RabbitMqSink;
use flashgate::sink::Sink;
use flashgate::stock::outbox::{Entry, Event};
use flashgate::stock::{Order, OrderStatus};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;

const SKU: &str = "red";
const PRICE: u64 = 4_900;
/// The default `orders.rabbitmq.queue`.
const QUEUE: &str = "flashgate.orders";

async fn setup(url: &str, campaign: &str, stock: u64) -> Setup {
    let mut s = Setup::new(CampaignSpec::new(campaign).item(SKU, stock, PRICE)).await;
    s.cfg
        .rabbitmq_sink(url)
        .set("orders", "max_attempts", "1000")
        .set_str("orders", "retry_max", "300ms");
    s
}

async fn deliveries(api: &impl Api, result: &str) -> f64 {
    sink_deliveries(api, "rabbitmq", result).await
}

/// A consumer as a store would write it, with pika: takes messages from the queue until
/// it has `want` distinct `message_id`s (acknowledging each; a redelivered duplicate is
/// dropped by its id, as the docs tell a consumer to), then prints them as JSON.
const PIKA_CONSUMER: &str = r#"
import json, sys, time
import pika

url, queue, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
seen, dups = {}, 0
deadline = time.time() + 30
while len(seen) < want and time.time() < deadline:
    method, props, body = ch.basic_get(queue, auto_ack=False)
    if method is None:
        time.sleep(0.05)
        continue
    if props.message_id in seen:
        dups += 1
    else:
        seen[props.message_id] = {
            "message_id": props.message_id,
            "content_type": props.content_type,
            "delivery_mode": props.delivery_mode,
            "app_id": props.app_id,
            "idempotency_key": (props.headers or {}).get("idempotency-key"),
            "body": json.loads(body),
        }
    ch.basic_ack(method.delivery_tag)
conn.close()
print(json.dumps({"messages": list(seen.values()), "duplicates": dups}))
"#;

/// Runs [`PIKA_CONSUMER`]; message_id → what it saw.
async fn pika_read(url: &str, queue: &str, want: usize) -> BTreeMap<String, Value> {
    let out = tokio::process::Command::new("python3")
        .args(["-c", PIKA_CONSUMER, url, queue, &want.to_string()])
        .output()
        .await
        .expect("run python3 (./scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "the pika consumer failed (pip install pika; ./scripts/test.sh does):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("pika consumer output");
    got["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| (m["message_id"].as_str().unwrap_or("").to_owned(), m.clone()))
        .collect()
}

/// An outbox entry made by hand, for delivering straight through a sink.
fn hand_entry(order_id: &str) -> Entry {
    Entry {
        stream: outbox_key("hand"),
        id: "1-0".into(),
        event: Event::Paid,
        order: Order {
            order_id: order_id.to_owned(),
            campaign: "hand".into(),
            sku: SKU.into(),
            user_id: "someone".into(),
            quantity: 1,
            amount_cents: PRICE,
            status: OrderStatus::Paid,
            created_at: 1_700_000_000_000,
            pay_by: 1_700_000_600_000,
            payment_id: Some(format!("pay_{order_id}")),
            paid_at: Some(1_700_000_100_000),
        },
    }
}

async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("a test connection to the broker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_orders_and_refunds_arrive_over_amqps_as_a_pika_consumer_reads_them() {
    const C: &str = "mq";
    let ca = TestCa::new(&["127.0.0.1"]);
    let mq = RabbitMq::start_tls(&ca);
    let mut s = setup(&mq.tls_url(), C, 10).await;
    let ca_file = s.cfg.dir().join("broker-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).expect("write the CA");
    s.cfg
        .set_str("orders", "rabbitmq_ca_file", ca_file.to_str().unwrap());
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;

    // Two paid orders, a second charge of one of them, a payment after a cancel; a
    // pending pre-order is never published.
    let _pending = buy_ok(&gw, C, SKU, "dave").await;
    let alice = buy_ok(&gw, C, SKU, "alice").await;
    let bob = buy_ok(&gw, C, SKU, "bob").await;
    pay_ok(&gw, &alice).await;
    pay_ok(&gw, &bob).await;
    let a = order_id(&alice).to_owned();
    let again = signed_callback(&gw, callback_body(&a, "pay_again", PRICE)).await;
    assert_eq!(
        again.json()["status"],
        "refund_required",
        "{}",
        again.text()
    );
    let carol = buy_ok(&gw, C, SKU, "carol").await;
    let c = order_id(&carol).to_owned();
    let del = send(
        "DELETE",
        &gw.url(&format!("/seckill/orders/{c}")),
        &[("authorization", &bearer("carol"))],
        None,
    )
    .await;
    assert_eq!(del.status, 200, "{}", del.text());
    assert_eq!(pay(&gw, &carol).await.json()["status"], "refund_required");

    let got = pika_read(&mq.url(), QUEUE, 4).await;
    probe.wait_drained(C).await;
    let b = order_id(&bob).to_owned();
    let second = format!("{a}:pay_again");
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        {
            let mut want = vec![a.clone(), b.clone(), c.clone(), second.clone()];
            want.sort();
            want
        },
        "{got:#?}"
    );
    for (id, m) in &got {
        assert_eq!(m["content_type"], "application/json", "{m}");
        assert_eq!(m["delivery_mode"], 2, "persistent: {m}");
        assert_eq!(m["app_id"], "flashgate", "{m}");
        assert_eq!(m["idempotency_key"], id.as_str(), "{m}");
    }
    // The body is the order as the http sink sends it (and as its owner sees it).
    for (id, user) in [(&a, "alice"), (&b, "bob"), (&c, "carol")] {
        let view = get_order(&gw, user, id).await.json();
        assert_eq!(got[id]["body"], view, "{id}");
    }
    assert_eq!(got[&a]["body"]["status"], "paid");
    assert_eq!(got[&a]["body"]["payment_id"], payment_id(&a).as_str());
    assert_eq!(got[&c]["body"]["status"], "refund_required");
    let refund = &got[&second]["body"];
    assert_eq!(refund["order_id"], a.as_str(), "{refund}");
    assert_eq!(refund["status"], "refund_required", "{refund}");
    assert_eq!(refund["payment_id"], "pay_again", "{refund}");
    assert_eq!(refund["amount_cents"], PRICE, "{refund}");
    assert_eq!(deliveries(&gw, "ok").await, 4.0);
    assert!(s.store.orders().is_empty(), "nothing went to the http sink");

    // The gateway declared both durable: declaring them durable again is accepted (a
    // different durability would be refused and close the channel).
    let conn = connect(&mq.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let durable_x = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        QUEUE.into(),
        ExchangeKind::Direct,
        durable_x,
        FieldTable::default(),
    )
    .await
    .expect("a durable direct exchange");
    let durable_q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(QUEUE.into(), durable_q, FieldTable::default())
        .await
        .expect("a durable queue");

    // Without the CA, the system's roots do not trust the broker: nothing is sent.
    let names = RabbitmqConfig::default();
    let untrusting =
        RabbitMqSink::new(&mq.tls_url(), &names, Duration::from_secs(5), None).expect("a sink");
    let refused = untrusting.deliver(&[hand_entry("notrust")]).await;
    let err = refused[0].as_ref().expect_err("an untrusted broker");
    assert!(format!("{err}").contains("connect"), "{err}");
    assert!(mq.take_all(QUEUE).await.is_empty(), "nothing published");
}

/// An exchange and a queue the operator made, of another type and with arguments of its
/// own, are used as they are (declared passively), and the queue is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_and_queue_the_operator_made_are_used_as_they_are() {
    let mq = RabbitMq::start();
    let conn = connect(&mq.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let durable_x = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        "store.events".into(),
        ExchangeKind::Topic,
        durable_x,
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-max-length".into(),
        lapin::types::AMQPValue::LongLongInt(1000),
    );
    let durable_q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("store.paid".into(), durable_q, args.clone())
        .await
        .unwrap();

    let names = RabbitmqConfig {
        exchange: "store.events".into(),
        routing_key: "orders.paid".into(),
        queue: "store.paid".into(),
    };
    let sink = RabbitMqSink::new(&mq.url(), &names, Duration::from_secs(5), None).unwrap();
    let entries: Vec<Entry> = (0..3).map(|i| hand_entry(&format!("op{i}"))).collect();
    for r in sink.deliver(&entries).await {
        r.expect("delivered");
    }
    let got = mq.take_all("store.paid").await;
    let ids: Vec<_> = got.iter().filter_map(|m| m.message_id.clone()).collect();
    assert_eq!(ids, ["op0", "op1", "op2"]);
    // Still the operator's: a topic exchange, the queue with its arguments.
    ch.exchange_declare(
        "store.events".into(),
        ExchangeKind::Topic,
        durable_x,
        FieldTable::default(),
    )
    .await
    .expect("still a topic exchange");
    ch.queue_declare("store.paid".into(), durable_q, args)
        .await
        .expect("still the queue with its arguments");
    // And bound with the routing key: a message sent there by hand arrives too.
    ch.queue_bind(
        "store.paid".into(),
        "store.events".into(),
        "orders.paid".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("the binding exists (re-binding is a no-op)");
}

/// A broker killed (`kill -9`) while payments are being delivered, then started again on
/// its port and data: every paid order reaches the queue, each with one message id, and a
/// message published twice (its confirm lost with the broker) is the same message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_delivery_loses_no_paid_order() {
    const C: &str = "mqkill";
    const N: usize = 40;
    let mut mq = RabbitMq::start();
    let mut s = setup(&mq.url(), C, N as u64 + 1).await;
    s.cfg.set_str("orders", "sink_timeout", "2s");
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;

    // Connected and working.
    let first = buy_ok(&gw, C, SKU, "first").await;
    pay_ok(&gw, &first).await;
    probe.wait_drained(C).await;
    let mut received = mq.take_all(QUEUE).await;
    assert_eq!(received.len(), 1);

    // Buyers keep paying while the broker dies and comes back.
    let api = gw.endpoints();
    let crowd = tokio::spawn(async move {
        let mut paid = Vec::new();
        for i in 0..N {
            let o = buy_ok(&api, C, SKU, &format!("buyer{i:02}")).await;
            pay_ok(&api, &o).await;
            paid.push(o);
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        paid
    });
    eventually("deliveries under way", WAIT, || async {
        (deliveries(&gw, "ok").await >= 6.0).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| mq.kill());
    let retried = deliveries(&gw, "retry").await;
    eventually("deliveries failing", WAIT, || async {
        (deliveries(&gw, "retry").await > retried).then_some(())
    })
    .await;
    let mut orders = crowd.await.expect("the crowd");
    orders.push(first);
    let (backlog, dead) = outbox_counts(&gw).await;
    assert!(backlog > 0, "the outbox holds what the broker did not take");
    assert_eq!(dead, 0);

    tokio::task::block_in_place(|| mq.restart());
    probe.wait_drained(C).await;
    received.extend(mq.take_all(QUEUE).await);

    let mut by_id: BTreeMap<String, Vec<&Received>> = BTreeMap::new();
    for m in &received {
        let id = m.message_id.clone().expect("a message_id");
        by_id.entry(id).or_default().push(m);
    }
    assert_eq!(by_id.keys().cloned().collect::<Vec<_>>(), ids(&orders));
    for (id, copies) in &by_id {
        let body = copies[0].json();
        assert_eq!(body["status"], "paid", "{id}: {body}");
        assert_eq!(body["order_id"], id.as_str());
        assert!(
            copies.iter().all(|m| m.body == copies[0].body),
            "{id}: copies differ"
        );
        assert!(copies.iter().all(|m| m.delivery_mode == Some(2)));
    }
    let copies = received.len() - by_id.len();
    eprintln!(
        "broker killed mid-delivery: {} orders, {backlog} held in the outbox, {copies} published twice",
        orders.len()
    );
    assert_eq!(outbox_counts(&gw).await, (0, 0));
    assert_eq!(
        ledger(&gw, C, SKU).await,
        paid_stats(N as i64 + 1, orders.len() as i64)
    );
}

/// While the broker is unreachable, a delivery after a failed connect fails at once
/// (the next connect waits for its back-off), and the failure says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_is_not_hammered() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let names = RabbitmqConfig::default();
    let sink = RabbitMqSink::new(&url, &names, Duration::from_secs(5), None).unwrap();
    let first = sink.deliver(&[hand_entry("down1")]).await;
    let err = first[0].as_ref().expect_err("nothing listens");
    assert!(format!("{err}").contains("connect"), "{err}");
    let t = std::time::Instant::now();
    let second = sink
        .deliver(&[hand_entry("down2"), hand_entry("down3")])
        .await;
    assert_eq!(second.len(), 2);
    for r in &second {
        let err = r.as_ref().expect_err("still down");
        assert!(format!("{err}").contains("next connect in"), "{err}");
    }
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "no connect attempt"
    );
}

/// Configuration mistakes are refused at load with file:line:column: the URL variable
/// unset, a URL of another scheme (never echoed: it may hold a password), an empty
/// exchange name, a CA file for another sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_file_and_line() {
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", "http://127.0.0.1:1");
    cfg.campaign(CampaignSpec::new("cfg").item(SKU, 1, PRICE))
        .rabbitmq_sink("amqp://guest:guest@127.0.0.1:5672/%2f");
    cfg.load();

    let line_of = |cfg: &TestConfig, key: &str| {
        let text = cfg.gateway_toml();
        let n = text
            .lines()
            .position(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("{key} in {text}"));
        // The line: the column is the key's, or the value's inside an inline table.
        format!("{}:{}:", cfg.path().display(), n + 1)
    };
    let error = |cfg: &TestConfig| match cfg.try_load() {
        Ok(_) => panic!("loaded:\n{}", cfg.gateway_toml()),
        Err(e) => e.to_string(),
    };

    cfg.remove_env("FLASHGATE_AMQP_URL");
    let e = error(&cfg);
    assert!(e.starts_with(&line_of(&cfg, "rabbitmq_url_env")), "{e}");
    assert!(e.contains("FLASHGATE_AMQP_URL is not set"), "{e}");

    cfg.env("FLASHGATE_AMQP_URL", "http://guest:hunter2@127.0.0.1:5672/");
    let e = error(&cfg);
    assert!(e.starts_with(&line_of(&cfg, "rabbitmq_url_env")), "{e}");
    assert!(e.contains("must be an amqp:// or amqps:// URL"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");

    cfg.env("FLASHGATE_AMQP_URL", "amqps://guest:guest@127.0.0.1/%2f")
        .set(
            "orders",
            "rabbitmq",
            r#"{ exchange = "", routing_key = "paid", queue = "q" }"#,
        );
    let e = error(&cfg);
    assert!(e.starts_with(&line_of(&cfg, "rabbitmq")), "{e}");
    assert!(e.contains("orders.rabbitmq.exchange"), "{e}");

    cfg.unset("orders", "rabbitmq")
        .set_str("orders", "sink", "http")
        .set_str("orders", "rabbitmq_ca_file", "ca.pem");
    std::fs::write(cfg.dir().join("ca.pem"), TestCa::new(&["x"]).ca_pem).unwrap();
    let e = error(&cfg);
    assert!(e.starts_with(&line_of(&cfg, "rabbitmq_ca_file")), "{e}");
    assert!(e.contains("only for sink = \"rabbitmq\""), "{e}");
}

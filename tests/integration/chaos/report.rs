//! The per-run report: time to the first 503 after the fault, latencies, time to
//! recover (fault end → first 201) and to drain (fault end → outbox empty), answers by
//! status, redeliveries, and the audit's verdict. Printed (see it with `--nocapture`)
//! and appended to `target/chaos/report.md`, one section per run; the first run of a
//! test process starts the file afresh.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::audit::Violation;
use super::record::{Kind, Run, NO_ANSWER};

/// `redis.command_timeout` as the runs leave it (the gateway's default).
const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn opt_ms(v: Option<i64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v} ms"))
}

fn p50(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

/// The report's numbers for one run.
pub fn render(run: &Run, violations: &[Violation]) -> String {
    let buys: Vec<_> = run
        .exchanges
        .iter()
        .filter(|e| e.kind == Kind::Buy)
        .collect();
    let (start, end) = run.fault.unwrap_or((i64::MAX, i64::MAX));
    let first_503 = buys
        .iter()
        .filter(|e| e.status == 503 && e.done_ms() >= start)
        .map(|e| e.done_ms() - start)
        .min();
    let fault_503s: Vec<Duration> = buys
        .iter()
        .filter(|e| e.status == 503 && e.sent_ms >= start && e.sent_ms <= end)
        .map(|e| e.latency)
        .collect();
    // Once the first 503 of the fault is out, the breaker is open (Redis faults).
    let open_from = first_503.map_or(i64::MAX, |d| start + d);
    let open_503s: Vec<Duration> = buys
        .iter()
        .filter(|e| e.status == 503 && e.sent_ms >= open_from && e.sent_ms <= end)
        .map(|e| e.latency)
        .collect();
    let n_open = open_503s.len();
    let p50_open = p50(open_503s);
    let n_fault_503 = fault_503s.len();
    let max_503 = fault_503s.iter().max().copied();
    let slow_503 = fault_503s.iter().filter(|d| **d > COMMAND_TIMEOUT).count();
    let p50_503 = p50(fault_503s);
    let recover = buys
        .iter()
        .filter(|e| e.status == 201 && e.sent_ms >= end)
        .map(|e| e.done_ms() - end)
        .min();
    let drain = run.drained_ms.map(|d| d - end);
    let rate = drain
        .filter(|&d| d > 0 && run.backlog_at_fault_end > 0)
        .map(|d| {
            format!(
                "{:.0} orders/s",
                run.backlog_at_fault_end as f64 * 1e3 / d as f64
            )
        });
    let mut answers: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &run.exchanges {
        if e.kind == Kind::Callback && e.status == 200 {
            *answers
                .entry(e.answer.as_deref().unwrap_or("?"))
                .or_default() += 1;
        }
    }
    let answers = answers
        .iter()
        .map(|(a, n)| format!("{a}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let max_latency = run
        .exchanges
        .iter()
        .map(|e| e.latency)
        .max()
        .unwrap_or_default();
    let buy_p50 = p50(buys.iter().map(|e| e.latency).collect()).unwrap_or_default();
    let mut by_status: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for e in &run.exchanges {
        let kind = if e.kind == Kind::Buy {
            "buy"
        } else {
            "callback"
        };
        *by_status.entry((kind, e.status)).or_default() += 1;
    }
    let statuses = by_status
        .iter()
        .map(|((k, s), n)| match *s {
            NO_ANSWER => format!("{k} no-answer: {n}"),
            s => format!("{k} {s}: {n}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut per_order: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &run.deliveries {
        *per_order.entry(&d.idempotency_key).or_default() += 1;
    }
    let redelivered: usize = per_order.values().map(|n| n - 1).sum();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## {} — run {} ({} profile)\n",
        run.scenario, run.run, run.profile
    );
    let _ = writeln!(out, "| measure | value |\n|---|---|");
    let fault = run
        .fault
        .map_or("none".to_owned(), |(s, e)| format!("{} ms", e - s));
    let rows = [
        ("fault duration", fault),
        ("time to first 503 after the fault began", opt_ms(first_503)),
        (
            "p50 latency of 503s during the fault",
            p50_503.map_or("–".into(), |d| format!("{} (n = {n_fault_503})", ms(d))),
        ),
        (
            "p50 latency of 503s sent after the first one (breaker open)",
            p50_open.map_or("–".into(), |d| format!("{} (n = {n_open})", ms(d))),
        ),
        (
            "max latency of 503s during the fault",
            max_503.map_or("–".into(), ms),
        ),
        (
            "503s during the fault slower than command_timeout (250 ms)",
            slow_503.to_string(),
        ),
        ("max latency (any request)", ms(max_latency)),
        ("p50 latency of buys", ms(buy_p50)),
        ("time to recover (fault end → first 201)", opt_ms(recover)),
        ("time to drain (fault end → outbox empty)", opt_ms(drain)),
        (
            "outbox backlog at fault end",
            run.backlog_at_fault_end.to_string(),
        ),
        (
            "drain rate (backlog / time to drain)",
            rate.unwrap_or_else(|| "–".into()),
        ),
        ("answers by status", statuses),
        ("callbacks answered 200", answers),
        (
            "deliveries at the store (distinct keys / redeliveries)",
            format!("{} / {redelivered}", per_order.len()),
        ),
        (
            "pre-orders in Redis at the end",
            run.orders.len().to_string(),
        ),
        ("ledger snapshots", run.snapshots.len().to_string()),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    for n in &run.notes {
        let _ = writeln!(out, "| {n} |");
    }
    if violations.is_empty() {
        let _ = writeln!(out, "\naudit: **pass** (no violation)\n");
    } else {
        let _ = writeln!(out, "\naudit: **{} violation(s)**\n", violations.len());
        for v in violations.iter().take(50) {
            let _ = writeln!(out, "- `{}` {}", v.rule, v.detail);
        }
        let _ = writeln!(out);
    }
    out
}

/// `target/chaos/report.md` (from this test binary's path: target/<profile>/deps/…).
fn report_path() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target/<profile>/deps/<test>");
    target.join("chaos").join("report.md")
}

/// Writes every exchange of `run` as tab-separated lines to
/// `target/chaos/runs/<scenario>-<run>.tsv`, for looking into a run after the fact.
pub fn dump(run: &Run) {
    let dir = report_path().with_file_name("runs");
    std::fs::create_dir_all(&dir).expect("create target/chaos/runs");
    let t0 = run.exchanges.iter().map(|e| e.sent_ms).min().unwrap_or(0);
    let (fs, fe) = run.fault.map_or((-1, -1), |(s, e)| (s - t0, e - t0));
    let mut out = format!(
        "# {} run {} ({}): fault {fs}..{fe} ms\nkind\tuser\tsku\tkey\tafter_no_answer\tsent_ms\tlatency_us\tstatus\tretry_after\tslug\torder_id\tanswer\n",
        run.scenario, run.run, run.profile
    );
    for e in &run.exchanges {
        let _ = writeln!(
            out,
            "{:?}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            e.kind,
            e.user,
            e.sku,
            e.key,
            e.after_no_answer,
            e.sent_ms - t0,
            e.latency.as_micros(),
            e.status,
            e.retry_after,
            e.slug.as_deref().unwrap_or("-"),
            e.order_id.as_deref().unwrap_or("-"),
            e.answer.as_deref().unwrap_or("-"),
        );
    }
    let path = dir.join(format!("{}-{}.tsv", run.scenario, run.run));
    std::fs::write(&path, out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Prints `section` and appends it to the report file (truncated on the first write of
/// this process).
pub fn publish(section: &str) {
    static FIRST: Mutex<bool> = Mutex::new(true);
    println!("{section}");
    let mut first = FIRST.lock().unwrap();
    let path = report_path();
    std::fs::create_dir_all(path.parent().expect("target/chaos")).expect("create target/chaos");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!*first)
        .truncate(*first)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if *first {
        let _ = writeln!(f, "# flashgate chaos report\n");
    }
    f.write_all(section.as_bytes())
        .expect("write the chaos report");
    *first = false;
}

// payments.js — the payment provider: pays a share of the pre-orders that flash_crowd.js
// made, through signed callbacks, some of them twice (the provider retries).
//
// Run after flash_crowd.js wrote its orders with --console-output:
//
//   k6 run -e PAYMENT_SECRET=$FLASHGATE_PAYMENT_SECRET -e ADMIN_TOKEN=$FLASHGATE_ADMIN_TOKEN \
//     -e ORDERS_FILE=var/crowd-orders.log -e PAY_SHARE=0.6 loadtest/k6/payments.js
//
// Where the order ids come from: flash_crowd.js logs each reserved order as the line
// "flashgate-order <order_id> <amount_cents> <user>"; ORDERS_FILE is any file holding
// those lines (k6's --console-output file, or its captured stderr; other lines are
// ignored, duplicates are paid once). No Redis access and no re-buying is needed.
//
// Which orders: of the N distinct orders (sorted by id, i.e. by time), order i is paid
// when floor((i+1)*PAY_SHARE) > floor(i*PAY_SHARE): exactly floor(N*PAY_SHARE) orders,
// spread evenly. The rest are left to expire. A share DUP_SHARE of the paid ones gets
// its callback a second time, which must answer 200 "paid" and hand nothing new over.
//
// Each callback: POST /payments/callback with
//   {"order_id", "payment_id": "pay_<order_id>", "amount_cents", "status": "succeeded"}
// and `Flashgate-Signature: t=<unix>,v1=<hex HMAC-SHA256(PAYMENT_SECRET, "<t>.<body>")>`.
//
// Counters: pay_paid (200 "paid"), pay_duplicate_paid (the repeat answered 200 "paid"),
// pay_refund_required (200 "refund_required": the pre-order had expired first),
// pay_other (anything else: fails the run). The teardown checks the ledger of every item
// of CAMPAIGN (initial + adjusted = remaining + pending + paid) and that `paid` grew by at
// most the number of orders paid; handleSummary also checks it grew by exactly pay_paid
// (printed and in SUMMARY_FILE; this holds when nobody else pays at the same time).
//
// Environment:
//   BASE_URL        public listener              http://127.0.0.1:18080
//   ADMIN_URL       admin listener               http://127.0.0.1:19090
//   ADMIN_TOKEN     admin bearer token ("" when the gateway has none)
//   PAYMENT_SECRET  the gateway's payment secret (payment.secret_env)   required
//   ORDERS_FILE     file with "flashgate-order ..." lines (absolute, or relative to the
//                   working directory)                                  required
//   CAMPAIGN        campaign id, for the ledger  crowd
//   PAY_SHARE       share of the orders to pay   0.6
//   DUP_SHARE       share of the paid orders whose callback is sent twice   0.1
//   VUS             concurrent callers           20
//   P99_MS          threshold on p99 of the callback latency (ms)   1000
//   SUMMARY_FILE    handleSummary writes the JSON summary here, with a `flashgate`
//                   section: counts, the paid order ids, ledger, checks  (none)

import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import {
  envStr, envInt, envFloat, envRequired, fromCwd, paymentSignature,
  fetchLedger, ledgerChecks, ledgerTable, count, stat, thresholdResults, allChecks, fmtMs,
} from './lib/flashgate.js';

const BASE_URL = envStr('BASE_URL', 'http://127.0.0.1:18080');
const ADMIN_URL = envStr('ADMIN_URL', 'http://127.0.0.1:19090');
const ADMIN_TOKEN = envStr('ADMIN_TOKEN', '');
const PAYMENT_SECRET = envRequired('PAYMENT_SECRET');
const ORDERS_FILE = envRequired('ORDERS_FILE');
const CAMPAIGN = envStr('CAMPAIGN', 'crowd');
const PAY_SHARE = Math.min(1, Math.max(0, envFloat('PAY_SHARE', 0.6)));
const DUP_SHARE = Math.min(1, Math.max(0, envFloat('DUP_SHARE', 0.1)));
const P99_MS = envInt('P99_MS', 1000);
const SUMMARY_FILE = envStr('SUMMARY_FILE', '');

// All orders of the file, then the ones to pay (the same in every VU: init is pure).
const ORDERS = (() => {
  const seen = new Map();
  const re = /flashgate-order (\S+) (\d+) (\S+)/g;
  const text = open(fromCwd(ORDERS_FILE));
  let m;
  while ((m = re.exec(text)) !== null) {
    if (!seen.has(m[1])) seen.set(m[1], { order_id: m[1], amount_cents: parseInt(m[2], 10), user: m[3] });
  }
  return [...seen.values()].sort((a, b) => (a.order_id < b.order_id ? -1 : 1));
})();
const chosen = (share) => ORDERS.filter((_, i) => Math.floor((i + 1) * share) > Math.floor(i * share));
const TO_PAY = chosen(PAY_SHARE);
// Duplicates: the same even spread over the paid ones.
const DUPLICATE = new Set(TO_PAY.filter((_, i) => Math.floor((i + 1) * DUP_SHARE) > Math.floor(i * DUP_SHARE)).map((o) => o.order_id));
const VUS = Math.max(1, Math.min(envInt('VUS', 20), TO_PAY.length));

const paid = new Counter('pay_paid');
const duplicatePaid = new Counter('pay_duplicate_paid');
const refundRequired = new Counter('pay_refund_required');
const other = new Counter('pay_other');

http.setResponseCallback(http.expectedStatuses(200));

export const options = {
  scenarios: {
    pay: {
      executor: 'shared-iterations',
      vus: VUS,
      // k6 wants at least one iteration; with nothing to pay it does nothing.
      iterations: Math.max(1, TO_PAY.length),
      maxDuration: '120s',
    },
  },
  thresholds: {
    pay_other: ['count==0'],
    'checks{kind:ledger}': ['rate==1'],
    'http_req_duration{name:payment_callback}': [`p(99)<${P99_MS}`],
  },
  summaryTrendStats: ['min', 'med', 'avg', 'p(90)', 'p(99)', 'max'],
};

export function setup() {
  const before = fetchLedger(ADMIN_URL, ADMIN_TOKEN, CAMPAIGN);
  console.warn(`payments: ${ORDERS.length} orders in ${ORDERS_FILE}, paying ${TO_PAY.length} ` +
    `(PAY_SHARE ${PAY_SHARE}), ${DUPLICATE.size} of them twice`);
  return { before };
}

function callback(order) {
  const body = JSON.stringify({
    order_id: order.order_id,
    payment_id: `pay_${order.order_id}`,
    amount_cents: order.amount_cents,
    status: 'succeeded',
  });
  const t = Math.floor(Date.now() / 1000);
  return http.post(`${BASE_URL}/payments/callback`, body, {
    headers: {
      'Content-Type': 'application/json',
      'Flashgate-Signature': paymentSignature(PAYMENT_SECRET, body, t),
    },
    tags: { name: 'payment_callback' },
  });
}

function statusOf(res) {
  try {
    return res.status === 200 ? res.json('status') : '';
  } catch (_) {
    return '';
  }
}

export default function () {
  const order = TO_PAY[exec.scenario.iterationInTest];
  if (!order) return;
  const res = callback(order);
  const st = statusOf(res);
  if (st === 'paid') paid.add(1);
  else if (st === 'refund_required') refundRequired.add(1);
  else {
    other.add(1);
    console.error(`payment of ${order.order_id}: ${res.status} ${res.body}`);
  }
  if (st === 'paid' && DUPLICATE.has(order.order_id)) {
    const again = callback(order);
    if (statusOf(again) === 'paid') duplicatePaid.add(1);
    else {
      other.add(1);
      console.error(`repeated payment of ${order.order_id}: ${again.status} ${again.body}`);
    }
  }
}

function paymentChecks(before, after, paidCount) {
  const out = ledgerChecks(after);
  let grown = 0;
  for (const sku of Object.keys(after.items)) {
    grown += after.items[sku].paid - ((before.items[sku] || { paid: 0 }).paid);
  }
  out.push({
    name: `paid units grew by ${grown}, at most the ${TO_PAY.length} orders paid`,
    ok: grown >= 0 && grown <= TO_PAY.length,
  });
  if (paidCount !== undefined) {
    out.push({ name: `paid units grew by ${grown} = ${paidCount} callbacks answered "paid"`, ok: grown === paidCount });
  }
  return out;
}

export function teardown(s) {
  const after = fetchLedger(ADMIN_URL, ADMIN_TOKEN, CAMPAIGN);
  for (const c of paymentChecks(s.before, after)) {
    check(c, { [c.name]: (x) => x.ok }, { kind: 'ledger' });
    if (!c.ok) console.error(`LEDGER CHECK FAILED: ${c.name}`);
  }
}

export function handleSummary(data) {
  const s = data.setup_data;
  const counts = {
    orders_in_file: ORDERS.length,
    to_pay: TO_PAY.length,
    paid: count(data, 'pay_paid'),
    duplicate_paid: count(data, 'pay_duplicate_paid'),
    refund_required: count(data, 'pay_refund_required'),
    other: count(data, 'pay_other'),
  };
  let after = null;
  let checks;
  try {
    after = fetchLedger(ADMIN_URL, ADMIN_TOKEN, CAMPAIGN);
    checks = s ? paymentChecks(s.before, after, counts.paid) : [];
  } catch (e) {
    checks = [{ name: `ledger readable: ${e}`, ok: false }];
  }
  const thresholds = thresholdResults(data);
  const latency = {
    p50: stat(data, 'http_req_duration{name:payment_callback}', 'med'),
    p99: stat(data, 'http_req_duration{name:payment_callback}', 'p(99)'),
  };
  const flashgate = {
    campaign: CAMPAIGN,
    pay_share: PAY_SHARE,
    counts,
    paid_order_ids: TO_PAY.map((o) => o.order_id),
    latency_ms: latency,
    ledger_after: after,
    checks,
    thresholds,
    ok: checks.every((c) => c.ok) && thresholds.every((t) => t.ok),
  };
  const lines = ['', `payments on ${CAMPAIGN}: ${counts.orders_in_file} orders, paying ${counts.to_pay} (share ${PAY_SHARE})`];
  for (const k of ['paid', 'duplicate_paid', 'refund_required', 'other']) {
    lines.push(`    ${k.padEnd(16)} ${String(counts[k]).padStart(8)}`);
  }
  lines.push(`  callback latency p50 ${fmtMs(latency.p50)}  p99 ${fmtMs(latency.p99)}`);
  if (after) lines.push(`  ledger of ${CAMPAIGN} now:\n${ledgerTable(after)}`);
  for (const c of checks) lines.push(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}`);
  for (const t of thresholds) lines.push(`  ${t.ok ? 'ok  ' : 'FAIL'} threshold ${t.metric}: ${t.threshold}`);
  for (const c of allChecks(data.root_group)) {
    if (c.fails > 0) lines.push(`  FAIL check ${c.name} (${c.fails} failed)`);
  }
  lines.push(flashgate.ok ? '  => payments OK' : '  => payments FAILED', '');
  const out = { stdout: lines.join('\n') + '\n' };
  if (SUMMARY_FILE) out[SUMMARY_FILE] = JSON.stringify(Object.assign({}, data, { flashgate }), null, 2);
  return out;
}

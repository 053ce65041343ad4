// flash_crowd.js — a flash crowd: many distinct users, each from its own IP, all pressing
// "buy" on one item the moment the campaign starts; then the ledger is checked.
//
// Run (gateway with loadtest/config/gateway.toml, campaign `crowd`, see loadtest/README.md):
//
//   k6 run --console-output var/crowd-orders.log \
//     -e JWT_SECRET=$FLASHGATE_JWT_SECRET -e ADMIN_TOKEN=$FLASHGATE_ADMIN_TOKEN \
//     -e USERS=2000 loadtest/k6/flash_crowd.js
//
// Each user is one iteration: it mints its own HS256 JWT (sub = user id, exp) with the
// configured secret, takes its own client IP through X-Forwarded-For (the gateway must
// trust loopback as a proxy), waits for the campaign start, presses buy PRESSES times
// with one Idempotency-Key (a double click: the second answer is 200 with the same
// order, or 409 again), retries after 429/503 honouring Retry-After, and - when SKU2 is
// set and it got a unit - tries SKU2 as well (409 limit-reached at per_user_limit 1).
//
// Every reserved order is logged as "flashgate-order <order_id> <amount_cents> <user>";
// with --console-output FILE those lines are what payments.js pays.
//
// The run FAILS (exit code 99) when:
//   - any buy answer is a 5xx, or an outcome not listed below (401, 404, 400, ...);
//   - p99 of the buy latency is above P99_MS;
//   - the ledger check in teardown fails (GET /admin/campaigns on ADMIN_URL):
//       * every item: initial + adjusted = remaining + pending + paid, remaining >= 0;
//       * SKU, when no unit came back during the run (expired/cancelled unchanged):
//         when demand (USERS) >= the stock left at the start, exactly that stock was
//         reserved and remaining is 0; otherwise at most USERS units were reserved;
//       * SKU2 with per_user_limit 1: nobody got a unit of it (only holders try it).
//   setup() fails the run at once when the campaign or the admin API cannot be read.
//
// Outcome counters (one per answer, retries included): buy_reserved_201,
// buy_existing_200, buy_sold_out_409, buy_limit_reached_409, buy_rate_limited_429,
// buy_unavailable_503, buy_not_started_403, buy_other; buy_server_errors counts every 5xx.
//
// Environment (k6 run -e NAME=value, or exported):
//   BASE_URL      public listener                     http://127.0.0.1:18080
//   ADMIN_URL     admin listener                      http://127.0.0.1:19090
//   ADMIN_TOKEN   admin bearer token ("" when the gateway has none)
//   JWT_SECRET    the gateway's JWT key (identity.jwt_secret_env)        required
//   CAMPAIGN      campaign id                         crowd
//   SKU           the item everybody wants            phone-x-128g-black
//   SKU2          optional second item tried by users who got SKU         (none)
//   USERS         distinct users, one iteration each  2000
//   VUS           concurrent virtual users            min(USERS, 500)
//   IPS           distinct client IPs; users share them round-robin when < USERS   USERS
//   USER_PREFIX   user ids are <prefix><n>            u<base36 time>- (fresh users every run)
//   PRESSES       buy presses per user (same Idempotency-Key)            2
//   RETRIES       extra attempts after a 429 or 503   2
//   MAX_WAIT      longest wait for the campaign start (s)                120
//   DURATION      longest crowd after the start (s)   60
//   P99_MS        threshold on p99 of buy latency (ms)                   500
//   SUMMARY_FILE  handleSummary writes the JSON summary here (k6's data plus a
//                 `flashgate` section: outcomes, latency, span, rate, ledger)   (none)
//
// Latency and rate: `http_req_duration{name:buy}` (p50/p90/p99); `buy_since_start_ms`
// records when each answer arrived after the start, its max is the crowd's span, and
// buys / span is the rate printed (k6's own http_reqs rate also counts the wait).

import http from 'k6/http';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import {
  envStr, envInt, envRequired, mintJwt, clientIp, buyOutcome, retryAfter,
  fetchLedger, reservedUnits, ledgerChecks, ledgerTable, stat, count,
  thresholdResults, allChecks, fmtMs,
} from './lib/flashgate.js';

const BASE_URL = envStr('BASE_URL', 'http://127.0.0.1:18080');
const ADMIN_URL = envStr('ADMIN_URL', 'http://127.0.0.1:19090');
const ADMIN_TOKEN = envStr('ADMIN_TOKEN', '');
const JWT_SECRET = envRequired('JWT_SECRET');
const CAMPAIGN = envStr('CAMPAIGN', 'crowd');
const SKU = envStr('SKU', 'phone-x-128g-black');
const SKU2 = envStr('SKU2', '');
const USERS = envInt('USERS', 2000);
const VUS = Math.min(envInt('VUS', 500), USERS);
const IPS = Math.max(1, envInt('IPS', USERS));
const PRESSES = Math.max(1, envInt('PRESSES', 2));
const RETRIES = Math.max(0, envInt('RETRIES', 2));
const MAX_WAIT = envInt('MAX_WAIT', 120);
const DURATION = envInt('DURATION', 60);
const P99_MS = envInt('P99_MS', 500);
const SUMMARY_FILE = envStr('SUMMARY_FILE', '');

const OUTCOMES = ['reserved_201', 'existing_200', 'sold_out_409', 'limit_reached_409',
  'rate_limited_429', 'unavailable_503', 'not_started_403', 'other'];
const counters = {};
for (const o of OUTCOMES) counters[o] = new Counter(`buy_${o}`);
const serverErrors = new Counter('buy_server_errors');
const sinceStart = new Trend('buy_since_start_ms', false);

// 403 is expected before the start (then we wait), 409 and 429 are answers, not failures.
http.setResponseCallback(http.expectedStatuses(200, 201, 403, 409, 429));

export const options = {
  scenarios: {
    crowd: {
      executor: 'shared-iterations',
      vus: VUS,
      iterations: USERS,
      maxDuration: `${MAX_WAIT + DURATION}s`,
    },
  },
  thresholds: {
    buy_server_errors: ['count==0'],
    buy_other: ['count==0'],
    'http_req_duration{name:buy}': [`p(99)<${P99_MS}`],
    'checks{kind:ledger}': ['rate==1'],
  },
  summaryTrendStats: ['min', 'med', 'avg', 'p(90)', 'p(99)', 'max'],
  setupTimeout: `${MAX_WAIT + 30}s`,
  teardownTimeout: '60s',
};

export function setup() {
  const res = http.get(`${BASE_URL}/seckill/campaigns/${CAMPAIGN}`, { tags: { name: 'campaign' } });
  if (res.status !== 200) {
    exec.test.abort(`GET ${BASE_URL}/seckill/campaigns/${CAMPAIGN} answered ${res.status}: ${res.body}`);
  }
  const localNow = Date.now();
  const serverNow = Date.parse(res.json('server_time'));
  const startsAt = Date.parse(res.json('starts_at'));
  // The start on our clock (same host: the offset is ~0, but do not assume it).
  const startAt = Math.max(localNow, startsAt - (serverNow - localNow));
  if (startAt - localNow > MAX_WAIT * 1000) {
    exec.test.abort(`campaign ${CAMPAIGN} starts in ${Math.round((startAt - localNow) / 1000)}s, more than MAX_WAIT=${MAX_WAIT}s`);
  }
  if (!(res.json('items') || []).some((i) => i.sku === SKU)) {
    exec.test.abort(`campaign ${CAMPAIGN} has no item ${SKU}`);
  }
  const before = fetchLedger(ADMIN_URL, ADMIN_TOKEN, CAMPAIGN);
  const prefix = envStr('USER_PREFIX', `u${Date.now().toString(36)}-`);
  console.warn(`flash crowd: ${USERS} users (${VUS} VUs, ${Math.min(IPS, USERS)} IPs) on ${CAMPAIGN}/${SKU}, ` +
    `stock left ${before.items[SKU].remaining}, start in ${((startAt - localNow) / 1000).toFixed(1)}s`);
  return { prefix, startAt, before };
}

function buy(sku, headers, s) {
  const url = `${BASE_URL}/seckill/campaigns/${CAMPAIGN}/items/${sku}/orders`;
  let res;
  for (let attempt = 0; ; ) {
    res = http.post(url, null, { headers, tags: { name: 'buy' } });
    sinceStart.add(Date.now() - s.startAt);
    const outcome = buyOutcome(res);
    counters[outcome].add(1);
    if (res.status >= 500) serverErrors.add(1);
    if (outcome === 'other') {
      console.error(`unexpected buy answer ${res.status}: ${res.body}`);
    }
    if (outcome === 'not_started_403' && Date.now() < s.startAt + MAX_WAIT * 1000) {
      sleep(retryAfter(res, 1)); // our clock ran early: wait for the gateway's
      continue;
    }
    if ((res.status === 429 || res.status === 503) && attempt < RETRIES) {
      attempt += 1;
      sleep(retryAfter(res, 5));
      continue;
    }
    return res;
  }
}

export default function (s) {
  const n = exec.scenario.iterationInTest;
  const user = `${s.prefix}${n}`;
  const headers = {
    Authorization: `Bearer ${mintJwt(JWT_SECRET, user, 3600)}`,
    'X-Forwarded-For': clientIp(n % IPS),
    'Idempotency-Key': `${user}:1`,
  };
  const wait = s.startAt - Date.now();
  if (wait > 0) sleep(wait / 1000);

  let order = null;
  for (let p = 0; p < PRESSES; p++) {
    const res = buy(SKU, headers, s);
    if (res.status === 201) {
      order = res.json();
      console.log(`flashgate-order ${order.order_id} ${order.amount_cents} ${user}`);
    }
  }
  if (order && SKU2) {
    buy(SKU2, Object.assign({}, headers, { 'Idempotency-Key': `${user}:2` }), s);
  }
}

/** The ledger checks of this run: a list of { name, ok }. */
function crowdChecks(s, after) {
  const out = ledgerChecks(after);
  const b = s.before.items[SKU];
  const a = after.items[SKU];
  const reserved = reservedUnits(a) - reservedUnits(b);
  const returned = a.expired + a.cancelled - (b.expired + b.cancelled);
  const added = a.adjusted - b.adjusted;
  if (returned === 0 && added === 0) {
    if (USERS >= b.remaining) {
      out.push({
        name: `${SKU}: demand ${USERS} >= stock ${b.remaining}: exactly the stock reserved (${reserved}), remaining ${a.remaining} = 0`,
        ok: reserved === b.remaining && a.remaining === 0,
      });
    } else {
      out.push({
        name: `${SKU}: demand ${USERS} < stock ${b.remaining}: reserved ${reserved} <= ${USERS}`,
        ok: reserved <= USERS && a.remaining === b.remaining - reserved,
      });
    }
  } else {
    out.push({
      name: `${SKU}: ${returned} units returned and ${added} added during the run: reserved ${reserved} <= stock ${b.remaining} + ${returned + added}`,
      ok: reserved <= b.remaining + returned + added,
    });
  }
  if (SKU2 && after.per_user_limit === 1 && after.items[SKU2] && s.before.items[SKU2]) {
    const r2 = reservedUnits(after.items[SKU2]) - reservedUnits(s.before.items[SKU2]);
    out.push({
      name: `per_user_limit 1: no holder of ${SKU} got ${SKU2} (reserved ${r2})`,
      ok: r2 === 0,
    });
  }
  return out;
}

export function teardown(s) {
  const after = fetchLedger(ADMIN_URL, ADMIN_TOKEN, CAMPAIGN);
  for (const c of crowdChecks(s, after)) {
    check(c, { [c.name]: (x) => x.ok }, { kind: 'ledger' });
    if (!c.ok) console.error(`LEDGER CHECK FAILED: ${c.name}`);
  }
}

export function handleSummary(data) {
  const s = data.setup_data;
  let after = null;
  let checks = [];
  try {
    after = fetchLedger(ADMIN_URL, ADMIN_TOKEN, CAMPAIGN);
    checks = s ? crowdChecks(s, after) : [];
  } catch (e) {
    checks = [{ name: `ledger readable: ${e}`, ok: false }];
  }
  const outcomes = {};
  for (const o of OUTCOMES) outcomes[o] = count(data, `buy_${o}`);
  const buys = OUTCOMES.reduce((sum, o) => sum + outcomes[o], 0);
  const spanMs = stat(data, 'buy_since_start_ms', 'max') || 0;
  const reserved = s && after ? reservedUnits(after.items[SKU]) - reservedUnits(s.before.items[SKU]) : null;
  // Client and server must agree: one 201 per unit reserved (quantity 1).
  checks.push({
    name: `client saw one 201 per reserved unit: ${outcomes.reserved_201} 201s, ${reserved} units`,
    ok: reserved === outcomes.reserved_201,
  });
  const thresholds = thresholdResults(data);
  const flashgate = {
    campaign: CAMPAIGN,
    sku: SKU,
    users: USERS,
    vus: VUS,
    ips: Math.min(IPS, USERS),
    outcomes,
    buys,
    server_errors: count(data, 'buy_server_errors'),
    latency_ms: {
      p50: stat(data, 'http_req_duration{name:buy}', 'med'),
      p90: stat(data, 'http_req_duration{name:buy}', 'p(90)'),
      p99: stat(data, 'http_req_duration{name:buy}', 'p(99)'),
      max: stat(data, 'http_req_duration{name:buy}', 'max'),
    },
    span_ms: spanMs,
    req_per_s: spanMs > 0 ? buys / (spanMs / 1000) : null,
    stock_at_start: s ? s.before.items[SKU].remaining : null,
    reserved_units: reserved,
    ledger_before: s ? s.before : null,
    ledger_after: after,
    checks,
    thresholds,
    ok: checks.every((c) => c.ok) && thresholds.every((t) => t.ok),
  };
  const lines = [];
  lines.push('');
  lines.push(`flash crowd on ${CAMPAIGN}/${SKU}: ${USERS} users, ${VUS} VUs, ${flashgate.ips} IPs`);
  lines.push(`  buys ${buys} in ${(spanMs / 1000).toFixed(2)}s after the start` +
    (flashgate.req_per_s ? ` (${flashgate.req_per_s.toFixed(0)} req/s)` : ''));
  for (const o of OUTCOMES) lines.push(`    ${o.padEnd(18)} ${String(outcomes[o]).padStart(8)}`);
  const l = flashgate.latency_ms;
  lines.push(`  buy latency p50 ${fmtMs(l.p50)}  p90 ${fmtMs(l.p90)}  p99 ${fmtMs(l.p99)}  max ${fmtMs(l.max)}`);
  if (after) lines.push(`  ledger of ${CAMPAIGN} now:\n${ledgerTable(after)}`);
  for (const c of checks) lines.push(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}`);
  const underSold = checks.some((c) => !c.ok && c.name.includes('exactly the stock reserved'));
  if (underSold && (outcomes.rate_limited_429 > 0 || outcomes.unavailable_503 > 0)) {
    // Fewer units reserved than the demand allows is what 429s and 503s cause when buyers
    // run out of retries: the stock was under-sold, the ledger is a separate check above.
    lines.push(`  note: ${outcomes.rate_limited_429} answers were 429 (rate-limited) and ` +
      `${outcomes.unavailable_503} were 503: buyers who ran out of retries left stock unsold. ` +
      'That is the rate limits (or shedding) at work, not a broken ledger. A crowd from one ' +
      'machine is one IP unless the gateway trusts it as a proxy: see "Your own campaign" in loadtest/README.md.');
  }
  for (const t of thresholds) lines.push(`  ${t.ok ? 'ok  ' : 'FAIL'} threshold ${t.metric}: ${t.threshold}`);
  for (const c of allChecks(data.root_group)) {
    if (c.fails > 0) lines.push(`  FAIL check ${c.name} (${c.fails} failed)`);
  }
  lines.push(flashgate.ok ? '  => flash crowd OK' : '  => flash crowd FAILED');
  lines.push('');
  const out = { stdout: lines.join('\n') + '\n' };
  if (SUMMARY_FILE) {
    out[SUMMARY_FILE] = JSON.stringify(Object.assign({}, data, { flashgate }), null, 2);
  }
  return out;
}

// raffle.js — a raffle from entries to the last re-selection, through the
// public and admin HTTP APIs only, and an audit of the draw at the end.
//
//   k6 run -e JWT_SECRET=... -e PAYMENT_SECRET=... -e ADMIN_TOKEN=... \
//     -e CAMPAIGN=demo -e SKU=phone-x-128g-black -e STARTS_AT=<unix s> loadtest/k6/raffle.js
//
// The campaign must be a raffle whose entries are open now and whose draw is at
// STARTS_AT. ENTRANTS users (each its own JWT and client IP) are split over VUS virtual
// users. Each VU:
//   1. enters its users (POST …/entries: 201, or 200 for a repeat);
//   2. waits for the draw (the campaign view shows the seed);
//   3. every second until RUN_SECS after the draw, asks GET …/entries/me for each of its
//      users still in play (everyone once; after that only those selected or near the
//      front of the waiting line) and acts as a crowd does:
//        - a selected user buys, unless it is one of the NO_SHOW share that never buys
//          (their claim lapses and the place passes on); a buyer pays at once with
//          probability PAY_SHARE, else the pre-order expires (its unit goes to the next);
//        - a share TRY_SHARE of the users not selected try to buy anyway: 403 not-selected.
// Checks (failing any fails the run): entries answered 201/200; a selected user's buy is
// 201; everyone else's is 403 `not-selected`; payments are 200. The teardown audits:
//   - the seed matches the commitment published before the draw;
//   - every entrant's ticket and rank recomputed here from the seed (HMAC-SHA256) match
//     the export, exactly the first `selected_count` ranks were selected, none before a
//     better rank (so every reservation was made by a selected entrant in rank order);
//   - reservations (pending + paid + expired + cancelled units) = claimed entrants;
//   - the ledger holds for every item.
//
// Environment:
//   BASE_URL ADMIN_URL     listeners                  http://127.0.0.1:18080 / :19090
//   ADMIN_TOKEN            admin bearer token ("" when none)
//   JWT_SECRET PAYMENT_SECRET                         required
//   CAMPAIGN SKU           the raffle and the item entrants buy       required
//   STARTS_AT              the campaign's starts_at, unix seconds     required
//   ENTRANTS               50000          VUS        100
//   NO_SHOW                0.2            PAY_SHARE  0.5            TRY_SHARE 0.01
//   RUN_SECS               40             LOOKAHEAD  300 (waitlist positions that keep asking)
//   SUMMARY_FILE           handleSummary writes the JSON summary here (none)

import http from 'k6/http';
import crypto from 'k6/crypto';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { envStr, envInt, envFloat, envRequired, mintJwt, clientIp, paymentSignature, slugOf } from './lib/flashgate.js';

const BASE_URL = envStr('BASE_URL', 'http://127.0.0.1:18080');
const ADMIN_URL = envStr('ADMIN_URL', 'http://127.0.0.1:19090');
const ADMIN_TOKEN = envStr('ADMIN_TOKEN', '');
const JWT_SECRET = envRequired('JWT_SECRET');
const PAYMENT_SECRET = envRequired('PAYMENT_SECRET');
const CAMPAIGN = envRequired('CAMPAIGN');
const SKU = envRequired('SKU');
const STARTS_AT = envInt('STARTS_AT', 0);
const ENTRANTS = envInt('ENTRANTS', 50000);
const VUS = envInt('VUS', 100);
const NO_SHOW = envFloat('NO_SHOW', 0.2);
const PAY_SHARE = envFloat('PAY_SHARE', 0.5);
const TRY_SHARE = envFloat('TRY_SHARE', 0.01);
const RUN_SECS = envInt('RUN_SECS', 40);
const LOOKAHEAD = envInt('LOOKAHEAD', 300);

const entered = new Counter('raffle_entered');
const reserved = new Counter('raffle_reserved');
const paid = new Counter('raffle_paid');
const refused = new Counter('raffle_not_selected');
const noShows = new Counter('raffle_no_show');

export const options = {
  scenarios: {
    raffle: {
      executor: 'per-vu-iterations', vus: VUS, iterations: 1,
      maxDuration: `${Math.max(STARTS_AT - Math.floor(Date.now() / 1000), 0) + RUN_SECS + 120}s`,
    },
  },
  thresholds: { checks: ['rate==1.0'] },
  setupTimeout: '30s',
  teardownTimeout: '120s',
};

const user = (n) => `raffle-user-${n}`;
// A fixed per-user coin in [0, 1): who never shows, who pays, who tries without a place.
function coin(n, salt) {
  const h = crypto.sha256(`${salt}:${n}`, 'hex');
  return parseInt(h.slice(0, 8), 16) / 4294967296;
}

function params(n, name) {
  return {
    headers: { Authorization: `Bearer ${mintJwt(JWT_SECRET, user(n), 3600)}`, 'X-Forwarded-For': clientIp(n) },
    tags: { name },
    responseCallback: http.expectedStatuses(200, 201, 403),
  };
}

const entriesUrl = `${BASE_URL}/seckill/campaigns/${CAMPAIGN}/entries`;
const buyUrl = `${BASE_URL}/seckill/campaigns/${CAMPAIGN}/items/${SKU}/orders`;

function pay(order) {
  const body = JSON.stringify({ order_id: order.order_id, payment_id: `pay_${order.order_id}`,
    amount_cents: order.amount_cents, status: 'succeeded' });
  const sig = paymentSignature(PAYMENT_SECRET, body, Math.floor(Date.now() / 1000));
  const res = http.post(`${BASE_URL}/payments/callback`, body,
    { headers: { 'Content-Type': 'application/json', 'Flashgate-Signature': sig }, tags: { name: 'callback' } });
  if (check(res, { 'callback 200 paid': (r) => r.status === 200 && r.json('status') === 'paid' })) paid.add(1);
}

export default function () {
  const vu = exec.vu.idInTest - 1;
  const per = Math.ceil(ENTRANTS / VUS);
  const mine = [];
  for (let n = vu * per; n < Math.min(ENTRANTS, (vu + 1) * per); n++) mine.push(n);

  for (const n of mine) {
    const res = http.post(entriesUrl, null, params(n, 'entry'));
    if (check(res, { 'entry 201/200': (r) => r.status === 201 || r.status === 200 }) && res.status === 201) entered.add(1);
  }

  // The draw: every VU sees it through the public view.
  for (;;) {
    const v = http.get(`${BASE_URL}/seckill/campaigns/${CAMPAIGN}`, { tags: { name: 'campaign' } });
    if (v.status === 200 && v.json('admission.seed')) break;
    sleep(0.2);
  }

  const deadline = Date.now() + RUN_SECS * 1000;
  let inPlay = mine.slice();
  const tried = new Set();
  while (inPlay.length > 0 && Date.now() < deadline) {
    const next = [];
    for (const n of inPlay) {
      const me = http.get(`${entriesUrl}/me`, params(n, 'entry_me'));
      if (me.status !== 200) continue;
      const st = me.json('status');
      if (st === 'selected') {
        if (coin(n, 'no-show') < NO_SHOW) { noShows.add(1); continue; }
        const res = http.post(buyUrl, null, params(n, 'buy'));
        if (check(res, { 'a selected entrant reserves': (r) => r.status === 201 })) {
          reserved.add(1);
          if (coin(n, 'pay') < PAY_SHARE) pay(res.json());
        }
      } else if (st === 'waitlisted') {
        if (!tried.has(n) && coin(n, 'try') < TRY_SHARE) {
          tried.add(n);
          const res = http.post(buyUrl, null, params(n, 'buy'));
          if (check(res, { 'anyone else is not-selected': (r) => r.status === 403 && slugOf(r) === 'not-selected' })) refused.add(1);
        }
        if (me.json('position') <= LOOKAHEAD) next.push(n);
      }
    }
    inPlay = next;
    sleep(1);
  }
}

function hexToBytes(hex) {
  const b = new Uint8Array(hex.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(hex.substr(i * 2, 2), 16);
  return b.buffer;
}

export function teardown() {
  const auth = ADMIN_TOKEN ? { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } } : {};
  const ex = http.get(`${ADMIN_URL}/admin/campaigns/${CAMPAIGN}/entries`, Object.assign({ timeout: '120s' }, auth));
  if (ex.status !== 200) throw new Error(`export answered ${ex.status}: ${ex.body}`);
  const e = ex.json();
  const seed = hexToBytes(e.seed);
  const audit = {};
  audit['the seed matches the commitment'] = crypto.sha256(seed, 'hex') === e.commitment;
  const tickets = e.entrants.map((x) => ({ u: x.user_id, t: crypto.hmac('sha256', seed, x.user_id, 'hex') }));
  tickets.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : a.u < b.u ? -1 : a.u > b.u ? 1 : 0));
  let ranksOk = tickets.length === ENTRANTS;
  let prefixOk = true;
  let orderOk = true;
  let last = '';
  let claimed = 0;
  e.entrants.forEach((x, i) => {
    if (x.user_id !== tickets[i].u || x.ticket !== tickets[i].t || x.rank !== i + 1) ranksOk = false;
    if ((x.selected_at != null) !== (i < e.selected_count)) prefixOk = false;
    if (x.selected_at != null) { if (x.selected_at < last) orderOk = false; last = x.selected_at; }
    if (x.status === 'claimed') claimed++;
  });
  audit[`${ENTRANTS} entrants, ranks recomputed from the seed`] = ranksOk;
  audit[`exactly the first ${e.selected_count} ranks selected`] = prefixOk;
  audit['none selected before a better rank'] = orderOk;
  const led = http.get(`${ADMIN_URL}/admin/campaigns`, auth).json('campaigns').find((c) => c.id === CAMPAIGN);
  let units = 0;
  let ledgerOk = true;
  for (const it of led.items) {
    units += it.pending + it.paid + it.expired + it.cancelled;
    if (!it.ledger_ok) ledgerOk = false;
  }
  audit[`reservations (${units}) = claimed entrants (${claimed})`] = units === claimed;
  audit['the ledger holds'] = ledgerOk;
  console.log(`raffle audit: ${JSON.stringify(led.admission)}`);
  for (const [name, ok] of Object.entries(audit)) {
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}`);
    check(null, { [name]: () => ok });
  }
}

export function handleSummary(data) {
  const m = (k) => (data.metrics[k] ? data.metrics[k].values.count : 0);
  const lines = [
    `raffle on ${CAMPAIGN}/${SKU}: ${m('raffle_entered')} entered, ${m('raffle_reserved')} reserved by selected entrants, `
      + `${m('raffle_paid')} paid, ${m('raffle_no_show')} no-shows, ${m('raffle_not_selected')} refused as not-selected`,
    `checks: ${data.metrics.checks ? (data.metrics.checks.values.rate * 100).toFixed(2) : 0}% passed`,
  ];
  const out = { stdout: lines.join('\n') + '\n' };
  const file = envStr('SUMMARY_FILE', '');
  if (file) out[file] = JSON.stringify(data);
  return out;
}

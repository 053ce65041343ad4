// Shared helpers of the flashgate k6 scripts (flash_crowd.js, payments.js; the benchmark
// harness reuses them): environment parameters, HS256 JWTs, client IPs, payment
// signatures, the admin ledger and its checks, and a compact text summary.
//
// Nothing here talks to Redis: everything is read through the public and admin HTTP APIs
// of docs/api.md, so the scripts work against any flashgate deployment.

import http from 'k6/http';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';

// === parameters ===

export function envStr(name, dflt) {
  const v = __ENV[name];
  return v === undefined || v === '' ? dflt : v;
}

export function envInt(name, dflt) {
  const v = envStr(name, undefined);
  if (v === undefined) return dflt;
  const n = parseInt(v, 10);
  if (Number.isNaN(n)) throw new Error(`${name}=${v} is not an integer`);
  return n;
}

export function envFloat(name, dflt) {
  const v = envStr(name, undefined);
  if (v === undefined) return dflt;
  const n = parseFloat(v);
  if (Number.isNaN(n)) throw new Error(`${name}=${v} is not a number`);
  return n;
}

export function envRequired(name) {
  const v = envStr(name, undefined);
  if (v === undefined) throw new Error(`environment variable ${name} is required (k6 run -e ${name}=...)`);
  return v;
}

/** A path given relative to the shell's working directory, made absolute (k6's open()
 * resolves relative paths against the script's directory instead). */
export function fromCwd(path) {
  if (path.startsWith('/')) return path;
  const pwd = __ENV.PWD;
  if (!pwd) throw new Error(`give ${path} as an absolute path (PWD is not visible to k6)`);
  return `${pwd}/${path}`;
}

// === identity ===

/** An HS256 JWT with `sub` = user and `exp` = now + ttl seconds (what identity.rs accepts). */
export function mintJwt(secret, user, ttlSecs) {
  const now = Math.floor(Date.now() / 1000);
  const head = encoding.b64encode(JSON.stringify({ alg: 'HS256', typ: 'JWT' }), 'rawurl');
  const claims = encoding.b64encode(JSON.stringify({ sub: user, iat: now, exp: now + ttlSecs }), 'rawurl');
  const sig = crypto.hmac('sha256', secret, `${head}.${claims}`, 'base64rawurl');
  return `${head}.${claims}.${sig}`;
}

/** A distinct IPv4 address per n: 10.0.0.1, 10.0.0.2, ... (n < 4 * 2^24). */
export function clientIp(n) {
  const v = n + 1;
  return `${10 + Math.floor(v / 16777216)}.${(v >> 16) & 255}.${(v >> 8) & 255}.${v & 255}`;
}

// === payments ===

/** `Flashgate-Signature` for `body` at unix time `t`: HMAC-SHA256 hex over "<t>.<body>". */
export function paymentSignature(secret, body, t) {
  return `t=${t},v1=${crypto.hmac('sha256', secret, `${t}.${body}`, 'hex')}`;
}

// === buy outcomes ===

/** The problem `type` slug of a problem+json response, or ''. */
export function slugOf(res) {
  try {
    const t = res.json('type');
    return typeof t === 'string' ? t.replace('urn:flashgate:problem:', '') : '';
  } catch (_) {
    return '';
  }
}

/** One name per buy outcome, the key of the per-outcome counters. */
export function buyOutcome(res) {
  switch (res.status) {
    case 201: return 'reserved_201';
    case 200: return 'existing_200';
    case 409: {
      const slug = slugOf(res);
      if (slug === 'sold-out') return 'sold_out_409';
      if (slug === 'limit-reached') return 'limit_reached_409';
      return 'other';
    }
    case 429: return 'rate_limited_429';
    case 503: return 'unavailable_503';
    case 403: return slugOf(res) === 'not-started' ? 'not_started_403' : 'other';
    default: return 'other';
  }
}

/** Seconds from a Retry-After header (at least 0.1, at most `max`). */
export function retryAfter(res, max) {
  const v = parseFloat(res.headers['Retry-After'] || '1');
  return Math.min(Math.max(Number.isNaN(v) ? 1 : v, 0.1), max);
}

// === the ledger ===

/** `GET /admin/campaigns` → { per_user_limit, items: { sku: stats } } of one campaign. */
export function fetchLedger(adminUrl, token, campaign) {
  const params = { tags: { name: 'admin' }, responseCallback: http.expectedStatuses(200) };
  if (token) params.headers = { Authorization: `Bearer ${token}` };
  const res = http.get(`${adminUrl}/admin/campaigns`, params);
  if (res.status !== 200) {
    throw new Error(`GET ${adminUrl}/admin/campaigns answered ${res.status}: ${res.body}`);
  }
  const c = (res.json('campaigns') || []).find((x) => x.id === campaign);
  if (!c) throw new Error(`campaign ${campaign} is not running on ${adminUrl}`);
  const items = {};
  for (const i of c.items) items[i.sku] = i;
  return { per_user_limit: c.per_user_limit, items };
}

/** Units ever reserved: every pre-order is pending, paid, expired or cancelled. */
export function reservedUnits(i) {
  return i.pending + i.paid + i.expired + i.cancelled;
}

/** `initial + adjusted = remaining + pending + paid`, and remaining never negative. */
export function ledgerBalances(i) {
  return i.initial + i.adjusted === i.remaining + i.pending + i.paid && i.remaining >= 0;
}

/** No oversell, for every item (initial + adjusted = remaining + pending + paid): a list of { name, ok }. */
export function ledgerChecks(ledger) {
  return Object.keys(ledger.items).sort().map((sku) => {
    const i = ledger.items[sku];
    return {
      name: `ledger ${sku}: initial ${i.initial} + adjusted ${i.adjusted} = remaining ${i.remaining} + pending ${i.pending} + paid ${i.paid}`,
      ok: ledgerBalances(i),
    };
  });
}

/** A table of the ledger, one line per item. */
export function ledgerTable(ledger) {
  const cols = ['initial', 'adjusted', 'remaining', 'pending', 'paid', 'expired', 'cancelled', 'refund_required'];
  const skus = Object.keys(ledger.items).sort();
  const w = Math.max(4, ...skus.map((s) => s.length));
  const head = `  ${'sku'.padEnd(w)}  ${cols.map((c) => c.padStart(9)).join(' ')}`;
  const rows = skus.map((s) => `  ${s.padEnd(w)}  ${cols.map((c) => String(ledger.items[s][c]).padStart(9)).join(' ')}`);
  return [head, ...rows].join('\n');
}

// === summary ===

/** The value of one stat of a metric in handleSummary data, or undefined. */
export function stat(data, metric, key) {
  const m = data.metrics[metric];
  return m && m.values ? m.values[key] : undefined;
}

export function count(data, metric) {
  return stat(data, metric, 'count') || 0;
}

/** Threshold results: a list of { metric, threshold, ok }. */
export function thresholdResults(data) {
  const out = [];
  for (const [name, m] of Object.entries(data.metrics)) {
    for (const [t, r] of Object.entries(m.thresholds || {})) out.push({ metric: name, threshold: t, ok: r.ok });
  }
  return out.sort((a, b) => a.metric.localeCompare(b.metric));
}

/** Every check of the run (setup, VUs, teardown): a list of { name, passes, fails }. */
export function allChecks(group) {
  const out = (group.checks || []).map((c) => ({ name: c.name, passes: c.passes, fails: c.fails }));
  for (const g of group.groups || []) out.push(...allChecks(g));
  return out;
}

export function fmtMs(v) {
  return v === undefined ? '-' : `${v.toFixed(2)} ms`;
}

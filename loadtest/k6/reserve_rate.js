// reserve_rate.js — latency of the reserve path at a FIXED arrival rate (open model), for
// the benchmark's "p50/p99 at about half of peak" (loadtest/bench.sh). wrk is closed-loop
// (each connection waits for its answer, so a slow server is offered less load and its
// latency looks better than a client would see); wrk2 is not packaged, so k6's
// constant-arrival-rate executor starts RATE requests a second whatever the answers do.
//
// Every iteration is a NEW user (trusted X-User-Id header) from a NEW client IP
// (X-Forwarded-For) pressing buy on an item whose stock does not run out: every answer
// should be 201. Gateway: loadtest/config/gateway-header.toml, campaign `bench`.
//
//   k6 run -e BASE_URL=http://127.0.0.1:18080 -e RATE=5000 -e DURATION=10s \
//     -e SUMMARY_FILE=var/rate.json loadtest/k6/reserve_rate.js
//
// Environment:
//   BASE_URL      public listener                 http://127.0.0.1:18080
//   CAMPAIGN SKU  the item                        bench / reserve
//   RATE          requests per second             1000
//   DURATION      how long                        10s
//   VUS           pre-allocated VUs (max 4x)      64
//   SUMMARY_FILE  where to write the JSON summary (p50/p90/p99/max in ms, rates, drops)

import http from 'k6/http';
import { Counter } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:18080';
const CAMPAIGN = __ENV.CAMPAIGN || 'bench';
const SKU = __ENV.SKU || 'reserve';
const RATE = parseInt(__ENV.RATE || '1000', 10);
const DURATION = __ENV.DURATION || '10s';
const VUS = parseInt(__ENV.VUS || '64', 10);
const URL = `${BASE_URL}/seckill/campaigns/${CAMPAIGN}/items/${SKU}/orders`;
const RUN = `${Date.now().toString(36)}${Math.floor(Math.random() * 0xffff).toString(16)}`;

const created = new Counter('reserve_201');
const other = new Counter('reserve_other');

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['min', 'med', 'avg', 'p(90)', 'p(99)', 'max'],
  scenarios: {
    rate: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: VUS,
      maxVUs: VUS * 4,
    },
  },
};

export default function () {
  const n = __ITER;
  const vu = __VU;
  const res = http.post(URL, null, {
    headers: {
      'X-User-Id': `k${RUN}-${vu}-${n}`,
      'X-Forwarded-For': `${10 + (vu % 200)}.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`,
    },
  });
  if (res.status === 201) created.add(1);
  else other.add(1);
}

export function handleSummary(data) {
  const m = data.metrics;
  const d = m.http_req_duration.values;
  const v = (name, field) => (m[name] ? m[name].values[field] : 0);
  const out = {
    rate_target: RATE,
    requests: v('http_reqs', 'count'),
    rps: v('http_reqs', 'rate'),
    dropped_iterations: v('dropped_iterations', 'count'),
    created_201: v('reserve_201', 'count'),
    other: v('reserve_other', 'count'),
    p50_ms: d.med,
    p90_ms: d['p(90)'],
    p99_ms: d['p(99)'],
    max_ms: d.max,
    vus_max: v('vus_max', 'value'),
  };
  const line = `flashgate-k6 ${JSON.stringify(out)}\n`;
  const res = { stdout: line };
  if (__ENV.SUMMARY_FILE) res[__ENV.SUMMARY_FILE] = JSON.stringify(out);
  return res;
}

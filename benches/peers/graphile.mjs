// The peer `tranche bench` measures itself against: graphile-worker, a
// PostgreSQL job queue, publishing the bench table to RabbitMQ the way a
// team without tranche would write it.
//
//   node benches/peers/graphile.mjs '<settings as JSON>'
//
// Settings: pg (URL of the bench database), amqp (URL), exchange,
// routing_key, table, rows, version, mode ("row": one job per row, or
// "range": one job per `range_rows` keys), concurrency, local_queue,
// budget_s (the jobs still queued after this many seconds of work are left
// and the rate is taken from the rows done).
//
// Each job publishes its rows as persistent, mandatory messages with a
// message id on a confirm channel and completes only once the broker has
// confirmed every one of them: graphile-worker's own at-least-once promise.
// The queue runs with the settings graphile-worker's performance page
// gives for throughput (a local queue, job completions not delayed).
//
// Prints one line of JSON: jobs, enqueue and work seconds, rows done, the
// process's user and system CPU seconds and its peak resident set.

import { once } from "node:events";

import amqp from "amqplib";
import { Logger, makeWorkerUtils, run } from "graphile-worker";
import pg from "pg";

const settings = JSON.parse(process.argv[2] ?? "{}");
for (const field of ["pg", "amqp", "exchange", "routing_key", "table", "rows", "mode"]) {
  if (settings[field] === undefined) {
    console.error(`graphile.mjs: the setting ${field} is missing`);
    process.exit(2);
  }
}
if (!/^[a-z_][a-z0-9_]*$/.test(settings.table)) {
  console.error(`graphile.mjs: table: ${JSON.stringify(settings.table)} is not a plain name`);
  process.exit(2);
}
const rows = Number(settings.rows);
const rangeRows = Number(settings.range_rows ?? 1000);
const concurrency = Number(settings.concurrency ?? 4);
const budgetMs = Number(settings.budget_s ?? 3600) * 1000;
const version = Number(settings.version ?? 0);
const byRow = settings.mode === "row";
if (!byRow && settings.mode !== "range") {
  console.error(`graphile.mjs: mode: ${JSON.stringify(settings.mode)} is not "row" or "range"`);
  process.exit(2);
}

// A fresh queue: the schema of an earlier run would hold its jobs.
const admin = new pg.Client({ connectionString: settings.pg });
await admin.connect();
await admin.query("DROP SCHEMA IF EXISTS graphile_worker CASCADE");
await admin.end();

// Its warnings and errors only: a line per job would cost the peer time.
// Stopping a pool with a local queue mid-run makes 0.17.3 report errors
// about its queue's release; once the budget is spent those are left out.
let stopping = false;
const logger = new Logger(() => (level, message) => {
  if (!stopping && (level === "error" || level === "warning")) {
    console.error(`graphile-worker ${level}: ${message}`);
  }
});
const preset = {
  worker: {
    connectionString: settings.pg,
    concurrentJobs: concurrency,
    maxPoolSize: concurrency + 1,
    localQueue: { size: Number(settings.local_queue ?? concurrency + 1) },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
    pollInterval: 1000,
    logger,
  },
};
const utils = await makeWorkerUtils({ connectionString: settings.pg, logger });
await utils.migrate();

// Enqueue every job up front, as a backfill script would, in batches.
const enqueueStarted = performance.now();
let jobs = 0;
const batch = 10000;
if (byRow) {
  for (let lo = 1; lo <= rows; lo += batch) {
    const specs = [];
    for (let id = lo; id < Math.min(lo + batch, rows + 1); id++) {
      specs.push({ identifier: "row", payload: { id } });
    }
    await utils.addJobs(specs);
    jobs += specs.length;
  }
} else {
  const specs = [];
  for (let lo = 1; lo <= rows; lo += rangeRows) {
    specs.push({ identifier: "range", payload: { lo, hi: Math.min(lo + rangeRows - 1, rows) } });
  }
  for (let i = 0; i < specs.length; i += batch) {
    await utils.addJobs(specs.slice(i, i + batch));
  }
  jobs = specs.length;
}
const enqueueSeconds = (performance.now() - enqueueStarted) / 1000;
await utils.release();

const connection = await amqp.connect(settings.amqp);
const channel = await connection.createConfirmChannel();
channel.setMaxListeners(0);
await channel.assertExchange(settings.exchange, "direct", { durable: true });

// Publishes one row; resolves when the broker confirms it.
async function publish(id, body) {
  let confirmed;
  const done = new Promise((resolve, reject) => {
    confirmed = (err) => (err ? reject(new Error(`row ${id} was not confirmed`)) : resolve());
  });
  const ok = channel.publish(
    settings.exchange,
    settings.routing_key,
    Buffer.from(body),
    { persistent: true, mandatory: true, messageId: `graphile:${id}:${version}` },
    confirmed,
  );
  if (!ok) {
    await once(channel, "drain");
  }
  return done;
}

let rowsDone = 0;
const taskList = {
  row: async ({ id }, helpers) => {
    const { rows: found } = await helpers.withPgClient((client) =>
      client.query({
        name: "peer-row",
        text: `SELECT body FROM ${settings.table} WHERE id = $1`,
        values: [id],
      }),
    );
    await Promise.all(found.map((r) => publish(id, r.body)));
  },
  range: async ({ lo, hi }, helpers) => {
    const { rows: found } = await helpers.withPgClient((client) =>
      client.query({
        name: "peer-range",
        text: `SELECT id, body FROM ${settings.table} WHERE id BETWEEN $1 AND $2 ORDER BY id`,
        values: [lo, hi],
      }),
    );
    await Promise.all(found.map((r) => publish(r.id, r.body)));
  },
};

const workStarted = performance.now();
let workSeconds = 0;
let budgetHit = false;
let finished;
const allDone = new Promise((resolve) => {
  finished = resolve;
});
let jobsDone = 0;
const runner = await run({ noHandleSignals: true, taskList, crontab: "", logger, preset });
runner.events.on("job:success", ({ job }) => {
  const p = job.payload;
  rowsDone += byRow ? 1 : p.hi - p.lo + 1;
  jobsDone += 1;
  if (jobsDone === jobs) {
    workSeconds = (performance.now() - workStarted) / 1000;
    finished();
  } else if (overBudget && !budgetHit) {
    stopAtBudget();
  }
});
runner.events.on("job:error", ({ error }) => {
  console.error(`graphile.mjs: a job failed: ${error}`);
});
// At the budget the run stops, once at least one job has completed (a
// rate needs one).
let overBudget = false;
const stopAtBudget = () => {
  budgetHit = true;
  workSeconds = (performance.now() - workStarted) / 1000;
  finished();
};
const budget = setTimeout(() => {
  overBudget = true;
  if (jobsDone > 0) {
    stopAtBudget();
  }
}, budgetMs);
await allDone;
clearTimeout(budget);
stopping = budgetHit;
await runner.stop();
await runner.promise.catch(() => {});
await channel.close().catch(() => {});
await connection.close().catch(() => {});

const usage = process.resourceUsage();
console.log(
  JSON.stringify({
    mode: settings.mode,
    jobs,
    jobs_done: jobsDone,
    rows_done: rowsDone,
    enqueue_s: enqueueSeconds,
    work_s: workSeconds,
    budget_hit: budgetHit,
    user_cpu_s: usage.userCPUTime / 1e6,
    system_cpu_s: usage.systemCPUTime / 1e6,
    peak_rss_bytes: usage.maxRSS * 1024,
  }),
);

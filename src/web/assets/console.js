// tranche console: renders each page from the JSON API and refreshes it.
// Every value from the server reaches the page through textContent or an
// attribute set by the DOM, never as markup.
(function () {
  "use strict";
  var app = document.getElementById("app");
  var content = document.getElementById("content");
  var live = document.getElementById("live");
  var base = app.dataset.base || "";
  var page = app.dataset.page;
  var runId = app.dataset.run;
  var REFRESH_MS = 2000;
  var SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else if (k === "onclick") node.addEventListener("click", attrs[k]);
      else if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k]; else node.setAttribute(k, attrs[k]);
    });
    return node;
  }
  function num(n) { return n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US"); }
  function secs(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function when(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–"; }
  function state(s) { return el("span", { class: "state " + s, text: s }); }
  function bar(percent, cls) {
    var fill = el("span");
    fill.style.width = Math.max(0, Math.min(100, percent)).toFixed(1) + "%";
    return el("div", { class: "bar " + (cls || ""), role: "progressbar", "aria-valuenow": percent.toFixed(1),
      "aria-valuemin": "0", "aria-valuemax": "100", "data-percent": percent.toFixed(1) }, [fill]);
  }
  function table(head, rows, cls) {
    return el("table", { class: cls || "" }, [
      el("thead", {}, [el("tr", {}, head.map(function (h) {
        return el("th", { class: h.num ? "num" : "", text: h.name || h });
      }))]),
      el("tbody", {}, rows)
    ]);
  }
  function td(text, cls) { return el("td", { class: cls || "", text: String(text) }); }
  function replace(node) { content.replaceChildren(node); }

  function api(method, path, body) {
    var opts = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (method !== "GET") {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-Tranche-Console"] = "1";
      opts.body = JSON.stringify(body || {});
    }
    return fetch(base + "/api/" + path, opts).then(function (r) {
      return r.json().catch(function () { return { error: "HTTP " + r.status }; }).then(function (j) {
        if (!r.ok) throw new Error(j.error || ("HTTP " + r.status));
        return j;
      });
    });
  }

  var message = null;
  function say(text, isError) {
    if (!message) return;
    message.className = "message" + (isError ? " error" : "");
    message.textContent = text;
  }

  // Runs.
  function renderRuns(data) {
    if (!data.runs.length) { replace(el("p", { class: "muted", text: "No run yet." })); return; }
    replace(table(["Run", "Job", "State", "Progress", { name: "Rows", num: true }, { name: "Rate", num: true },
      { name: "ETA", num: true }, "Started"], data.runs.map(function (s) {
      var r = s.run;
      return el("tr", { "data-run": r.id }, [
        el("td", {}, [el("a", { href: base + "/runs/" + r.id, text: String(r.id) })]),
        td(r.job_name), el("td", {}, [state(r.state)]),
        el("td", {}, [bar(s.percent, r.state)]),
        td(num(r.rows_done) + " / " + num(r.rows_identified), "num"),
        td(s.rows_per_s === null ? "–" : num(s.rows_per_s) + "/s", "num"),
        td(secs(s.eta_s), "num"), td(when(r.started_ms))
      ]);
    })));
  }

  // One run.
  var runView = null;
  function action(label, op, cls, confirmText) {
    return el("button", { "data-action": op, class: cls || "", text: label, onclick: function () {
      if (confirmText && !window.confirm(confirmText)) return;
      var b = this; b.disabled = true;
      api("POST", "runs/" + runId + "/" + op, {}).then(function (j) {
        say(op === "retry" ? j.partitions + " partition(s) sent back to pending" :
          op === "dead-letters/requeue" ? j.delivered + " delivered, " + j.skipped + " skipped, " +
            j.still_failing + " still failing, " + j.not_found + " not found" :
          "run " + j.run_id + ": " + j.from + " → " + j.to, false);
        refresh();
      }).catch(function (e) { say(e.message, true); b.disabled = false; });
    } });
  }
  function buildRunView() {
    var rate = el("input", { id: "throttle-rows", type: "number", min: "1", placeholder: "rows/s" });
    var parts = el("input", { id: "throttle-partitions", type: "number", min: "1", placeholder: "partitions" });
    var apply = el("button", { "data-action": "throttle", text: "Set throttle", onclick: function () {
      var body = {
        max_rows_per_s: rate.value === "" ? null : Number(rate.value),
        max_active_partitions: parts.value === "" ? null : Number(parts.value)
      };
      api("POST", "runs/" + runId + "/throttle", body).then(function (t) {
        say("throttle: " + (t.max_rows_per_s ? t.max_rows_per_s + " rows/s" : "no row cap") + ", " +
          (t.max_active_partitions ? t.max_active_partitions + " partitions" : "no partition cap"), false);
        refresh();
      }).catch(function (e) { say(e.message, true); });
    } });
    message = el("p", { class: "message", id: "message", role: "status" });
    runView = {
      summary: el("div", { class: "summary", id: "summary" }),
      buttons: {
        pause: action("Pause", "pause"), resume: action("Resume", "resume"),
        cancel: action("Cancel", "cancel", "danger", "Cancel this run for good?"),
        retry: action("Retry failed", "retry"),
        requeue: action("Requeue dead letters", "dead-letters/requeue")
      },
      chart: svg("svg", { class: "chart", id: "chart", viewBox: "0 0 600 160" }),
      partitions: el("div", { id: "partitions" }),
      errors: el("div", { id: "errors" }),
      audit: el("div", { id: "audit" }),
      deadLink: el("a", { href: base + "/runs/" + runId + "/dead-letters", id: "dead-letters-link" })
    };
    var b = runView.buttons;
    replace(el("div", {}, [
      runView.summary,
      el("div", { class: "actions" }, [b.pause, b.resume, b.cancel, b.retry, b.requeue,
        el("span", { class: "muted", text: "Throttle:" }), rate, parts, apply]),
      message,
      el("h2", { text: "Rate" }), runView.chart,
      el("h2", { text: "Partitions" }), runView.partitions,
      el("h2", { text: "Errors" }), runView.errors,
      el("h2", { text: "Dead letters" }), el("p", {}, [runView.deadLink]),
      el("h2", { text: "Audit trail" }), runView.audit
    ]));
  }
  function drawChart(node, samples) {
    node.replaceChildren();
    // Drawn in the chart's own pixels, so that its text is not stretched.
    var W = Math.max(200, Math.round(node.getBoundingClientRect().width) || 600);
    node.setAttribute("viewBox", "0 0 " + W + " 160");
    var points = [];
    for (var i = 1; i < samples.length; i++) {
      var dt = (samples[i][0] - samples[i - 1][0]) / 1000;
      if (dt > 0) points.push([samples[i][0], Math.max(0, samples[i][1] - samples[i - 1][1]) / dt]);
    }
    if (points.length < 2) {
      node.appendChild(svg("text", { x: 10, y: 80, text: "The rate appears after a few samples (one per 5 s)." }));
      return;
    }
    var t0 = points[0][0], t1 = points[points.length - 1][0];
    var max = Math.max.apply(null, points.map(function (p) { return p[1]; })) || 1;
    node.appendChild(svg("line", { x1: 40, y1: 150, x2: W, y2: 150 }));
    node.appendChild(svg("text", { x: 2, y: 14, text: num(max) + "/s" }));
    node.appendChild(svg("text", { x: 2, y: 150, text: "0" }));
    node.appendChild(svg("text", { x: W - 150, y: 14, text: "rows/s, last " + secs((t1 - t0) / 1000) }));
    node.appendChild(svg("polyline", { points: points.map(function (p) {
      var x = 40 + (t1 > t0 ? (p[0] - t0) / (t1 - t0) : 0) * (W - 45);
      var y = 150 - (p[1] / max) * 135;
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ") }));
  }
  function renderRun(s) {
    if (!runView) buildRunView();
    var r = s.run;
    document.getElementById("title").textContent = "Run " + r.id + " of " + r.job_name;
    var cells = [
      ["state", el("b", { id: "state", "data-state": r.state }, [state(r.state)])],
      ["rows done", el("b", { id: "rows-done", text: num(s.rows_done) + " / " + num(r.rows_identified) })],
      ["progress", el("b", { id: "percent", text: s.percent.toFixed(1) + " %" })],
      ["rate", el("b", { text: s.rows_per_s === null ? "–" : num(s.rows_per_s) + "/s" })],
      ["ETA", el("b", { text: secs(s.eta_s) })],
      ["dead letters", el("b", { id: "dead-count", text: num(s.dead_letters) })],
      ["health", el("b", { text: r.health || "ok" })],
      ["started", el("b", { text: when(r.started_ms) })]
    ];
    runView.summary.replaceChildren.apply(runView.summary, cells.map(function (c) {
      return el("div", {}, [c[1], el("span", { text: c[0] })]);
    }));
    var ended = ["done", "failed", "cancelled"].indexOf(r.state) >= 0;
    var b = runView.buttons;
    b.pause.disabled = r.state !== "running";
    b.resume.disabled = r.state !== "paused";
    b.cancel.disabled = ended;
    b.retry.disabled = !s.partitions.some(function (p) { return p.state === "failed"; });
    b.requeue.disabled = !s.requeue || s.dead_letters === 0;
    b.requeue.title = s.requeue ? "" : "this console was started without the job, so it cannot deliver its rows";
    drawChart(runView.chart, s.samples || []);
    runView.partitions.replaceChildren(table(["#", "Scope", "State", "Progress", { name: "Rows", num: true },
      "Owner", { name: "Lease age", num: true }, { name: "Epoch", num: true }, { name: "Attempts", num: true }],
      s.partitions.map(function (p) {
        return el("tr", { class: "partition", "data-partition": p.number }, [
          td(p.number), td(p.scope), el("td", {}, [state(p.state)]), el("td", {}, [bar(p.percent, p.state)]),
          td(num(p.rows_done) + " / " + num(p.rows_planned), "num"), td(p.owner || "–"),
          td(p.lease_age_ms === null ? "–" : secs(p.lease_age_ms / 1000), "num"), td(p.epoch, "num"),
          td(p.attempts, "num")
        ]);
      })));
    var errors = [];
    if (r.last_error) errors.push(el("li", { text: "run: " + r.last_error }));
    s.partitions.forEach(function (p) {
      if (p.last_error) errors.push(el("li", { text: "partition " + p.number + ": " + p.last_error }));
    });
    runView.errors.replaceChildren(errors.length ? el("ul", { class: "errors" }, errors)
      : el("p", { class: "muted", text: "None." }));
    runView.deadLink.textContent = num(s.dead_letters) + " dead letter(s) →";
    runView.audit.replaceChildren(s.audit.length ? table(["When", "Action", "Detail", "By"], s.audit.map(function (a) {
      return el("tr", {}, [td(when(a.at_ms)), td(a.action), td(a.detail), td(a.actor)]);
    })) : el("p", { class: "muted", text: "No operation yet." }));
  }

  // Dead letters.
  function renderDeadLetters(d) {
    message = message || el("p", { class: "message", id: "message", role: "status" });
    var requeue = el("button", { "data-action": "requeue", text: "Requeue all", disabled: !d.requeue || d.total === 0,
      title: d.requeue ? "" : "this console was started without the job, so it cannot deliver its rows",
      onclick: function () {
        api("POST", "runs/" + runId + "/dead-letters/requeue", {}).then(function (j) {
          say(j.delivered + " delivered, " + j.skipped + " skipped, " + j.still_failing + " still failing, " +
            j.not_found + " not found, " + j.without_key + " without a key", false);
          refresh();
        }).catch(function (e) { say(e.message, true); });
      } });
    replace(el("div", {}, [
      el("p", {}, [el("a", { href: base + "/runs/" + runId, text: "← run " + runId }),
        " · " + num(d.total) + " dead letter(s)" + (d.total > d.dead_letters.length ? ", the first " +
          d.dead_letters.length + " shown" : "")]),
      el("div", { class: "actions" }, [requeue]), message,
      d.dead_letters.length ? table([{ name: "Row key", num: true }, { name: "Partition", num: true }, "Reason"],
        d.dead_letters.map(function (l) {
          return el("tr", {}, [td(l.row_key === null ? "(unreadable)" : l.row_key, "num"),
            td(l.partition_id === null ? "planning" : l.partition_id, "num"), td(l.reason, "reason")]);
        })) : el("p", { class: "muted", text: "None." })
    ]));
  }

  // Schedules.
  function renderSchedules(d) {
    replace(el("div", {}, [
      el("h2", { text: "On this instance" }),
      d.here.length ? table(["Job", "Schedule", "Next tick", { name: "Ticks", num: true }, { name: "Runs", num: true },
        { name: "Skipped", num: true }, "Last error"], d.here.map(function (s) {
        return el("tr", {}, [td(s.job), td(s.schedule), td(s.finished ? "ended" : when(s.next_tick_ms)),
          td(s.ticks, "num"), td(s.runs, "num"), td(s.skipped, "num"), td(s.last_error || "–")]);
      })) : el("p", { class: "muted", text: "No schedule runs in this process." }),
      el("h2", { text: "Runs started by schedule ticks" }),
      d.ticked.length ? table(["Job", "Latest tick", "Run", "State", { name: "Ticked runs", num: true }],
        d.ticked.map(function (t) {
          return el("tr", {}, [td(t.job), td(t.latest_tick || "–"),
            el("td", {}, [el("a", { href: base + "/runs/" + t.latest_run, text: String(t.latest_run) })]),
            el("td", {}, [state(t.state)]), td(t.ticked_runs, "num")]);
        })) : el("p", { class: "muted", text: "No run was started by a schedule on this database." })
    ]));
  }

  var sources = {
    runs: function () { return api("GET", "runs").then(renderRuns); },
    run: function () { return api("GET", "runs/" + runId).then(renderRun); },
    "dead-letters": function () { return api("GET", "runs/" + runId + "/dead-letters").then(renderDeadLetters); },
    schedules: function () { return api("GET", "schedules").then(renderSchedules); }
  };
  var inFlight = false;
  function refresh() {
    var source = sources[page];
    if (!source || inFlight) return;
    inFlight = true;
    source().then(function () {
      live.textContent = "updated " + new Date().toLocaleTimeString();
      live.dataset.ok = "1";
    }).catch(function (e) {
      live.textContent = "not updated: " + e.message;
      live.dataset.ok = "0";
    }).then(function () { inFlight = false; });
  }
  if (page === "missing") {
    replace(el("p", {}, ["Nothing here. ", el("a", { href: base + "/", text: "All runs" })]));
    return;
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
})();

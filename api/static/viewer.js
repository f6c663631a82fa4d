// The viewer's one module. Each page is static HTML naming itself in <body data-page>; this module fills it from
// the REST API, the same endpoints a script calls (GET /v1/jobs..., POST /v1/query), with this browser's session
// cookie and, on requests that change state, the CSRF header. Every value reaches the page as text (textContent,
// text nodes, setAttribute), never as markup.

const CSRF_COOKIE = "stepwise_csrf";
const CSRF_HEADER = "X-Stepwise-CSRF";
const LIVE = new Set(["running", "starting"]);
const REFRESH_MS = 3000;
const PAGE_SIZE = 50;
const FALLBACK_FORMATS = ["chat", "chat_think", "dsbs", "finetune_cot", "parquet"];
const GOOD = "#1a7f37", BAD = "#b42318", ACCENT = "#0b5cad", MUTED = "#8c959f";

// ── talking to the API ─────────────────────────────────────────────────────────────────────────────────────────

/** The value of a script-readable cookie (the CSRF one), or "". */
function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...value] = part.trim().split("=");
    if (key === name) return decodeURIComponent(value.join("="));
  }
  return "";
}

/** Back to the sign-in page, which returns here afterwards. */
function toLogin() {
  location.assign("/ui/login?next=" + encodeURIComponent(location.pathname + location.search));
}

/** One API call with this browser's session; the JSON answer, or an Error carrying the API's message. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (!["GET", "HEAD"].includes(method)) headers[CSRF_HEADER] = cookie(CSRF_COOKIE);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    toLogin();
    throw new Error("signed out");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message || message;
    } catch { /* not the API's error body */ }
    throw new Error(message);
  }
  return response.status === 204 ? null : response.json();
}

/** The rows of one read-only SELECT over the `records` and `jobs` views (POST /v1/query). */
async function sql(text, maxRows = 1000) {
  return (await api("/v1/query", { method: "POST", body: { sql: text, max_rows: maxRows } })).rows;
}

/** A SQL string literal (quotes doubled; job ids are plain names anyway). */
const lit = (value) => "'" + String(value).replaceAll("'", "''") + "'";

const enc = encodeURIComponent;

/** `?a=1&b=2` of the given values, empty ones left out. */
function queryString(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== "" && value !== null && value !== undefined) query.set(key, value);
  }
  const text = query.toString();
  return text ? "?" + text : "";
}

const v1 = {
  job: (id) => `/v1/jobs/${enc(id)}`,
  records: (id, params) => `/v1/jobs/${enc(id)}/records` + queryString(params),
  example: (id, ex) => `/v1/jobs/${enc(id)}/examples/${enc(ex)}`,
  export: (id, format) => `/v1/jobs/${enc(id)}/export?format=${enc(format)}`,
};

const ui = {
  job: (id) => `/ui/jobs/${enc(id)}`,
  records: (id, params = {}) => `/ui/jobs/${enc(id)}/records` + queryString(params),
  example: (id, ex) => `/ui/jobs/${enc(id)}/examples/${enc(ex)}`,
};

/** The job id (and example id) named by this page's path: /ui/jobs/{job}[/examples/{example}]. */
function pathIds() {
  const parts = location.pathname.split("/");
  return { job: decodeURIComponent(parts[3] || ""), example: decodeURIComponent(parts.slice(5).join("/")) };
}

// ── building the page ──────────────────────────────────────────────────────────────────────────────────────────

/** An element with attributes and children; strings become text nodes, never markup. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

const $ = (selector) => document.querySelector(selector);

function setStatus(text, error = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", error);
}

const dash = "–";
const num = (n) => (n === null || n === undefined ? dash : Number(n).toLocaleString("en"));
const pct = (x) => (x === null || x === undefined ? dash : (100 * x).toFixed(1) + " %");
const usd = (x) => (x === null || x === undefined ? dash : "$" + Number(x).toFixed(Math.abs(x) < 1 ? 4 : 2));
const fixed = (x, digits = 2) => (x === null || x === undefined ? dash : Number(x).toFixed(digits));

function duration(seconds) {
  if (seconds === null || seconds === undefined) return dash;
  let s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  s %= 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${s} s` : `${s} s`;
}

/** ✓ / ✗ for a boolean, with words for screen readers. */
function verdict(value, yes = "correct", no = "wrong") {
  if (value === null || value === undefined) return el("span", { class: "meta" }, dash);
  return el("span", { class: value ? "yes" : "no" }, value ? `✓ ${yes}` : `✗ ${no}`);
}

function figures(dl, pairs) {
  dl.replaceChildren(...pairs.filter(([, v]) => v !== undefined)
    .map(([term, value]) => el("div", {}, el("dt", {}, term), el("dd", {}, value))));
}

// ── jobs ───────────────────────────────────────────────────────────────────────────────────────────────────────

function jobRow(job) {
  const eta = job.eta_s !== null && job.eta_s !== undefined ? ` · ETA ${duration(job.eta_s)}` : "";
  return el("tr", {},
    el("td", {}, el("a", { href: ui.job(job.job_id) }, job.job_id)),
    el("td", {}, el("span", { class: `badge ${job.status}` }, job.status)),
    el("td", {}, el("progress", { max: 1, value: job.progress, "aria-label": `progress of ${job.job_id}` }),
      ` ${Math.round(100 * job.progress)} %${eta}`),
    el("td", { class: "num" }, num(job.n_accepted)),
    el("td", { class: "num" }, num(job.n_rejected)),
    el("td", { class: "num" }, usd(job.cost_usd)),
    el("td", { class: "num" }, `${num(job.tokens_in)} / ${num(job.tokens_out)}`),
    el("td", { class: "num" }, pct(job.teacher_accuracy)),
    el("td", {}, job.teacher_model ?? dash));
}

async function jobsPage() {
  const body = $("#jobs tbody");
  const refresh = async () => {
    let live = false;
    try {
      const page = await api("/v1/jobs?limit=1000");
      body.replaceChildren(...page.items.map(jobRow));
      if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 9 }, "No jobs yet.")));
      live = page.items.some((job) => LIVE.has(job.status));
      setStatus(`${num(page.total)} job${page.total === 1 ? "" : "s"}` +
        (live ? `, refreshed every ${REFRESH_MS / 1000} s while one runs` : "") +
        `; updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      setStatus(error.message, true);
      live = true; // try again
    }
    if (live) setTimeout(refresh, REFRESH_MS);
  };
  await refresh();
}

// ── one job ────────────────────────────────────────────────────────────────────────────────────────────────────

/** The export formats the API offers, read from its OpenAPI schema (the list below if that fails). */
async function exportFormats() {
  try {
    const schema = await (await fetch("/openapi.json", { credentials: "same-origin" })).json();
    const param = schema.paths["/v1/jobs/{job_id}/export"].get.parameters.find((p) => p.name === "format");
    let type = param.schema;
    if (type.$ref) type = type.$ref.split("/").slice(1).reduce((node, key) => node[key], schema);
    const options = type.enum ?? (type.anyOf ?? []).flatMap((t) => t.enum ?? []);
    if (options.length) return options;
  } catch { /* fall back */ }
  return FALLBACK_FORMATS;
}

function jobFigures(job) {
  const eta = job.eta_s !== null && job.eta_s !== undefined ? ` · ETA ${duration(job.eta_s)}` : "";
  const pairs = [
    ["Status", el("span", { class: `badge ${job.status}` }, job.status)],
    ["Progress", `${Math.round(100 * job.progress)} %${eta}`],
    ["Examples", num(job.n_examples)],
    ["Records", num(job.n_records)],
    ["Accepted", num(job.n_accepted)],
    ["Rejected", num(job.n_rejected)],
    ["Acceptance", job.n_records ? pct(job.n_accepted / job.n_records) : dash],
    ["Teacher accuracy", pct(job.teacher_accuracy)],
    ["Cost", usd(job.cost_usd)],
    ["Tokens in", num(job.tokens_in)],
    ["Tokens out", num(job.tokens_out)],
    ["Requests / s", job.run ? fixed(job.run.requests_per_s, 1) : dash],
    ["Teacher", [job.teacher_backend, job.teacher_model].filter(Boolean).join(" · ") || dash],
    ["Task · prompt", [job.task, job.prompt_id].filter(Boolean).join(" · ") || dash],
  ];
  if (job.error) pairs.push(["Error", job.error]);
  figures($("#figures"), pairs);
}

/** Draw (or redraw) a chart on a canvas; the canvas also gets a text summary for screen readers. */
function chart(canvasId, config, summary) {
  const canvas = document.getElementById(canvasId);
  window.Chart.getChart(canvas)?.destroy();
  const caption = document.getElementById(`${canvasId}-t`).textContent;
  canvas.setAttribute("aria-label", `${caption}: ${summary || "nothing yet"}`);
  return new window.Chart(canvas, {
    ...config,
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      plugins: { legend: { display: config.data.datasets.length > 1 } },
      ...config.options,
    },
  });
}

/** Options that make each bar a link: `target(index, datasetIndex)` names where it goes (null: nowhere). */
function clickable(target) {
  return {
    onClick: (_event, elements) => {
      const hit = elements[0];
      const url = hit && target(hit.index, hit.datasetIndex);
      if (url) location.assign(url);
    },
    onHover: (event, elements) => {
      event.native.target.style.cursor = elements.length ? "pointer" : "default";
    },
  };
}

/** A width for about `bins` bars over 0..max: 1, 2 or 5 times a power of ten. */
function niceWidth(max, bins = 20) {
  const raw = Math.max(max / bins, 1);
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((w) => w >= raw);
}

function reasonsChart(id, job) {
  const reasons = Object.entries(job.reject_reasons || {}).sort((a, b) => b[1] - a[1]);
  chart("c-reasons", {
    type: "bar",
    data: { labels: reasons.map(([r]) => r),
            datasets: [{ label: "rejected records", data: reasons.map(([, n]) => n), backgroundColor: BAD }] },
    options: { indexAxis: "y", scales: { x: { ticks: { precision: 0 }, title: { display: true, text: "records" } } },
               ...clickable((i) => ui.records(id, { accepted: "false", reason: reasons[i][0] })) },
  }, reasons.map(([r, n]) => `${r} ${n}`).join(", "));
}

async function agreementChart(id) {
  const rows = await sql(`SELECT round(agreement, 2) AS a, count(DISTINCT example_id) AS n FROM records
    WHERE job_id = ${lit(id)} AND agreement IS NOT NULL GROUP BY 1 ORDER BY 1`);
  chart("c-agreement", {
    type: "bar",
    data: { labels: rows.map((r) => fixed(r.a)),
            datasets: [{ label: "examples", data: rows.map((r) => r.n), backgroundColor: ACCENT }] },
    options: {
      scales: { x: { title: { display: true, text: "share of samples agreeing with the consensus" } },
                y: { title: { display: true, text: "examples" }, beginAtZero: true, ticks: { precision: 0 } } },
      ...clickable((i) => ui.records(id, { min_agreement: fixed(Math.max(0, rows[i].a - 0.005), 3),
                                           max_agreement: fixed(Math.min(1, rows[i].a + 0.005), 3) })),
    },
  }, rows.map((r) => `${fixed(r.a)}: ${r.n}`).join(", "));
}

async function lengthsChart(id) {
  const [span] = await sql(`SELECT least(min(length(rationale)), min(length(reasoning))) AS lo,
    greatest(max(length(rationale)), max(length(reasoning))) AS hi, max(length(reasoning)) AS trace_hi
    FROM records WHERE job_id = ${lit(id)}`);
  if (!span || span.hi === null) return chart("c-lengths", { type: "bar", data: { labels: [], datasets: [] } }, "");
  const width = niceWidth(span.hi - span.lo);
  const histogram = (column) => sql(`SELECT floor(length(${column}) / ${width})::BIGINT AS b, count(*) AS n
    FROM records WHERE job_id = ${lit(id)} AND ${column} IS NOT NULL GROUP BY 1 ORDER BY 1`);
  const [rationale, trace] = await Promise.all([histogram("rationale"), span.trace_hi ? histogram("reasoning") : []]);
  const first = Math.floor(span.lo / width), last = Math.floor(span.hi / width);
  const bins = Array.from({ length: last - first + 1 }, (_, i) => first + i);
  const counts = (rows) => bins.map((b) => rows.find((r) => r.b === b)?.n ?? 0);
  const datasets = [{ label: "rationale", data: counts(rationale), backgroundColor: ACCENT }];
  if (trace.length) datasets.push({ label: "trace", data: counts(trace), backgroundColor: MUTED });
  const sortBy = ["rationale_chars", "reasoning_chars"];
  chart("c-lengths", {
    type: "bar",
    data: { labels: bins.map((b) => `${num(b * width)}–${num((b + 1) * width)}`), datasets },
    options: {
      scales: { y: { title: { display: true, text: "records" }, beginAtZero: true, ticks: { precision: 0 } } },
      ...clickable((_i, d) => ui.records(id, { sort: sortBy[d], order: "desc" })),
    },
  }, `bars of ${num(width)} characters, from ${num(span.lo)} to ${num(span.hi)}` +
     (span.trace_hi ? "" : "; no traces"));
}

async function labelsChart(id) {
  const rows = await sql(`SELECT gold_label AS label, count(*) FILTER (WHERE correct IS TRUE) AS right_n,
    count(*) FILTER (WHERE correct IS FALSE) AS wrong_n FROM records
    WHERE job_id = ${lit(id)} AND gold_label IS NOT NULL AND correct IS NOT NULL
    GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 30`);
  const correct = [true, false];
  chart("c-labels", {
    type: "bar",
    data: {
      labels: rows.map((r) => r.label),
      datasets: [{ label: "correct", data: rows.map((r) => r.right_n), backgroundColor: GOOD },
                 { label: "wrong", data: rows.map((r) => r.wrong_n), backgroundColor: BAD }],
    },
    options: {
      scales: { x: { stacked: true, title: { display: true, text: "gold label (the 30 most common)" } },
                y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "records" } } },
      plugins: { tooltip: { callbacks: { footer: (items) => {
        const r = rows[items[0].dataIndex];
        return `accuracy ${pct(r.right_n / (r.right_n + r.wrong_n))}`;
      } } } },
      ...clickable((i, d) => ui.records(id, { gold_label: rows[i].label, correct: String(correct[d]) })),
    },
  }, rows.map((r) => `${r.label}: ${r.right_n} correct, ${r.wrong_n} wrong`).join("; "));
}

async function timeChart(id) {
  const [span] = await sql(`SELECT min(epoch(created_at)) AS t0, max(epoch(created_at)) AS t1 FROM records
    WHERE job_id = ${lit(id)}`);
  if (!span || span.t0 === null) return chart("c-time", { type: "bar", data: { labels: [], datasets: [] } }, "");
  const width = niceWidth(span.t1 - span.t0, 30);
  const rows = await sql(`SELECT floor(epoch(created_at) / ${width}) * ${width} AS t, count(request_key) AS requests,
    sum(coalesce(cost_usd, 0)) AS cost FROM records WHERE job_id = ${lit(id)} GROUP BY 1 ORDER BY 1`);
  let total = 0;
  const cumulative = rows.map((r) => (total += r.cost));
  chart("c-time", {
    data: {
      labels: rows.map((r) => new Date(r.t * 1000).toLocaleTimeString()),
      datasets: [
        { type: "bar", label: `requests per ${num(width)} s`, data: rows.map((r) => r.requests),
          backgroundColor: ACCENT, yAxisID: "y" },
        { type: "line", label: "cost so far (USD)", data: cumulative, borderColor: BAD, backgroundColor: BAD,
          yAxisID: "cost" },
      ],
    },
    options: {
      scales: { y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "requests" } },
                cost: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                        title: { display: true, text: "USD" } } },
    },
  }, `${num(rows.reduce((n, r) => n + r.requests, 0))} requests over ${duration(span.t1 - span.t0)}, ` +
     `${usd(total)} in all`);
}

async function jobPage() {
  const { job: id } = pathIds();
  document.title = `${id} · stepwise`;
  $("#title").textContent = id;
  $("#records-link").setAttribute("href", ui.records(id));
  exportFormats().then((formats) => $("#exports").replaceChildren(...formats.map((format) =>
    el("a", { class: "button", href: v1.export(id, format), download: "", "data-format": format },
      `Download ${format}`))));
  const refresh = async () => {
    let live = false;
    try {
      const job = await api(v1.job(id));
      live = LIVE.has(job.status);
      jobFigures(job);
      reasonsChart(id, job);
      await Promise.all([agreementChart(id), lengthsChart(id), labelsChart(id), timeChart(id)]);
      setStatus(`Updated ${new Date().toLocaleTimeString()}` + (live ? `; refreshed every ${REFRESH_MS / 1000} s` : ""));
    } catch (error) {
      setStatus(error.message, true);
    }
    if (live) setTimeout(refresh, REFRESH_MS);
  };
  await refresh();
}

// ── records ────────────────────────────────────────────────────────────────────────────────────────────────────

const FILTERS = ["accepted", "reason", "correct", "label", "gold_label", "min_agreement", "max_agreement", "q"];

// [heading, sort key (null: not sortable), cell]
const COLUMNS = [
  ["Example", "example_id", (r, id) => el("a", { href: ui.example(id, r.example_id) }, r.example_id)],
  ["#", "sample_idx", (r) => num(r.sample_idx)],
  ["Label", "label", (r) => r.label ?? dash],
  ["Gold", "gold_label", (r) => r.gold_label ?? dash],
  ["Correct", null, (r) => verdict(r.correct)],
  ["Reject reason", "reject_reason", (r) => (r.accepted ? verdict(true, "accepted") : r.reject_reason ?? dash)],
  ["Agreement", "agreement", (r) => fixed(r.agreement)],
  ["Rationale", "rationale_chars", (r) => [el("div", {}, r.rationale ?? ""), r.rationale_chars === null ||
    r.rationale_chars === undefined ? null : el("div", { class: "meta" }, `${num(r.rationale_chars)} chars`)]],
  ["Trace chars", "reasoning_chars", (r) => num(r.reasoning_chars)],
  ["Tokens out", "tokens_out", (r) => num(r.tokens_out)],
  ["Cost", "cost_usd", (r) => usd(r.cost_usd)],
];
const NUMERIC = new Set(["sample_idx", "agreement", "reasoning_chars", "tokens_out", "cost_usd"]);

function recordsState() {
  const params = new URLSearchParams(location.search);
  const state = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) ?? ""]));
  state.sort = params.get("sort") ?? "";
  state.order = params.get("order") ?? "";
  state.offset = Number(params.get("offset") ?? 0) || 0;
  return state;
}

function saveState(state, push = true) {
  const url = location.pathname + queryString({ ...state, offset: state.offset || "" });
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

function fillForm(state) {
  const form = $("#filters");
  for (const name of FILTERS) {
    const field = form.elements.namedItem(name);
    if (field) field.value = state[name];
  }
  const reason = $("#f-reason");
  if (state.reason && ![...reason.options].some((o) => o.value === state.reason)) {
    reason.append(el("option", { value: state.reason }, state.reason));
    reason.value = state.reason;
  }
}

function recordsHead(state, onSort) {
  const row = $("#records thead tr");
  row.replaceChildren(...COLUMNS.map(([heading, key]) => {
    const numeric = NUMERIC.has(key) ? "num" : null;
    if (!key) return el("th", { scope: "col", class: numeric }, heading);
    const sorted = state.sort === key ? (state.order === "desc" ? "descending" : "ascending") : "none";
    return el("th", { scope: "col", class: numeric, "aria-sort": sorted, "data-sort": key },
      el("button", { type: "button", class: "sort", onclick: () => onSort(key) }, heading));
  }));
}

async function recordsPage() {
  const { job: id } = pathIds();
  document.title = `Records of ${id} · stepwise`;
  $("#title").textContent = `Records of ${id}`;
  $("#job-link").textContent = id;
  $("#job-link").setAttribute("href", ui.job(id));
  let state = recordsState();

  const load = async () => {
    fillForm(state);
    recordsHead(state, (key) => {
      state = { ...state, sort: key, order: state.sort === key && state.order !== "desc" ? "desc" : "asc", offset: 0 };
      saveState(state);
      load();
    });
    setStatus("Loading…");
    try {
      const filters = Object.fromEntries(FILTERS.map((name) => [name, state[name]]));
      const page = await api(v1.records(id, { ...filters, sort: state.sort, order: state.order,
                                              limit: PAGE_SIZE, offset: state.offset, brief: "true" }));
      $("#records tbody").replaceChildren(...page.items.map((r) => el("tr", {},
        COLUMNS.map(([, key, cell]) => el("td", { class: NUMERIC.has(key) ? "num" : key === "rationale_chars" ? "text" : null },
                                          cell(r, id))))));
      const first = page.total ? page.offset + 1 : 0;
      const last = page.offset + page.items.length;
      setStatus(`${num(page.total)} record${page.total === 1 ? "" : "s"} match`);
      $("#page-info").textContent = `${num(first)}–${num(last)} of ${num(page.total)}`;
      $("#prev").disabled = page.offset === 0;
      $("#next").disabled = last >= page.total;
    } catch (error) {
      setStatus(error.message, true);
    }
  };

  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    state = { ...state, ...Object.fromEntries(FILTERS.map((name) => [name, form.get(name) ?? ""])), offset: 0 };
    saveState(state);
    load();
  });
  $("#filters").addEventListener("reset", (event) => {
    event.preventDefault();
    state = { ...Object.fromEntries(FILTERS.map((name) => [name, ""])), sort: "", order: "", offset: 0 };
    saveState(state);
    load();
  });
  const move = (delta) => {
    state = { ...state, offset: Math.max(0, state.offset + delta) };
    saveState(state);
    load();
  };
  $("#prev").addEventListener("click", () => move(-PAGE_SIZE));
  $("#next").addEventListener("click", () => move(PAGE_SIZE));
  window.addEventListener("popstate", () => {
    state = recordsState();
    load();
  });

  api(v1.job(id)).then((job) => {
    const reason = $("#f-reason");
    for (const name of Object.keys(job.reject_reasons || {}).sort()) {
      if (![...reason.options].some((o) => o.value === name)) reason.append(el("option", { value: name }, name));
    }
    reason.value = state.reason;
  }).catch(() => {});
  sql(`SELECT label, count(*) AS n FROM records WHERE job_id = ${lit(id)} AND label IS NOT NULL
       GROUP BY 1 ORDER BY 2 DESC LIMIT 50`).then((rows) =>
    $("#labels").replaceChildren(...rows.map((r) => el("option", { value: r.label })))).catch(() => {});
  await load();
}

// ── one example ────────────────────────────────────────────────────────────────────────────────────────────────

/** The raw completion with the extracted answer in <mark>; the span counts code points, as Python does. */
function highlighted(text, span) {
  const pre = el("pre", { class: "completion" });
  if (!text) return el("p", { class: "meta" }, "(no text)");
  if (!span) {
    pre.append(text);
    return pre;
  }
  const points = Array.from(text);
  const [start, end] = span;
  pre.append(points.slice(0, start).join(""), el("mark", {}, points.slice(start, end).join("")),
    points.slice(end).join(""));
  return pre;
}

function sampleCard(sample, gold) {
  const accepted = Boolean(sample.accepted);
  const trace = sample.reasoning
    ? el("details", { class: "trace" },
      el("summary", {}, `Thinking trace (${num(Array.from(sample.reasoning).length)} chars` +
        (sample.reasoning_tokens ? `, ${num(sample.reasoning_tokens)} tokens)` : ")")),
      el("pre", {}, sample.reasoning))
    : null;
  return el("article", { class: `sample ${accepted ? "accepted" : "rejected"}`, "data-sample": sample.sample_idx },
    el("h3", {}, `Sample ${sample.sample_idx} `,
      el("span", { class: `badge ${accepted ? "completed" : "failed"}` },
        accepted ? "accepted" : `rejected: ${sample.reject_reason ?? "?"}`)),
    el("p", {}, "Label ", el("strong", {}, sample.label ?? dash), " vs gold ", el("strong", {}, gold ?? dash), " ",
      verdict(sample.correct)),
    sample.reject_detail ? el("p", { class: "meta" }, `Why: ${sample.reject_detail}`) : null,
    sample.trace_label ? el("p", { class: "meta" }, `Trace's own answer: ${sample.trace_label}`) : null,
    el("h4", {}, "Rationale"),
    sample.rationale ? el("pre", { class: "rationale" }, sample.rationale) : el("p", { class: "meta" }, "(none)"),
    trace,
    el("h4", {}, "Completion, answer highlighted"),
    highlighted(sample.completion, sample.answer_span),
    el("p", { class: "meta" }, [
      `tokens ${num(sample.tokens_in)} in / ${num(sample.tokens_out)} out` +
        (sample.reasoning_tokens ? ` (${num(sample.reasoning_tokens)} thinking)` : ""),
      sample.cost_usd === null ? null : usd(sample.cost_usd),
      sample.latency_s === null ? null : `${fixed(sample.latency_s)} s`,
      sample.finish_reason ? `finish: ${sample.finish_reason}` : null,
      sample.teacher_model,
    ].filter((part) => part !== null && part !== undefined).join(" · ")));
}

async function examplePage() {
  const { job: id, example: exampleId } = pathIds();
  document.title = `${exampleId} · ${id} · stepwise`;
  $("#title").textContent = `Example ${exampleId}`;
  $("#job-link").textContent = id;
  $("#job-link").setAttribute("href", ui.job(id));
  $("#records-link").setAttribute("href", ui.records(id));
  try {
    const ex = await api(v1.example(id, exampleId));
    $("#input").textContent = ex.input ?? "";
    const samples = ex.samples || [];
    figures($("#figures"), [
      ["Gold label", ex.gold_label ?? dash],
      ["Consensus", ex.consensus_label ?? dash],
      ["Agreement", fixed(ex.agreement)],
      ["Samples", num(samples.length)],
      ["Accepted", num(samples.filter((s) => s.accepted).length)],
      ["Correct", num(samples.filter((s) => s.correct).length)],
    ]);
    if (ex.gold_rationale) {
      $("#gold-rationale").textContent = ex.gold_rationale;
      $("#gold-rationale-box").hidden = false;
    }
    $("#prompt").replaceChildren(...(ex.prompt
      ? ex.prompt.map((m) => el("div", { class: "message" }, el("div", { class: "role" }, m.role),
        el("pre", {}, typeof m.content === "string" ? m.content : JSON.stringify(m.content, null, 2))))
      : [el("p", { class: "meta" }, "The prompt was not recorded for this example.")]));
    $("#samples").replaceChildren(...samples.map((s) => sampleCard(s, ex.gold_label)));
    setStatus(`${samples.length} sample${samples.length === 1 ? "" : "s"}`);
  } catch (error) {
    setStatus(error.message, true);
  }
}

// ── every page ─────────────────────────────────────────────────────────────────────────────────────────────────

const logout = $("#logout");
if (logout) logout.hidden = !cookie(CSRF_COOKIE); // a server without a token has no sessions to end
logout?.addEventListener("click", async () => {
  try {
    await api("/ui/logout", { method: "POST" });
  } finally {
    location.assign("/ui/login");
  }
});

const PAGES = { jobs: jobsPage, job: jobPage, records: recordsPage, example: examplePage };
PAGES[document.body.dataset.page]?.();

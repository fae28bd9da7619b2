// dropserve dashboard: polls GET /v1/variants every 2 s and compares each pruned variant with the
// full model. Plain ES module, no build step; charts are uPlot (a global from its IIFE build) when it
// loaded, and the tables work without it. window.__dashboard exposes the state for tests.

/** Every 2 s; `?poll_ms=` changes it (at least 250), e.g. for demos and tests. */
const POLL_MS = Math.max(250, Number(new URLSearchParams(window.location.search).get('poll_ms')) || 2000);
/** Points kept per series: 10 minutes at one poll every 2 s. */
const MAX_POINTS = 300;
const KEY_STORAGE = 'dropserve-api-key';
const PALETTE = ['#1d2330', '#0969da', '#d1242f', '#1a7f37', '#8250df', '#bc4c00', '#1b7c83', '#bf3989'];
const P99_DASH = [6, 4];

const state = {
  /** Successful polls since the page loaded. */
  points: 0,
  /** Time axis (unix seconds) and one array per series key, aligned with it. */
  history: { t: [], series: {} },
  /** The last /v1/variants answer. */
  last: null,
  charts: {},
  hasCharts: typeof window.uPlot === 'function',
  variantIds: [],
  lastError: null,
  /** The last experiment reports, one per experiment. */
  experiments: [],
};
window.__dashboard = state;

// --- API key: ?key= once (then dropped from the address bar), or the input field. ---
const keyInput = document.getElementById('key');
const params = new URLSearchParams(window.location.search);
if (params.has('key')) {
  sessionStorage.setItem(KEY_STORAGE, params.get('key') ?? '');
  params.delete('key');
  const query = params.toString();
  window.history.replaceState(null, '', window.location.pathname + (query ? `?${query}` : ''));
}
keyInput.value = sessionStorage.getItem(KEY_STORAGE) ?? '';
document.getElementById('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, keyInput.value.trim());
  poll();
});

// --- Formatting. ---
const escapeHtml = (text) =>
  String(text).replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c],
  );
const dash = '—';
const fmtNumber = (v, digits = 0) =>
  v === null || v === undefined || !Number.isFinite(v) ? dash : v.toFixed(digits);
const fmtMs = (v) => {
  if (v === null || v === undefined || !Number.isFinite(v)) return dash;
  if (v < 10) return v.toFixed(2);
  if (v < 100) return v.toFixed(1);
  return v.toFixed(0);
};
const fmtPct = (v, digits = 0) => (v === null || v === undefined ? dash : `${(v * 100).toFixed(digits)}%`);
const fmtRatio = (v) => (v === null || !Number.isFinite(v) ? dash : `${v.toFixed(2)}×`);
const fmtBytes = (v) => {
  if (v >= 1024 * 1024) return `${(v / 1024 / 1024).toFixed(1)} MiB`;
  if (v >= 1024) return `${(v / 1024).toFixed(1)} KiB`;
  return `${v} B`;
};
/** "stories260K:attn-2" → "attn-2"; the full model keeps its name. */
const shortName = (v) => (v.id === v.base ? `${v.id} (full)` : v.id.slice(v.base.length + 1) || v.id);
const colorOf = (id) => PALETTE[Math.max(0, state.variantIds.indexOf(id)) % PALETTE.length];
/** Per-sequence decode speed, tokens/s: 1 / TPOT p50. */
const decodeSpeed = (v) => (v.latency?.tpot_ms?.p50 > 0 ? 1000 / v.latency.tpot_ms.p50 : null);

// --- Verdicts: one line per pruned variant. ---
function verdictOf(v, full) {
  const kvRatio = full && full.kv_bytes_per_token > 0 ? v.kv_bytes_per_token / full.kv_bytes_per_token : null;
  const fullSpeed = full ? decodeSpeed(full) : null;
  const speed = decodeSpeed(v);
  const speedRatio = fullSpeed && speed ? speed / fullSpeed : null;
  const agreement = v.fidelity?.agreement ?? null;
  const parts = [`${fmtRatio(kvRatio)} KV`, `${fmtRatio(speedRatio)} tokens/s`];
  parts.push(agreement === null ? 'no fidelity samples yet' : `${fmtPct(agreement)} agreement`);
  let grade = 'none';
  if (agreement !== null) grade = agreement >= 0.9 ? 'good' : agreement >= 0.75 ? 'fair' : 'poor';
  return { text: `${shortName(v)}: ${parts.join(', ')}`, grade, kvRatio, speedRatio, agreement };
}

function renderVerdicts(variants, full) {
  const pruned = variants.filter((v) => v.id !== v.base);
  const html = pruned.map((v) => {
    const verdict = verdictOf(v, full);
    const f = v.fidelity;
    const sub = f
      ? `KL ${fmtNumber(f.kl_mean, 3)} · ΔNLL ${fmtNumber(f.delta_nll_mean, 3)} nats · ${f.samples} requests scored`
      : 'shadow scoring has not sampled this variant yet';
    return `<div class="verdict ${verdict.grade}" data-variant="${escapeHtml(v.id)}">
      <div class="name" style="color:${colorOf(v.id)}">${escapeHtml(v.id)}</div>
      <div class="line">${escapeHtml(verdict.text)}</div>
      <div class="sub">${escapeHtml(sub)}</div>
    </div>`;
  });
  document.getElementById('verdicts').innerHTML =
    html.join('') || '<p class="hint">Only the full model is served: start the server with --variant.</p>';
}

function renderTable(variants, full) {
  const rows = variants.map((v) => {
    const isFull = v.id === v.base;
    const kvRatio = full && !isFull ? fmtRatio(v.kv_bytes_per_token / full.kv_bytes_per_token) : '';
    const drops = isFull
      ? dash
      : v.adaptive
        ? `adaptive: attn ${v.adaptive.attention} · mlp ${v.adaptive.mlp} per prompt`
        : `attn ${v.drop_attention.join(',') || dash} · mlp ${v.drop_mlp.join(',') || dash}`;
    // An adaptive variant's prompts choose their own drops; how many different sets they chose.
    const masks = v.adaptive
      ? `<span class="ratio adaptive-masks">${v.adaptive.distinct_masks} distinct ${
          v.adaptive.distinct_masks === 1 ? 'mask' : 'masks'
        }</span>`
      : '';
    const l = v.latency;
    const f = v.fidelity;
    return `<tr class="${isFull ? 'full' : ''}" data-variant="${escapeHtml(v.id)}">
      <td><span class="swatch" style="background:${colorOf(v.id)}"></span>${escapeHtml(v.id)}</td>
      <td class="drops">${escapeHtml(drops)}${masks}</td>
      <td class="kv-bytes">${escapeHtml(fmtBytes(v.kv_bytes_per_token))}<span class="ratio">${kvRatio}</span></td>
      <td class="kv-usage">${fmtPct(v.kv_cache_usage_perc, 1)}<span class="ratio">${escapeHtml(
        `${fmtBytes(v.kv_cache_bytes_used)} / ${fmtBytes(v.kv_cache_bytes_allocated)}`,
      )}</span></td>
      <td>${v.requests_running} / ${v.requests_waiting}</td>
      <td class="preemptions">${v.num_preemptions}</td>
      <td>${fmtNumber(l?.output_tokens_per_s, 1)}</td>
      <td>${fmtMs(l?.ttft_ms?.p50)} / ${fmtMs(l?.ttft_ms?.p99)} ms</td>
      <td>${fmtMs(l?.itl_ms?.p50)} / ${fmtMs(l?.itl_ms?.p99)} ms</td>
      <td>${isFull ? dash : fmtPct(f?.agreement ?? null, 1)}</td>
      <td>${isFull ? dash : fmtNumber(f?.kl_mean, 4)}</td>
      <td>${isFull ? dash : fmtNumber(f?.delta_nll_mean, 4)}</td>
      <td>${isFull ? dash : (f?.samples ?? 0)}</td>
    </tr>`;
  });
  document.querySelector('#variants tbody').innerHTML = rows.join('');
  const windowS = variants[0]?.latency?.window_s;
  document.getElementById('window-note').textContent = windowS
    ? `Latency and tokens/s: completed requests of the last ${windowS} s (at most the last 1000 per variant).`
    : '';
}

// --- Time series. ---
/** Every series the charts draw: key → value read from one variant of one poll. */
function seriesValues(v) {
  const l = v.latency;
  const f = v.fidelity;
  return {
    ttft50: l?.ttft_ms?.p50 ?? null,
    ttft99: l?.ttft_ms?.p99 ?? null,
    itl50: l?.itl_ms?.p50 ?? null,
    itl99: l?.itl_ms?.p99 ?? null,
    tps: l ? l.output_tokens_per_s : null,
    kv: v.kv_cache_usage_perc * 100,
    kvAllocated:
      v.kv_cache_budget_bytes > 0 ? (v.kv_cache_bytes_allocated / v.kv_cache_budget_bytes) * 100 : null,
    agreement: f ? f.agreement * 100 : null,
    kl: f ? f.kl_mean : null,
    dnll: f ? f.delta_nll_mean : null,
  };
}

function record(variants) {
  const h = state.history;
  h.t.push(Date.now() / 1000);
  for (const v of variants) {
    for (const [name, value] of Object.entries(seriesValues(v))) {
      const key = `${v.id}|${name}`;
      if (!h.series[key]) h.series[key] = Array(h.t.length - 1).fill(null);
      h.series[key].push(value);
    }
  }
  if (h.t.length > MAX_POINTS) {
    h.t.shift();
    for (const values of Object.values(h.series)) values.shift();
  }
}

/** Chart id → the series it draws: [variant filter, [series name, dashed?]…]. */
const CHARTS = {
  ttft: {
    variants: 'all',
    lines: [
      ['ttft50', false, 'p50'],
      ['ttft99', true, 'p99'],
    ],
  },
  itl: {
    variants: 'all',
    lines: [
      ['itl50', false, 'p50'],
      ['itl99', true, 'p99'],
    ],
  },
  tps: { variants: 'all', lines: [['tps', false, '']] },
  kv: {
    variants: 'all',
    lines: [
      ['kv', false, 'used'],
      ['kvAllocated', true, 'allocated'],
    ],
  },
  agreement: { variants: 'pruned', lines: [['agreement', false, '']] },
  kl: {
    variants: 'pruned',
    lines: [
      ['kl', false, 'KL'],
      ['dnll', true, 'ΔNLL'],
    ],
  },
};

function chartSeries(id, variants) {
  const spec = CHARTS[id];
  const chosen = spec.variants === 'pruned' ? variants.filter((v) => v.id !== v.base) : variants;
  return chosen.flatMap((v) =>
    spec.lines.map(([name, isDashed, suffix]) => ({
      key: `${v.id}|${name}`,
      label: suffix ? `${shortName(v)} ${suffix}` : shortName(v),
      stroke: colorOf(v.id),
      dash: isDashed ? P99_DASH : undefined,
    })),
  );
}

function buildCharts(variants) {
  if (!state.hasCharts) {
    document.getElementById('charts-missing').hidden = false;
    return;
  }
  for (const id of Object.keys(CHARTS)) {
    const el = document.getElementById(`chart-${id}`);
    const series = chartSeries(id, variants);
    const opts = {
      width: Math.max(300, el.clientWidth),
      height: 220,
      scales: { x: { time: true } },
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.stroke,
          dash: s.dash,
          width: 1.5,
          spanGaps: true,
        })),
      ],
      axes: [{}, { size: 56 }],
      legend: { show: true, live: false },
    };
    state.charts[id] = { plot: new window.uPlot(opts, chartData(series), el), series };
  }
  window.addEventListener('resize', () => {
    for (const [id, chart] of Object.entries(state.charts)) {
      const el = document.getElementById(`chart-${id}`);
      chart.plot.setSize({ width: Math.max(300, el.clientWidth), height: 220 });
    }
  });
}

function chartData(series) {
  const h = state.history;
  return [h.t.slice(), ...series.map((s) => (h.series[s.key] ?? Array(h.t.length).fill(null)).slice())];
}

function updateCharts() {
  for (const chart of Object.values(state.charts)) chart.plot.setData(chartData(chart.series));
}

/** Non-null values the charts currently draw (tests wait on this). */
state.chartPoints = () =>
  Object.values(state.charts).reduce(
    (sum, chart) =>
      sum +
      chart.series.reduce(
        (n, s) => n + (state.history.series[s.key] ?? []).filter((x) => x !== null).length,
        0,
      ),
    0,
  );

// --- Experiments: intervals and a verdict line per arm (GET /v1/experiments/{name}/report). ---
const LATENCY_LABELS = {
  ttft_ms: 'TTFT',
  tpot_ms: 'TPOT',
  e2e_ms: 'end-to-end',
  output_tokens_per_s: 'tokens/s per request',
};
const FIDELITY_LABELS = { agreement: 'agreement', kl: 'KL (nats)', delta_nll: 'ΔNLL (nats)' };
const VERDICT_CLASS = { better: 'good', worse: 'poor', 'no detectable difference yet': 'none' };
const fmtStat = (v) => {
  if (v === null || v === undefined || !Number.isFinite(v)) return dash;
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
};

/** An interval as a bar on a log axis from 0.5× to 2× (ratios) or a linear 0–1 axis (agreement). */
function intervalBar(low, high, scale) {
  if (low === null || high === null) return '<span class="ibar empty"></span>';
  const pos = (x) => {
    const p = scale === 'log' ? (Math.log2(Math.max(x, 1e-9)) + 1) / 2 : x;
    return Math.min(100, Math.max(0, p * 100));
  };
  const left = pos(low);
  const width = Math.max(1, pos(high) - left);
  const tick = scale === 'log' ? '<span class="ibar-tick" style="left:50%"></span>' : '';
  return `<span class="ibar">${tick}<span class="ibar-range" style="left:${left}%;width:${width}%"></span></span>`;
}

function armLine(report, arm) {
  const decided = [];
  for (const [metric, c] of Object.entries(arm.latency ?? {})) {
    if (c.verdict !== 'no detectable difference yet') decided.push(`${c.verdict} ${LATENCY_LABELS[metric]}`);
  }
  for (const [metric, c] of Object.entries(arm.fidelity ?? {})) {
    if (c.verdict !== 'no detectable difference yet')
      decided.push(`${c.verdict} ${FIDELITY_LABELS[metric].replace(' (nats)', '')}`);
  }
  const head = `${arm.variant} vs ${report.control}: `;
  const body = decided.length ? decided.join(', ') : 'no detectable difference yet';
  return `${head}${body} · ${arm.requests} requests, ${arm.scored_requests} scored`;
}

function renderExperiments(reports) {
  const section = document.getElementById('experiments-section');
  section.hidden = reports.length === 0;
  const html = reports.map((report) => {
    const arms = report.arms.filter((a) => !a.is_control);
    const cards = arms.map((arm) => {
      const grade = arm.guardrail
        ? 'poor'
        : Object.values(arm.fidelity ?? {}).some((c) => c.verdict === 'worse')
          ? 'fair'
          : 'good';
      const rows = [];
      for (const [metric, c] of Object.entries(arm.latency ?? {})) {
        rows.push(`<tr data-metric="${metric}">
          <td>${LATENCY_LABELS[metric]}</td>
          <td>${fmtStat(c.control_mean)}</td><td>${fmtStat(c.arm_mean)}</td>
          <td>${c.ratio === null ? dash : `${c.ratio.toFixed(2)}× [${c.ci95[0].toFixed(2)}, ${c.ci95[1].toFixed(2)}]`}</td>
          <td>${intervalBar(c.ci95?.[0] ?? null, c.ci95?.[1] ?? null, 'log')}</td>
          <td class="v ${VERDICT_CLASS[c.verdict]}">${escapeHtml(c.verdict)}</td>
          <td>${c.n_control}/${c.n_arm}</td></tr>`);
      }
      for (const [metric, c] of Object.entries(arm.fidelity ?? {})) {
        const ci = c.arm_ci95;
        rows.push(`<tr data-metric="${metric}">
          <td>${FIDELITY_LABELS[metric]}</td>
          <td>${fmtStat(c.control_mean)}</td><td>${fmtStat(c.arm_mean)}</td>
          <td>${ci ? `${fmtStat(c.arm_mean)} [${fmtStat(ci[0])}, ${fmtStat(ci[1])}]` : dash}</td>
          <td>${metric === 'agreement' ? intervalBar(ci?.[0] ?? null, ci?.[1] ?? null, 'linear') : ''}</td>
          <td class="v ${VERDICT_CLASS[c.verdict]}">${escapeHtml(c.verdict)}</td>
          <td>${c.control_is_full_model ? 'full' : c.n_control}/${c.n_arm}</td></tr>`);
      }
      const guard = arm.guardrail
        ? `<div class="guardrail">Guardrail ${escapeHtml(`${arm.guardrail.metric}${arm.guardrail.op}${arm.guardrail.threshold}`)} tripped at n=${arm.guardrail.at_n}: drained, its users go to ${escapeHtml(report.control)}</div>`
        : arm.guardrail_checks.length
          ? `<div class="sub">guardrails hold: ${escapeHtml(arm.guardrail_checks.map((g) => `${g.metric}${g.op}${g.threshold}`).join(', '))}</div>`
          : '';
      return `<div class="experiment-arm verdict ${grade}" data-experiment="${escapeHtml(report.name)}" data-variant="${escapeHtml(arm.variant)}">
        <div class="line">${escapeHtml(armLine(report, arm))}</div>
        ${guard}
        <table class="intervals"><thead><tr><th>metric</th><th>control</th><th>arm</th>
          <th>arm/control [95% CI]</th><th></th><th>verdict (95% CS)</th><th>n ctl/arm</th></tr></thead>
          <tbody>${rows.join('')}</tbody></table>
      </div>`;
    });
    return `<div class="experiment"><div class="name">${escapeHtml(report.name)}
      <span class="muted">· control ${escapeHtml(report.control)} · scope ${escapeHtml(report.scope)}</span></div>
      ${cards.join('')}</div>`;
  });
  document.getElementById('experiments').innerHTML = html.join('');
}

async function pollExperiments(headers) {
  const list = await fetch('/v1/experiments', { headers, cache: 'no-store' });
  if (!list.ok) return;
  const names = ((await list.json()).data ?? []).map((e) => e.name);
  const reports = [];
  for (const name of names) {
    const path = name.split('/').map(encodeURIComponent).join('/');
    const r = await fetch(`/v1/experiments/${path}/report`, { headers, cache: 'no-store' });
    if (r.ok) reports.push(await r.json());
  }
  state.experiments = reports;
  renderExperiments(reports);
}

// --- Polling. ---
function setStatus(text, isError = false) {
  const el = document.getElementById('status');
  el.textContent = text;
  el.classList.toggle('error', isError);
}

let isPolling = false;
async function poll() {
  if (isPolling) return;
  isPolling = true;
  try {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const response = await fetch('/v1/variants', {
      headers: key ? { authorization: `Bearer ${key}` } : {},
      cache: 'no-store',
    });
    if (response.status === 401) {
      state.lastError = 'unauthorized';
      setStatus('The server needs an API key: enter it above (or open /dashboard?key=…).', true);
      keyInput.focus();
      return;
    }
    if (!response.ok) throw new Error(`GET /v1/variants: HTTP ${response.status}`);
    const variants = await response.json();
    const full = variants.find((v) => v.id === v.base) ?? null;
    // Full model first, then the variants in the order the server lists them.
    const ordered = full ? [full, ...variants.filter((v) => v !== full)] : variants;
    if (state.variantIds.length === 0) {
      state.variantIds = ordered.map((v) => v.id);
      record(ordered);
      buildCharts(ordered);
    } else {
      record(ordered);
    }
    state.last = ordered;
    state.points++;
    state.lastError = null;
    renderVerdicts(ordered, full);
    renderTable(ordered, full);
    updateCharts();
    await pollExperiments(key ? { authorization: `Bearer ${key}` } : {});
    setStatus(
      `${full ? full.id : 'model'} · ${ordered.length} variants · updated ${new Date().toLocaleTimeString()}`,
    );
  } catch (error) {
    state.lastError = String(error);
    setStatus(`cannot reach the server: ${error.message ?? error}`, true);
  } finally {
    isPolling = false;
  }
}

poll();
setInterval(poll, POLL_MS);

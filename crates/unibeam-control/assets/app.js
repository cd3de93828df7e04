// unibeam dashboard: one page, hash routes, no framework.
//   #/                  overview: instances and clusters
//   #/instances/NAME    one instance: state, actions, charts, boot timeline, live log
//   #/clusters/NAME     one cluster: members and the mesh graph
//
// The token comes from ?token= in the page's URL, is read once into a
// variable and sent as `Authorization: Bearer` on every request (EventSource
// cannot send headers, so the log stream carries it in its query). It is
// never written to a cookie or storage, and the URL is left as it is so a
// reload works.
//
// Everything the server or a guest says is inserted with textContent; the
// only markup inserted is SVG charts, after checking their Content-Type,
// parsed in an inert <template> and stripped of scripts and handlers.
'use strict';

(() => {
  const TOKEN = new URLSearchParams(window.location.search).get('token') || '';
  const STATE_POLL_MS = 2000;
  const CHART_POLL_MS = 2500;
  const LOG_MAX_LINES = 2000;
  const STATES = ['starting', 'running', 'restarting', 'exited', 'broken'];

  const $ = (sel, root = document) => root.querySelector(sel);

  // ---- small DOM helper: el('tr', {dataset: {...}, class: 'x'}, child, 'text') ----
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === 'class') node.className = value;
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // ---- errors: a visible banner, one message per source ----
  const errors = new Map();

  function showError(source, message) {
    errors.set(source, message);
    renderBanner();
  }

  function clearError(source) {
    if (errors.delete(source)) renderBanner();
  }

  function renderBanner() {
    const banner = $('#banner');
    // Several sources often fail for one reason (a 404, the server gone): say it once.
    const lines = [...new Set(errors.values())];
    banner.replaceChildren(...lines.map((m) => el('div', { class: 'banner-line', text: m })));
    banner.hidden = errors.size === 0;
    document.body.classList.toggle('has-errors', errors.size > 0);
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function describe(err) {
    if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
    if (err.status === 0) return 'Cannot reach the dashboard server (network down, or `unibeam dashboard` stopped): ' + err.message;
    if (err.status === 401) return '401 Unauthorized: the token is missing or wrong. Open the URL `unibeam dashboard` printed, with its ?token=.';
    return err.status + ': ' + err.message;
  }

  function markUpdated() {
    const t = new Date();
    $('#updated').textContent = 'updated ' + t.toLocaleTimeString();
  }

  // ---- requests: always with the token ----
  async function request(method, path, { body, accept } = {}) {
    const headers = { Authorization: 'Bearer ' + TOKEN };
    if (accept) headers.Accept = accept;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      throw new ApiError(0, e && e.message ? e.message : String(e));
    }
    if (!res.ok) {
      let message = res.statusText || 'request failed';
      const text = await res.text().catch(() => '');
      try {
        const parsed = JSON.parse(text);
        if (parsed && typeof parsed.error === 'string') message = parsed.error;
      } catch (_) {
        if (text) message = text.slice(0, 300);
      }
      throw new ApiError(res.status, message);
    }
    return res;
  }

  async function getJson(path) {
    const res = await request('GET', path, { accept: 'application/json' });
    return res.json();
  }

  async function postJson(path, body) {
    const res = await request('POST', path, { body, accept: 'application/json' });
    if (res.status === 204) return null;
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  // ---- SVG from the server ----
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const DROP_ELEMENTS = 'script, foreignObject, foreignobject, iframe, object, embed, audio, video';

  function cleanSvg(text) {
    // A <template>'s content is inert: nothing in it runs or loads.
    const tpl = document.createElement('template');
    tpl.innerHTML = text;
    const svg = tpl.content.querySelector('svg');
    if (!svg || svg.namespaceURI !== SVG_NS) throw new Error('the server sent no <svg>');
    for (const bad of svg.querySelectorAll(DROP_ELEMENTS)) bad.remove();
    for (const node of [svg, ...svg.querySelectorAll('*')]) {
      for (const attr of [...node.attributes]) {
        const name = attr.name.toLowerCase();
        const value = attr.value.trim().toLowerCase();
        if (name.startsWith('on')) node.removeAttribute(attr.name);
        else if ((name === 'href' || name === 'xlink:href' || name === 'src') && !value.startsWith('#')) node.removeAttribute(attr.name);
        else if (name === 'style' && (value.includes('url(') || value.includes('expression('))) node.removeAttribute(attr.name);
      }
    }
    // Scale with the page: keep the drawn size as a viewBox.
    const w = parseFloat(svg.getAttribute('width'));
    const h = parseFloat(svg.getAttribute('height'));
    if (!svg.hasAttribute('viewBox') && w > 0 && h > 0) svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
    svg.removeAttribute('width');
    svg.removeAttribute('height');
    svg.setAttribute('preserveAspectRatio', 'xMidYMid meet');
    return svg;
  }

  async function loadSvg(container, path) {
    const res = await request('GET', path, { accept: 'image/svg+xml' });
    const type = (res.headers.get('Content-Type') || '').split(';')[0].trim().toLowerCase();
    if (type !== 'image/svg+xml') throw new ApiError(res.status, `${path}: expected image/svg+xml, got ${type || 'no Content-Type'}`);
    const svg = cleanSvg(await res.text());
    container.replaceChildren(svg);
    container.classList.remove('chart-error');
    container.dataset.loaded = String(Date.now());
    return svg;
  }

  // ---- formatting ----
  function fmtDuration(secs) {
    if (secs === null || secs === undefined || !Number.isFinite(secs) || secs < 0) return '–';
    secs = Math.floor(secs);
    const d = Math.floor(secs / 86400);
    const h = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60);
    const s = secs % 60;
    if (d > 0) return `${d}d ${h}h`;
    if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
    if (m > 0) return `${m}m ${String(s).padStart(2, '0')}s`;
    return `${s}s`;
  }

  function uptime(inst) {
    if (!inst || !inst.started || !['running', 'starting', 'restarting'].includes(inst.state)) return null;
    return Date.now() / 1000 - inst.started;
  }

  function fmtMB(bytes) {
    if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return '–';
    return (bytes / (1024 * 1024)).toFixed(1) + ' MB';
  }

  function fmtPorts(ports) {
    if (!Array.isArray(ports) || ports.length === 0) return '–';
    return ports.map((p) => (typeof p === 'string' ? p : JSON.stringify(p))).join(', ');
  }

  function fmtRestart(restart) {
    if (!restart || !restart.policy) return '–';
    return restart.max ? `${restart.policy}:${restart.max}` : restart.policy;
  }

  function stateLabel(inst) {
    if (!inst) return 'unknown';
    if (inst.state === 'exited' && inst.code !== undefined && inst.code !== null) return `exited (${inst.code})`;
    return inst.state || 'unknown';
  }

  function stateBadge(inst, props = {}) {
    const state = STATES.includes(inst && inst.state) ? inst.state : 'unknown';
    return el('span', { class: `state state-${state}`, dataset: { state }, text: stateLabel(inst), ...props });
  }

  function instanceLink(name) {
    return el('a', { href: '#/instances/' + encodeURIComponent(name), text: name });
  }

  function clusterLink(name) {
    return el('a', { href: '#/clusters/' + encodeURIComponent(name), text: name });
  }

  const apiName = (name) => encodeURIComponent(name);

  // ---- views: each route gets a fresh View; leaving it stops its timers and streams ----
  class View {
    constructor() {
      this.alive = true;
      this.timers = new Set();
      this.cleanups = [];
      this.sources = new Set();
    }

    // Runs `task` now and again `ms` after each run ends (never overlapping).
    every(ms, source, task) {
      const run = async () => {
        if (!this.alive) return;
        try {
          await task();
          if (this.alive) {
            clearError(source);
            markUpdated();
          }
        } catch (e) {
          if (this.alive) showError(source, describe(e));
        }
        if (this.alive) {
          const t = setTimeout(() => {
            this.timers.delete(t);
            run();
          }, ms);
          this.timers.add(t);
        }
      };
      this.sources.add(source);
      run();
    }

    onLeave(fn) {
      this.cleanups.push(fn);
    }

    leave() {
      this.alive = false;
      for (const t of this.timers) clearTimeout(t);
      this.timers.clear();
      for (const fn of this.cleanups) {
        try {
          fn();
        } catch (_) { /* leaving anyway */ }
      }
      for (const s of this.sources) clearError(s);
    }
  }

  let current = null;

  function setCrumbs(...parts) {
    const nav = $('#crumbs');
    nav.replaceChildren();
    for (const part of parts) {
      nav.append(el('span', { class: 'crumb-sep', text: '/' }), part);
    }
  }

  function route() {
    if (current) current.leave();
    // A new view starts with only the errors that outlive views.
    for (const source of [...errors.keys()]) if (source !== 'token') errors.delete(source);
    renderBanner();
    current = new View();
    const main = $('#main');
    main.replaceChildren();
    const hash = window.location.hash || '#/';
    let m;
    if ((m = hash.match(/^#\/instances\/([^/]+)$/))) {
      instancePage(current, main, decodeURIComponent(m[1]));
    } else if ((m = hash.match(/^#\/clusters\/([^/]+)$/))) {
      clusterPage(current, main, decodeURIComponent(m[1]));
    } else {
      overviewPage(current, main);
    }
    window.scrollTo(0, 0);
  }

  // ---- #/ ----
  const INSTANCE_COLUMNS = ['Name', 'Image', 'State', 'Uptime', 'Memory', 'Restarts', 'Ports', 'Cluster'];

  function overviewPage(view, main) {
    document.title = 'unibeam dashboard';
    setCrumbs(el('span', { text: 'overview' }));
    const instancesBody = el('tbody');
    const clustersBody = el('tbody');
    const instancesEmpty = el('p', { class: 'muted empty', text: 'No instances. Start one with `unibeam run -d`.', hidden: '' });
    const clustersEmpty = el('p', { class: 'muted empty', text: 'No clusters. Start one with `unibeam up`.', hidden: '' });
    const summary = el('span', { id: 'overview-summary', class: 'muted' });
    main.append(
      el('section', { id: 'overview' },
        el('div', { class: 'section-head' }, el('h1', { text: 'Instances' }), summary),
        el('div', { class: 'table-wrap' },
          el('table', { id: 'instances', class: 'grid-table' },
            el('thead', {}, el('tr', {}, ...INSTANCE_COLUMNS.map((c) => el('th', { scope: 'col', text: c })))),
            instancesBody)),
        instancesEmpty,
        el('div', { class: 'section-head' }, el('h1', { text: 'Clusters' })),
        el('div', { class: 'table-wrap' },
          el('table', { id: 'clusters', class: 'grid-table' },
            el('thead', {}, el('tr', {}, ...['Name', 'Members', 'Running'].map((c) => el('th', { scope: 'col', text: c })))),
            clustersBody)),
        clustersEmpty));

    view.every(STATE_POLL_MS, 'overview', async () => {
      const [instances, clusters] = await Promise.all([getJson('/api/instances'), getJson('/api/clusters')]);
      if (!view.alive) return;
      renderInstanceRows(instancesBody, instances);
      instancesEmpty.hidden = instances.length > 0;
      renderClusterRows(clustersBody, clusters);
      clustersEmpty.hidden = clusters.length > 0;
      const running = instances.filter((i) => i.state === 'running').length;
      summary.textContent = `${running} running of ${instances.length}`;
      $('#overview').dataset.loaded = String(Date.now());
    });
  }

  // Rows are keyed by name and updated in place, so a refresh does not flicker.
  function reconcile(tbody, items, key, build) {
    const existing = new Map([...tbody.rows].map((r) => [r.dataset[key], r]));
    const rows = items.map((item) => {
      const row = existing.get(item.name) || el('tr', { dataset: { [key]: item.name } });
      existing.delete(item.name);
      build(row, item);
      return row;
    });
    for (const stale of existing.values()) stale.remove();
    rows.forEach((row, i) => {
      if (tbody.rows[i] !== row) tbody.insertBefore(row, tbody.rows[i] || null);
    });
  }

  function fillCells(row, cells) {
    while (row.cells.length > cells.length) row.deleteCell(-1);
    cells.forEach((content, i) => {
      const td = row.cells[i] || row.insertCell(-1);
      const className = content.class || '';
      if (td.className !== className) td.className = className;
      const node = content.node || document.createTextNode(content.text === undefined ? '' : String(content.text));
      if (td.childNodes.length === 1 && td.firstChild.isEqualNode(node)) return;
      td.replaceChildren(node);
    });
  }

  function renderInstanceRows(tbody, instances) {
    reconcile(tbody, instances, 'instance', (row, inst) => {
      row.dataset.state = inst.state || 'unknown';
      row.dataset.restarts = String(inst.restarts ?? 0);
      if (inst.state === 'broken') {
        fillCells(row, [
          { node: instanceLink(inst.name), class: 'name' },
          { text: inst.why || 'broken record', class: 'why' },
          { node: stateBadge(inst) },
          { text: '–' }, { text: '–' }, { text: '–' }, { text: '–' }, { text: '–' },
        ]);
        return;
      }
      fillCells(row, [
        { node: instanceLink(inst.name), class: 'name' },
        { text: shortImage(inst.image), class: 'image' },
        { node: stateBadge(inst) },
        { text: fmtDuration(uptime(inst)), class: 'num uptime' },
        { text: fmtMB(inst.beam_memory), class: 'num memory' },
        { text: inst.restarts ?? 0, class: 'num restarts' },
        { text: fmtPorts(inst.ports), class: 'ports' },
        { node: inst.cluster ? clusterLink(inst.cluster) : document.createTextNode('–'), class: 'cluster' },
      ]);
      row.cells[1].title = inst.image || '';
    });
  }

  function shortImage(image) {
    if (!image) return '–';
    const parts = String(image).split('/');
    return parts[parts.length - 1] || image;
  }

  function renderClusterRows(tbody, clusters) {
    reconcile(tbody, clusters, 'cluster', (row, c) => {
      const members = Array.isArray(c.members) ? c.members : [];
      row.dataset.running = String(c.running ?? 0);
      row.dataset.members = String(members.length);
      const list = el('span', { class: 'members' });
      members.forEach((m, i) => {
        if (i > 0) list.append(', ');
        list.append(instanceLink(m));
      });
      fillCells(row, [
        { node: clusterLink(c.name), class: 'name' },
        { node: list },
        { text: `${c.running ?? 0} / ${members.length}`, class: 'num running' },
      ]);
    });
  }

  // ---- #/instances/NAME ----
  const CHARTS = [
    ['chart-memory', 'memory.svg', 'Memory by type'],
    ['chart-processes', 'processes.svg', 'Processes'],
    ['chart-run-queue', 'run_queue.svg', 'Run queue'],
    ['chart-cpu', 'cpu.svg', 'Host CPU (QEMU)'],
  ];

  function instancePage(view, main, name) {
    document.title = `${name} · unibeam`;
    setCrumbs(el('a', { href: '#/', text: 'overview' }), el('span', { class: 'crumb-here', text: name }));
    const base = '/api/instances/' + apiName(name);

    const state = el('span', { id: 'state', class: 'state state-unknown', dataset: { state: 'unknown' }, text: '…' });
    const facts = {
      uptime: el('dd', { id: 'uptime', text: '–' }),
      restarts: el('dd', { id: 'restarts', text: '–' }),
      memory: el('dd', { id: 'memory', text: '–' }),
      image: el('dd', { id: 'image', text: '–' }),
      ports: el('dd', { id: 'ports', text: '–' }),
      policy: el('dd', { id: 'policy', text: '–' }),
      node: el('dd', { id: 'node', text: '–' }),
      cluster: el('dd', { id: 'cluster', text: '–' }),
    };
    const fact = (label, dd) => el('div', { class: 'fact' }, el('dt', { text: label }), dd);

    const feedback = el('span', { id: 'action-status', class: 'muted', role: 'status' });
    const buttons = {
      stop: el('button', { id: 'btn-stop', type: 'button', text: 'Stop' }),
      restart: el('button', { id: 'btn-restart', type: 'button', text: 'Restart' }),
      kill: el('button', { id: 'btn-kill', type: 'button', class: 'danger', text: 'Kill' }),
    };

    const chartBoxes = CHARTS.map(([id, file, title]) => {
      const box = el('div', { id, class: 'chart', dataset: { src: file } }, el('p', { class: 'muted', text: 'loading…' }));
      return { id, file, box, figure: el('figure', { class: 'card' }, el('figcaption', { text: title }), box) };
    });
    const pie = el('div', { id: 'pie-memory', class: 'chart' }, el('p', { class: 'muted', text: 'loading…' }));

    const timelineBody = el('tbody');
    const timeline = el('table', { id: 'timeline', class: 'grid-table timeline' },
      el('thead', {}, el('tr', {}, el('th', { text: 'At (s)' }), el('th', { text: 'Step' }), el('th', { text: 'Took' }))),
      timelineBody);

    const log = el('div', { id: 'log', class: 'log', role: 'log', 'aria-live': 'off', tabindex: '0' });
    const follow = el('input', { id: 'log-follow', type: 'checkbox', checked: '' });
    const logStatus = el('span', { id: 'log-status', class: 'muted' });

    main.append(
      el('section', { id: 'instance', dataset: { name } },
        el('div', { class: 'instance-head card' },
          el('div', { class: 'title-row' }, el('h1', { id: 'instance-name', text: name }), state),
          el('dl', { class: 'facts' },
            fact('Uptime', facts.uptime), fact('Restarts', facts.restarts), fact('Memory', facts.memory),
            fact('Image', facts.image), fact('Ports', facts.ports), fact('Restart policy', facts.policy),
            fact('Node', facts.node), fact('Cluster', facts.cluster)),
          el('div', { class: 'actions' }, buttons.stop, buttons.restart, buttons.kill, feedback)),
        el('div', { class: 'charts' }, ...chartBoxes.map((c) => c.figure)),
        el('div', { class: 'two-col' },
          el('figure', { class: 'card' }, el('figcaption', { text: 'Memory now, by type' }), pie),
          el('section', { class: 'card timeline-card' }, el('h2', { text: 'Boot timeline' }), timeline)),
        el('section', { class: 'card log-card' },
          el('div', { class: 'log-head' }, el('h2', { text: 'Console log' }),
            el('label', { class: 'follow' }, follow, ' follow'), logStatus),
          log)));

    let inst = null;
    let lastStarted;

    function showInstance(value) {
      inst = value;
      const s = STATES.includes(value.state) ? value.state : 'unknown';
      state.className = `state state-${s}`;
      state.dataset.state = s;
      state.textContent = stateLabel(value);
      if (value.state === 'broken') {
        facts.uptime.textContent = value.why || 'broken record';
        return;
      }
      facts.uptime.textContent = fmtDuration(uptime(value));
      facts.restarts.textContent = String(value.restarts ?? 0);
      facts.memory.textContent = fmtMB(value.beam_memory);
      facts.image.textContent = shortImage(value.image);
      facts.image.title = value.image || '';
      facts.ports.textContent = fmtPorts(value.ports);
      facts.policy.textContent = fmtRestart(value.restart);
      facts.node.textContent = value.dist && value.dist.node ? value.dist.node : '–';
      facts.cluster.replaceChildren(value.cluster ? clusterLink(value.cluster) : document.createTextNode('–'));
      const up = ['running', 'starting', 'restarting'].includes(value.state);
      if (!pending) {
        buttons.stop.disabled = !up;
        buttons.kill.disabled = !up;
        buttons.restart.disabled = false;
      }
      if (value.started !== lastStarted) {
        lastStarted = value.started;
        loadTimeline();
      }
    }

    view.every(STATE_POLL_MS, 'instance', async () => {
      const value = await getJson(base);
      // The single-instance answer is `inspect`'s shape, which may lack
      // beam_memory: the newest sample has it.
      if (value.state === 'running' && value.beam_memory === undefined) {
        const samples = await getJson(`${base}/metrics?since=30`).catch(() => []);
        const last = Array.isArray(samples) ? samples[samples.length - 1] : null;
        value.beam_memory = last && last.beam && last.beam.memory ? last.beam.memory.total : null;
      }
      if (view.alive) showInstance(value);
    });

    // Charts: all five each round, the next round once they are in.
    view.every(CHART_POLL_MS, 'charts', async () => {
      const jobs = chartBoxes.map((c) => loadSvg(c.box, `${base}/charts/${c.file}`).catch((e) => {
        c.box.classList.add('chart-error');
        throw e;
      }));
      jobs.push(loadSvg(pie, `${base}/charts/memory-pie.svg`));
      const results = await Promise.allSettled(jobs);
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
    });

    async function loadTimeline() {
      try {
        const steps = await getJson(`${base}/timeline`);
        if (!view.alive) return;
        renderTimeline(timelineBody, steps);
        clearError('timeline');
      } catch (e) {
        if (view.alive) showError('timeline', 'boot timeline: ' + describe(e));
      }
    }

    // Actions.
    let pending = false;
    async function act(action, question) {
      if (question && !window.confirm(question)) return;
      pending = true;
      for (const b of Object.values(buttons)) b.disabled = true;
      feedback.className = 'muted';
      feedback.textContent = `${action}…`;
      const t0 = Date.now();
      try {
        const after = await postJson(`${base}/${action}`);
        if (!view.alive) return;
        feedback.className = 'ok';
        feedback.textContent = `${action}: done in ${((Date.now() - t0) / 1000).toFixed(1)} s` + (after && after.state ? `, now ${stateLabel(after)}` : '');
        clearError('action');
        if (after && after.name === name) showInstance(after);
      } catch (e) {
        if (!view.alive) return;
        feedback.className = 'error';
        feedback.textContent = `${action} failed`;
        showError('action', `${action} ${name}: ${describe(e)}`);
      } finally {
        pending = false;
        if (view.alive && inst) showInstance(inst);
        else for (const b of Object.values(buttons)) b.disabled = false;
      }
    }
    buttons.stop.addEventListener('click', () => act('stop', `Stop ${name}? The BEAM gets the power button, then QEMU quits.`));
    buttons.restart.addEventListener('click', () => act('restart'));
    buttons.kill.addEventListener('click', () => act('kill', `Kill ${name}? QEMU is killed at once; nothing is flushed.`));

    // Live log over SSE.
    let source = null;
    let retry = null;
    let lines = 0;
    function appendLine(text) {
      const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      log.append(el('div', { class: 'line', text }));
      lines += 1;
      while (log.childElementCount > LOG_MAX_LINES) log.firstElementChild.remove();
      log.dataset.lines = String(lines);
      if (follow.checked && atBottom) log.scrollTop = log.scrollHeight;
    }
    follow.addEventListener('change', () => {
      if (follow.checked) log.scrollTop = log.scrollHeight;
    });
    function connectLog() {
      retry = null;
      if (!view.alive) return;
      // The stream starts with the existing tail: start from an empty log.
      log.replaceChildren();
      lines = 0;
      logStatus.textContent = 'connecting…';
      source = new EventSource(`${base}/logs/follow?token=${encodeURIComponent(TOKEN)}`);
      source.onopen = () => {
        logStatus.textContent = 'live';
        log.dataset.stream = 'open';
        clearError('log');
      };
      source.onmessage = (e) => appendLine(e.data);
      source.addEventListener('end', () => {
        source.close();
        source = null;
        logStatus.textContent = 'ended';
        log.dataset.stream = 'ended';
        appendLine('— the log ended —');
        log.lastElementChild.classList.add('marker');
      });
      source.onerror = async () => {
        if (!source) return;
        source.close();
        source = null;
        log.dataset.stream = 'error';
        logStatus.textContent = 'reconnecting…';
        // EventSource hides the status: ask the API why.
        let why = `console log of ${name}: the stream broke; reconnecting`;
        let wait = 3000;
        try {
          await request('GET', `${base}/logs?tail=1`);
        } catch (e) {
          // The same words as the other requests' error: the banner says it once.
          why = describe(e);
          if (e instanceof ApiError && (e.status === 401 || e.status === 404)) wait = 10000;
        }
        if (!view.alive) return;
        showError('log', why);
        retry = setTimeout(connectLog, wait);
      };
    }
    connectLog();
    view.onLeave(() => {
      if (source) source.close();
      if (retry) clearTimeout(retry);
    });
  }

  function renderTimeline(tbody, steps) {
    tbody.replaceChildren();
    if (!Array.isArray(steps) || steps.length === 0) {
      tbody.append(el('tr', {}, el('td', { colspan: '3', class: 'muted', text: 'No boot milestones in the log yet.' })));
      return;
    }
    const last = steps[steps.length - 1].at || 1;
    let prev = 0;
    for (const step of steps) {
      const took = Math.max(0, step.at - prev);
      const bar = el('span', { class: 'bar' });
      bar.style.marginLeft = `${(100 * prev) / last}%`;
      bar.style.width = `${Math.max(0.5, (100 * took) / last)}%`;
      tbody.append(el('tr', { dataset: { step: step.step } },
        el('td', { class: 'num', text: Number(step.at).toFixed(3) }),
        el('td', { class: 'step' }, el('div', { text: step.step }), el('div', { class: 'bar-track' }, bar)),
        el('td', { class: 'num', text: `+${took.toFixed(3)}` })));
      prev = step.at;
    }
  }

  // ---- #/clusters/NAME ----
  function clusterPage(view, main, name) {
    document.title = `cluster ${name} · unibeam`;
    setCrumbs(el('a', { href: '#/', text: 'overview' }), el('span', { class: 'crumb-here', text: 'cluster ' + name }));
    const base = '/api/clusters/' + apiName(name);
    const summary = el('span', { id: 'cluster-summary', class: 'muted', text: '…' });
    const graph = el('div', { id: 'cluster-graph', class: 'chart graph' }, el('p', { class: 'muted', text: 'loading…' }));
    const membersBody = el('tbody');
    main.append(
      el('section', { id: 'cluster', dataset: { name } },
        el('div', { class: 'title-row' }, el('span', { class: 'kind', text: 'cluster' }), el('h1', { id: 'cluster-name', text: name }), summary),
        el('div', { class: 'two-col cluster-cols' },
          el('figure', { class: 'card' }, el('figcaption', { text: 'Mesh: nodes and who sees whom' }), graph),
          el('section', { class: 'card' }, el('h2', { text: 'Members' }),
            el('div', { class: 'table-wrap' },
              el('table', { id: 'members', class: 'grid-table' },
                el('thead', {}, el('tr', {}, ...['Instance', 'Node', 'State', 'Node up', 'Uptime', 'Memory', 'Restarts']
                  .map((c) => el('th', { scope: 'col', text: c })))),
                membersBody))))));

    view.every(STATE_POLL_MS, 'cluster', async () => {
      const c = await getJson(base);
      if (!view.alive) return;
      const nodes = Array.isArray(c.nodes) ? c.nodes : [];
      const links = Array.isArray(c.links) ? c.links : [];
      const byInstance = new Map(nodes.map((n) => [n.instance, n]));
      const up = nodes.filter((n) => n.up).length;
      const section = $('#cluster');
      section.dataset.nodes = String(nodes.length);
      section.dataset.up = String(up);
      section.dataset.links = String(links.length);
      summary.textContent = `${up} of ${nodes.length} nodes up, ${links.length} link${links.length === 1 ? '' : 's'}`;
      reconcile(membersBody, c.members || [], 'instance', (row, inst) => {
        const node = byInstance.get(inst.name);
        row.dataset.state = inst.state || 'unknown';
        row.dataset.up = node ? String(Boolean(node.up)) : 'false';
        row.dataset.restarts = String(inst.restarts ?? 0);
        fillCells(row, [
          { node: instanceLink(inst.name), class: 'name' },
          { text: node ? node.name : (inst.dist && inst.dist.node) || '–', class: 'node' },
          { node: stateBadge(inst) },
          { node: el('span', { class: node && node.up ? 'up yes' : 'up no', text: node && node.up ? 'up' : 'down' }) },
          { text: fmtDuration(uptime(inst)), class: 'num' },
          { text: fmtMB(inst.beam_memory), class: 'num' },
          { text: inst.restarts ?? 0, class: 'num' },
        ]);
      });
    });

    view.every(STATE_POLL_MS, 'graph', async () => {
      await loadSvg(graph, `${base}/graph.svg`);
    });
  }

  // ---- start ----
  // The script sits at the end of <body>: everything it needs is parsed.
  window.addEventListener('hashchange', route);
  if (!TOKEN) showError('token', 'No token in the address: open the URL `unibeam dashboard` printed (http://…/?token=…).');
  route();
})();

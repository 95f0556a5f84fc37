'use strict';
// The dashboard over this API. Plain DOM: server text goes in through textContent only.
(() => {
  const KEY = 'task-scheduler.token';
  const PAGE = 25;
  // A refresh costs at most one list request and ROW_GETS + 1 task GETs (the open task's).
  const ROW_GETS = 9;
  const FAST = 2000;
  const SLOW = 10000;
  const QUIET = 30000;
  // Served at / locally and at /<stage>/ (or /<stage>) behind API Gateway.
  const BASE = location.pathname.replace(/\/?$/, '/');
  const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  const TEMPLATES = {
    log: {message: 'hello'},
    sqs: {queue_url: '', message: {}},
    sns: {topic_arn: '', message: {}, subject: ''},
    lambda: {function_name: '', payload: {}},
    eventbridge: {event_bus: 'default', source: 'my.app', detail_type: 'Scheduled', detail: {}},
  };
  // What the API lets each status do (SPEC, "Managing tasks").
  const WAITING = ['scheduled', 'retrying'];
  const CHANGEABLE = ['scheduled', 'retrying', 'paused'];
  // The edit form's fields, named as the API names them; the last eleven come from
  // #opts-tpl, which the new task form shows too.
  const OPTS = ['tags', 'notify', 'start_at', 'end_at', 'max_runs', 'catch_up', 'overlap',
    'window_minutes', 'callback_url', 'failure_callback_url', 'flow_control'];
  // flow_control's parts: one input each, named flow_control.key and so on.
  const FLOW = ['key', 'rate', 'period', 'parallelism'];
  const EDIT = ['name', 'run_at', 'timezone', 'priority', 'max_attempts', ...OPTS];
  const NUMBERS = ['priority', 'max_attempts', 'max_runs', 'window_minutes'];
  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => {
    const node = document.createElement(tag);
    if (text != null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  };
  // A name and its value (text, or a node) as the last pair of a <dl>.
  const put = (dl, name, value) => {
    const dd = el('dd');
    if (value instanceof Node) dd.append(value);
    else dd.textContent = value == null ? '—' : value;
    dl.append(el('dt', name), dd);
  };
  const flowKey = (t) => t.flow_control && t.flow_control.key;
  const limits = (f) => [f.rate && `${f.rate} per ${f.period}`,
    f.parallelism && `${f.parallelism} at once`].filter(Boolean).join(', ');
  const state = {token: sessionStorage.getItem(KEY), tasks: [], first: [], extra: [], gen: 0,
    seq: 0, open: null, openJson: '', busy: false, stirred: Date.now(), changed: Date.now()};
  let rows = new Map();

  class ApiError extends Error {
    constructor(status, body, auth) {
      super((body && (body.message || body.Message)) || `the API answered HTTP ${status}`);
      this.status = status;
      this.field = body && body.field;
      this.auth = auth;
    }
  }

  const say = (text) => { $('status').textContent = text; };

  async function api(method, path, body, extra) {
    const headers = {Authorization: `Bearer ${state.token}`, ...extra};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(BASE + path, {method, headers, cache: 'no-store', credentials: 'omit',
        body: body === undefined ? undefined : JSON.stringify(body)});
    } catch (e) {
      throw new ApiError(0, {message: `the API cannot be reached (${e.message})`});
    }
    let data = null;
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    if (res.status === 401 || res.status === 403) {
      signOut(`The token was refused (HTTP ${res.status}). Enter a valid token.`);
      throw new ApiError(res.status, data, true);
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }

  // ---------------------------------------------------------------- token
  function showApp(on) {
    $('login').hidden = on;
    $('app').hidden = !on;
    $('forget').hidden = !on;
    if (on) previewSoon();
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    state.token = null;
    state.open = null;
    state.openTask = null;
    closeEdit();
    closeFlow();
    clearList();
    render();
    $('detail').hidden = true;
    ['d-fields', 'd-payload', 'd-runs', 'd-upcoming'].forEach((id) => $(id).replaceChildren());
    showApp(false);
    $('token-err').textContent = message || '';
    say('');
    $('token').focus();
  }

  $('token-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim();
    if (!token) return;
    state.token = token;
    $('token').value = '';
    try {
      await api('GET', 'tasks?limit=1');
    } catch (e) {
      if (!e.auth) { state.token = null; $('token-err').textContent = e.message; }
      return;
    }
    sessionStorage.setItem(KEY, token);
    $('token-err').textContent = '';
    showApp(true);
    say('Signed in.');
    resetList().catch(report);
  });

  $('forget').addEventListener('click', () => { signOut(); say('Token forgotten.'); });

  // ---------------------------------------------------------------- times
  const utc = (iso) => (iso ? iso.replace('T', ' ').replace(/(\.\d+)?Z$/, ' UTC') : '—');
  function rel(iso) {
    if (!iso) return '';
    const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
    const a = Math.abs(s);
    if (a < 2) return 'now';
    const text = a < 60 ? `${a} s` : a < 3600 ? `${Math.round(a / 60)} min`
      : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} days`;
    return s >= 0 ? `in ${text}` : `${text} ago`;
  }
  function inZone(iso, zone) {
    try {
      return new Intl.DateTimeFormat(undefined, {timeZone: zone, weekday: 'short',
        year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
        second: '2-digit'}).format(new Date(iso)) + ` (${zone})`;
    } catch (e) {
      return '';
    }
  }

  // ---------------------------------------------------------------- list
  const filters = () => ({status: $('f-status').value, name: $('f-name').value.trim(),
    tag: $('f-tag').value.trim(), tenant: $('f-tenant').value.trim()});
  // Every page, "Load more"'s too, asks with the filters: paging keeps the tenant.
  function listPath(token) {
    const q = new URLSearchParams({limit: PAGE});
    const f = filters();
    ['status', 'name', 'tag', 'tenant'].forEach((k) => { if (f[k]) q.set(k, f[k]); });
    if (token) q.set('next_token', token);
    return `tasks?${q}`;
  }

  // A refresh reloads the first page only: "Load more" pages are not read again (a name
  // search reads up to 2,000 items a request). Of their rows, those still pending and on
  // screen are fetched one by one, at most ROW_GETS a refresh, least recently checked first.
  function clearList() {
    state.gen += 1;
    state.first = [];
    state.extra = [];
    state.next = null;
    state.asOf = null;
    checked.clear();
  }

  function resetList() {
    clearList();
    return refreshFirst();
  }

  async function refreshFirst() {
    const gen = state.gen;
    const seq = ++state.seq;
    const page = await api('GET', listPath());
    if (gen !== state.gen || seq !== state.seq) return;
    const ids = new Set(page.tasks.map((t) => t.task_id));
    if (state.extra.length || state.loading) {
      // Rows pushed off the first page stay, now as loaded rows; the cursor goes on after them.
      const dropped = state.first.filter((t) => !ids.has(t.task_id));
      state.extra = dropped.concat(state.extra).filter((t) => !ids.has(t.task_id));
    } else {
      state.next = page.next_token;
    }
    if (JSON.stringify(page.tasks) !== JSON.stringify(state.first)) state.changed = Date.now();
    state.first = page.tasks;
    $('f-err').textContent = '';
    render();
  }

  async function loadMore() {
    if (state.loading || !state.next) return;
    const gen = state.gen;
    state.loading = true;
    try {
      const page = await api('GET', listPath(state.next));
      if (gen !== state.gen) return;
      state.extra = state.extra.concat(page.tasks);
      state.next = page.next_token;
      state.asOf = state.asOf || new Date();
      render();
      say(`${state.tasks.length} tasks shown.`);
    } finally {
      state.loading = false;
    }
  }

  const checked = new Map();
  const onScreen = (tr) => {
    const box = tr ? tr.getBoundingClientRect() : null;
    return !!box && box.bottom > 0 && box.top < innerHeight;
  };

  async function refreshRows() {
    const gen = state.gen;
    const now = Date.now();
    const ids = state.extra.filter((t) => live(t) && t.task_id !== state.open &&
      onScreen(rows.get(t.task_id))).map((t) => t.task_id)
      .sort((a, b) => (checked.get(a) || 0) - (checked.get(b) || 0)).slice(0, ROW_GETS);
    if (!ids.length) return;
    ids.forEach((id) => checked.set(id, now));
    const got = await Promise.all(ids.map((id) => api('GET', `tasks/${encodeURIComponent(id)}`)
      .catch((e) => (e.status === 404 ? null : undefined))));
    if (gen !== state.gen) return;
    ids.forEach((id, i) => { if (got[i] !== undefined) putRow(id, got[i]); });
    render();
  }

  // Whether a task fetched alone still belongs in the list (the name is the API's to match).
  function matches(t) {
    const f = filters();
    const at = f.tag.indexOf(':');
    return (!f.status || t.status === f.status) && (!f.tenant || t.tenant === f.tenant) &&
      (at < 0 || (t.tags || {})[f.tag.slice(0, at)] === f.tag.slice(at + 1));
  }

  // A task fetched alone updates its loaded row; gone or out of the status or tag filter,
  // drops it.
  function putRow(id, task) {
    const i = state.extra.findIndex((t) => t.task_id === id);
    if (i < 0) return;
    const old = state.extra[i];
    if (!task || !matches(task)) {
      state.extra.splice(i, 1);
    } else {
      state.extra[i] = task;
      if (task.updated_at === old.updated_at && task.status === old.status) return;
    }
    state.changed = Date.now();
  }

  function render() {
    const seen = new Set();
    state.tasks = state.first.concat(state.extra)
      .filter((t) => !seen.has(t.task_id) && seen.add(t.task_id));
    const body = $('rows');
    const kept = new Map();
    state.tasks.forEach((task, i) => {
      const tr = rows.get(task.task_id) || newRow(task.task_id);
      fillRow(tr, task);
      // Moved only when out of place, so a focused row keeps its focus.
      if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
      kept.set(task.task_id, tr);
    });
    rows.forEach((tr, id) => { if (!kept.has(id)) tr.remove(); });
    rows = kept;
    $('empty').hidden = state.tasks.length > 0 || $('f-err').textContent !== '';
    $('more').hidden = !state.next;
    $('asof').hidden = !(state.extra.length && state.asOf);
    if (state.asOf) {
      $('asof').textContent = `Past row ${PAGE}, only pending tasks on screen refresh; ` +
        `the rest are as of ${state.asOf.toLocaleTimeString()}.`;
    }
  }

  function newRow(id) {
    const tr = document.createElement('tr');
    tr.dataset.id = id;
    const open = el('button', null, 'link');
    open.type = 'button';
    const first = el('td');
    first.append(open, el('span', id.slice(0, 8), 'sub'));
    tr.append(first);
    for (let i = 0; i < 8; i += 1) tr.append(el('td'));
    return tr;
  }

  // A finished task keeps its last next_run_at; it is no longer "next".
  const live = (t) => ['scheduled', 'retrying', 'running'].includes(t.status);
  const chips = (tags) => Object.entries(tags || {}).map(([k, v]) => el('span', `${k}=${v}`, 'tag'));

  function fillRow(tr, t) {
    const c = tr.children;
    c[0].firstChild.textContent = t.name || `task ${t.task_id.slice(0, 8)}`;
    c[0].firstChild.setAttribute('aria-label', `Open ${t.name || 'task'} ${t.task_id}`);
    c[1].replaceChildren(el('span', t.status, `st st-${t.status}`));
    const key = flowKey(t);
    c[2].replaceChildren(el('span', t.action), el('span', key ? `flow ${key}` : '', 'sub'));
    // A task delayed by its key is due again only as a last resort: its time says little.
    const wait = t.flow_delayed_since;
    const next = live(t) && t.next_run_at;
    const until = t.status === 'paused' && t.paused_until;
    c[3].replaceChildren(el('span', wait ? `waiting for ${key}` : next ? rel(next)
      : until ? `resumes ${rel(until)}` : '—'),
    el('span', wait ? `since ${utc(wait)}` : next ? utc(next) : until ? utc(until) : '', 'sub'));
    c[4].textContent = `${t.attempts}/${t.max_attempts}`;
    c[5].textContent = t.priority;
    c[6].textContent = rel(t.updated_at);
    c[6].title = utc(t.updated_at);
    c[7].replaceChildren(...chips(t.tags));
    c[8].textContent = t.tenant;
    tr.classList.toggle('sel', t.task_id === state.open);
  }

  $('rows').addEventListener('click', (ev) => {
    const tr = ev.target.closest('tr');
    if (tr) openTask(tr.dataset.id, ev.target.tagName === 'BUTTON');
  });
  $('more').addEventListener('click', () => loadMore().catch(report));
  $('filters').addEventListener('submit', (ev) => ev.preventDefault());
  $('f-status').addEventListener('change', () => resetList().catch(report));
  let nameTimer;
  ['f-name', 'f-tag', 'f-tenant'].forEach((id) => $(id).addEventListener('input', () => {
    clearTimeout(nameTimer);
    nameTimer = setTimeout(() => resetList().catch(report), 300);
  }));

  // A filter the API refuses (tag without a colon; a tenant, from a tenant's own token) is
  // said under the filters, the list empty.
  function report(e) {
    if (e.auth) return;
    if (['status', 'name', 'tag', 'tenant'].includes(e.field)) {
      $('f-err').textContent = e.field !== 'tenant' ? e.message
        : 'Only an admin token filters by tenant; this token lists its own tenant\'s tasks.';
      render();
    } else {
      say(`Error: ${e.message}`);
    }
  }

  // ---------------------------------------------------------------- detail
  async function openTask(id, focus) {
    if (id !== state.open) {
      closeEdit();
      closeFlow();
      $('d-until').value = '';
    }
    state.open = id;
    state.openJson = '';
    $('d-err').textContent = '';
    rows.forEach((tr, rowId) => tr.classList.toggle('sel', rowId === id));
    await refreshDetail().catch(report);
    $('detail').hidden = false;
    if (focus) $('d-title').focus();
  }

  async function refreshDetail() {
    const id = state.open;
    if (!id) return;
    let task;
    try {
      task = await api('GET', `tasks/${encodeURIComponent(id)}`);
    } catch (e) {
      if (id === state.open && !e.auth) $('d-err').textContent = e.message;
      return;
    }
    const json = JSON.stringify(task);
    if (id !== state.open || json === state.openJson) return;
    state.openJson = json;
    state.openTask = task;
    state.changed = Date.now();
    showTask(task);
    putRow(id, task);
    render();
  }

  function showTask(t) {
    $('d-title').textContent = t.name || `Task ${t.task_id.slice(0, 8)}`;
    // Only what the task's status allows (the API answers 409 to the rest).
    const changeable = CHANGEABLE.includes(t.status);
    ['d-edit', 'd-run', 'd-cancel'].forEach((id) => { $(id).hidden = !changeable; });
    $('d-pausing').hidden = !WAITING.includes(t.status);
    $('d-resume').hidden = t.status !== 'paused';
    $('d-replay').hidden = t.status !== 'failed';
    if (state.edit) {
      $('e-note').textContent = t.version === state.edit.version ? ''
        : `The task has changed since (now version ${t.version}): saving will be refused.`;
    }
    const dl = $('d-fields');
    dl.replaceChildren();
    const add = (name, value) => put(dl, name, value);
    add('Status', el('span', t.status, `st st-${t.status}`));
    add('ID', t.task_id);
    add('Tenant', t.tenant);
    add('Action', t.action);
    add('Schedule', t.run_at + (t.timezone && t.timezone !== 'UTC' ? ` (${t.timezone})` : ''));
    const since = t.flow_delayed_since;
    add('Next run', since ? 'when its key has room'
      : live(t) && t.next_run_at ? `${utc(t.next_run_at)} (${rel(t.next_run_at)})` : '—');
    if (t.status === 'paused') {
      add('Paused until', t.paused_until ? `${utc(t.paused_until)} (${rel(t.paused_until)})` : 'resumed by hand');
    }
    const tags = el('span');
    tags.append(...chips(t.tags));
    add('Tags', tags.childNodes.length ? tags : '—');
    const key = flowKey(t);
    if (key) {
      // The key opens its state: limits, runs holding a slot, tasks queued for room.
      const open = el('button', key, 'link');
      open.type = 'button';
      open.addEventListener('click', () => showFlow(key));
      const box = el('span');
      box.append(open, el('span', limits(t.flow_control), 'sub'));
      add('Flow control', box);
    }
    if (since) add('Delayed', `waiting for ${key} since ${utc(since)} (${rel(since)})`);
    add('Version', t.version);
    add('Runs done', t.max_runs ? `${t.runs_done} of ${t.max_runs}` : t.runs_done);
    if (t.start_at || t.end_at) {
      add('Active', [t.start_at && `from ${utc(t.start_at)}`, t.end_at && `until ${utc(t.end_at)}`].filter(Boolean).join(' '));
    }
    add('Catch up', t.catch_up);
    add('Overlap', t.overlap);
    add('Window', t.window_minutes ? `${t.window_minutes} min` : 'none');
    add('Attempts', `${t.attempts} of ${t.max_attempts}`);
    add('Priority', t.priority);
    add('Notify', t.notify);
    if (t.callback_url) add('Callback', t.callback_url);
    if (t.failure_callback_url) add('Failure callback', t.failure_callback_url);
    add('Created', utc(t.created_at));
    add('Updated', utc(t.updated_at));
    const up = $('d-upcoming');
    up.replaceChildren(...t.upcoming.map((iso) => el('li',
      `${utc(iso)}${t.timezone && t.timezone !== 'UTC' ? ` · ${inZone(iso, t.timezone)}` : ''}`)));
    if (!t.upcoming.length) up.append(el('li', t.status === 'paused' ? 'nothing while it is paused' : 'nothing: the task no longer waits'));
    $('d-payload').textContent = JSON.stringify(t.payload, null, 2);
    const runs = $('d-runs');
    // A skipped firing (catch_up, overlap) is a record, not a run: its row reads apart.
    runs.replaceChildren(...t.runs.map((r) => {
      const skipped = r.outcome === 'skipped';
      const tr = el('tr', null, skipped ? 'skipped' : '');
      const outcome = el('td');
      outcome.append(el('span', r.outcome || 'running', `st st-${r.outcome || 'running'}`));
      tr.append(el('td', skipped ? '—' : r.attempt), el('td', utc(r.started_at)),
        outcome, el('td', r.http_status == null ? '—' : r.http_status),
        el('td', r.duration_ms == null ? '—' : `${r.duration_ms} ms`),
        el('td', [r.error, r.callback].filter(Boolean).join(' · ')));
      return tr;
    }));
    if (!t.runs.length) {
      const tr = el('tr');
      const td = el('td', 'no runs yet');
      td.colSpan = 6;
      tr.append(td);
      runs.append(tr);
    }
  }

  // The buttons send no If-Match: what they do does not depend on the fields shown, and the
  // API refuses (409, shown) what the task's status no longer allows.
  async function act(button, method, suffix, done, body) {
    const id = state.open;
    button.disabled = true;
    $('d-err').textContent = '';
    try {
      await api(method, `tasks/${encodeURIComponent(id)}${suffix}`, body);
      say(`${done} ${id}.`);
      state.openJson = '';
      await Promise.all([refreshDetail(), refreshFirst()]);
      return true;
    } catch (e) {
      if (!e.auth) $('d-err').textContent = e.message;
      return false;
    } finally {
      button.disabled = false;
    }
  }
  const on = (id, handler) => $(id).addEventListener('click', (ev) => handler(ev.target));
  on('d-cancel', (b) => act(b, 'DELETE', '', 'Cancelled task'));
  on('d-replay', (b) => act(b, 'POST', '/retry', 'Replayed task'));
  on('d-resume', (b) => act(b, 'POST', '/resume', 'Resumed task'));
  on('d-run', (b) => act(b, 'POST', '/run', 'Started a run of task'));
  on('d-pause', async (b) => {
    // datetime-local, read in the browser's zone as the new task's date is.
    const until = $('d-until').value;
    const body = until ? {until: new Date(until).toISOString().replace(/\.\d{3}Z$/, 'Z')} : undefined;
    if (await act(b, 'POST', '/pause', 'Paused task', body)) $('d-until').value = '';
  });
  $('d-close').addEventListener('click', () => {
    const id = state.open;
    state.open = null;
    state.openTask = null;
    closeEdit();
    closeFlow();
    $('detail').hidden = true;
    rows.forEach((tr) => tr.classList.remove('sel'));
    const back = rows.get(id);
    if (back) back.querySelector('button').focus();
  });

  // ---------------------------------------------------------------- flow-control key
  // Shown under the open task's fields and refreshed with it; its key clicked again hides it.
  async function showFlow(key) {
    if (state.flow === key) { closeFlow(); return; }
    state.flow = key;
    $('k-h').textContent = `Flow-control key ${key}`;
    $('k-fields').replaceChildren();
    $('d-flow').hidden = false;
    await refreshFlow();
    $('k-h').focus();
  }

  function closeFlow() {
    state.flow = null;
    $('d-flow').hidden = true;
  }

  async function refreshFlow() {
    const key = state.flow;
    if (!key) return;
    // An unknown key (404: no task uses it now) or any other refusal is said in its place.
    const s = await api('GET', `flow-control/${encodeURIComponent(key)}`).catch((e) => e);
    if (key !== state.flow || s.auth) return;
    const failed = s instanceof Error;
    $('k-err').textContent = failed ? s.message : '';
    const dl = $('k-fields');
    dl.replaceChildren();
    if (!failed) {
      put(dl, 'Rate', s.rate ? `${s.rate} per ${s.period}` : 'none');
      put(dl, 'Parallelism', s.parallelism || 'none');
      put(dl, 'Running', s.running);
      put(dl, 'Waiting', s.waiting);
    }
  }

  // ---------------------------------------------------------------- edit
  // The form is made from #edit-tpl when Edit is pressed and filled from the task shown; a
  // save sends only the fields changed since, with If-Match naming the version it was
  // filled from, so a change made meanwhile (elsewhere, or by a run) is answered 412.
  function openEdit() {
    const t = state.openTask;
    const made = withOpts($('edit-tpl').content.cloneNode(true));
    $('d-edit-box').replaceChildren(made);
    const f = $('edit-form');
    f.querySelectorAll('details').forEach((d) => { d.open = true; });
    EDIT.forEach((name) => {
      const v = t[name];
      if (name === 'flow_control') {
        const parts = {period: 'second', ...v};
        FLOW.forEach((p) => { part(f, p).value = parts[p] ?? ''; });
      } else {
        f.elements.namedItem(name).value = name === 'tags'
          ? Object.entries(v || {}).map(([k, x]) => `${k}=${x}`).join('\n') : v == null ? '' : v;
      }
    });
    $('e-version').textContent = t.version;
    state.edit = {version: t.version, base: EDIT.map((name) => text(f, name))};
    f.addEventListener('submit', saveEdit);
    $('e-close').addEventListener('click', closeEdit);
    $('e-reload').addEventListener('click', async () => {
      state.openJson = '';
      await refreshDetail();
      openEdit();
    });
    f.elements.namedItem('name').focus();
  }

  function closeEdit() {
    state.edit = null;
    $('d-edit-box').replaceChildren();
  }
  on('d-edit', openEdit);

  async function saveEdit(ev) {
    ev.preventDefault();
    const f = ev.target;
    const edit = state.edit;
    f.querySelectorAll('.err').forEach((span) => { span.textContent = ''; });
    $('e-reload').hidden = true;
    const body = {};
    try {
      EDIT.forEach((name, i) => {
        if (text(f, name) !== edit.base[i]) body[name] = value(f, name);
      });
    } catch (e) {
      showError(f, $('e-err'), e.field, e.message);
      return;
    }
    if (!Object.keys(body).length) {
      $('e-err').textContent = 'Nothing was changed.';
      return;
    }
    const id = state.open;
    const button = f.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const task = await api('PATCH', `tasks/${encodeURIComponent(id)}`, body,
        {'If-Match': `"${edit.version}"`});
      if (state.edit === edit) closeEdit();
      say(`Saved task ${id}: now version ${task.version}.`);
      state.openJson = '';
      await Promise.all([refreshDetail(), refreshFirst()]);
    } catch (e) {
      if (e.auth || state.edit !== edit) return;
      if (e.status === 412) {
        $('e-err').textContent = 'This task changed meanwhile: nothing was saved. Reload it to edit its current version (your changes here are dropped).';
        $('e-reload').hidden = false;
        state.openJson = '';
        refreshDetail(); // the detail shows the version that won, and the note says so
      } else {
        showError(f, $('e-err'), e.field, e.message);
      }
    } finally {
      button.disabled = false;
    }
  }

  const part = (f, p) => f.elements.namedItem(`flow_control.${p}`);
  // A field's text as the form holds it; flow_control's parts joined, so that an edit sees
  // one field changed.
  const text = (f, name) => (name === 'flow_control'
    ? FLOW.map((p) => part(f, p).value.trim()).join('\n') : f.elements.namedItem(name).value);

  // A field's value as the API takes it: a number, text, null when empty (a nullable field
  // is cleared, others are refused by the API next to the field), tags an object;
  // flow_control an object, null without a key (the API says what else is missing).
  function value(f, name) {
    const got = text(f, name).trim();
    if (name === 'tags') return pairs(got, '=', 'tags', 'key=value');
    if (name === 'flow_control') {
      const [key, rate, period, most] = text(f, name).split('\n');
      if (!key) return null;
      const out = {key, period};
      if (rate) out.rate = Number(rate);
      if (most) out.parallelism = Number(most);
      return out;
    }
    if (!got) return null;
    return NUMBERS.includes(name) ? Number(got) : got;
  }

  // Lines of "key<sep>value" (the key before the first sep) as an object.
  function pairs(text, sep, field, hint) {
    const out = {};
    text.split(/\r?\n/).forEach((line, i) => {
      if (!line.trim()) return;
      const at = line.indexOf(sep);
      if (at < 1) throw new FormError(field, `line ${i + 1}: write ${hint}`);
      out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    });
    return out;
  }

  // The shared tags and lifecycle fields (#opts-tpl) in place of a form's .opts.
  function withOpts(node) {
    node.querySelector('.opts').replaceWith($('opts-tpl').content.cloneNode(true));
    return node;
  }

  // ---------------------------------------------------------------- new task
  const form = withOpts($('new-form'));
  const mode = () => form.querySelector('input[name=when]:checked').value;
  const errs = () => form.querySelectorAll('.err');

  function clearErrors(fields) {
    errs().forEach((span) => {
      if (!fields || fields.includes(span.dataset.field)) span.textContent = '';
    });
    if (!fields) $('n-err').textContent = '';
  }

  // Next to the field the API names (payload.url), else its group (payload), else the form's
  // own line; a folded section holding it unfolds.
  function showError(scope, fallback, field, message) {
    const shown = [...scope.querySelectorAll('.err')].filter((s) => !s.closest('[hidden]'));
    const at = (name) => shown.find((s) => s.dataset.field === name);
    const span = at(field) || at(String(field).split('.')[0]) || fallback;
    span.textContent = message;
    const fold = span.closest('details');
    if (fold) fold.open = true;
  }
  const formError = (field, message) => showError(form, $('n-err'), field, message);

  class FormError extends Error {
    constructor(field, message) { super(message); this.field = field; }
  }

  function when() {
    if (mode() === 'at') {
      const value = $('n-at').value;
      if (!value) return null;
      const moment = new Date(value); // datetime-local: read in the browser's zone
      if (Number.isNaN(moment.getTime())) throw new FormError('run_at', 'not a date and time');
      return {run_at: moment.toISOString().replace(/\.\d{3}Z$/, 'Z'), zone: ZONE};
    }
    const expr = $('n-expr').value.trim();
    if (!expr) return null;
    const timezone = $('n-tz').value.trim();
    return {run_at: expr, timezone: timezone || undefined, zone: timezone || 'UTC'};
  }

  function json(id, field, label) {
    const text = $(id).value.trim();
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new FormError(field, `${label} is not valid JSON: ${e.message}`);
    }
  }

  function payload() {
    if ($('n-action').value !== 'webhook') return json('n-payload', 'payload', 'Payload') || {};
    const out = {url: $('n-url').value.trim(), method: $('n-method').value};
    const data = json('n-data', 'payload.data', 'Data');
    if (data !== undefined) out.data = data;
    const headers = pairs($('n-headers').value, ':', 'payload.headers', 'Name: value');
    if (Object.keys(headers).length) out.headers = headers;
    return out;
  }

  function taskBody() {
    const w = when();
    if (!w) throw new FormError('run_at', 'Choose a date and time, or type an expression.');
    const body = {action: $('n-action').value, payload: payload(), run_at: w.run_at};
    if (w.timezone) body.timezone = w.timezone;
    const name = $('n-name').value.trim();
    if (name) body.name = name;
    [['n-prio', 'priority'], ['n-max', 'max_attempts']].forEach(([id, key]) => {
      if ($(id).value !== '') body[key] = Number($(id).value);
    });
    OPTS.forEach((name) => {
      const v = value(form, name);
      if (v !== null && !(name === 'tags' && !Object.keys(v).length)) body[name] = v;
    });
    return body;
  }

  let previewTimer;
  let previewSeq = 0;
  function previewSoon() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, 300);
  }

  async function preview() {
    // Signed out (the page has just loaded): a request now would be refused and would
    // sign out whoever signs in meanwhile.
    if (!state.token) return;
    const seq = ++previewSeq;
    const box = $('preview');
    let w;
    try {
      w = when();
    } catch (e) {
      box.replaceChildren();
      clearErrors(['run_at', 'timezone']);
      formError(e.field, e.message);
      return;
    }
    if (!w) { box.replaceChildren(); clearErrors(['run_at', 'timezone']); return; }
    const q = new URLSearchParams({run_at: w.run_at, count: 5});
    if (w.timezone) q.set('timezone', w.timezone);
    try {
      const p = await api('GET', `preview?${q}`);
      if (seq !== previewSeq) return;
      clearErrors(['run_at', 'timezone']);
      const list = el('ol');
      p.next.forEach((iso) => {
        const li = el('li', utc(iso));
        li.append(el('span', inZone(iso, w.zone), 'sub'));
        list.append(li);
      });
      box.replaceChildren(el('p', p.recurring ? 'Next firings:' : 'Fires once:', 'hint'), list);
    } catch (e) {
      if (seq !== previewSeq || e.auth) return;
      box.replaceChildren();
      clearErrors(['run_at', 'timezone']);
      formError(e.field || 'run_at', e.message);
    }
  }

  function showMode() {
    $('w-at').hidden = mode() !== 'at';
    $('w-expr').hidden = mode() === 'at';
    previewSoon();
  }
  form.querySelectorAll('input[name=when]').forEach((r) => r.addEventListener('change', showMode));
  ['n-at', 'n-expr', 'n-tz'].forEach((id) => $(id).addEventListener('input', previewSoon));

  $('n-action').addEventListener('change', () => {
    const action = $('n-action').value;
    $('webhook').hidden = action !== 'webhook';
    $('other').hidden = action === 'webhook';
    const area = $('n-payload');
    const known = Object.values(TEMPLATES).map((t) => JSON.stringify(t, null, 2));
    if (TEMPLATES[action] && (!area.value.trim() || known.includes(area.value))) {
      area.value = JSON.stringify(TEMPLATES[action], null, 2);
    }
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors();
    let body;
    try {
      body = taskBody();
    } catch (e) {
      formError(e.field, e.message);
      return;
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const made = await api('POST', 'schedule-task', body);
      say(`Scheduled task ${made.task_id}; next run ${utc(made.next_run_at)}.`);
      // A fresh form: a second click must not schedule the same task again by accident.
      form.reset();
      formDefaults();
      await refreshFirst();
      openTask(made.task_id);
    } catch (e) {
      if (!e.auth) formError(e.field, e.message);
    } finally {
      button.disabled = false;
    }
  });

  // ---------------------------------------------------------------- start
  const pad = (n) => String(n).padStart(2, '0');
  function formDefaults() {
    const soon = new Date(Date.now() + 600000);
    $('n-at').value = `${soon.getFullYear()}-${pad(soon.getMonth() + 1)}-` +
      `${pad(soon.getDate())}T${pad(soon.getHours())}:${pad(soon.getMinutes())}`;
    $('n-tz').value = ZONE;
    $('n-action').dispatchEvent(new Event('change'));
    showMode();
  }
  formDefaults();
  $('n-zone').textContent = `your browser's time, ${ZONE}`;
  $('d-zone').textContent = `your time, ${ZONE}`;
  const zones = (Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : []);
  $('zones').append(...['UTC', ...zones].map((z) => { const o = el('option'); o.value = z; return o; }));

  // Live refresh: every 2 s; every 10 s once no one has touched the page and nothing has
  // changed for 30 s, unless a task shown up top or open is running or due within 15 s;
  // not at all while the tab is hidden.
  let timer = 0;
  let due = 0;
  function later(ms) {
    clearTimeout(timer);
    due = Date.now() + ms;
    timer = setTimeout(tick, ms);
  }

  function pace() {
    const now = Date.now();
    if (now - Math.max(state.stirred, state.changed) < QUIET) return FAST;
    const soon = (t) => t.status === 'running' ||
      (live(t) && Date.parse(t.next_run_at) - now < 15000);
    return state.first.concat(state.openTask || []).some(soon) ? FAST : SLOW;
  }

  async function tick() {
    clearTimeout(timer);
    if (document.hidden) return;
    if (state.token && !state.busy) {
      state.busy = true;
      const jobs = [refreshFirst(), refreshDetail(), refreshRows(), refreshFlow()];
      await Promise.all(jobs.map((job) => job.catch(report)));
      state.busy = false;
    }
    later(pace());
  }

  const stir = () => {
    state.stirred = Date.now();
    if (due - Date.now() > FAST) later(FAST);
  };
  ['pointerdown', 'keydown', 'wheel', 'scroll'].forEach((type) =>
    addEventListener(type, stir, {passive: true, capture: true}));
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) return;
    state.stirred = Date.now();
    tick();
  });
  later(FAST);

  if (state.token) {
    showApp(true);
    resetList().catch(report);
  } else {
    showApp(false);
  }
})();

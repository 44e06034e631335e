// SecNet patient application: the patient's key lives in this browser (WebCrypto, stored
// non-extractable in IndexedDB) and signs everything the patient does. Nothing here sends the
// key anywhere; the encrypted backup is made once, when the key is created.
'use strict';
(() => {
  const app = document.getElementById('patient-app');
  if (!app) return;
  const $ = (id) => document.getElementById(id);
  const status = $('status');
  const say = (text, error) => {
    status.textContent = text;
    status.className = error ? 'error' : '';
  };

  // ---- bytes ----
  const enc = new TextEncoder();
  const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, '0')).join('');
  const unhex = (h) => {
    if (!/^([0-9a-f]{2})*$/.test(h)) throw new Error('not hex');
    return new Uint8Array((h.match(/../g) || []).map((x) => parseInt(x, 16)));
  };
  const b64u = (b) => btoa(String.fromCharCode(...new Uint8Array(b)))
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const unb64u = (s) => {
    const b = s.replace(/-/g, '+').replace(/_/g, '/');
    return Uint8Array.from(atob(b + '='.repeat((4 - (b.length % 4)) % 4)), (c) => c.charCodeAt(0));
  };
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  // LEB128, as the ledger's codec writes lengths.
  const varint = (n) => {
    const out = [];
    for (;;) {
      const b = n % 128;
      n = Math.floor(n / 128);
      if (n === 0) { out.push(b); break; }
      out.push(b | 0x80);
    }
    return new Uint8Array(out);
  };
  const u64 = (n) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(n)); return b; };
  const u16 = (n) => { const b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, n); return b; };
  const str = (s) => { const b = enc.encode(s); return concat(varint(b.length), b); };
  const namespaced = (ns, msg) => concat(varint(enc.encode(ns).length), enc.encode(ns), msg);
  const sha256 = async (b) => new Uint8Array(await crypto.subtle.digest('SHA-256', b));

  // ---- the key store ----
  const db = () => new Promise((resolve, reject) => {
    const r = indexedDB.open('secnet', 1);
    r.onupgradeneeded = () => r.result.createObjectStore('keys');
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  const store = async (mode, f) => {
    const d = await db();
    return new Promise((resolve, reject) => {
      const t = d.transaction('keys', mode);
      const req = f(t.objectStore('keys'));
      t.oncomplete = () => resolve(req && req.result);
      t.onerror = () => reject(t.error);
    });
  };
  const loadKey = () => store('readonly', (s) => s.get('patient'));
  const saveKey = (k) => store('readwrite', (s) => s.put(k, 'patient'));
  const forgetKey = () => store('readwrite', (s) => s.delete('patient'));

  const PKCS8 = {
    Ed25519: unhex('302e020100300506032b657004220420'),
    X25519: unhex('302e020100300506032b656e04220420'),
  };
  // Imports 32-byte seeds as non-extractable keys, learning the public halves on the way.
  const importSeeds = async (signSeed, encSeed) => {
    const publicOf = async (alg, seed, usages) => {
      const k = await crypto.subtle.importKey('pkcs8', concat(PKCS8[alg], seed), { name: alg }, true, usages);
      const jwk = await crypto.subtle.exportKey('jwk', k);
      const kept = await crypto.subtle.importKey('pkcs8', concat(PKCS8[alg], seed), { name: alg }, false, usages);
      return [unb64u(jwk.x), kept];
    };
    const [account, sign] = await publicOf('Ed25519', signSeed, ['sign']);
    const [encPub, decrypt] = await publicOf('X25519', encSeed, ['deriveBits']);
    return { account: hex(account), encryptionKey: hex(encPub), sign, decrypt };
  };

  // ---- the encrypted backup (secnet-key-backup/1) ----
  const BACKUP = 'secnet-key-backup/1';
  const ITERATIONS = 600000;
  const backupKey = async (pass, salt) => {
    const base = await crypto.subtle.importKey('raw', enc.encode(pass), 'PBKDF2', false, ['deriveKey']);
    return crypto.subtle.deriveKey({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations: ITERATIONS },
      base, { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
  };
  const makeBackup = async (signSeed, encSeed, account, pass) => {
    const salt = crypto.getRandomValues(new Uint8Array(16));
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    const key = await backupKey(pass, salt);
    const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: enc.encode(BACKUP + account) },
      key, concat(signSeed, encSeed));
    return {
      format: BACKUP, account,
      kdf: { name: 'PBKDF2-SHA256', iterations: ITERATIONS, salt: hex(salt) },
      cipher: 'AES-256-GCM', nonce: hex(nonce), ciphertext: hex(ct),
    };
  };
  const openBackup = async (b, pass) => {
    if (b.format !== BACKUP || b.cipher !== 'AES-256-GCM' || !b.kdf || b.kdf.name !== 'PBKDF2-SHA256'
        || b.kdf.iterations !== ITERATIONS) {
      throw new Error('this is not a SecNet key backup (secnet-key-backup/1)');
    }
    const key = await backupKey(pass, unhex(b.kdf.salt));
    let plain;
    try {
      plain = new Uint8Array(await crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: unhex(b.nonce), additionalData: enc.encode(BACKUP + b.account) }, key, unhex(b.ciphertext)));
    } catch (e) {
      throw new Error('wrong passphrase, or the backup file was changed');
    }
    const k = await importSeeds(plain.slice(0, 32), plain.slice(32, 64));
    plain.fill(0);
    if (k.account !== b.account) throw new Error('the backup names another account');
    return k;
  };
  const download = (name, text) => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
  };

  // ---- signing what the node's API takes ----
  const problem = async (resp) => {
    try {
      const j = await resp.json();
      return j.detail || j.error || j.title || resp.statusText;
    } catch (e) {
      return resp.statusText;
    }
  };
  // The holder account this node signs as: requests are signed for it alone. The page and
  // this script come from the same node, so its word is the one already trusted here.
  let holderAccount = null;
  const holder = async () => {
    if (!holderAccount) {
      const resp = await fetch('/v1/pdc');
      if (!resp.ok) throw new Error(`this node does not say which holder it is (${resp.status})`);
      const h = (await resp.json()).holder;
      if (!/^[0-9a-f]{64}$/.test(h)) throw new Error('this node names no valid holder account');
      holderAccount = h;
    }
    return holderAccount;
  };
  // A request signed with SecNet-Auth: the holder it is meant for, method, path and query,
  // body hash, time, nonce; the body's digest goes ahead of it (Content-Digest).
  const signedFetch = async (key, method, path, body, contentType) => {
    const bytes = body == null ? new Uint8Array() : (typeof body === 'string' ? enc.encode(body) : body);
    const audience = await holder();
    const at = Date.now();
    const nonce = crypto.getRandomValues(new Uint8Array(16));
    const digest = await sha256(bytes);
    const msg = concat(unhex(audience), enc.encode(method + ' ' + path), new Uint8Array([0]), digest, u64(at), nonce);
    const sig = await crypto.subtle.sign({ name: 'Ed25519' }, key.sign, namespaced('secnet/pdc/request/v2', msg));
    const headers = {
      'SecNet-Auth': `${key.account}.${audience}.${at}.${hex(nonce)}.${hex(sig)}`,
      'Content-Digest': `sha-256=:${btoa(String.fromCharCode(...digest))}:`,
    };
    if (contentType) headers['content-type'] = contentType;
    const resp = await fetch(path, { method, headers, body: method === 'GET' ? undefined : bytes });
    if (!resp.ok) throw new Error(`${method} ${path.split('?')[0]} was refused (${resp.status}): ${await problem(resp)}`);
    return resp;
  };
  // Calls as the ledger encodes them.
  const CALL = {
    setEncryptionKey: (key) => concat(new Uint8Array([1]), unhex(key)),
    register: (r) => concat(new Uint8Array([2]), unhex(r.hash), str(r.description), str(r.address),
      u64(r.price), new Uint8Array([0]), unhex(r.holder), u16(r.holder_share_bps)),
    withdraw: (hash) => concat(new Uint8Array([3]), unhex(hash)),
  };
  const nonceOf = async (account) => {
    const r = await fetch(`/v1/accounts/${account}`);
    if (!r.ok) throw new Error(`cannot read the account's nonce: ${await problem(r)}`);
    return (await r.json()).nonce;
  };
  // Signs and submits a transaction, then follows it until it is final.
  const transact = async (key, chainId, call, progress) => {
    const nonce = await nonceOf(key.account);
    const tx = concat(str(chainId), unhex(key.account), u64(nonce), call);
    const sig = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, key.sign, namespaced('secnet/tx/v1', tx)));
    const hash = hex(await sha256(tx));
    const sent = await fetch('/v1/tx', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ tx: hex(concat(tx, sig)) }),
    });
    if (!sent.ok) throw new Error(`the transaction was not admitted: ${await problem(sent)}`);
    progress(`submitted ${hash.slice(0, 12)}…, waiting for it to be final`);
    for (let i = 0; i < 120; i++) {
      await new Promise((r) => setTimeout(r, 250));
      const r = await fetch(`/v1/tx/${hash}`);
      if (!r.ok) continue;
      // {"hash", "status": {"status": "pending" | "committed" | "unknown", ...}}
      const s = (await r.json()).status || {};
      if (s.status === 'committed') {
        if (s.receipt.outcome.status !== 'applied') {
          const why = s.receipt.outcome.rejection || {};
          throw new Error(`the ledger refused it: ${why.reason || 'rejected'}`);
        }
        progress(`final at height ${s.height}`);
        return s;
      }
    }
    throw new Error('the transaction did not become final within 30 s; look again later');
  };

  const requireKey = async () => {
    const k = await loadKey();
    if (!k) {
      location.href = '/app/patient';
      throw new Error('no key in this browser');
    }
    return k;
  };
  const ensureEncryptionKey = async (key) => {
    if (app.dataset.hasEncryptionKey === 'true') return;
    say('Registering your encryption key on the ledger (signed by you)…');
    await transact(key, app.dataset.chain, CALL.setEncryptionKey(key.encryptionKey), (p) => say(`Encryption key: ${p}`));
    app.dataset.hasEncryptionKey = 'true';
  };
  const guard = (f) => async (ev) => {
    if (ev) ev.preventDefault();
    try {
      await f(ev);
    } catch (e) {
      say(e.message || String(e), true);
    }
  };

  // ---- pages ----
  const signIn = async (key) => {
    say('Signing in…');
    const c = await fetch('/app/patient/challenge', { method: 'POST' });
    if (!c.ok) throw new Error(await problem(c));
    const { challenge, node } = await c.json();
    const sig = await crypto.subtle.sign({ name: 'Ed25519' }, key.sign,
      namespaced('secnet/web/sign-in/v1', concat(unhex(node), unhex(challenge))));
    const r = await fetch('/app/patient/session', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ account: key.account, challenge, signature: hex(sig) }),
    });
    if (!r.ok) throw new Error(`sign-in refused: ${await problem(r)}`);
    location.href = '/app/patient/records';
  };

  const startPage = async () => {
    if (!window.crypto || !crypto.subtle || !window.indexedDB) {
      $('no-crypto').hidden = false;
      return;
    }
    const key = await loadKey();
    if (key) {
      $('key-account').textContent = key.account;
      $('has-key').hidden = false;
    } else {
      $('no-key').hidden = false;
      $('restore').hidden = false;
    }
    $('sign-in').addEventListener('click', guard(async () => signIn(await loadKey())));
    $('forget-key').addEventListener('click', guard(async () => {
      if (!confirm('Remove your key from this browser? Without its backup you lose access to your account.')) return;
      await forgetKey();
      location.reload();
    }));
    $('create-form').addEventListener('submit', guard(async () => {
      const pass = $('create-pass').value;
      if (pass.length < 12) throw new Error('the passphrase must have at least 12 characters');
      if (pass !== $('create-pass2').value) throw new Error('the two passphrases differ');
      say('Creating your key…');
      const ed = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
      const x = await crypto.subtle.generateKey({ name: 'X25519' }, true, ['deriveBits']);
      const signSeed = unb64u((await crypto.subtle.exportKey('jwk', ed.privateKey)).d);
      const encSeed = unb64u((await crypto.subtle.exportKey('jwk', x.privateKey)).d);
      const key = await importSeeds(signSeed, encSeed);
      const backup = await makeBackup(signSeed, encSeed, key.account, pass);
      signSeed.fill(0);
      encSeed.fill(0);
      download(`secnet-key-${key.account.slice(0, 12)}.json`, JSON.stringify(backup, null, 2));
      await saveKey(key);
      say('Your key is made and its encrypted backup downloaded.');
      await signIn(key);
    }));
    $('restore-form').addEventListener('submit', guard(async () => {
      const file = $('restore-file').files[0];
      if (!file) throw new Error('choose the backup file');
      if (file.size > 4096) throw new Error('this file is too large to be a key backup');
      let parsed;
      try { parsed = JSON.parse(await file.text()); } catch (e) { throw new Error('the backup file is not JSON'); }
      say('Opening the backup…');
      const key = await openBackup(parsed, $('restore-pass').value);
      await saveKey(key);
      await signIn(key);
    }));
  };

  const recordsPage = async () => {
    $('import-form').addEventListener('submit', guard(async () => {
      const key = await requireKey();
      if (key.account !== app.dataset.account) throw new Error('this browser holds another account\'s key; sign in again');
      const file = $('import-file').files[0];
      if (!file) throw new Error('choose a FHIR Bundle file');
      if (file.size > 32 * 1024 * 1024) throw new Error('the file is larger than 32 MiB');
      const body = new Uint8Array(await file.arrayBuffer());
      await ensureEncryptionKey(key);
      say(`Signing and importing ${file.name} (${body.length} bytes)…`);
      const r = await signedFetch(key, 'POST', `/v1/pdc/import/${key.account}?source=patient-upload`, body, 'application/fhir+json');
      const out = await r.json();
      const n = (out.objects || []).length;
      say(`Imported ${n} resources.`);
      setTimeout(() => location.reload(), 600);
    }));
  };

  const showPlan = (plan) => {
    const list = $('review-steps');
    list.replaceChildren();
    for (const s of plan.steps) {
      const li = document.createElement('li');
      const p = document.createElement('p');
      p.textContent = s.summary;
      li.appendChild(p);
      if (s.kind === 'request' && s.content_type === 'text/plain') {
        const pre = document.createElement('pre');
        pre.textContent = s.body;
        li.appendChild(pre);
      }
      const small = document.createElement('small');
      small.className = 'progress';
      li.appendChild(small);
      list.appendChild(li);
    }
    $('review').hidden = false;
    $('review').scrollIntoView();
  };
  // What a consent or revocation may ask the patient to sign, whatever the node sent: the
  // patient's own shared records and policies at this node, registrations held by this node.
  const checkPlan = (plan, key) => {
    const objects = new RegExp(`^/v1/pdc/objects/${key.account}/shared/[0-9a-f]{64}$`);
    for (const s of plan.steps) {
      const ok = (s.kind === 'request' && s.method === 'PUT'
          && (objects.test(s.path) || s.path === `/v1/pdc/policies/${key.account}`))
        || (s.kind === 'register' && s.holder === app.dataset.node && /^[0-9]{1,20}$/.test(s.price)
          && s.holder_share_bps >= 0 && s.holder_share_bps <= 2000 && plan.steps[s.body_of]
          && plan.steps[s.body_of].kind === 'request')
        || (s.kind === 'withdraw' && /^[0-9a-f]{64}$/.test(s.hash));
      if (!ok) throw new Error('the node asked to sign something a consent never needs; nothing was signed');
    }
    if (plan.chain_id !== app.dataset.chain) throw new Error('the plan is for another network; nothing was signed');
  };
  const answerAsk = (key, id, answer) => signedFetch(key, 'POST', `/v1/pdc/asks/${key.account}/${id}`,
    JSON.stringify(answer), 'application/json');
  const runPlan = async (plan, afterwards) => {
    const key = await requireKey();
    if (key.account !== plan.account) throw new Error('this browser holds another account\'s key; sign in again');
    checkPlan(plan, key);
    const items = $('review-steps').children;
    const bodies = [];
    for (let i = 0; i < plan.steps.length; i++) {
      const s = plan.steps[i];
      const progress = (t) => { items[i].querySelector('.progress').textContent = t; say(`Step ${i + 1}: ${t}`); };
      if (s.kind === 'request') {
        progress('signing and sending…');
        await signedFetch(key, s.method, s.path, s.body, s.content_type);
        bodies[i] = enc.encode(s.body);
        progress('done');
      } else if (s.kind === 'register') {
        const hash = hex(await sha256(bodies[s.body_of]));
        await transact(key, plan.chain_id, CALL.register({
          hash, description: s.description, address: `${location.origin}/v1/pdc/data/${hash}`,
          price: s.price, holder: s.holder, holder_share_bps: s.holder_share_bps,
        }), progress);
      } else if (s.kind === 'withdraw') {
        await transact(key, plan.chain_id, CALL.withdraw(s.hash), progress);
      }
    }
    if (afterwards) await afterwards(key);
    say('Done: all steps are signed, sent and final.');
    setTimeout(() => location.reload(), 800);
  };
  const consentPage = async () => {
    let plan = null;
    // The ask this consent answers, with the scope the patient chose (maybe narrower).
    let answering = null;
    const prepare = async (url, payload) => {
      const r = await fetch(url, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ csrf: app.dataset.csrf, ...payload }),
      });
      if (!r.ok) throw new Error(await problem(r));
      plan = await r.json();
      showPlan(plan);
      say('Review the steps below, then sign.');
    };
    $('consent-form').addEventListener('submit', guard(async () => {
      const f = new FormData($('consent-form'));
      const terms = {
        audience: f.get('audience'), categories: f.getAll('categories'), purposes: f.getAll('purposes'),
        until: f.get('until'), price: f.get('price'),
      };
      if (f.get('ask') && terms.audience !== f.get('asked_by')) {
        throw new Error('this answers the request of another organisation: choose it, or open the consent form from the menu to consent to someone else');
      }
      await prepare('/app/patient/consent/prepare', terms);
      answering = f.get('ask') ? { id: f.get('ask'), categories: terms.categories, purposes: terms.purposes, until: terms.until } : null;
    }));
    for (const b of document.querySelectorAll('button.revoke')) {
      b.addEventListener('click', guard(async () => {
        answering = null;
        await prepare('/app/patient/consent/revoke', { audience: b.dataset.audience });
      }));
    }
    $('sign-plan').addEventListener('click', guard(async () => {
      if (!plan) return;
      $('sign-plan').disabled = true;
      const ask = answering;
      const afterwards = ask && (async (key) => {
        say('Telling the organisation your answer (signed by you)…');
        await answerAsk(key, ask.id, { decision: 'approved', categories: ask.categories, purposes: ask.purposes, until: ask.until });
      });
      try { await runPlan(plan, afterwards); } finally { $('sign-plan').disabled = false; }
    }));
    $('cancel-plan').addEventListener('click', () => { plan = null; $('review').hidden = true; say('Nothing was signed.'); });
  };

  // ---- checking the access log without taking this node's word ----
  // The validators are pinned in this browser the first time a history is checked (or
  // compared with the pinned set every later time), and the network fingerprint is shown so
  // the patient can compare it with the one their hospital publishes.
  const loadNetwork = () => store('readonly', (s) => s.get('network'));
  const saveNetwork = (n) => store('readwrite', (s) => s.put(n, 'network'));
  // SHA-256 of `secnet/network/v2`, the chain id and one line per validator, sorted: its key
  // and its genesis name; the first 32 hex digits (as `secnet_certified::network_fingerprint`).
  const fingerprint = async (n) => hex(await sha256(enc.encode(
    `secnet/network/v2\n${n.chain}\n${n.validators.map((v, i) => `${v} ${n.names[i]}\n`).sort().join('')}`))).slice(0, 32);
  const sameNetwork = (a, b) => a.chain === b.chain
    && JSON.stringify(a.validators.map((v, i) => [v, a.names[i]]).sort())
      === JSON.stringify(b.validators.map((v, i) => [v, b.names[i]]).sort());
  const pinnedNetwork = async () => {
    const offered = { chain: app.dataset.chain, validators: app.dataset.validators.split(',').filter((v) => v) };
    try { offered.names = JSON.parse(app.dataset.names); } catch (e) { offered.names = null; }
    if (!Array.isArray(offered.names) || offered.names.length !== offered.validators.length
        || offered.names.some((n) => typeof n !== 'string')) {
      throw new Error('the node named its validators without their names');
    }
    if (offered.validators.some((v) => !/^[0-9a-f]{64}$/.test(v)) || new Set(offered.validators).size !== offered.validators.length) {
      throw new Error('the node named validators that are not distinct keys');
    }
    const pinned = await loadNetwork();
    if (!pinned || !Array.isArray(pinned.names)) {
      await saveNetwork({ ...offered, since: new Date().toISOString() });
      return { ...offered, fresh: true };
    }
    if (!sameNetwork(pinned, offered)) {
      throw new Error(`this node names another network than the one your browser pinned on ${pinned.since}: `
        + 'do not trust its account of your data, and ask your hospital which network fingerprint is theirs');
    }
    return pinned;
  };
  const b64 = (s) => {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s)) throw new Error('not base64');
    return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  };
  const sameBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  // A C2SP checkpoint note with tlog-cosignature/v1 lines: at least 2f+1 of the pinned
  // validators must have cosigned exactly its canonical body.
  const verifyCheckpoint = async (note, network) => {
    const cut = note.indexOf('\n\n');
    if (cut < 0 || note.length > 65536) throw new Error('the checkpoint is not a signed note');
    const body = `${note.slice(0, cut)}\n`;
    const [origin, size, root] = note.slice(0, cut).split('\n');
    if (origin !== `secnet/${network.chain}/access-log`) throw new Error(`the checkpoint is of another log: ${origin}`);
    if (!/^(0|[1-9][0-9]{0,14})$/.test(size || '')) throw new Error('the checkpoint size is not a number');
    const rootHash = b64(root || '');
    if (rootHash.length !== 32 || body !== `${origin}\n${size}\n${root}\n`) throw new Error('the checkpoint body is not canonical');
    const lines = note.slice(cut + 2).split('\n').filter((l) => l);
    const signers = [];
    for (const v of network.validators) {
      const name = `secnet/${network.chain}/validator/${v.slice(0, 16)}`;
      const keyId = (await sha256(concat(enc.encode(`${name}\n`), new Uint8Array([4]), unhex(v)))).slice(0, 4);
      const key = await crypto.subtle.importKey('raw', unhex(v), { name: 'Ed25519' }, false, ['verify']);
      for (const line of lines) {
        if (!line.startsWith(`\u2014 ${name} `)) continue;
        const blob = b64(line.slice(name.length + 3));
        if (blob.length !== 76 || !sameBytes(blob.slice(0, 4), keyId)) continue;
        const time = new DataView(blob.buffer).getBigUint64(4);
        if (time > 0x7fffffffffffffffn) continue;
        const message = enc.encode(`cosignature/v1\ntime ${time}\n${body}`);
        if (await crypto.subtle.verify({ name: 'Ed25519' }, key, blob.slice(12), message)) {
          signers.push(v);
          break;
        }
      }
    }
    const n = network.validators.length;
    const quorum = n - Math.floor((n - 1) / 3);
    if (signers.length < quorum) {
      throw new Error(`only ${signers.length} of the ${n} validators cosigned the log head; ${quorum} are needed`);
    }
    return { size: Number(size), root: rootHash, signers: signers.length, of: n };
  };
  const node = async (left, right) => sha256(concat(new Uint8Array([1]), left, right));
  // RFC 9162, section 2.1.3.2: the leaf at `index` of a tree of `size` leaves, up `path`.
  const inclusionRoot = async (leafHash, index, size, path) => {
    if (index >= size) throw new Error('the leaf is beyond the tree');
    let fn = index;
    let sn = size - 1;
    let r = leafHash;
    for (const p of path) {
      if (sn === 0) throw new Error('the audit path is too long');
      if (fn % 2 === 1 || fn === sn) {
        r = await node(p, r);
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
        }
      } else {
        r = await node(r, p);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new Error('the audit path is too short');
    return r;
  };
  // The claim a row makes, rebuilt from the leaf's own bytes (as `log_view::claim`).
  const claimOf = (leaf) => {
    let at = 0;
    const take = (n) => {
      if (at + n > leaf.length) throw new Error('the log entry is cut short');
      const out = leaf.slice(at, at + n);
      at += n;
      return out;
    };
    const u8 = () => take(1)[0];
    const u32 = () => new DataView(take(4).buffer).getUint32(0);
    const u64s = () => new DataView(take(8).buffer).getBigUint64(0).toString();
    const h = () => hex(take(32));
    const text = () => {
      let len = 0;
      for (let shift = 1, i = 0; ; shift *= 128, i++) {
        const b = u8();
        len += (b & 0x7f) * shift;
        if (b < 0x80) break;
        if (i === 4) throw new Error('a length in the log entry is too long');
      }
      return JSON.stringify(new TextDecoder('utf-8', { fatal: true }).decode(take(len)));
    };
    if (u8() !== 1) throw new Error('the log entry has an unknown format version');
    const tag = u8();
    let claim;
    if (tag === 0) {
      const height = u64s(); h(); h();
      const data = h(); const by = h(); h(); const purpose = text();
      claim = `grant h=${height} by=${by} data=${data} until=${u64s()} purpose=${purpose}`;
    } else if (tag === 1) {
      const height = u64s(); h(); h();
      const data = h();
      const hasGrant = u8();
      if (hasGrant > 1) throw new Error('the log entry is malformed');
      if (hasGrant) h();
      const by = h(); const decision = u8(); const score = u32(); const atMs = u64s();
      claim = `access h=${height} by=${by} data=${data} decision=${decision} score=${score} at=${atMs}`;
    } else if (tag === 2) {
      const height = u64s(); h();
      const by = h(); const owner = h(); const reason = text();
      claim = `emergency h=${height} by=${by} owner=${owner} reason=${reason}`;
    } else if (tag === 3) {
      const height = u64s(); h();
      const data = h(); const by = h(); const holder = h(); const holderAmount = u64s();
      const owner = h(); const ownerAmount = u64s();
      claim = `payment h=${height} by=${by} data=${data} holder=${holder} holder_amount=${holderAmount} owner=${owner} owner_amount=${ownerAmount}`;
    } else {
      throw new Error('the log entry has an unknown kind');
    }
    if (at !== leaf.length) throw new Error('the log entry has trailing bytes');
    return claim;
  };
  // What the row must also get right beyond its claim: the organisation it names (as the
  // pinned genesis names the claim's account), whose data it is, and whether an emergency was
  // declared by an organisation. An error says what the row got wrong.
  const checkRow = (cell, claim, network) => {
    const kind = claim.split(' ')[0];
    const by = (claim.match(/ by=([0-9a-f]{64})/) || [])[1];
    const owner = (claim.match(/ owner=([0-9a-f]{64})/) || [])[1];
    if ((kind === 'emergency' || kind === 'payment') && owner !== app.dataset.account) {
      throw new Error('the entry is about another patient');
    }
    const at = network.validators.indexOf(by);
    const name = at >= 0 ? (network.names[at] || `node ${by.slice(0, 8)}`) : `account ${by.slice(0, 8)}`;
    const who = cell.parentElement.querySelector('td.who');
    if (!who || who.textContent.trim() !== name) throw new Error(`the entry is by ${name}, not as the row says`);
    if (kind === 'emergency' && (at >= 0) !== cell.parentElement.classList.contains('emergency')) {
      throw new Error('the row misstates whether an organisation declared the emergency');
    }
  };
  const ATTEMPTS = 20;
  const verifyLog = async () => {
    const cells = [...document.querySelectorAll('td.proof')];
    const summary = $('verify-summary');
    const network = await pinnedNetwork();
    const print = await fingerprint(network);
    $('network-fingerprint').textContent = print;
    if (network.fresh) {
      $('pin-notice').textContent = `This browser has just pinned network ${print}: it will check this and every later `
        + 'visit against it. Compare it with the fingerprint your hospital publishes before you rely on it.';
      $('pin-notice').hidden = false;
    }
    if (!cells.length) { summary.textContent = 'There is nothing to check yet.'; return; }
    const mark = (cell, text, cls, title) => {
      cell.textContent = text;
      cell.className = `proof ${cls}`;
      cell.parentElement.classList.toggle('unverified', cls === 'failed');
      if (title) cell.title = title;
    };
    // Each entry once per table: a row repeated would count twice.
    const seen = new Map();
    for (const cell of cells) {
      const table = cell.closest('table').id;
      const index = cell.dataset.index;
      const key = `${table}/${index}`;
      if (!/^(0|[1-9][0-9]{0,14})$/.test(index)) mark(cell, 'verification failed: not a log entry', 'failed');
      else if (seen.has(key)) mark(cell, 'verification failed: the entry is shown twice', 'failed');
      seen.set(key, true);
    }
    const claims = new Map();
    let head = null;
    for (let attempt = 1; ; attempt++) {
      const r = await fetch('/v1/checkpoint');
      head = r.ok ? await verifyCheckpoint((await r.json()).note, network) : null;
      let waiting = 0;
      for (const cell of cells) {
        if (cell.classList.contains('verified') || cell.classList.contains('failed')) continue;
        const index = Number(cell.dataset.index);
        if (!head || index >= head.size) {
          if (attempt < ATTEMPTS) { waiting++; mark(cell, 'awaiting cosignature', 'waiting'); continue; }
          mark(cell, 'verification failed: the validators never cosigned a log with this entry', 'failed');
          continue;
        }
        try {
          if (!claims.has(index)) {
            const p = await fetch(`/v1/log/${index}?size=${head.size}`);
            // A busy node has not answered: that is no evidence against it.
            if (p.status === 429 || p.status === 503) {
              if (attempt < ATTEMPTS) { waiting++; mark(cell, 'not checked yet: the node is busy', 'waiting'); continue; }
              mark(cell, 'not checked: the node was busy', 'busy');
              continue;
            }
            if (!p.ok) throw new Error(await problem(p));
            const proof = await p.json();
            if (proof.leaf_index !== index || proof.tree_size !== head.size) throw new Error('the proof is for another entry');
            const leaf = unhex(proof.leaf);
            const leafHash = await sha256(concat(new Uint8Array([0]), leaf));
            const root = await inclusionRoot(leafHash, index, head.size, proof.audit_path.map(unhex));
            if (!sameBytes(root, head.root)) throw new Error('the entry is not in the cosigned log');
            claims.set(index, claimOf(leaf));
          }
          const claim = claims.get(index);
          if (claim !== cell.dataset.claim) throw new Error('the row does not say what the log entry says');
          checkRow(cell, claim, network);
          mark(cell, 'verified', 'verified',
            `entry ${index} of the access log of ${head.size} entries cosigned by ${head.signers} of ${head.of} validators; `
            + 'the time shown is the node\'s, the block height is checked');
        } catch (e) {
          mark(cell, `verification failed: ${e.message}`, 'failed');
        }
      }
      // The rewards shown must be the sum of the verified payments to this patient.
      const paid = cells.filter((c) => c.closest('table').id === 'statement' && c.classList.contains('verified'))
        .reduce((sum, c) => sum + BigInt((c.dataset.claim.match(/ owner_amount=([0-9]+)/) || [0, 0])[1]), 0n);
      const total = $('rewards-total');
      const payments = cells.filter((c) => c.closest('table').id === 'statement');
      const rewardsWrong = !waiting && total && payments.every((c) => c.classList.contains('verified'))
        && total.textContent.trim() !== paid.toString();
      // A payment shows in the timeline and in the statement: count entries, not cells.
      const entries = (cls) => new Set(cells.filter((c) => !cls || c.classList.contains(cls)).map((c) => c.dataset.index)).size;
      const failed = entries('failed');
      const verified = entries('verified');
      const busy = entries('busy');
      summary.textContent = `${verified} of ${entries()} entries verified against the log head `
        + `${head ? `of ${head.size} entries cosigned by ${head.signers} of ${head.of} validators` : 'once the validators cosign one'}`
        + `${failed ? `; ${failed} FAILED verification: do not trust this node's account of your data` : ''}`
        + `${rewardsWrong ? `; the rewards shown are not the ${paid} the verified payments add up to` : ''}`
        + `${waiting ? `; ${entries('waiting')} awaiting the validators' cosignature or a busy node` : ''}`
        + `${busy ? `; ${busy} not checked: the node was busy (reload the page to check them)` : ''}.`;
      summary.className = failed || rewardsWrong ? 'error' : (waiting ? '' : 'ok');
      if (!waiting) break;
      await new Promise((resolve) => setTimeout(resolve, 3000));
    }
  };

  const historyPage = async () => {
    $('export-fhir').addEventListener('click', guard(async () => {
      const key = await requireKey();
      if (key.account !== app.dataset.account) throw new Error('this browser holds another account\'s key; sign in again');
      say('Signing the request for your history…');
      const r = await signedFetch(key, 'GET', `/v1/pdc/history/${key.account}?format=fhir`);
      download('who-saw-my-data.fhir.json', JSON.stringify(await r.json(), null, 2));
      say('Downloaded your history as a FHIR Bundle of AuditEvents.');
    }));
    try {
      await verifyLog();
    } catch (e) {
      $('verify-summary').textContent = `Verification failed: ${e.message}`;
      $('verify-summary').className = 'error';
    }
  };

  const inboxPage = async () => {
    for (const b of document.querySelectorAll('button.deny')) {
      b.addEventListener('click', guard(async () => {
        const key = await requireKey();
        if (key.account !== app.dataset.account) throw new Error('this browser holds another account\'s key; sign in again');
        b.disabled = true;
        say('Signing your refusal…');
        await answerAsk(key, b.dataset.ask, { decision: 'denied' });
        say('Denied: the organisation is told.');
        setTimeout(() => location.reload(), 500);
      }));
    }
  };

  const pages = { start: startPage, inbox: inboxPage, records: recordsPage, consent: consentPage, history: historyPage };
  const run = pages[app.dataset.page];
  if (run) guard(run)();
})();

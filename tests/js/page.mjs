// A page for static/dedupkit.js and static/dedupkit-stub.js: a node:vm context whose
// window/document/navigator record what the snippet does. Shared by the *.test.mjs files.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import { webcrypto } from 'node:crypto';

const source = (path) => readFileSync(new URL(path, import.meta.url), 'utf8');
/** Each suite runs on the shipped (minified) files and on their readable sources. */
export const FILES = {
  shipped: { snippet: source('../../static/dedupkit.min.js'), stub: source('../../static/dedupkit-stub.min.js') },
  source: { snippet: source('../../static/dedupkit.js'), stub: source('../../static/dedupkit-stub.js') },
};
export const SRC = 'https://shop.example/dedupkit/dedupkit.js';
export const ENDPOINT = 'https://shop.example/dedupkit/events';
export const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Four 32-bit random numbers: what the snippet mints without randomUUID. */
export const RANDOM_ID = /^[0-9]{1,10}(-[0-9]{1,10}){3}$/;

// Objects made inside the vm context have that realm's prototypes; compare plain copies.
export const plain = (value) => (value === undefined ? undefined : JSON.parse(JSON.stringify(value)));

/** document.cookie semantics: reads give "a=1; b=2", a write sets or deletes one cookie. */
class CookieJar {
  constructor(initial, location) {
    this.store = new Map(Object.entries(initial));
    this.writes = [];
    this.location = location;
  }

  read() {
    return [...this.store].map(([name, value]) => `${name}=${value}`).join('; ');
  }

  write(text) {
    const [pair, ...rest] = text.split(';');
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    const attrs = {};
    for (const part of rest) {
      const [key, ...val] = part.trim().split('=');
      attrs[key.toLowerCase()] = val.join('=');
    }
    this.writes.push({ name, value, attrs, text });
    // Browsers drop a Secure cookie written from an http page.
    if ('secure' in attrs && !this.location.href.startsWith('https:')) return;
    if ('max-age' in attrs && Number(attrs['max-age']) <= 0) this.store.delete(name);
    else this.store.set(name, value);
  }
}

function scriptElement(src, attrs) {
  const data = Object.fromEntries(Object.entries(attrs).map(([k, v]) => [`data-${k}`, v]));
  return {
    src,
    getAttribute: (name) => (name in data ? data[name] : null),
    dataset: Object.fromEntries(
      Object.entries(attrs).map(([k, v]) => [k.replace(/-(\w)/g, (_, c) => c.toUpperCase()), v]),
    ),
  };
}

let uuidCounter = 0;
/** The id crypto.randomUUID returned last. */
export const lastFakeUUID = () => `00000000-0000-4000-8000-${String(uuidCounter).padStart(12, '0')}`;
const fakeUUID = () => `00000000-0000-4000-8000-${String(++uuidCounter).padStart(12, '0')}`;

/**
 * A page with the snippet's collaborators. Options:
 * url, attrs (data-* of the script tag), cookies, beacon (true | false | 'missing'),
 * pintrk ('record' | 'throw' | 'missing'), crypto ('uuid' | 'random-values' | 'none'),
 * currentScript (false: document.currentScript is null), fetch ('ok' | 'reject'),
 * gpc (navigator.globalPrivacyControl), files (FILES.shipped | FILES.source),
 * readyState ('complete' | 'loading': then page.fireLoad() ends the page's loading).
 */
export function makePage(options = {}) {
  const {
    url = 'https://shop.example/products/1',
    attrs = {},
    cookies = {},
    beacon = true,
    pintrk = 'record',
    crypto = 'uuid',
    currentScript = true,
    fetch = 'ok',
    gpc = undefined,
    files = FILES.shipped,
    readyState = 'complete',
  } = options;
  const log = { beacons: [], fetches: [], tags: [], appended: [], rejectionHandled: [] };
  const location = {
    href: url,
    get protocol() {
      return new URL(this.href).protocol;
    },
  };
  const jar = new CookieJar(cookies, location);
  const tag = scriptElement(SRC, attrs);
  const scripts = [scriptElement('https://cdn.example/jquery.js', {}), tag];

  const loadListeners = [];
  const document = {
    readyState,
    currentScript: null,
    get cookie() {
      return jar.read();
    },
    set cookie(text) {
      jar.write(text);
    },
    head: {
      // Element.append, what the snippet calls (its return value is undefined).
      append(el) {
        log.appended.push(el);
      },
    },
    createElement: (name) => ({ tagName: name.toUpperCase() }),
    querySelector(selector) {
      assert.equal(selector, 'script[src*="dedupkit.js"]');
      return scripts.find((s) => s.src.includes('dedupkit.js')) || null;
    },
  };

  const navigator = {};
  if (gpc !== undefined) navigator.globalPrivacyControl = gpc;
  if (beacon !== 'missing') {
    navigator.sendBeacon = (endpoint, body) => {
      log.beacons.push({ endpoint, body });
      return beacon;
    };
  }

  const ctx = {
    document,
    navigator,
    location,
    addEventListener(type, listener) {
      if (type === 'load') loadListeners.push(listener);
    },
    fetch(endpoint, init) {
      log.fetches.push({ endpoint, init: { ...init } });
      // A thenable: records whether the snippet handles a network failure.
      return {
        catch(onError) {
          log.rejectionHandled.push(typeof onError === 'function');
          if (fetch === 'reject' && onError) onError(new TypeError('Failed to fetch'));
        },
      };
    },
  };
  if (crypto === 'uuid') ctx.crypto = { randomUUID: fakeUUID };
  if (crypto === 'random-values') {
    ctx.crypto = {
      getRandomValues: (array) => {
        log.randomValues = (log.randomValues || 0) + 1;
        return webcrypto.getRandomValues(array);
      },
    };
  }
  if (pintrk === 'record') {
    ctx.pintrk = (...args) => {
      log.tags.push(plain(args));
    };
  } else if (pintrk === 'throw') {
    ctx.pintrk = () => {
      throw new Error('core.js broke');
    };
  }
  ctx.window = ctx;
  vm.createContext(ctx);
  // A settable clock: `new Date` and Date.now() read page.now.
  const page = {
    ctx,
    log,
    jar,
    tag,
    scripts,
    location,
    now: 1_700_000_000_123,
    stub() {
      vm.runInContext(files.stub, ctx, { filename: 'dedupkit-stub.js' });
    },
    load() {
      document.currentScript = currentScript ? tag : null;
      vm.runInContext(files.snippet, ctx, { filename: 'dedupkit.js' });
      document.currentScript = null;
    },
    /** The window's load event: async scripts (core.js) have loaded or failed by now. */
    fireLoad() {
      document.readyState = 'complete';
      loadListeners.splice(0).forEach((listener) => listener());
    },
    get dedupkit() {
      return ctx.dedupkit;
    },
    get tracked() {
      return log.tags.filter((args) => args[0] === 'track');
    },
  };
  ctx.__clock = () => page.now;
  vm.runInContext(
    `(function () {
      var RealDate = Date;
      function FakeDate() {
        return arguments.length ? new (Function.prototype.bind.apply(RealDate, [null].concat([].slice.call(arguments))))() : new RealDate(__clock());
      }
      FakeDate.now = function () { return __clock(); };
      FakeDate.prototype = RealDate.prototype;
      Date = FakeDate;
    })()`,
    ctx,
  );
  return page;
}

/** Bodies sent to the server, parsed: beacons in order, then fetches in order. */
export function bodies(page) {
  return [...page.log.beacons.map((b) => b.body), ...page.log.fetches.map((f) => f.init.body)].map(
    (body) => JSON.parse(body),
  );
}


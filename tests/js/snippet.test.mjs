// Behaviour of static/dedupkit.js and static/dedupkit-stub.js, run as they are shipped (and as
// their readable sources) inside a node:vm context, see page.mjs.
// Run with `node --test tests/js/` (Node 20, no dependencies).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ENDPOINT, FILES, RANDOM_ID, UUID_V4, bodies, lastFakeUUID, makePage as makePageWith } from './page.mjs';

for (const [variant, files] of Object.entries(FILES)) {
describe(variant, () => {
const makePage = (options = {}) => makePageWith({ files, ...options });

describe('dedupkit.track', () => {
  test('sends one id and matching names to pintrk and the server, and returns it', () => {
    const page = makePage();
    page.load();
    const id = page.dedupkit.track('add_to_cart', { value: 10, currency: 'USD' });

    assert.match(id, UUID_V4);
    assert.deepEqual(page.tracked, [['track', 'addtocart', { value: 10, currency: 'USD', event_id: id }]]);
    assert.equal(page.log.beacons.length, 1);
    assert.equal(page.log.beacons[0].endpoint, ENDPOINT);
    assert.equal(typeof page.log.beacons[0].body, 'string');
    assert.deepEqual(JSON.parse(page.log.beacons[0].body), {
      event_name: 'add_to_cart',
      event_id: id,
      event_time: 1_700_000_000,
      event_source_url: 'https://shop.example/products/1',
      data: { value: 10, currency: 'USD' },
      tag: 1,
    });
    assert.equal(page.log.fetches.length, 0);
  });

  test('each call mints a new id', () => {
    const page = makePage();
    page.load();
    const a = page.dedupkit.track('search', { search_query: 'boots' });
    const b = page.dedupkit.track('search', { search_query: 'boots' });
    assert.notEqual(a, b);
    assert.deepEqual(
      bodies(page).map((body) => body.event_id),
      [a, b],
    );
  });

  test("does not add event_id to the caller's data object", () => {
    const page = makePage();
    page.load();
    const data = { value: 3 };
    page.dedupkit.track('checkout', data);
    assert.deepEqual(data, { value: 3 });
    assert.deepEqual(bodies(page)[0].data, { value: 3 });
  });

  test('tracks an event without data', () => {
    const page = makePage();
    page.load();
    const id = page.dedupkit.track('lead');
    assert.deepEqual(page.tracked, [['track', 'lead', { event_id: id }]]);
    assert.equal(bodies(page)[0].event_id, id);
  });

  const names = [
    ['add_to_cart', 'addtocart'],
    ['AddToCart', 'addtocart'],
    ['add-to-cart', 'addtocart'],
    ['Add To Cart', 'addtocart'],
    ['Checkout', 'checkout'],
    ['checkout', 'checkout'],
    ['page_visit', 'pagevisit'],
    ['PageVisit', 'pagevisit'],
    ['view_category', 'viewcategory'],
    ['WatchVideo', 'watchvideo'],
    ['sign_up', 'signup'],
    ['Signup', 'signup'],
    ['custom', 'custom'],
    ['My_Quiz-Done', 'My_Quiz-Done'],
    ['Newsletter Signup', 'newslettersignup'],
  ];
  for (const [name, tagName] of names) {
    test(`maps ${JSON.stringify(name)} to the tag name ${JSON.stringify(tagName)}`, () => {
      const page = makePage({ attrs: { 'custom-names': 'My_Quiz-Done  PartnerEvent' } });
      page.load();
      const id = page.dedupkit.track(name, {});
      assert.deepEqual(page.tracked, [['track', tagName, { event_id: id }]]);
      // The server gets the name as given: it maps it to the CAPI spelling itself.
      assert.equal(bodies(page)[0].event_name, name);
    });
  }

  test('passes every configured advertiser-defined name unchanged', () => {
    const page = makePage({ attrs: { 'custom-names': 'My_Quiz-Done PartnerEvent' } });
    page.load();
    page.dedupkit.track('PartnerEvent', {});
    page.dedupkit.track('partnerevent_x', {});
    assert.deepEqual(
      page.tracked.map((args) => args[1]),
      ['PartnerEvent', 'partnereventx'],
    );
  });

  test('captures the page URL and time at call time', () => {
    const page = makePage();
    page.load();
    page.now = 1_700_000_999_999;
    page.location.href = 'https://shop.example/cart?step=2';
    page.dedupkit.track('add_to_cart', {});
    const [body] = bodies(page);
    assert.equal(body.event_time, 1_700_000_999);
    assert.ok(Number.isInteger(body.event_time));
    assert.equal(body.event_source_url, 'https://shop.example/cart?step=2');
  });
});

describe('event ids', () => {
  test('come from crypto.randomUUID when it exists', () => {
    const page = makePage();
    page.load();
    const id = page.dedupkit.track('checkout', {});
    assert.equal(id, lastFakeUUID());
  });

  test('fall back to 128 bits of crypto.getRandomValues (non-secure contexts)', () => {
    const page = makePage({ crypto: 'random-values' });
    page.load();
    const ids = new Set();
    for (let i = 0; i < 50; i++) ids.add(page.dedupkit.track('search', {}));
    assert.equal(ids.size, 50);
    for (const id of ids) assert.match(id, RANDOM_ID);
    assert.ok(page.log.randomValues > 0);
  });

  test('without any crypto (pre-2013 browsers) track fails quietly, never into the page', () => {
    const page = makePage({ crypto: 'none' });
    page.load();
    assert.doesNotThrow(() => page.dedupkit.track('search', {}));
    assert.equal(page.log.beacons.length, 0);
  });
});

describe('transport', () => {
  test('sends a text/plain string beacon to the endpoint derived from the script src', () => {
    const page = makePage();
    page.tag.src = 'https://shop.example/shop/dedupkit/dedupkit.js?v=abc123';
    page.load();
    page.dedupkit.track('search', {});
    assert.equal(page.log.beacons[0].endpoint, 'https://shop.example/shop/dedupkit/events');
    // sendBeacon sends a string as text/plain;charset=UTF-8: a CORS-safelisted type.
    assert.equal(typeof page.log.beacons[0].body, 'string');
  });

  test('uses data-endpoint when given', () => {
    const page = makePage({ attrs: { endpoint: 'https://collect.example/e' } });
    page.load();
    page.dedupkit.track('search', {});
    assert.equal(page.log.beacons[0].endpoint, 'https://collect.example/e');
  });

  for (const beacon of ['missing', false]) {
    test(`falls back to fetch keepalive when sendBeacon is ${beacon === false ? 'refusing' : beacon}`, () => {
      const page = makePage({ beacon });
      page.load();
      const id = page.dedupkit.track('add_to_cart', { value: 1 });
      assert.equal(page.log.fetches.length, 1);
      const { endpoint, init } = page.log.fetches[0];
      assert.equal(endpoint, ENDPOINT);
      assert.deepEqual(
        { ...init, body: undefined },
        {
          method: 'POST',
          body: undefined,
          keepalive: true,
          credentials: 'include',
        },
      );
      assert.equal(typeof init.body, 'string');
      assert.equal(JSON.parse(init.body).event_id, id);
      assert.equal(page.log.beacons.length, beacon === false ? 1 : 0);
    });
  }

  test('handles a failed fetch instead of leaving an unhandled rejection', () => {
    const page = makePage({ beacon: 'missing', fetch: 'reject' });
    page.load();
    page.dedupkit.track('search', {});
    assert.deepEqual(page.log.rejectionHandled, [true]);
  });

  test('still reaches the server when pintrk is missing (core.js blocked, no base code)', () => {
    const page = makePage({ pintrk: 'missing' });
    page.load();
    const id = page.dedupkit.track('checkout', { value: 5 });
    assert.match(id, UUID_V4);
    assert.equal(bodies(page)[0].event_id, id);
  });

  test('never throws into the page when pintrk throws', () => {
    const page = makePage({ pintrk: 'throw' });
    page.load();
    let id;
    assert.doesNotThrow(() => {
      id = page.dedupkit.track('checkout', { value: 5 });
      page.dedupkit.consent(true);
      page.dedupkit.consent(false);
    });
    assert.match(id, UUID_V4);
    assert.equal(bodies(page)[0].event_id, id);
  });

  test('never throws into the page on bad input or a broken environment', () => {
    const page = makePage({ beacon: 'missing' });
    page.ctx.fetch = () => {
      throw new TypeError('fetch is not available');
    };
    page.load();
    assert.doesNotThrow(() => {
      page.dedupkit.track(undefined, undefined);
      page.dedupkit.track({}, 'x');
      page.dedupkit.track('search', {});
      page.dedupkit.consent();
    });
  });

  test('loading never throws when the script tag cannot be found', () => {
    const page = makePage({ currentScript: false });
    page.scripts.length = 0;
    assert.doesNotThrow(() => page.load());
  });
});

describe('the stub and the queue', () => {
  test('replays calls made before load in order, with the ids the stub returned', () => {
    const page = makePage();
    page.stub();
    const first = page.dedupkit.track('add_to_cart', { value: 1 });
    const second = page.dedupkit.track('Checkout', { value: 2 });
    assert.match(first, UUID_V4);
    assert.notEqual(first, second);
    assert.deepEqual(page.log.beacons, []);
    assert.deepEqual(page.log.tags, []);

    page.load();
    assert.deepEqual(page.tracked, [
      ['track', 'addtocart', { value: 1, event_id: first }],
      ['track', 'checkout', { value: 2, event_id: second }],
    ]);
    assert.deepEqual(
      bodies(page).map((b) => [b.event_name, b.event_id]),
      [
        ['add_to_cart', first],
        ['Checkout', second],
      ],
    );
  });

  test('replayed calls keep the time and URL of the call, not of the replay', () => {
    const page = makePage({ url: 'https://shop.example/landing?epik=EARLY' });
    page.stub();
    page.dedupkit.track('search', { search_query: 'boots' });
    page.now += 5_000_000;
    page.location.href = 'https://shop.example/next';
    page.load();
    const [body] = bodies(page);
    assert.equal(body.event_time, 1_700_000_000);
    assert.equal(body.event_source_url, 'https://shop.example/landing?epik=EARLY');
    assert.equal(body.click_id, 'EARLY');
  });

  test('without randomUUID the stub returns undefined and the loader mints the id', () => {
    const page = makePage({ crypto: 'random-values' });
    page.stub();
    assert.equal(page.dedupkit.track('search', {}), undefined);
    page.load();
    const [body] = bodies(page);
    assert.match(body.event_id, RANDOM_ID);
    assert.equal(page.tracked[0][2].event_id, body.event_id);
  });

  test('replays consent calls in order with track calls', () => {
    const page = makePage({ attrs: { 'require-consent': '' } });
    page.stub();
    const before = page.dedupkit.track('search', {});
    page.dedupkit.consent(true);
    page.load();
    assert.deepEqual(
      bodies(page).map((b) => b.event_id),
      [before],
    );
    assert.equal(page.jar.store.get('_dedupkit_consent'), '1');
  });

  test('the stub is idempotent: emitting it twice keeps the queue', () => {
    const page = makePage();
    page.stub();
    const id = page.dedupkit.track('search', {});
    page.stub();
    page.load();
    assert.deepEqual(
      bodies(page).map((b) => b.event_id),
      [id],
    );
  });

  test('the stub emitted after load leaves the loaded snippet alone', () => {
    const page = makePage();
    page.load();
    const loaded = page.dedupkit;
    page.stub();
    assert.equal(page.dedupkit, loaded);
    page.dedupkit.track('search', {});
    assert.equal(page.log.beacons.length, 1);
  });

  test('a reference to the stub taken before load still works after load', () => {
    const page = makePage();
    page.stub();
    const early = page.dedupkit;
    page.load();
    const id = early.track('search', {});
    assert.equal(bodies(page).length, 1);
    assert.equal(bodies(page)[0].event_id, id);
  });

  test('exposes loaded and the version after init', () => {
    const page = makePage();
    page.stub();
    assert.notEqual(page.dedupkit.loaded, true);
    page.load();
    assert.equal(page.dedupkit.loaded, true);
    assert.equal(page.dedupkit.v, '0.1.0');
  });

  test('works without the stub (drop-in script tag)', () => {
    const page = makePage();
    page.load();
    assert.equal(typeof page.dedupkit.track, 'function');
    assert.equal(typeof page.dedupkit.consent, 'function');
  });

  test('without document.currentScript (IE: no sendBeacon, no fetch) it stays the stub', () => {
    const page = makePage({ currentScript: false });
    page.stub();
    assert.doesNotThrow(() => page.load());
    assert.notEqual(page.dedupkit.loaded, true);
    page.dedupkit.track('search', {});
    assert.deepEqual(bodies(page), []);
  });
});

describe('automatic page_visit and double inclusion', () => {
  test('fires exactly one page_visit per page load with one id on both channels', () => {
    const page = makePage({ attrs: { 'page-visit': '' } });
    page.load();
    assert.equal(page.tracked.length, 1);
    const [, tagName, props] = page.tracked[0];
    assert.equal(tagName, 'pagevisit');
    const [body] = bodies(page);
    assert.equal(body.event_name, 'page_visit');
    assert.equal(body.event_id, props.event_id);
    assert.equal(bodies(page).length, 1);
  });

  for (const value of [null, '0', 'false']) {
    test(`fires no page_visit when data-page-visit is ${value}`, () => {
      const page = makePage({ attrs: value === null ? {} : { 'page-visit': value } });
      page.load();
      assert.deepEqual(page.log.beacons, []);
      assert.deepEqual(page.log.tags, []);
    });
  }

  test('a second copy of dedupkit.js does nothing: one page_visit, one replay', () => {
    const page = makePage({ attrs: { 'page-visit': '1' } });
    page.stub();
    const id = page.dedupkit.track('add_to_cart', {});
    page.load();
    const loaded = page.dedupkit;
    page.load();
    assert.equal(page.dedupkit, loaded);
    assert.deepEqual(
      bodies(page).map((b) => b.event_name),
      ['add_to_cart', 'page_visit'],
    );
    assert.equal(page.tracked.length, 2);
    assert.equal(bodies(page)[0].event_id, id);
  });
});

describe('epik click id', () => {
  test('keeps the landing epik in the _epik cookie when it is absent', () => {
    const page = makePage({ url: 'https://shop.example/p?utm_source=x&epik=dj0yJnU9abc-_&q=1#top' });
    page.load();
    assert.equal(page.jar.store.get('_epik'), 'dj0yJnU9abc-_');
    const [write] = page.jar.writes.filter((w) => w.name === '_epik');
    assert.deepEqual(write.attrs, {
      path: '/',
      'max-age': '31536000',
      samesite: 'lax',
      secure: '',
    });
  });

  test('sets no Secure attribute on http pages', () => {
    const page = makePage({ url: 'http://127.0.0.1:5000/?epik=ABC' });
    page.load();
    const [write] = page.jar.writes.filter((w) => w.name === '_epik');
    assert.ok(!('secure' in write.attrs));
    assert.equal(page.jar.store.get('_epik'), 'ABC');
  });

  test('adds Domain when data-cookie-domain is set', () => {
    const page = makePage({
      url: 'https://www.shop.example/?epik=ABC',
      attrs: { 'cookie-domain': '.shop.example' },
    });
    page.load();
    const [write] = page.jar.writes.filter((w) => w.name === '_epik');
    assert.equal(write.attrs.domain, '.shop.example');
  });

  test('never overwrites an existing _epik cookie (the server set it with Set-Cookie)', () => {
    const page = makePage({ url: 'https://shop.example/?epik=FRESH', cookies: { _epik: 'SERVER' } });
    page.load();
    assert.deepEqual(
      page.jar.writes.filter((w) => w.name === '_epik'),
      [],
    );
    // The fresher URL value still reaches the server in the event.
    page.dedupkit.track('checkout', {});
    assert.equal(bodies(page)[0].click_id, 'FRESH');
  });

  test('honours a configured cookie name', () => {
    const page = makePage({ url: 'https://shop.example/?epik=ABC', attrs: { 'epik-cookie': 'pin_click' } });
    page.load();
    assert.equal(page.jar.store.get('pin_click'), 'ABC');
    assert.equal(page.jar.store.has('_epik'), false);
  });

  test('click_id comes from the URL, else the cookie, else is omitted', () => {
    const fromUrl = makePage({ url: 'https://shop.example/?epik=URLVALUE', cookies: { _epik: 'COOKIE' } });
    fromUrl.load();
    fromUrl.dedupkit.track('checkout', {});
    assert.equal(bodies(fromUrl)[0].click_id, 'URLVALUE');

    const fromCookie = makePage({ cookies: { other: '1', _epik: 'COOKIE', more: '2' } });
    fromCookie.load();
    fromCookie.dedupkit.track('checkout', {});
    assert.equal(bodies(fromCookie)[0].click_id, 'COOKIE');

    const none = makePage({ cookies: { not_epik: 'X', x_epik: 'Y' } });
    none.load();
    none.dedupkit.track('checkout', {});
    assert.ok(!('click_id' in bodies(none)[0]));
  });

  test('writes no cookie without an epik in the URL', () => {
    const page = makePage({ url: 'https://shop.example/?notepik=1' });
    page.load();
    assert.deepEqual(page.jar.writes, []);
  });
});

describe('consent', () => {
  const required = { 'require-consent': '1', 'pintrk-src': 'https://s.pinimg.com/ct/core.js' };

  test('pending: nothing is sent on either channel, track still returns an id', () => {
    const page = makePage({ attrs: { ...required, 'page-visit': '' }, url: 'https://shop.example/?epik=E1' });
    page.load();
    const id = page.dedupkit.track('add_to_cart', { value: 1 });
    assert.match(id, UUID_V4);
    assert.deepEqual(page.log.beacons, []);
    assert.deepEqual(page.log.fetches, []);
    assert.deepEqual(page.log.tags, []);
    assert.deepEqual(page.log.appended, []);
    // No tracking cookie before the decision either.
    assert.deepEqual(page.jar.writes, []);
  });

  test('granting flushes both channels with the same ids and injects core.js once', () => {
    const page = makePage({ attrs: { ...required, 'page-visit': '' }, url: 'https://shop.example/?epik=E1' });
    page.load();
    const id = page.dedupkit.track('add_to_cart', { value: 1 });
    page.dedupkit.consent(true);

    assert.deepEqual(page.log.tags[0], ['setconsent', true]);
    const [pageVisit, addToCart] = bodies(page);
    assert.deepEqual(
      [pageVisit.event_name, addToCart.event_name],
      ['page_visit', 'add_to_cart'],
    );
    assert.deepEqual(page.tracked, [
      ['track', 'pagevisit', { event_id: pageVisit.event_id }],
      ['track', 'addtocart', { value: 1, event_id: id }],
    ]);
    assert.equal(bodies(page)[1].event_id, id);
    assert.equal(page.log.appended.length, 1);
    assert.equal(page.log.appended[0].tagName, 'SCRIPT');
    assert.equal(page.log.appended[0].src, 'https://s.pinimg.com/ct/core.js');
    assert.equal(page.jar.store.get('_dedupkit_consent'), '1');
    assert.equal(page.jar.store.get('_epik'), 'E1');

    page.dedupkit.consent(true);
    page.dedupkit.track('checkout', {});
    assert.equal(page.log.appended.length, 1);
    assert.equal(bodies(page).length, 3);
  });

  test('granted after load, later events go straight out', () => {
    const page = makePage({ attrs: required });
    page.load();
    page.dedupkit.consent(true);
    const id = page.dedupkit.track('search', {});
    assert.equal(bodies(page)[0].event_id, id);
  });

  test('denying drops the held events and sends nothing afterwards', () => {
    const page = makePage({ attrs: { ...required, 'page-visit': '' } });
    page.load();
    page.dedupkit.track('add_to_cart', {});
    page.dedupkit.consent(false);
    page.dedupkit.track('checkout', {});
    page.dedupkit.consent(true);
    assert.deepEqual(
      page.tracked,
      [],
      'held events must not survive a denial',
    );
    assert.deepEqual(bodies(page), []);
    assert.deepEqual(page.log.tags, [
      ['setconsent', false],
      ['setconsent', true],
    ]);
  });

  test('a stored denial sends nothing on either channel', () => {
    const page = makePage({ attrs: { ...required, 'page-visit': '' }, cookies: { _dedupkit_consent: '0' } });
    page.load();
    page.dedupkit.track('checkout', {});
    assert.deepEqual(page.log.beacons, []);
    assert.deepEqual(page.log.fetches, []);
    assert.deepEqual(page.tracked, []);
    assert.deepEqual(page.log.appended, []);
  });

  test('a stored grant sends at once', () => {
    const page = makePage({ attrs: { ...required, 'page-visit': '' }, cookies: { _dedupkit_consent: '1' } });
    page.load();
    assert.equal(bodies(page).length, 1);
    assert.equal(page.tracked.length, 1);
    // The base code saw the same cookie and loaded core.js itself: no second copy.
    page.dedupkit.consent(true);
    assert.deepEqual(page.log.appended, []);
  });

  test('a stored denial without require-consent still loads core.js on a later yes', () => {
    const page = makePage({
      attrs: { 'pintrk-src': 'https://s.pinimg.com/ct/core.js' },
      cookies: { _dedupkit_consent: '0' },
    });
    page.load();
    assert.deepEqual(page.log.appended, []);
    page.dedupkit.consent(true);
    assert.equal(page.log.appended.length, 1);
  });

  test('honours a configured consent cookie name', () => {
    const page = makePage({ attrs: { ...required, 'consent-cookie': 'cmp_ok' }, cookies: { cmp_ok: '1' } });
    page.load();
    page.dedupkit.track('search', {});
    assert.equal(bodies(page).length, 1);
    page.dedupkit.consent(false);
    assert.equal(page.jar.store.get('cmp_ok'), '0');
  });

  test('writes the consent cookie for the server, with domain when configured', () => {
    const page = makePage({ attrs: { ...required, 'cookie-domain': 'shop.example' } });
    page.load();
    page.dedupkit.consent(false);
    const [write] = page.jar.writes.filter((w) => w.name === '_dedupkit_consent');
    assert.equal(write.value, '0');
    assert.deepEqual(write.attrs, {
      path: '/',
      'max-age': '31536000',
      samesite: 'lax',
      secure: '',
      domain: 'shop.example',
    });
  });

  test('without require-consent, consent(false) stops both channels', () => {
    const page = makePage();
    page.load();
    page.dedupkit.track('search', {});
    page.dedupkit.consent(false);
    page.dedupkit.track('checkout', {});
    assert.deepEqual(
      bodies(page).map((b) => b.event_name),
      ['search'],
    );
    assert.deepEqual(
      page.tracked.map((args) => args[1]),
      ['search'],
    );
    assert.deepEqual(page.log.tags.at(-1), ['setconsent', false]);
    assert.equal(page.jar.store.get('_dedupkit_consent'), '0');
  });

  test('without require-consent, a stored denial still holds on the next page', () => {
    const page = makePage({ attrs: { 'page-visit': '' }, cookies: { _dedupkit_consent: '0' } });
    page.load();
    page.dedupkit.track('checkout', {});
    assert.deepEqual(bodies(page), []);
    assert.deepEqual(page.tracked, []);
  });

  test('without require-consent and without a decision, events go out at once', () => {
    const page = makePage({ attrs: { 'require-consent': 'false', 'page-visit': '' } });
    page.load();
    assert.equal(bodies(page).length, 1);
  });
});
});
}

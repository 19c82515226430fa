// The drop-in script tag, the beacon's protocol keys, GPC / LDP and mirrored server events,
// on the shipped (minified) files and on their readable sources. See page.mjs.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import vm from 'node:vm';
import { FILES, UUID_V4, bodies, makePage as makePageWith, plain } from './page.mjs';

const TAG_ID = '2612345678901';
const CORE_JS = 'https://s.pinimg.com/ct/core.js';

/** What {{ dedupkit.pintrk(event) }} renders for an event the server tracked. */
const inline = (tagName, data, capiName) =>
  '!function(d,t,x,n){d&&d.mirror?d.mirror(t,x,n):window.pintrk&&pintrk("track",t,x)}' +
  `(window.dedupkit,${JSON.stringify(tagName)},${JSON.stringify(data)},${JSON.stringify(capiName)})`;

for (const [variant, files] of Object.entries(FILES)) {
  describe(variant, () => {
    const makePage = (options = {}) => makePageWith({ files, ...options });
    const queueOf = (page) => plain(page.ctx.pintrk.queue);
    const run = (page, code) => vm.runInContext(code, page.ctx);

    describe('drop-in: no base code on the page', () => {
      test('defines the pintrk queue, loads core.js once, load and page once, events with the id', () => {
        const page = makePage({ pintrk: 'missing', attrs: { 'tag-id': TAG_ID } });
        page.load();
        const id = page.dedupkit.track('add_to_cart', { value: 2 });
        assert.equal(typeof page.ctx.pintrk, 'function');
        assert.equal(page.ctx.pintrk.version, '3.0');
        assert.deepEqual(queueOf(page), [
          ['load', TAG_ID],
          ['page'],
          ['track', 'addtocart', { value: 2, event_id: id }],
        ]);
        assert.deepEqual(
          page.log.appended.map((el) => el.src),
          [CORE_JS],
        );
        assert.equal(bodies(page)[0].event_id, id);
        assert.equal(bodies(page)[0].tag, 1);
      });

      test('core.js carries the nonce of the script tag (a nonce-based CSP)', () => {
        const page = makePage({ pintrk: 'missing', attrs: { 'tag-id': TAG_ID } });
        page.tag.nonce = 'r4nd0m';
        page.load();
        assert.deepEqual(page.log.appended.map((el) => [el.src, el.nonce]), [[CORE_JS, 'r4nd0m']]);
      });

      test('loads the tag from data-pintrk-src', () => {
        const src = 'http://127.0.0.1:9999/ct/core.js';
        const page = makePage({ pintrk: 'missing', attrs: { 'tag-id': TAG_ID, 'pintrk-src': src } });
        page.load();
        assert.deepEqual(
          page.log.appended.map((el) => el.src),
          [src],
        );
      });

      test('with automatic page_visit: no bare page(), one pagevisit with the shared id', () => {
        const page = makePage({ pintrk: 'missing', attrs: { 'tag-id': TAG_ID, 'page-visit': '1' } });
        page.load();
        const [body] = bodies(page);
        assert.deepEqual(queueOf(page), [
          ['load', TAG_ID],
          ['track', 'pagevisit', { event_id: body.event_id }],
        ]);
      });

      test('consent pending: core.js waits for a yes, then loads once; the events keep their ids', () => {
        const page = makePage({ pintrk: 'missing', attrs: { 'tag-id': TAG_ID, 'require-consent': '1' } });
        page.load();
        const id = page.dedupkit.track('search', {});
        assert.deepEqual(page.log.appended, []);
        assert.deepEqual(bodies(page), []);
        page.dedupkit.consent(true);
        page.dedupkit.consent(true);
        assert.equal(page.log.appended.length, 1);
        assert.deepEqual(
          queueOf(page).map((call) => call[0]),
          ['load', 'page', 'setconsent', 'track', 'setconsent'],
        );
        assert.equal(bodies(page)[0].event_id, id);
      });

      test('a refusal never loads the tag', () => {
        const page = makePage({ pintrk: 'missing', attrs: { 'tag-id': TAG_ID }, cookies: { _dedupkit_consent: '0' } });
        page.load();
        page.dedupkit.track('search', {});
        assert.deepEqual(page.log.appended, []);
        assert.deepEqual(bodies(page), []);
      });

      test('without data-tag-id it defines no tag and says so in the beacon', () => {
        const page = makePage({ pintrk: 'missing' });
        page.load();
        page.dedupkit.track('search', {});
        assert.equal(page.ctx.pintrk, undefined);
        assert.deepEqual(page.log.appended, []);
        assert.equal(bodies(page)[0].tag, 0);
      });
    });

    describe('drop-in: the base code is already there', () => {
      test('adds nothing: no load, no page, no second core.js; each event fires once', () => {
        const page = makePage({ attrs: { 'tag-id': TAG_ID, 'pintrk-src': CORE_JS } });
        page.load();
        const id = page.dedupkit.track('add_to_cart', {});
        assert.deepEqual(page.log.tags, [['track', 'addtocart', { event_id: id }]]);
        assert.deepEqual(page.log.appended, []);
        assert.equal(bodies(page).length, 1);
      });
    });

    describe('beacon keys', () => {
      test('ticket only when the third argument carries one, also through the stub', () => {
        const page = makePage();
        page.stub();
        page.dedupkit.track('checkout', { value: 5 }, { ticket: 'early.ticket' });
        page.load();
        page.dedupkit.track('checkout', { value: 5 }, { ticket: 'late.ticket' });
        page.dedupkit.track('checkout', { value: 5 });
        page.dedupkit.track('checkout', { value: 5 }, {});
        assert.deepEqual(
          bodies(page).map((b) => b.ticket),
          ['early.ticket', 'late.ticket', undefined, undefined],
        );
        assert.ok(!('ticket' in bodies(page)[2]));
        // The ticket is for the server: the tag never sees it.
        assert.ok(page.tracked.every(([, , data]) => !('ticket' in data)));
      });

      test('a ticketed event keeps the event_id its ticket was signed for, also through the stub', () => {
        const page = makePage();
        page.stub();
        const early = page.dedupkit.track('checkout', { value: 5 }, { ticket: 't1', event_id: 'checkout-A-1' });
        page.load();
        const late = page.dedupkit.track('checkout', { value: 5 }, { ticket: 't2', event_id: 'checkout-A-2' });
        assert.deepEqual([early, late], ['checkout-A-1', 'checkout-A-2']);
        assert.deepEqual(bodies(page).map((b) => b.event_id), ['checkout-A-1', 'checkout-A-2']);
        assert.deepEqual(page.tracked.map(([, , data]) => data.event_id), ['checkout-A-1', 'checkout-A-2']);
      });

      test('a ticket alone gives the event the id it was signed for, also through the stub', () => {
        // kit.ticket() returns '<event_id>~<signed claims>'; an id may itself hold a '~'.
        const page = makePage();
        page.stub();
        page.dedupkit.track('checkout', { value: 5 }, { ticket: 'checkout-A-1~WzEsImNoZWNrb3V0Il0.sig' });
        page.load();
        const late = page.dedupkit.track('checkout', { value: 5 }, { ticket: 'checkout-A~2~WzFd.sig' });
        assert.equal(late, 'checkout-A~2');
        assert.deepEqual(bodies(page).map((b) => b.event_id), ['checkout-A-1', 'checkout-A~2']);
        assert.deepEqual(page.tracked.map(([, , data]) => data.event_id), ['checkout-A-1', 'checkout-A~2']);
        assert.deepEqual(bodies(page).map((b) => b.ticket), ['checkout-A-1~WzEsImNoZWNrb3V0Il0.sig', 'checkout-A~2~WzFd.sig']);
      });

      test('a ticket that shows no id (an older one) gets a fresh id, which the server refuses', () => {
        const page = makePage();
        page.load();
        const id = page.dedupkit.track('checkout', { value: 5 }, { ticket: 'WzEsImNoZWNrb3V0Il0.sig' });
        assert.match(id, UUID_V4);
        assert.equal(bodies(page)[0].event_id, id);
      });

      test('the tag gets the currency upper-cased, as the server sends it', () => {
        const page = makePage();
        page.load();
        page.dedupkit.track('add_to_cart', { value: 2, currency: 'usd' });
        assert.equal(page.tracked[0][2].currency, 'USD');
        // The server checks and normalises what the page wrote.
        assert.equal(bodies(page)[0].data.currency, 'usd');
      });

      test('gpc: 1 only when navigator.globalPrivacyControl is true', () => {
        for (const [gpc, expected] of [[true, 1], [false, undefined], [undefined, undefined]]) {
          const page = makePage({ gpc, attrs: { gpc: 'ignore' } });
          page.load();
          page.dedupkit.track('search', {});
          assert.equal(bodies(page)[0].gpc, expected, `globalPrivacyControl=${gpc}`);
        }
      });

      test('consent: 1 when granted on this page, absent without a decision', () => {
        const stored = makePage({ cookies: { _dedupkit_consent: '1' } });
        stored.load();
        stored.dedupkit.track('search', {});
        assert.equal(bodies(stored)[0].consent, 1);

        const undecided = makePage();
        undecided.load();
        undecided.dedupkit.track('search', {});
        assert.ok(!('consent' in bodies(undecided)[0]));
        undecided.dedupkit.consent(true);
        undecided.dedupkit.track('search', {});
        assert.equal(bodies(undecided)[1].consent, 1);
      });

      test('an event held for consent carries consent: 1 when the yes releases it', () => {
        const page = makePage({ attrs: { 'require-consent': '1' } });
        page.load();
        page.dedupkit.track('search', {});
        page.dedupkit.consent(true);
        assert.equal(bodies(page)[0].consent, 1);
      });

      for (const pintrk of ['missing', 'throw']) {
        test(`tag: 0 when pintrk is ${pintrk === 'missing' ? 'absent' : 'broken'}`, () => {
          const page = makePage({ pintrk });
          page.load();
          page.dedupkit.track('search', {});
          assert.equal(bodies(page)[0].tag, 0);
        });
      }
    });

    describe('GPC', () => {
      test('opt_out: nothing on either channel, even after a consent banner says yes', () => {
        const page = makePage({ gpc: true, pintrk: 'missing', attrs: { gpc: 'opt_out', 'tag-id': TAG_ID, 'page-visit': '1' } });
        page.load();
        const id = page.dedupkit.track('search', {});
        page.dedupkit.consent(true);
        page.dedupkit.track('search', {});
        assert.match(id, UUID_V4);
        assert.deepEqual(page.log.appended, []);
        assert.deepEqual(bodies(page), []);
        assert.equal(page.ctx.pintrk, undefined);
      });

      test('opt_out with the base code present: no tag events, no beacon', () => {
        const page = makePage({ gpc: true, attrs: { gpc: 'opt_out' } });
        page.load();
        page.dedupkit.track('search', {});
        assert.deepEqual(page.tracked, []);
        assert.deepEqual(bodies(page), []);
      });

      test('opt_out does nothing without the GPC signal', () => {
        const page = makePage({ gpc: false, attrs: { gpc: 'opt_out' } });
        page.load();
        page.dedupkit.track('search', {});
        assert.equal(bodies(page).length, 1);
      });

      test('ldp (the default): the LDP flag is set before any event, with st and country', () => {
        const page = makePage({
          gpc: true,
          attrs: { 'page-visit': '1', 'ldp-st': 'a'.repeat(64), 'ldp-country': 'b'.repeat(64) },
        });
        page.load();
        page.dedupkit.track('search', {});
        assert.deepEqual(page.log.tags[0], ['set', { opt_out_type: 'LDP', st: 'a'.repeat(64), country: 'b'.repeat(64) }]);
        assert.deepEqual(
          page.log.tags.slice(1).map((call) => call[0]),
          ['track', 'track'],
        );
        assert.deepEqual(
          bodies(page).map((b) => b.gpc),
          [1, 1],
        );
      });

      test('ldp in the drop-in: load, then set, then page', () => {
        const page = makePage({ gpc: true, pintrk: 'missing', attrs: { gpc: 'ldp', 'tag-id': TAG_ID } });
        page.load();
        assert.deepEqual(queueOf(page), [['load', TAG_ID], ['set', { opt_out_type: 'LDP' }], ['page']]);
      });

      test('ignore: no LDP flag', () => {
        const page = makePage({ gpc: true, attrs: { gpc: 'ignore' } });
        page.load();
        page.dedupkit.track('search', {});
        assert.deepEqual(
          page.log.tags.map((call) => call[0]),
          ['track'],
        );
      });

      test('no LDP flag without the GPC signal', () => {
        const page = makePage({ attrs: { 'ldp-st': 'x' } });
        page.load();
        page.dedupkit.track('search', {});
        assert.deepEqual(
          page.log.tags.map((call) => call[0]),
          ['track'],
        );
      });
    });

    describe('dedupkit.mirror: evidence for events the server tracked', () => {
      const data = { value: '72.39', currency: 'USD', event_id: 'checkout-A-1001' };

      test('fires the tag with the data and sends only the evidence', () => {
        const page = makePage();
        page.load();
        page.dedupkit.mirror('checkout', data, 'checkout');
        assert.deepEqual(page.tracked, [['track', 'checkout', data]]);
        assert.deepEqual(page.log.beacons.map((b) => JSON.parse(b.body)), [
          { evidence: 1, event_name: 'checkout', event_id: 'checkout-A-1001', tag: 1 },
        ]);
      });

      test('tag: 0 when the tag is absent', () => {
        const page = makePage({ pintrk: 'missing' });
        page.load();
        page.dedupkit.mirror('addtocart', { event_id: 'x-1' }, 'add_to_cart');
        assert.deepEqual(bodies(page), [{ evidence: 1, event_name: 'add_to_cart', event_id: 'x-1', tag: 0 }]);
      });

      test('no beacon and no tag call when consent is refused', () => {
        const page = makePage({ cookies: { _dedupkit_consent: '0' } });
        page.load();
        page.dedupkit.mirror('checkout', data, 'checkout');
        assert.deepEqual(page.tracked, []);
        assert.deepEqual(bodies(page), []);
      });

      test('held while consent is pending, sent on a yes with exactly the evidence keys', () => {
        const page = makePage({ attrs: { 'require-consent': '1' } });
        page.load();
        page.dedupkit.mirror('checkout', data, 'checkout');
        assert.deepEqual(bodies(page), []);
        page.dedupkit.consent(true);
        page.dedupkit.mirror('checkout', data, 'checkout');
        assert.equal(page.tracked.length, 2);
        const evidence = { evidence: 1, event_name: 'checkout', event_id: 'checkout-A-1001', tag: 1 };
        assert.deepEqual(bodies(page), [evidence, evidence]);
      });

      test('through the stub: the tag fires at once, the loader sends the evidence once', () => {
        const page = makePage();
        page.stub();
        page.dedupkit.mirror('checkout', data, 'checkout');
        assert.deepEqual(page.tracked, [['track', 'checkout', data]]);
        assert.deepEqual(plain(page.dedupkit.slice(-1)), [['m', 'checkout', data, 'checkout', 1]]);
        page.load();
        assert.equal(page.tracked.length, 1, 'the loader must not fire the tag a second time');
        assert.deepEqual(bodies(page), [{ evidence: 1, event_name: 'checkout', event_id: 'checkout-A-1001', tag: 1 }]);
      });

      test('through the stub on a drop-in page: the loader makes the tag call with its own tag', () => {
        const page = makePage({ pintrk: 'missing', attrs: { 'tag-id': TAG_ID } });
        page.stub();
        page.dedupkit.mirror('checkout', data, 'checkout');
        assert.deepEqual(plain(page.dedupkit.slice(-1)), [['m', 'checkout', data, 'checkout', undefined]].map(plain));
        page.load();
        assert.deepEqual(queueOf(page), [['load', TAG_ID], ['page'], ['track', 'checkout', data]]);
        assert.deepEqual(bodies(page), [{ evidence: 1, event_name: 'checkout', event_id: 'checkout-A-1001', tag: 1 }]);
      });

      test('the stub hands the evidence over at the load event, when a blocked core.js is known', () => {
        const page = makePage({ readyState: 'loading' });
        page.stub();
        page.dedupkit.mirror('checkout', data, 'checkout');
        assert.deepEqual(page.tracked, [['track', 'checkout', data]], 'the tag fires at once');
        page.load();
        assert.deepEqual(bodies(page), [], 'no evidence before the load event');
        page.ctx.pintrk.blocked = 1; // the base code's onerror: an ad blocker stopped core.js
        page.fireLoad();
        assert.deepEqual(bodies(page), [{ evidence: 1, event_name: 'checkout', event_id: 'checkout-A-1001', tag: 0 }]);
      });

      test('a browser event after core.js failed reports the tag as not fired', () => {
        const page = makePage();
        page.load();
        page.ctx.pintrk.blocked = 1;
        page.dedupkit.track('add_to_cart', {});
        assert.equal(bodies(page)[0].tag, 0);
      });

      test('through the stub without any tag: tag 0', () => {
        const page = makePage({ pintrk: 'missing' });
        page.stub();
        page.dedupkit.mirror('checkout', data, 'checkout');
        page.load();
        assert.equal(bodies(page)[0].tag, 0);
      });

      test('the inline call works with the stub only (dedupkit.js blocked)', () => {
        const page = makePage();
        page.stub();
        run(page, inline('checkout', data, 'checkout'));
        assert.deepEqual(page.tracked, [['track', 'checkout', data]]);
      });

      test('the inline call works with neither stub nor snippet', () => {
        const page = makePage();
        run(page, inline('checkout', data, 'checkout'));
        assert.deepEqual(page.tracked, [['track', 'checkout', data]]);
      });

      test('the inline call with nothing at all does not throw', () => {
        const page = makePage({ pintrk: 'missing' });
        assert.doesNotThrow(() => run(page, inline('checkout', data, 'checkout')));
      });

      test('the inline call after load: one tag call, one evidence beacon', () => {
        const page = makePage();
        page.stub();
        page.load();
        run(page, inline('checkout', data, 'checkout'));
        assert.equal(page.tracked.length, 1);
        assert.equal(bodies(page).length, 1);
        assert.equal(bodies(page)[0].evidence, 1);
      });

      test('a mirror call never throws into the page', () => {
        const page = makePage();
        page.load();
        assert.doesNotThrow(() => page.dedupkit.mirror('checkout', undefined, 'checkout'));
      });
    });
  });
}

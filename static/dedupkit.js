/*
 * dedupkit.js: one event_id for Pinterest's tag and the shop's server, so Pinterest counts each
 * event once. Readable source; the served file is dedupkit.min.js, made from this one by
 * `make minify`. ES5, and it never throws into the page. Its data-* attributes, what it sends
 * and the stub are documented in docs/snippet.md.
 *
 * Beacon to the server (text/plain JSON):
 *   {event_name, event_id, event_time, event_source_url, click_id?, data?, ticket?, gpc?, consent?, tag}
 * Evidence that the page mirrored an event the server tracked:
 *   {evidence: 1, event_name, event_id, tag}
 * Entries queued by the inline stub before this file ran:
 *   [name, data, Date, href, id, options]  dedupkit.track
 *   ['m', tagName, data, capiName, tag]    dedupkit.mirror (tag 1: the stub called the tag;
 *                                          undefined: no tag yet, the loader calls it)
 *   [granted]                              dedupkit.consent
 */
(function (window, document, location) {
  var stub = window.dedupkit || [],
    // Events waiting for a consent decision, as functions that send them.
    held = [],
    // -1 undecided, 0 refused (or GPC opt-out), 1 allowed without a decision, 2 granted.
    consentState,
    script, endpoint, pintrkSrc, clickIdCookie, consentCookie, cookieDomain, optedOut, gpc;

  function attribute(name) {
    return script.getAttribute('data-' + name);
  }

  function flag(name) {
    name = attribute(name);
    return name != null && name != '0' && name != 'false';
  }

  function clickIdIn(href) {
    return (/[?&]epik=([^&#]+)/.exec(href) || [])[1];
  }

  // Calls the tag: 1 when the call was made, 0 when the tag is absent, broke, or its core.js
  // could not load (an ad blocker: the base code and release() mark the queue as blocked).
  function pintrk() {
    try {
      window.pintrk.apply(window, arguments);
      return +!window.pintrk.blocked;
    } catch (error) {
      return 0;
    }
  }

  function cookie(name, value) {
    if (value == null) return (document.cookie.match('(^|; )' + name + '=([^;]*)') || [])[2];
    document.cookie = name + '=' + value + ';path=/;max-age=31536000;samesite=lax' +
      (location.protocol == 'https:' ? ';secure' : '') + (cookieDomain ? ';domain=' + cookieDomain : '');
  }

  function beacon(body) {
    // A text/plain string needs no CORS preflight, so the request goes out whatever the answer's
    // CORS headers say; keepalive requests share 64 KB per page.
    try {
      body = JSON.stringify(body);
      navigator.sendBeacon && navigator.sendBeacon(endpoint, body) ||
        fetch(endpoint, {method: 'POST', body: body, keepalive: !0, credentials: 'include'})
          .catch(Boolean); // a rejection handled, so nothing reaches the console
    } catch (error) {}
  }

  // Fires the tag (unless the stub already did: tag is given) and sends body to the server:
  // now, after the visitor says yes, or never. One rule for both channels.
  function send(tagName, tagData, body, tag) {
    function go() {
      // Known only when sent: a held event was granted consent on this page. Evidence has
      // exactly its four keys.
      if (consentState > 1 && !body.evidence) body.consent = 1;
      body.tag = tag == null ? pintrk('track', tagName, tagData) : tag && +!window.pintrk.blocked;
      beacon(body);
    }
    consentState > 0 ? go() : consentState && held.push(go);
  }

  // queued: the stub's entry, carrying the id, page and time of the original call.
  function track(name, data, options, queued) {
    var tagData = {}, key, href, eventId, tagName, body;
    try {
      queued = queued || [];
      options = options || {};
      // A ticket (kit.ticket()) carries the id it was signed for: '<event_id>~<signature>'.
      // Otherwise randomUUID, which needs a secure context; elsewhere 128 random bits.
      eventId = options.event_id || (/(.*)~/.exec(options.ticket) || 0)[1] || queued[4] ||
        (crypto.randomUUID ? crypto.randomUUID() : crypto.getRandomValues(new Uint32Array(4)).join('-'));
      href = queued[3] || location.href;
      for (key in data) tagData[key] = data[key];
      // The server sends the code upper-cased: the tag must say the same ('usd' -> 'USD').
      if (key = tagData.currency) tagData.currency = key.toUpperCase();
      tagData.event_id = eventId;
      // The tag's spelling of a standard name (AddToCart, add_to_cart -> addtocart);
      // advertiser-defined names go as they are.
      tagName = (' ' + attribute('custom-names') + ' ').indexOf(' ' + name + ' ') < 0 ?
        name.toLowerCase().replace(/[\s_-]/g, '') : name;
      body = {
        event_name: name,
        event_id: eventId,
        event_time: (queued[2] || new Date) / 1e3 >>> 0,
        event_source_url: href,
        click_id: clickIdIn(href) || cookie(clickIdCookie),
        data: data,
        ticket: options.ticket,
        gpc: gpc
      };
      send(tagName, tagData, body);
      return eventId;
    } catch (error) {}
  }

  // An event the server tracked: fire the tag with its data (event_id included) and tell the
  // server whether the tag call happened. tag is given when the stub already made the call.
  // The stub hands mirrored events over at the page's load event, by when core.js has loaded
  // or failed, so that the evidence tells a blocked tag from one that fired.
  function mirror(tagName, data, capiName, tag) {
    send(tagName, data, {evidence: 1, event_name: capiName, event_id: (data || 0).event_id}, tag);
  }

  function release(element) {
    if ((element = clickIdIn(location.href)) && cookie(clickIdCookie) == null) cookie(clickIdCookie, element);
    if (pintrkSrc) {
      element = document.createElement('script');
      element.src = pintrkSrc;
      // Under a nonce-based Content-Security-Policy: this script's nonce lets core.js load.
      element.nonce = script.nonce;
      element.onerror = function () {
        window.pintrk.blocked = 1;
      };
      document.head.append(element);
      pintrkSrc = 0;
    }
    while (held.length) held.shift()();
  }

  function consent(granted) {
    try {
      cookie(consentCookie, granted ? 1 : 0);
      // A GPC opt-out stands whatever a consent banner says.
      consentState = granted && !optedOut ? 2 : 0;
      pintrk('setconsent', consentState > 0);
      consentState ? release() : held = [];
    } catch (error) {}
  }

  if (stub.loaded) return;
  try {
    // Browsers without currentScript (IE) have neither sendBeacon nor fetch either.
    script = document.currentScript;
    endpoint = attribute('endpoint') || script.src.replace(/[^/]*$/, 'events');
    clickIdCookie = attribute('epik-cookie') || '_epik';
    consentCookie = attribute('consent-cookie') || '_dedupkit_consent';
    cookieDomain = attribute('cookie-domain');
    var gpcMode = attribute('gpc'), tagId = attribute('tag-id'), stored = cookie(consentCookie),
      pageVisit = flag('page-visit'), ownTag, ldp, key;
    // Left undefined otherwise: JSON.stringify leaves the key out.
    if (navigator.globalPrivacyControl) gpc = 1;
    optedOut = gpc && gpcMode == 'opt_out';
    // A stored '1' makes 2 (granted), '0' makes 0 (refused).
    consentState = optedOut ? 0 : stored ? stored * 2 : flag('require-consent') ? -1 : 1;
    ownTag = !window.pintrk && tagId && !optedOut;
    pintrkSrc = attribute('pintrk-src');
    if (ownTag) {
      // No base code on this page: do what it does (a queue until core.js arrives), and load
      // core.js once consent allows it.
      var queue = window.pintrk = function () {
        queue.queue.push([].slice.call(arguments));
      };
      queue.queue = [];
      queue.version = '3.0';
      pintrkSrc = pintrkSrc || 'https://s.pinimg.com/ct/core.js';
      pintrk('load', tagId);
    } else {
      // The base code loaded core.js as consent allowed it; otherwise load it on a later yes.
      consentState > 0 && (pintrkSrc = 0);
    }
    if (gpc && !optedOut && gpcMode != 'ignore') {
      // Limited Data Processing, set before any event; st and country come SHA-256 hashed.
      ldp = {opt_out_type: 'LDP'};
      if (key = attribute('ldp-st')) ldp.st = key;
      if (key = attribute('ldp-country')) ldp.country = key;
      pintrk('set', ldp);
    }
    // With automatic page_visit a bare page() would count the visit twice.
    ownTag && !pageVisit && pintrk('page');
    consentState > 0 && release();
    window.dedupkit = {v: '0.1.0', loaded: !0, track: track, consent: consent, mirror: mirror};
    stub.push = function (entry) {
      entry[0] == 'm' ? mirror.apply(0, entry.slice(1)) :
        entry[2] ? track(entry[0], entry[1], entry[5], entry) : consent(entry[0]);
    };
    while (stub.length) stub.push(stub.shift());
    if (pageVisit) track('page_visit', {});
  } catch (error) {}
})(window, document, location);

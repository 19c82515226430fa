(function (w, d, loc) {
  'use strict';
  var stub = w.dedupkit || [], q = [], st, script, endpoint, core, ek, ck, dom; // st: consent 1 yes, 0 no, -1 pending

  function attr(n) { return script.getAttribute('data-' + n); }
  function flag(n) { n = attr(n); return n != null && n != '0' && n != 'false'; }
  function epik(href) { return (/[?&]epik=([^&#]+)/.exec(href) || [])[1]; }
  function pin() { try { w.pintrk.apply(w, arguments); } catch (e) {} }

  function cookie(n, v) {
    if (v == null) return (d.cookie.match('(^|; )' + n + '=([^;]*)') || [])[2];
    d.cookie = n + '=' + v + ';path=/;max-age=31536000;samesite=lax' +
      (loc.protocol == 'https:' ? ';secure' : '') + (dom ? ';domain=' + dom : '');
  }

  function send(ev) {
    pin('track', ev[0], ev[1]);
    // text/plain string: no CORS preflight; keepalive: 64 KB per page
    try {
      navigator.sendBeacon && navigator.sendBeacon(endpoint, ev[2]) ||
        fetch(endpoint, {method: 'POST', body: ev[2], keepalive: true, credentials: 'include', mode: 'no-cors'})
          .then(null, function () {});
    } catch (e) {}
  }

  function track(name, data, e) {
    var c = w.crypto || {}, p = {}, k, href, id;
    try {
      e = e || [];
      id = e[4] || (c.randomUUID ? c.randomUUID() : '10000000-1000-4000-8000-100000000000'.replace(/[018]/g, function (x) {
        return (x ^ c.getRandomValues(new Uint8Array(1))[0] & 15 >> x / 4).toString(16);
      }));
      href = e[3] || loc.href;
      for (k in data) p[k] = data[k];
      p.event_id = id;
      k = [
        (' ' + attr('custom-names') + ' ').indexOf(' ' + name + ' ') < 0 ? name.toLowerCase().replace(/[\s_-]/g, '') : name,
        p,
        JSON.stringify({event_name: name, event_id: id, event_time: Math.floor((e[2] || new Date) / 1000),
          event_source_url: href, click_id: epik(href) || cookie(ek), data: data})
      ];
      st > 0 ? send(k) : st && q.push(k);
      return id;
    } catch (e) {}
  }

  function grant(v) {
    if ((v = epik(loc.href)) && cookie(ek) == null) cookie(ek, v);
    if (core) (v = d.createElement('script')).src = core, d.head.appendChild(v), core = 0;
    while (q.length) send(q.shift());
  }

  function consent(ok) {
    try {
      cookie(ck, st = ok ? 1 : 0);
      pin('setconsent', !!ok);
      ok ? grant() : q = [];
    } catch (e) {}
  }

  if (stub.loaded) return;
  try {
    script = d.currentScript || d.querySelector('script[src*="dedupkit.js"]');
    endpoint = attr('endpoint') || script.src.replace(/dedupkit\.js.*/, 'events');
    ek = attr('epik-cookie') || '_epik';
    ck = attr('consent-cookie') || '_dedupkit_consent';
    dom = attr('cookie-domain');
    st = +(cookie(ck) || (flag('require-consent') ? -1 : 1));
    core = st > 0 ? 0 : attr('pintrk-src');
    st > 0 && grant();
    w.dedupkit = {v: '0.1.0', loaded: true, track: track, consent: consent};
    // stub entries: [name, data, Date, href, id] or [consent]
    stub.push = function (e) { e[2] ? track(e[0], e[1], e) : consent(e[0]); };
    while (stub.length) stub.push(stub.shift());
    if (flag('page-visit')) track('page_visit', {});
  } catch (e) {}
})(window, document, location);

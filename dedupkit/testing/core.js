/*
 * Stand-in for Pinterest's core.js, served by dedupkit.testing.FakePinterest at /ct/core.js.
 *
 * Same loader contract as the real tag: the page's base code defined window.pintrk as a stub
 * queueing argument arrays in pintrk.queue and injected this script. We replay that queue, then
 * replace window.pintrk with a function handling load, page, track, set and setconsent. Each
 * page and track call is reported to the fake as a text/plain JSON POST (no CORS preflight):
 *   {kind: "track"|"page", tag_id, event, data, url, epik, consent}
 * It reads the click id (URL "epik" parameter, else the "_epik" cookie) but sets no cookie:
 * keeping _epik is the job of the code under test. ES5, and it never throws into the page.
 */
(function (window, document, navigator) {
  'use strict';

  var REPORT_URL = "__FAKE_PINTEREST_REPORT_URL__";
  var previous = window.pintrk;
  if (previous && previous.fakePinterest) {
    return; // loaded twice: the first copy already owns window.pintrk
  }
  var state = { tagId: null, options: {}, consent: null };

  function decode(value) {
    try {
      return decodeURIComponent(value.replace(/\+/g, ' '));
    } catch (e) {
      return value;
    }
  }

  function queryParam(name) {
    var match = new RegExp('[?&]' + name + '=([^&#]*)').exec(window.location.search || '');
    return match && match[1] ? decode(match[1]) : null;
  }

  function cookie(name) {
    var parts = (document && document.cookie) ? document.cookie.split(';') : [];
    for (var i = 0; i < parts.length; i++) {
      var part = parts[i].replace(/^\s+/, '');
      if (part.indexOf(name + '=') === 0 && part.length > name.length + 1) {
        return decode(part.substring(name.length + 1));
      }
    }
    return null;
  }

  function epik() {
    return queryParam('epik') || cookie('_epik');
  }

  function plainObject(value) {
    return value && typeof value === 'object' && !(value instanceof Array) ? value : {};
  }

  function send(payload) {
    var body;
    try {
      body = JSON.stringify(payload);
    } catch (e) {
      return; // unserialisable event data: the real tag would drop it too
    }
    try {
      if (navigator && navigator.sendBeacon && navigator.sendBeacon(REPORT_URL, body)) {
        return;
      }
    } catch (e) { /* fall back to fetch */ }
    try {
      if (window.fetch) {
        window.fetch(REPORT_URL, {
          method: 'POST',
          body: body,
          keepalive: true,
          mode: 'no-cors',
          headers: { 'Content-Type': 'text/plain' }
        })['catch'](function () {});
      }
    } catch (e) { /* nothing left to try */ }
  }

  function report(kind, name, data) {
    send({
      kind: kind,
      tag_id: state.tagId,
      event: name,
      data: plainObject(data),
      url: String(window.location.href),
      epik: epik(),
      consent: state.consent
    });
  }

  function merge(target, source) {
    source = plainObject(source);
    for (var key in source) {
      if (Object.prototype.hasOwnProperty.call(source, key)) {
        target[key] = source[key];
      }
    }
  }

  var commands = {
    load: function (tagId, options) {
      state.tagId = tagId === undefined || tagId === null ? null : String(tagId);
      state.options = {};
      merge(state.options, options);
    },
    page: function (data) {
      report('page', null, data);
    },
    track: function (name, data) {
      report('track', name === undefined || name === null ? null : String(name), data);
    },
    set: function (options) {
      merge(state.options, options);
    },
    setconsent: function (granted) {
      state.consent = granted === true || granted === 'true';
    }
  };

  function pintrk() {
    try {
      var args = Array.prototype.slice.call(arguments);
      var name = String(args[0]).toLowerCase();
      if (Object.prototype.hasOwnProperty.call(commands, name)) {
        commands[name].apply(null, args.slice(1));
      }
    } catch (e) { /* never throw into the page */ }
  }

  pintrk.fakePinterest = true;
  pintrk.version = '3.0';
  // A stub captured before we loaded pushes to window.pintrk.queue: route those calls to us.
  pintrk.queue = {
    push: function (args) {
      pintrk.apply(null, args || []);
    }
  };

  var queued = (previous && previous.queue && previous.queue.length) ? previous.queue : [];
  window.pintrk = pintrk;
  for (var i = 0; i < queued.length; i++) {
    pintrk.apply(null, queued[i] || []);
  }
})(window, window.document, window.navigator);

/*
 * The inline stub: records dedupkit calls made before dedupkit.js has loaded; dedupkit.js replays
 * them in order. Readable source; pages inline dedupkit-stub.min.js (`make minify`).
 * Queued entries (read by dedupkit.js):
 *   [name, data, Date, href, id, options]  dedupkit.track
 *   ['m', tagName, data, capiName, tag]    dedupkit.mirror
 *   [granted]                              dedupkit.consent
 */
(function (queue) {
  // Emitted twice, or after dedupkit.js loaded: keep what is there.
  if (queue.track) return;
  queue.track = function (name, data, options, id) {
    // Minted now so the page can use the id at once; without randomUUID, dedupkit.js mints it.
    // With a ticket and no event_id, dedupkit.js sends the ticket's own id instead.
    try {
      id = options && options.event_id || crypto.randomUUID();
    } catch (error) {}
    queue.push([name, data, new Date, location.href, id, options]);
    return id;
  };
  queue.consent = function (granted) {
    queue.push([granted]);
  };
  // With the base code on the page the tag call is made here, so it happens even where
  // dedupkit.js is blocked (tag: 1 tells dedupkit.js so); without it (a drop-in page, whose
  // tag dedupkit.js loads) the tag is left undefined and dedupkit.js makes the call.
  // The entry is queued at the load event, by when core.js has loaded or failed (the base code
  // then marks window.pintrk.blocked): the evidence tells a blocked tag from one that fired.
  queue.mirror = function (tagName, data, capiName, pintrk) {
    function done() {
      queue.push(['m', tagName, data, capiName, pintrk && 1]);
    }
    pintrk = window.pintrk;
    pintrk && pintrk('track', tagName, data);
    document.readyState == 'complete' ? done() : addEventListener('load', done);
  };
})(window.dedupkit = window.dedupkit || []);

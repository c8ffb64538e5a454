// Pyramidal Wan studio: videos with the same data-sync group play in step.
(function () {
  "use strict";
  var busy = false;
  function group(video) {
    var g = video && video.dataset ? video.dataset.sync : null;
    return g ? Array.prototype.slice.call(document.querySelectorAll('video[data-sync="' + CSS.escape(g) + '"]')) : [];
  }
  function others(video) { return group(video).filter(function (v) { return v !== video; }); }
  function each(video, fn) {
    if (busy) return;
    busy = true;
    try { others(video).forEach(fn); } finally { busy = false; }
  }
  document.addEventListener("play", function (e) {
    var v = e.target;
    if (v.tagName !== "VIDEO") return;
    each(v, function (o) { if (o.paused) { o.currentTime = v.currentTime; o.play().catch(function () {}); } });
  }, true);
  document.addEventListener("pause", function (e) {
    var v = e.target;
    if (v.tagName !== "VIDEO") return;
    each(v, function (o) { if (!o.paused) o.pause(); });
  }, true);
  document.addEventListener("seeked", function (e) {
    var v = e.target;
    if (v.tagName !== "VIDEO") return;
    each(v, function (o) { if (Math.abs(o.currentTime - v.currentTime) > 0.05) o.currentTime = v.currentTime; });
  }, true);
  document.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("[data-sync-target]") : null;
    if (!b) return;
    var vids = document.querySelectorAll('video[data-sync="' + CSS.escape(b.dataset.syncTarget) + '"]');
    busy = true;
    vids.forEach(function (v) { v.currentTime = 0; v.play().catch(function () {}); });
    busy = false;
  });
  // Correct drift: followers keep to the first video of their group.
  setInterval(function () {
    var seen = {};
    document.querySelectorAll("video[data-sync]").forEach(function (v) {
      var g = v.dataset.sync;
      if (!seen[g]) { seen[g] = v; return; }
      var lead = seen[g];
      if (!lead.paused && Math.abs(v.currentTime - lead.currentTime) > 0.08) {
        busy = true; v.currentTime = lead.currentTime; busy = false;
      }
    });
  }, 500);
})();

// Loaded on pages that store ipywidgets state, between require.js and the embedder
// (_config.yml, nb_ipywidgets_js). Two adjustments so that saved widgets draw offline:
//
// 1. The embedder finds its icon fonts next to the AMD module
//    "@jupyter-widgets/html-manager/dist/libembed-amd"; point that name at our copy, which
//    require.js would otherwise resolve against the page's own folder.
// 2. ipywidgets typesets labels with the MathJax 2 call MathJax.Hub.Queue(["Typeset", hub, el]);
//    the book runs MathJax 3, which has no Hub. Give it one that typesets with MathJax 3.
(function () {
  var here = document.currentScript ? document.currentScript.src : window.location.href;
  var base = new URL(".", here).href;
  if (window.require && window.require.config) {
    window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": base + "html-manager-1.0.15" } });
  }

  var pending = [];
  function flush() {
    var mj = window.MathJax;
    if (!mj || !mj.typesetPromise || !pending.length) { return; }
    var elements = pending.splice(0, pending.length);
    mj.startup.promise.then(function () { return mj.typesetPromise(elements); })
      .catch(function (err) { console.warn("MathJax could not typeset a widget label:", err); });
  }
  var hub = {
    Queue: function () {
      for (var i = 0; i < arguments.length; i++) {
        var job = arguments[i];
        if (Array.isArray(job) && job[0] === "Typeset" && job[2]) { pending.push(job[2]); }
      }
      flush();
    }
  };
  // Before MathJax 3 starts, window.MathJax is its configuration; MathJax keeps that object as
  // MathJax.config and replaces the global, so the Hub is put back once MathJax is ready.
  var cfg = window.MathJax || {};
  if (cfg.version) {  // MathJax already running (not the case with the deferred script)
    cfg.Hub = cfg.Hub || hub;
    return;
  }
  cfg.Hub = hub;
  cfg.startup = cfg.startup || {};
  var ready = cfg.startup.ready;
  cfg.startup.ready = function () {
    if (ready) { ready(); } else { window.MathJax.startup.defaultReady(); }
    window.MathJax.Hub = hub;
    window.MathJax.startup.promise.then(flush);
  };
  window.MathJax = cfg;
})();

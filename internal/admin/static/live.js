// Live refresh of the overview: fetch the server-rendered fragment named by
// data-live every data-every seconds and swap it in. Without this script
// the page is complete; a reload refreshes it. No framework, no build.
(function () {
  "use strict";
  var box = document.querySelector("[data-live]");
  if (!box || !window.fetch) {
    return;
  }
  var url = box.getAttribute("data-live");
  var every = Math.max(2, parseInt(box.getAttribute("data-every"), 10) || 5) * 1000;
  var failures = 0;

  function next() {
    // Back off while the server does not answer, up to a minute.
    window.setTimeout(poll, Math.min(every * Math.pow(2, failures), 60000));
  }

  function poll() {
    // Nothing to show to a hidden tab; and a swap would take the focus
    // from a keyboard user on a link of the section.
    if (document.hidden || box.contains(document.activeElement)) {
      next();
      return;
    }
    fetch(url, { credentials: "same-origin", redirect: "manual", headers: { "Accept": "text/html" } })
      .then(function (resp) {
        if (resp.status === 401 || resp.type === "opaqueredirect") {
          // The session ended: the full page shows the login form.
          window.location.reload();
          return null;
        }
        if (!resp.ok) {
          throw new Error("HTTP " + resp.status);
        }
        return resp.text();
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        failures = 0;
        // The fragment is this server's own template output, escaped
        // like every page; it holds no script.
        box.innerHTML = html;
        box.setAttribute("data-refreshed", new Date().toISOString());
        next();
      })
      .catch(function () {
        failures = Math.min(failures + 1, 4);
        next();
      });
  }
  next();
})();

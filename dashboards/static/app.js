// mailwarden dashboard: reload itself every data-refresh seconds (not while a form is in use),
// and apply the filters as soon as one changes. No inline script anywhere (Content-Security-Policy).
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (seconds > 0) {
    window.setInterval(function () {
      var active = document.activeElement;
      var busy = active && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(active.tagName) && active !== document.body;
      if (!busy && !document.hidden) { window.location.reload(); }
    }, seconds * 1000);
  }
  var selects = document.querySelectorAll("form.filters select");
  Array.prototype.forEach.call(selects, function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
})();

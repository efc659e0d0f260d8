// mailwarden: apply the theme this browser chose (the theme button in app.js), before the page is drawn. Without a
// choice the system's (prefers-color-scheme) applies. An external file: the Content-Security-Policy allows no
// inline script.
(function () {
  "use strict";
  try {
    var theme = window.localStorage.getItem("mailwarden.theme");
    if (theme === "dark" || theme === "light") { document.documentElement.setAttribute("data-theme", theme); }
  } catch (e) { /* storage blocked: the system's theme */ }
})();

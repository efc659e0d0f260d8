// mailwarden dashboard. No inline script anywhere (Content-Security-Policy): everything here.
// - Updates: the page reloads itself every data-refresh seconds, but never while something on it has the focus
//   (a link, a button, a field: a keyboard or screen-reader user would be thrown back to the top), while text is
//   selected, while the tab is hidden, within data-refresh seconds of a key press, or while paused with the
//   "Pause updates" button (remembered for this tab).
// - Theme: the "Dark theme" button switches between dark and light and remembers the choice in this browser
//   (localStorage; theme.js applies it before the page is drawn); choosing the system's theme forgets it.
// - Copy: a Copy button on every command block (the command is also selectable with one click without script).
// - Filters apply as soon as one is chosen with the pointer; with the keyboard, on "Apply" (or Enter in the search).
(function () {
  "use strict";
  var doc = document, root = doc.documentElement;
  var controls = doc.getElementById("controls");

  function store(kind) {
    try { return window[kind]; } catch (e) { return null; }
  }
  var local = store("localStorage"), session = store("sessionStorage");

  function control(label, pressed, onClick) {
    var button = doc.createElement("button");
    button.type = "button";
    button.textContent = label;
    if (pressed !== null) { button.setAttribute("aria-pressed", pressed ? "true" : "false"); }
    button.addEventListener("click", function (event) {
      onClick(button);
      // a mouse click must not leave the focus on the button: the focus holds the updates back (wall screens)
      if (event.detail > 0) { button.blur(); }
    });
    if (controls) { controls.appendChild(button); }
    return button;
  }

  // -- theme --------------------------------------------------------------------------------------------------
  var system = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  function dark() {
    var chosen = root.getAttribute("data-theme");
    return chosen ? chosen === "dark" : !!(system && system.matches);
  }
  if (controls) {
    var themeButton = control("Dark theme", dark(), function (button) {
      var want = dark() ? "light" : "dark";
      var systems = system && system.matches ? "dark" : "light";
      if (want === systems) {
        root.removeAttribute("data-theme");
        if (local) { local.removeItem("mailwarden.theme"); }
      } else {
        root.setAttribute("data-theme", want);
        if (local) { local.setItem("mailwarden.theme", want); }
      }
      button.setAttribute("aria-pressed", dark() ? "true" : "false");
    });
    themeButton.id = "theme-toggle";
    if (system && system.addEventListener) {
      system.addEventListener("change", function () {
        themeButton.setAttribute("aria-pressed", dark() ? "true" : "false");
      });
    }
  }

  // -- updates --------------------------------------------------------------------------------------------------
  var seconds = parseInt(doc.body.getAttribute("data-refresh") || "0", 10);
  if (seconds > 0) {
    var paused = !!(session && session.getItem("mailwarden.paused") === "1");
    var loadedAt = Date.now(), lastKey = 0;
    var note = doc.getElementById("refresh-note");
    var pauseButton = control(paused ? "Resume updates" : "Pause updates", null, function (button) {
      paused = !paused;
      if (session) {
        if (paused) { session.setItem("mailwarden.paused", "1"); } else { session.removeItem("mailwarden.paused"); }
      }
      button.textContent = paused ? "Resume updates" : "Pause updates";
      if (note) { note.textContent = paused ? "Updates are paused." : note.getAttribute("data-text"); }
      if (!paused) { loadedAt = Date.now(); }
    });
    pauseButton.id = "pause-updates";
    if (note) {
      note.setAttribute("data-text", note.textContent);
      if (paused) { note.textContent = "Updates are paused."; }
    }
    doc.addEventListener("keydown", function () { lastKey = Date.now(); }, true);

    var focusInside = function () {
      var active = doc.activeElement;
      return !!active && active !== doc.body && active !== root;
    };
    var selecting = function () {
      var selection = window.getSelection && window.getSelection();
      return !!selection && !selection.isCollapsed && String(selection).length > 0;
    };
    window.setInterval(function () {
      var now = Date.now();
      if (paused || doc.hidden || focusInside() || selecting()) { return; }
      if (now - loadedAt < seconds * 1000 || now - lastKey < seconds * 1000) { return; }
      window.location.reload();
    }, 1000);
  }

  // -- copy buttons ---------------------------------------------------------------------------------------------
  function copyText(text, done) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(fallback(text)); });
    } else {
      done(fallback(text));
    }
  }
  function fallback(text) {
    var area = doc.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    doc.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = doc.execCommand("copy"); } catch (e) { ok = false; }
    doc.body.removeChild(area);
    return ok;
  }
  Array.prototype.forEach.call(doc.querySelectorAll(".cmd"), function (block, i) {
    var code = block.querySelector("code");
    if (!code) { return; }
    code.id = code.id || "cmd-" + (i + 1);
    var button = doc.createElement("button");
    button.type = "button";
    button.className = "copy";
    button.textContent = "Copy";
    button.setAttribute("aria-describedby", code.id);
    button.addEventListener("click", function () {
      var restore = button.textContent === "Copy" ? "Copy" : button.textContent;
      copyText(code.textContent, function (ok) {
        button.textContent = ok ? "Copied" : "Select and copy";
        window.setTimeout(function () { button.textContent = restore; }, 2000);
      });
    });
    block.classList.add("has-copy");
    block.insertBefore(button, block.firstChild);  // floats at the top right; the command flows around it
  });

  // -- filters --------------------------------------------------------------------------------------------------
  // A choice made with the pointer applies at once; one made with the keyboard (arrow keys change a closed select
  // in Chrome) waits for "Apply" or Enter in the search box, so that going through the options does not reload the
  // page at each (WCAG 3.2.2, on input). Without script the form is a plain GET form with its "Apply" button.
  Array.prototype.forEach.call(doc.querySelectorAll("form.filters select"), function (select) {
    var keyed = false;
    select.addEventListener("keydown", function () { keyed = true; });
    select.addEventListener("pointerdown", function () { keyed = false; });
    select.addEventListener("change", function () {
      if (!keyed) { select.form.submit(); }
    });
  });
})();

// mailwarden dashboard. No inline script anywhere (Content-Security-Policy): everything here.
// - Updates: every data-refresh seconds the page fetches itself and patches what changed in place, keeping the
//   focus, the scroll position and a form being filled in (see "live updates" below); "Pause updates" stops them
//   (remembered in this browser); a failed update is said in the header, beside the time of the last one.
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

  // -- live updates -----------------------------------------------------------------------------------------------
  // Every data-refresh seconds the page fetches itself (the same address: its search, filters and page) and patches
  // what changed into <main> in place: a row whose status changed, the counts, a new incident. Server-rendered HTML,
  // not JSON: the rows, chips, times and bars are drawn by the server's templates only, so the page and its update
  // can never disagree. Nodes that did not change are left alone, rows are matched by their integration (a row that
  // moves up is moved, not redrawn), and the focus, the scroll position, open <details> and a form being filled in
  // survive: a form with a value changed and not sent yet is left as it is; if the focused element was redrawn, the
  // same control of the same row (or section) gets the focus back without scrolling. No update while text is
  // selected or the tab is hidden; "Pause updates" stops them (remembered in this browser, like the theme). When a
  // fetch fails the header says so ("last updated 10:02 UTC; the server did not answer at 10:03 UTC").
  var seconds = parseInt(doc.body.getAttribute("data-refresh") || "0", 10);
  var main = doc.getElementById("main");
  if (seconds > 0 && main && window.fetch && window.DOMParser) {
    var paused = !!(local && local.getItem("mailwarden.paused") === "1");
    var note = doc.getElementById("refresh-note");
    var lastOk = new Date(), failed = null, busy = false, due = Date.now() + seconds * 1000;
    var shown = doc.createElement("span"), spoken = doc.createElement("span");
    shown.id = "live-status";
    shown.className = "live-status";
    spoken.className = "visually-hidden";
    spoken.setAttribute("aria-live", "polite");
    var clock = function (t) {
      return ("0" + t.getUTCHours()).slice(-2) + ":" + ("0" + t.getUTCMinutes()).slice(-2) + " UTC";
    };
    var describe = function () {
      if (failed) { return "last updated " + clock(lastOk) + "; " + failed; }
      return (paused ? "paused; last updated " : "updated ") + clock(lastOk);
    };
    var say = function (text) { spoken.textContent = text; };
    var pauseButton = control(paused ? "Resume updates" : "Pause updates", null, function (button) {
      paused = !paused;
      if (local) {
        if (paused) { local.setItem("mailwarden.paused", "1"); } else { local.removeItem("mailwarden.paused"); }
      }
      button.textContent = paused ? "Resume updates" : "Pause updates";
      if (note) { note.textContent = paused ? "Updates are paused." : note.getAttribute("data-text"); }
      shown.textContent = describe();
      say(paused ? "Updates paused." : "Updates resumed.");
      if (!paused) { due = 0; }
    });
    pauseButton.id = "pause-updates";
    if (controls) {
      controls.appendChild(shown);
      controls.appendChild(spoken);
    }
    shown.textContent = describe();
    if (note) {
      note.setAttribute("data-text", "This page updates every " + seconds + " s in place (Pause updates stops it).");
      note.textContent = paused ? "Updates are paused." : note.getAttribute("data-text");
    }

    var selecting = function () {
      var selection = window.getSelection && window.getSelection();
      return !!selection && !selection.isCollapsed && String(selection).length > 0;
    };
    var each = function (list, fn) { Array.prototype.forEach.call(list, fn); };
    var dirty = function (form) {  // a value changed and not sent yet
      return Array.prototype.some.call(form.querySelectorAll("input, select, textarea"), function (f) {
        if (f.type === "checkbox" || f.type === "radio") { return f.checked !== f.defaultChecked; }
        if (f.tagName === "SELECT") {
          return Array.prototype.some.call(f.options, function (o) { return o.selected !== o.defaultSelected; });
        }
        return f.type !== "hidden" && f.value !== f.defaultValue;
      });
    };
    var keyOf = function (node) {
      return node.nodeType === 1 ? (node.getAttribute("data-integration") || node.id || "") : "";
    };
    var alike = function (a, b) { return a.nodeType === b.nodeType && a.nodeName === b.nodeName && keyOf(a) === keyOf(b); };
    var syncAttributes = function (cur, next) {
      each(Array.prototype.slice.call(cur.attributes), function (a) {
        if (!next.hasAttribute(a.name) && !(a.name === "open" && cur.tagName === "DETAILS")) { cur.removeAttribute(a.name); }
      });
      each(next.attributes, function (a) {
        if (a.name === "open" && cur.tagName === "DETAILS") { return; }  // the reader's, not the server's
        if (cur.getAttribute(a.name) !== a.value) { cur.setAttribute(a.name, a.value); }
      });
    };
    var morph, morphChildren;
    morph = function (cur, next) {
      if (cur.isEqualNode(next)) { return; }
      if (cur.nodeType !== 1) { cur.nodeValue = next.nodeValue; return; }
      if (cur.tagName === "FORM" && dirty(cur)) { return; }
      if (cur.classList.contains("has-copy")) {  // a command block with its Copy button: the command decides
        var was = cur.querySelector("code"), will = next.querySelector("code");
        if (was && will && was.textContent === will.textContent) { return; }
        cur.replaceWith(next);
        return;
      }
      syncAttributes(cur, next);
      morphChildren(cur, next);
    };
    morphChildren = function (cur, next) {
      var old = Array.prototype.slice.call(cur.childNodes), wanted = Array.prototype.slice.call(next.childNodes);
      var used = [], from = 0;
      wanted.forEach(function (node, j) {
        var key = keyOf(node), found = -1;
        for (var i = key ? 0 : from; i < old.length; i++) {
          if (!used[i] && alike(old[i], node)) { found = i; break; }
        }
        var here = cur.childNodes[j] || null;
        if (found < 0) {
          cur.insertBefore(node.cloneNode(true), here);
          return;
        }
        used[found] = true;
        if (!key) { from = found + 1; }
        if (old[found] !== here) { cur.insertBefore(old[found], here); }
        morph(old[found], node);
      });
      old.forEach(function (node, i) { if (!used[i] && node.parentNode === cur) { cur.removeChild(node); } });
    };

    // where the focus is, to find it again if its element was redrawn or moved: the row (or the element with an id)
    // around it and its place among that one's focusable elements
    var FOCUSABLE = "a[href], button, input, select, textarea, summary, [tabindex]";
    var addressOf = function (el) {
      if (!el || el === doc.body || !main.contains(el)) { return null; }
      var holder = el.parentElement;
      while (holder && holder !== main && !keyOf(holder)) { holder = holder.parentElement; }
      holder = holder || main;
      return {key: holder === main ? null : keyOf(holder), index: Array.prototype.indexOf.call(
        holder.querySelectorAll(FOCUSABLE), el)};
    };
    var find = function (address) {
      var holder = main;
      if (address.key) {
        holder = null;
        each(main.querySelectorAll("[data-integration], [id]"), function (e) {
          if (!holder && keyOf(e) === address.key) { holder = e; }
        });
      }
      return holder ? holder.querySelectorAll(FOCUSABLE)[address.index] || null : null;
    };

    // the footer's note that the queue's checks fall behind (queue mode): as the fresh page says, or gone
    var lagNote = function (fresh) {
      var footer = doc.querySelector("footer"), was = doc.querySelector("footer .queue-lag");
      var now = fresh.querySelector("footer .queue-lag");
      if (was) { was.remove(); }
      if (now && footer) { footer.insertBefore(doc.importNode(now, true), footer.firstChild); }
    };

    var patch = function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html");
      var next = fresh.getElementById("main");
      if (!next) { return false; }
      var active = doc.activeElement, address = addressOf(active);
      morphChildren(main, doc.importNode(next, true));
      if (fresh.title) { doc.title = fresh.title; }
      lagNote(fresh);
      addCopyButtons(main);
      bindFilters(main);
      if (address && doc.activeElement !== active) {
        var target = main.contains(active) ? active : find(address);
        if (target) { target.focus({preventScroll: true}); }
      }
      return true;
    };

    var update = function () {
      busy = true;
      var asked = new Date();
      window.fetch(window.location.href, {credentials: "same-origin", cache: "no-store",
                                          headers: {"Accept": "text/html"}}).then(function (response) {
        if (response.redirected || !response.ok) {
          var why = response.redirected && /\/login/.test(response.url)
            ? "signed out: reload the page to sign in again"
            : "the server answered " + response.status + " at " + clock(asked);
          throw new Error(why);
        }
        return response.text();
      }).then(function (html) {
        if (!patch(html)) { throw new Error("the server's answer had no page in it at " + clock(asked)); }
        lastOk = asked;
        if (failed) { say("Updates work again."); }
        failed = null;
      }, function (error) {
        var why = error && /^(signed out|the server)/.test(error.message) ? error.message
          : "the server did not answer at " + clock(asked);
        if (!failed) { say("Updates failed: " + why + "."); }
        failed = why + " (trying again every " + seconds + " s)";
      }).then(function () {
        busy = false;
        due = Date.now() + seconds * 1000;
        shown.textContent = describe();
      });
    };
    window.setInterval(function () {
      if (paused || busy || doc.hidden || selecting() || Date.now() < due) { return; }
      update();
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
  var commandCount = 0;
  function addCopyButtons(scope) {
  Array.prototype.forEach.call(scope.querySelectorAll(".cmd:not(.has-copy)"), function (block) {
    var code = block.querySelector("code");
    if (!code) { return; }
    commandCount += 1;
    code.id = code.id || "cmd-" + commandCount;
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
  }
  addCopyButtons(doc);

  // -- filters --------------------------------------------------------------------------------------------------
  // A choice made with the pointer applies at once; one made with the keyboard (arrow keys change a closed select
  // in Chrome) waits for "Apply" or Enter in the search box, so that going through the options does not reload the
  // page at each (WCAG 3.2.2, on input). Without script the form is a plain GET form with its "Apply" button.
  function bindFilters(scope) {
  Array.prototype.forEach.call(scope.querySelectorAll("form.filters select"), function (select) {
    if (select.mailwardenBound) { return; }  // a property, not an attribute: an update leaves it alone
    select.mailwardenBound = true;
    var keyed = false;
    select.addEventListener("keydown", function () { keyed = true; });
    select.addEventListener("pointerdown", function () { keyed = false; });
    select.addEventListener("change", function () {
      if (!keyed) { select.form.submit(); }
    });
  });
  }
  bindFilters(doc);
})();

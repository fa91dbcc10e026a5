// Reload a page that asks for it (data-refresh-seconds on any element) while the
// page is on screen and the reader is not typing into a form (nor has typed
// something not sent yet). The page works the
// same without this script; it only stays current on its own.
(function () {
  "use strict";
  var holder = document.querySelector("[data-refresh-seconds]");
  if (!holder) {
    return;
  }
  var seconds = parseInt(holder.getAttribute("data-refresh-seconds"), 10);
  if (!(seconds > 0)) {
    return;
  }
  // Typing now, or something typed and not sent yet (a note left for a moment).
  function typing() {
    var active = document.activeElement;
    if (active !== null && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) {
      return true;
    }
    return Array.prototype.some.call(
      document.querySelectorAll("input[type=text], textarea"),
      function (field) { return field.value !== field.defaultValue; }
    );
  }
  function tick() {
    if (document.visibilityState === "visible" && !typing()) {
      window.location.reload();
    } else {
      window.setTimeout(tick, seconds * 1000);
    }
  }
  window.setTimeout(tick, seconds * 1000);
})();

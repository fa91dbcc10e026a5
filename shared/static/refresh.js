// Reload a page that asks for it (data-refresh-seconds on any element) while the
// page is on screen and the reader is not typing into a form. The page works the
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
  function typing() {
    var active = document.activeElement;
    return active !== null && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
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

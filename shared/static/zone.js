// The reader's own time zone, as the browser knows it: sent with the sign-in form so
// that pages show local times from the start, applied at once on a job page opened by
// its texted link, and offered in the footer's choice until the reader has made one.
// Without this script, times stay in UTC until chosen.
(function () {
  "use strict";
  var minutes = -new Date().getTimezoneOffset();
  var sign = minutes < 0 ? "-" : "+";
  var whole = Math.abs(minutes);
  var offset = sign + String(Math.floor(whole / 60)).padStart(2, "0") + ":" +
    String(whole % 60).padStart(2, "0");
  document.querySelectorAll("input[data-browser-offset]").forEach(function (input) {
    input.value = offset;
  });
  document.querySelectorAll("select[data-browser-offset]").forEach(function (select) {
    if (!select.querySelector('option[value="' + offset + '"]') || select.value === offset) {
      return;
    }
    select.value = offset;
    // Once per visit: a browser that keeps no cookie would otherwise send it forever.
    var form = select.form;
    if (form && form.hasAttribute("data-apply-browser-offset") &&
        !window.sessionStorage.getItem("partsflow-zone-applied")) {
      window.sessionStorage.setItem("partsflow-zone-applied", offset);
      form.submit();
    }
  });
})();

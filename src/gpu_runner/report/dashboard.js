(function () {
  "use strict";
  function openTarget(hash, focus) {
    if (!hash || hash.length < 2) return;
    var el = document.getElementById(decodeURIComponent(hash.slice(1)));
    if (!el || el.tagName !== "DETAILS") return;
    el.open = true;
    el.classList.remove("flash");
    void el.offsetWidth;
    el.classList.add("flash");
    el.scrollIntoView({ block: "start" });
    if (focus) { var s = el.querySelector("summary"); if (s) s.focus({ preventScroll: true }); }
  }
  document.addEventListener("click", function (ev) {
    var a = ev.target.closest && ev.target.closest('a[href^="#entry-"]');
    if (!a) return;
    var hash = a.getAttribute("href");
    var box = document.getElementById("only-failed");
    var el = document.getElementById(hash.slice(1));
    if (box && box.checked && el && !el.classList.contains("s-failed") && !el.classList.contains("s-not_run")) { box.checked = false; document.body.classList.remove("only-failed"); }
    ev.preventDefault();
    if (history.replaceState) history.replaceState(null, "", hash);
    openTarget(hash, true);
  });
  window.addEventListener("hashchange", function () { openTarget(location.hash, true); });
  var box = document.getElementById("only-failed");
  if (box) box.addEventListener("change", function () { document.body.classList.toggle("only-failed", box.checked); });
  function all(open) { document.querySelectorAll("details.entry").forEach(function (d) { d.open = open; }); }
  var ex = document.getElementById("expand-all"), co = document.getElementById("collapse-all");
  if (ex) ex.addEventListener("click", function () { all(true); });
  if (co) co.addEventListener("click", function () { all(false); });
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") { var t = document.getElementById("grid"); if (t) t.scrollIntoView(); } });
  if (location.hash) openTarget(location.hash, false);
})();

// The dashboard's only script, and optional: everything works without it.
// Changing a select in the directory's filters applies them at once; the Apply button stays
// for keyboards and for browsers without scripts.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const filters = document.querySelector("form.filters");
  if (!filters) return;
  for (const select of filters.querySelectorAll("select")) {
    select.addEventListener("change", () => filters.requestSubmit());
  }
});

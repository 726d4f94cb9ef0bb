// keygate console: the little JavaScript the pages use; every page works without it.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  if (!field) return;
  field.select();
  const done = () => { button.textContent = "Copied"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, () => {});
  } else {
    // Not a secure context (plain HTTP on another host): the value stays selected to copy.
    button.textContent = "Selected: press Ctrl+C";
  }
});

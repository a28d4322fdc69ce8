// New message: one handle opens (or finds) the direct conversation; several make a group.

import { api } from "./api.js";
import { Parley } from "./parley.js";
import { byId, errorText } from "./ui.js";

const form = byId("new-conversation");
const input = byId("handles");
const error = byId("handles-error");

function handles() {
  return input.value.split(/[\s,]+/).map((h) => h.trim().replace(/^@/, "")).filter(Boolean);
}

input.addEventListener("input", () => {
  byId("group-name-field").hidden = handles().length < 2;
});
byId("group-name-field").hidden = handles().length < 2;

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  const chosen = [...new Set(handles())];
  if (!chosen.length) {
    error.textContent = "Enter at least one handle.";
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  // Nobody can be messaged from a browser without keys: set them up first.
  if (!(await Parley.load())) return;
  try {
    const body = chosen.length === 1
      ? { kind: "direct", handle: chosen[0] }
      : { kind: "group", name: byId("group-name").value.trim(), handles: chosen };
    const conversation = await api("POST", "/conversations", { body });
    location.assign(`/c/${conversation.id}`);
  } catch (failure) {
    error.textContent = errorText(failure);
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
});

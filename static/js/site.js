// On every signed-in page. Signing out also unlinks this browser: its device is
// revoked and its keys are erased here, so a shared computer keeps nothing that reads
// the user's messages (signing in again restores from the recovery key or a link).

import { Parley } from "./parley.js";

const form = document.getElementById("logout-form");
form?.addEventListener("submit", async (event) => {
  if (form.dataset.forgotten) return;
  event.preventDefault();
  try {
    const client = await Parley.load({ redirect: false });
    await client?.forget();
  } catch {
    // Signing out must work even offline; the device can be removed in Settings later.
  }
  form.dataset.forgotten = "1";
  form.submit();
});

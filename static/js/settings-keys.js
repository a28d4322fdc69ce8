// Settings → Recovery key: a new recovery key (shown once) or a passphrase instead.

import * as c from "./crypto.js";
import { Parley } from "./parley.js";
import { byId, errorText } from "./ui.js";

const status = byId("keys-status");
let client;

byId("new-recovery-key").addEventListener("click", async (event) => {
  const button = event.currentTarget; // null once the handler has awaited
  if (!confirm("Make a new recovery key? The current one will stop working.")) return;
  button.disabled = true;
  try {
    byId("recovery-code").textContent = await client.newRecoveryKey();
    byId("new-recovery").hidden = false;
    byId("new-recovery-title").focus();
    status.textContent = "Your new recovery key is ready. The old one no longer works.";
  } catch (error) {
    status.textContent = errorText(error);
    button.disabled = false;
  }
});

byId("wrote-it-down").addEventListener("change", (event) => {
  byId("recovery-done").disabled = !event.currentTarget.checked;
});
byId("recovery-done").addEventListener("click", () => {
  byId("recovery-code").textContent = "";
  byId("new-recovery").hidden = true;
  byId("new-recovery-key").disabled = false;
  byId("new-recovery-key").focus();
});

byId("passphrase-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget; // null once the handler has awaited
  const error = byId("passphrase-error");
  const passphrase = byId("passphrase").value;
  error.textContent = "";
  try {
    c.checkPassphrase(passphrase);
  } catch (problem) {
    error.textContent = problem.message;
    byId("passphrase").focus();
    return;
  }
  if (passphrase !== byId("passphrase-again").value) {
    error.textContent = "The two passphrases differ.";
    byId("passphrase-again").focus();
    return;
  }
  byId("passphrase-submit").disabled = true;
  status.textContent = "Protecting your backup with the passphrase (this takes a few seconds)…";
  try {
    await client.passphraseBackup(passphrase);
    form.reset();
    status.textContent = "Your backup now opens with this passphrase. The recovery key no longer works.";
  } catch (problem) {
    status.textContent = "";
    error.textContent = errorText(problem);
  } finally {
    byId("passphrase-submit").disabled = false;
  }
});

Parley.load().then((loaded) => {
  client = loaded;
  if (!client) return;
  byId("new-recovery-key").disabled = false;
  byId("passphrase-submit").disabled = false;
});

// What every messaging page does with the live socket: connect as this browser's
// device, show the connection state, catch up by sync after every (re)connect, and
// acknowledge delivery of what arrived. The socket also carries calls: the call
// manager (calls.js) is attached to it, so these pages ring like every other.

import { CLOSE_LOGGED_OUT, CLOSE_REVOKED, CLOSE_SUSPENDED, CLOSE_UNAUTHENTICATED, CLOSE_UNKNOWN_DEVICE, LiveSocket } from "./socket.js";
import { forgetAccount } from "./keystore.js";
import { startCalls } from "./calls.js";

const ENDED = {
  [CLOSE_UNAUTHENTICATED]: "You are signed out.",
  [CLOSE_UNKNOWN_DEVICE]: "This browser is no longer one of your devices.",
  [CLOSE_REVOKED]: "This browser was removed from your devices.",
  [CLOSE_LOGGED_OUT]: "You signed out.",
  [CLOSE_SUSPENDED]: "This account is suspended.",
};

/**
 * Open the socket for `client`. `onMessage(received)` gets every new message (live or
 * caught up), `onEvent(frame)` every other event.
 */
export function goLive(client, { statusLine, onMessage, onEvent, onCaughtUp }) {
  const delivered = new Map(); // conversationId -> highest seq acknowledged
  // Acks the socket could not take (it dropped meanwhile): they go at the next connect,
  // on the socket, rather than as a request that a browser gone offline would lose.
  const unsent = new Map(); // conversationId -> highest seq

  function sendAck(conversationId, seq) {
    if (socket.send({ type: "message.ack", conversation_id: conversationId, seq })) unsent.delete(conversationId);
    else unsent.set(conversationId, seq);
  }

  function acknowledge(received) {
    const { conversation_id: conversationId, seq, sender_id: senderId } = received.message;
    if (senderId === client.userId || seq <= (delivered.get(conversationId) || 0)) return;
    delivered.set(conversationId, seq);
    sendAck(conversationId, seq);
  }

  async function catchUp() {
    for (const [conversationId, seq] of [...unsent]) sendAck(conversationId, seq);
    try {
      const received = await client.sync();
      for (const item of received) {
        await onMessage(item, { live: false });
        acknowledge(item);
      }
      onCaughtUp?.();
    } catch (error) {
      if (statusLine) statusLine.textContent = "Could not catch up. Retrying when the connection returns.";
    }
  }

  // The page's one socket: if calls.js (loaded on every signed-in page) opened it
  // already, these handlers join it rather than opening a second one.
  const socket = new LiveSocket(client.deviceId, {
    onStatus: (text) => statusLine && (statusLine.textContent = text),
    onConnected: catchUp,
    onEvent: async (frame) => {
      if (frame.type === "message.new") {
        const received = await client.open(frame);
        await onMessage(received, { live: true });
        acknowledge(received);
      } else {
        onEvent?.(frame);
      }
    },
    onEnded: async (code, message) => {
      if (statusLine) statusLine.textContent = ENDED[code] || message || "Disconnected.";
      if (code === CLOSE_UNKNOWN_DEVICE || code === CLOSE_REVOKED) {
        // This browser's keys are of no more use: forget them, then set up again.
        await forgetAccount(client.userId);
        location.assign("/setup");
      } else if (code === CLOSE_UNAUTHENTICATED || code === CLOSE_LOGGED_OUT) {
        location.assign("/login");
      }
    },
  });
  startCalls(client, socket);
  return socket;
}

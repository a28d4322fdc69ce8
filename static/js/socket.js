// The live socket of this browser's device: reconnects with backoff, and says when it
// (re)connected so the page can catch up by sync (the socket is a doorbell; the
// database plus sync is what guarantees delivery: docs/realtime.md).

// Close codes after which reconnecting is pointless (docs/realtime.md).
export const CLOSE_UNAUTHENTICATED = 4001;
export const CLOSE_UNKNOWN_DEVICE = 4004;
export const CLOSE_REVOKED = 4005;
export const CLOSE_LOGGED_OUT = 4006;
export const CLOSE_SUSPENDED = 4007;
const FINAL_CLOSE_CODES = [CLOSE_UNAUTHENTICATED, CLOSE_UNKNOWN_DEVICE, CLOSE_REVOKED, CLOSE_LOGGED_OUT, CLOSE_SUSPENDED];
const HEARTBEAT_MS = 25_000;
// No frame at all (not even the pong) this long after a ping: the connection is dead
// even if the browser has not noticed yet (a sleeping laptop, a NAT that forgot us).
const DEAD_AFTER_MS = 10_000;

export class LiveSocket {
  /** @param {string} deviceId  @param {{onEvent, onStatus, onConnected, onEnded}} handlers */
  constructor(deviceId, handlers) {
    this.deviceId = deviceId;
    this.handlers = handlers;
    this.attempt = 0;
    this.ws = null;
    this.stopped = false;
    this.heartbeat = null;
    this.connect();
    // A laptop waking up or a network coming back: try at once, not after the backoff.
    window.addEventListener("online", () => this.retryNow());
    // The browser knows the network is gone: say so now rather than at the next ping.
    window.addEventListener("offline", () => this.drop());
  }

  connect() {
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws/?device=${encodeURIComponent(this.deviceId)}`);
    this.ws = ws;
    this.handlers.onStatus?.(this.attempt ? "Reconnecting…" : "Connecting…");
    ws.onmessage = (event) => {
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "hello") {
        this.attempt = 0;
        this.handlers.onStatus?.("");
        this.handlers.onConnected?.();
        clearInterval(this.heartbeat);
        this.heartbeat = setInterval(() => this.ping(), HEARTBEAT_MS);
        return;
      }
      if (frame.type === "closing") {
        this.ending = frame;
        return;
      }
      this.handlers.onEvent?.(frame);
    };
    ws.onclose = (event) => {
      clearInterval(this.heartbeat);
      if (this.ws !== ws) return;
      this.ws = null;
      const code = event.code;
      if (FINAL_CLOSE_CODES.includes(code)) {
        this.stopped = true;
        this.handlers.onEnded?.(code, this.ending?.message || "");
        return;
      }
      this.scheduleReconnect();
    };
  }

  ping() {
    const sentAt = Date.now();
    if (!this.send({ type: "ping" })) return;
    setTimeout(() => {
      if (this.ws && (this.lastFrameAt || 0) < sentAt) this.drop();
    }, DEAD_AFTER_MS);
  }

  /** Give up on the current connection and reconnect with backoff. */
  drop() {
    const ws = this.ws;
    if (!ws || this.stopped) return;
    this.ws = null;
    clearInterval(this.heartbeat);
    ws.onclose = null;
    ws.close();
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.stopped) return;
    // 1 s, 2 s, 4 s … up to 30 s, with jitter so a restarted server is not hit by everyone at once.
    const delay = Math.min(30_000, 1000 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    this.handlers.onStatus?.(`Offline. Reconnecting in ${Math.round(delay / 1000)} s…`);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  retryNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.connect();
  }

  /** Send a frame if connected; answers whether it went. */
  send(frame) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }
}

// One device connection at the base station, guarded: every socket error is handled, a frame that is
// not of the protocol closes it, reading pauses while it is over its frame or byte rate, refused frames
// are answered (a few) and counted, and too many of them close it.
import type { WebSocket } from "ws";
import type { Message } from "../../protocol/frames.js";
import { CLOSE, closeWith, receiveFrames, sendFrame, sendFrameWritten } from "../../protocol/socket.js";
import type { Complaints } from "./complaints.js";
import { TokenBucket, type HubLimits } from "./limits.js";

export class Connection {
  /** How log lines name the peer (and rate-limit them): its IP address until its hello, then its device name. */
  who: string;
  private readonly frames: TokenBucket;
  private readonly bytes: TokenBucket;
  private readonly strikes: TokenBucket;
  private resumeTimer: NodeJS.Timeout | null = null;

  constructor(readonly ws: WebSocket, readonly address: string, limits: HubLimits, private readonly complaints: Complaints, onMessage: (m: Message) => void) {
    this.who = `peer ${address}`;
    this.frames = new TokenBucket(limits.framesPerSecond, limits.frameBurst);
    this.bytes = new TokenBucket(limits.bytesPerSecond, limits.byteBurst);
    this.strikes = new TokenBucket(limits.strikesPerSecond, limits.strikeBurst);
    // ws reports frames it cannot parse (a reserved opcode, a length over maxPayload) and socket
    // failures here, and closes the connection itself
    ws.on("error", (e: Error & { code?: string }) => this.complaints.report(this.who, "socket errors", `connection failed: ${e.message}`));
    ws.on("message", (data: Buffer) => this.meter(data.length));
    receiveFrames(ws, onMessage, (reason) => this.complaints.report(this.who, "bad frames", `${reason}; closing the connection`));
    ws.on("close", () => {
      if (this.resumeTimer) clearTimeout(this.resumeTimer);
    });
  }

  get open(): boolean {
    return this.ws.readyState === this.ws.OPEN;
  }

  send(m: Message): void {
    sendFrame(this.ws, m);
  }

  /** Sends and resolves once the frame is written (false: the connection is gone). */
  sendWritten(m: Message): Promise<boolean> {
    return sendFrameWritten(this.ws, m);
  }

  /** Closes the connection for `why`, logged (rate-limited under `kind`). */
  close(code: number, kind: string, why: string): void {
    if (!this.open) return;
    this.complaints.report(this.who, `connections closed for ${kind}`, `closing the connection: ${why}`);
    closeWith(this.ws, code, why);
  }

  /** Logs what the peer reported or did (rate-limited under `kind`) without holding it against it. */
  note(kind: string, message: string): void {
    this.complaints.report(this.who, kind, message);
  }

  /**
   * Refuses a frame for what it means: logs and answers the first few of each `kind`, counts the rest,
   * and closes the connection when refusals come faster than the limits allow.
   */
  refuse(kind: string, message: string, id?: number): void {
    if (this.complaints.report(this.who, kind, message)) this.send({ type: "error", ...(id === undefined ? {} : { id }), message });
    if (this.strikes.take(1) > 0) this.close(CLOSE.policy, "refused frames", `too many refused frames (the last: ${kind})`);
  }

  /** Counts a received frame against the rates; over them, stops reading the socket until it is back within. */
  private meter(bytes: number): void {
    const wait = Math.max(this.frames.take(1), this.bytes.take(bytes));
    if (wait <= 0 || this.resumeTimer || !this.open) return;
    this.complaints.report(this.who, "pauses", `over its frame or byte rate: not read for ${Math.ceil(wait)} ms`);
    this.ws.pause();
    this.resumeTimer = setTimeout(() => {
      this.resumeTimer = null;
      this.ws.resume();
    }, wait);
  }
}

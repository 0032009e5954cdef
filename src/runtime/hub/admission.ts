// Who gets onto the device port: a cap on connections, a hello within a time limit as the first frame,
// proof of the join token in it (when the hub has tokens), proof of the device's identity (its key), and
// a safe name that belongs to that identity.
//
// Browser devices cannot bind the handshake to the TLS session: the exporter (protocol/channel-binding.ts)
// is not something a page can compute. Their hello says so (`unbound`) and their proofs cover an empty
// binding. What the binding adds is that a proof made on one TLS connection is worthless on another: a
// man in the middle holding a TLS session to each side cannot relay the handshake. Without it, that
// relay needs the browser to have accepted the attacker's certificate, i.e. the browser's own TLS
// authentication of the base station (a CA-signed certificate, or one the user chose to trust) is what
// protects it, as it protects every other credential a page sends. So an unbound hello is admitted only
// where the operator allowed browser devices (`serve --browser-devices`, off by default) and only over TLS
// (or from loopback, where no one sits between); everything else is unchanged: the join-token proof, the
// identity's signature, result checks and quarantine. A bound device cannot be downgraded: flipping
// `unbound` in its hello changes the binding the base station checks its proofs against, and they fail.
import type { IncomingMessage } from "node:http";
import type { WebSocket, WebSocketServer } from "ws";
import type { Message } from "../../protocol/frames.js";
import { channelBinding } from "../../protocol/channel-binding.js";
import { bsProof, identityFingerprint, newNonce, provenToken, validSignature, type Transcript } from "../../protocol/handshake.js";
import { safeName, uniqueName } from "../../protocol/names.js";
import { CLOSE } from "../../protocol/socket.js";
import type { Complaints } from "./complaints.js";
import { Connection } from "./connection.js";
import type { Device } from "./device.js";
import { MAX_IDENTITIES, type Identities, type KnownIdentity } from "./identities.js";
import { tokenId, type JoinTokens } from "./join-tokens.js";
import type { HubLimits } from "./limits.js";
import { isLoopback } from "../../util/loopback.js";

/** Frames a device may send between its hello and its welcome (an honest one sends none): kept, and read once it is admitted. */
const EARLY_FRAMES = 16;

export type Hello = Extract<Message, { type: "hello" }>;

/** Who an admitted device is: its name (safe, its identity's), identity, the token it proved, what was known of it. */
export interface Admitted {
  name: string;
  fingerprint: string | null;
  tokenId: string | null;
  known: KnownIdentity | null;
}

export interface AdmissionEvents {
  /** A connection said hello and was admitted: the device it is. */
  hello(conn: Connection, who: Admitted, m: Hello): Device;
  joined(d: Device): void;
  message(d: Device, m: Message): void;
  left(d: Device): void;
}

export class Admission {
  /** Connected devices (that said hello), in order of arrival. */
  readonly devices: Device[] = [];
  /** Open sockets, with or without a hello, counted against the cap. */
  private readonly sockets = new Set<WebSocket>();

  /**
   * `joinTokens`: a device must prove it holds one of them (protocol/handshake.ts), and its identity,
   * before it is placed or sent anything; null admits every device that says hello (identities are
   * still checked for those that present one). `browserDevices`: whether a hello without a TLS channel
   * binding (a browser's) is admitted, over TLS or loopback (see the top of this file).
   */
  constructor(
    server: WebSocketServer,
    private readonly limits: HubLimits,
    private readonly complaints: Complaints,
    private readonly joinTokens: JoinTokens | null,
    private readonly identities: Identities,
    private readonly events: AdmissionEvents,
    private readonly browserDevices = false,
  ) {
    server.on("connection", (ws, req) => this.accept(ws, req));
    // with a shared HTTP server, ws passes that server's errors on here too
    server.on("error", (e) => complaints.report("device port", "server errors", `error: ${e.message}`));
  }

  private accept(ws: WebSocket, req: IncomingMessage): void {
    let device: Device | null = null;
    /** from the hello until the admission is decided: frames that came meanwhile, read after it */
    let early: Message[] | null = null;
    const nonce = newNonce();
    const binding = channelBinding(req.socket);
    const address = req.socket.remoteAddress ?? "unknown";
    const conn: Connection = new Connection(ws, address, this.limits, this.complaints, (m) => {
      if (device) return this.events.message(device, m);
      if (early) {
        if (early.length >= EARLY_FRAMES) return conn.close(CLOSE.policy, "no hello", `${EARLY_FRAMES} frames sent before the welcome`);
        return void early.push(m);
      }
      if (m.type !== "hello") return conn.close(CLOSE.policy, "no hello", `say hello first (got ${m.type})`);
      clearTimeout(helloTimer);
      early = [];
      const t: Transcript = { bsNonce: nonce, deviceNonce: m.nonce ?? "", name: m.name, key: m.key ?? "", binding: m.unbound ? "" : binding };
      const unboundRefusal = m.unbound ? this.refuseUnbound(binding !== "", address) : null;
      const proven = unboundRefusal !== null ? Promise.resolve({ refused: unboundRefusal }) : this.prove(t, m);
      void proven.then((p) => {
        if (!conn.open) return;
        const admitted = "refused" in p ? p : this.admit(p, m);
        if ("refused" in admitted) {
          // the whole reason as an error frame: a close frame holds 123 bytes of it
          conn.send({ type: "error", message: `not admitted: ${admitted.refused}` });
          return conn.close(CLOSE.notAdmitted, "admission", `not admitted: ${admitted.refused}`);
        }
        conn.send(admitted.welcome);
        conn.who = admitted.who.name;
        const d = this.events.hello(conn, admitted.who, m);
        device = d;
        this.devices.push(d);
        this.events.joined(d);
        for (const f of early!.splice(0)) if (conn.open) this.events.message(d, f);
      }).catch((e: Error) => conn.close(CLOSE.policy, "failed admissions", `the admission failed: ${e.message}`));
    });
    this.sockets.add(ws);
    const helloTimer = setTimeout(() => conn.close(CLOSE.policy, "no hello", `no hello within ${this.limits.helloTimeoutMs} ms`), this.limits.helloTimeoutMs);
    ws.on("close", () => {
      clearTimeout(helloTimer);
      this.sockets.delete(ws);
      if (!device) return;
      this.devices.splice(this.devices.indexOf(device), 1);
      this.events.left(device);
    });
    if (this.sockets.size > this.limits.maxConnections) {
      return conn.close(CLOSE.tryAgainLater, "the connection limit", `the base station is at its limit of ${this.limits.maxConnections} device connections`);
    }
    conn.send({ type: "challenge", nonce });
  }

  /** Why a hello without a channel binding (a browser's) is refused here; null when it may go on to the usual checks. */
  private refuseUnbound(overTls: boolean, address: string): string | null {
    if (!this.browserDevices) return "this base station does not admit browser devices (a handshake without a TLS channel binding); its operator can allow them with serve --browser-devices";
    if (!overTls && !isLoopback(address.replace(/^::ffff:/i, ""))) return "a browser device is admitted over TLS only (https://, serve --tls)";
    return null;
  }

  /**
   * What the hello proves (the crypto, asynchronous): the token it holds, the welcome that proves the
   * same back, and its identity's fingerprint once its signature verifies; or why it is not admitted.
   */
  private async prove(t: Transcript, m: Hello): Promise<Proven | { refused: string }> {
    let token: string | null = null;
    if (this.joinTokens) {
      if (m.proof === undefined || m.nonce === undefined) return { refused: "no join token presented (run the device with --token TOKEN or DISTMOE_JOIN_TOKEN)" };
      token = await provenToken(this.joinTokens.all, t, m.proof);
      if (token === null) return { refused: "wrong join token (or a replayed handshake)" };
      if (m.key === undefined) return { refused: "no device identity presented (a device key pair; this device's distmoe may be too old)" };
    }
    const welcome: Message = { type: "welcome", ...(token === null ? {} : { proof: await bsProof(token, t) }) };
    if (m.key === undefined) return { welcome, token, fingerprint: null };
    if (!(await validSignature(t, m.signature!))) return { refused: "the device's signature of the handshake does not verify with the key it presented" };
    return { welcome, token, fingerprint: await identityFingerprint(m.key) };
  }

  /**
   * Who a proven device is, or why it is not admitted. Synchronous, and followed at once by its entry
   * into `devices`: two connections of one identity admitted together still see each other.
   */
  private admit(p: Proven, m: Hello): { welcome: Message; who: Admitted } | { refused: string } {
    const { token, fingerprint } = p;
    const safe = safeName(m.name);
    const connectedAs = (n: string) => this.devices.find((d) => d.name === n);
    if (fingerprint === null) {
      // a device without an identity: a name no identity holds, made unique among those connected
      const name = uniqueName(safe, (n) => connectedAs(n) !== undefined || !this.identities.nameFree(n));
      return { welcome: p.welcome, who: { name, fingerprint: null, tokenId: null, known: null } };
    }
    const conflict = this.identities.conflict(safe, fingerprint);
    if (conflict) return { refused: conflict };
    if (this.identities.fullFor(fingerprint)) {
      return { refused: `the base station knows as many devices as it keeps (${MAX_IDENTITIES}); the operator can forget some (DELETE /admin/devices/…)` };
    }
    // the same identity connected again (its old connection lost or half-open): the new one replaces it
    for (const d of this.devices) {
      if (d.fingerprint !== fingerprint) continue;
      d.ready = false; // no call waits out its deadline on a connection already replaced
      d.conn.close(CLOSE.replaced, "replaced connections", `replaced by a new connection of ${d.name} (the same identity)`);
    }
    // a suffixed name (where a device without an identity has this one) must not be another identity's either
    const name = uniqueName(safe, (n) => {
      const d = connectedAs(n);
      return (d !== undefined && d.fingerprint !== fingerprint) || this.identities.heldByOther(n, fingerprint);
    });
    const known = this.identities.joined(name, fingerprint);
    return { welcome: p.welcome, who: { name, fingerprint, tokenId: token === null ? null : tokenId(token), known } };
  }
}

/** What a hello proved: the join token (null where none is asked), the welcome answering it, the identity's fingerprint (null: none presented). */
interface Proven {
  welcome: Message;
  token: string | null;
  fingerprint: string | null;
}

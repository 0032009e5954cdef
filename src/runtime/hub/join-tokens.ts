// The join tokens a base station admits devices with. Each is known by an id (a prefix of its SHA-256)
// so it can be listed and revoked without being shown again. With a file (state-file.ts), the set
// outlives the process, so devices that reconnect to a restarted base station are still admitted.
import { createHash } from "node:crypto";
import { z } from "zod";
import { newJoinToken } from "../../protocol/handshake.js";
import { parseJson, readStateFile, writeStateFile } from "./state-file.js";

/** A join token: too long to guess from a captured handshake, and safe to paste into a shell command. */
export const JOIN_TOKEN = /^[A-Za-z0-9._~+/=-]{16,256}$/;
export const JOIN_TOKEN_RULE = "a join token is 16 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -";

export interface JoinTokenInfo {
  id: string;
  /** when it was added, ISO 8601 */
  created: string;
}

const stored = z.object({ tokens: z.array(z.object({ token: z.string().regex(JOIN_TOKEN), created: z.string().max(64) })).max(10_000) });

/** A token's id: the first 12 hex digits of its SHA-256 (says nothing usable about the token). */
export const tokenId = (token: string): string => createHash("sha256").update(token).digest("hex").slice(0, 12);

export class JoinTokens {
  private readonly tokens = new Map<string, { token: string; created: string }>();
  /** admitted too, yet neither listed, kept nor revocable: the base station's own local devices' */
  private readonly own: string[] = [];

  /** `file`: where the set is kept between runs (read now if it exists); null: in memory only. */
  constructor(initial: readonly string[], private readonly file: string | null = null) {
    const text = file && readStateFile(file, "the join tokens");
    if (text) {
      const parsed = stored.safeParse(parseJson(text));
      if (!parsed.success) throw new Error(`${file} does not hold join tokens as distmoe writes them (${parsed.error.issues[0]?.message}); move it away to start afresh`);
      for (const t of parsed.data.tokens) this.tokens.set(tokenId(t.token), t);
    }
    const fresh = initial.filter((t) => !this.tokens.has(tokenId(t)));
    for (const t of fresh) this.tokens.set(tokenId(t), { token: t, created: new Date().toISOString() });
    if (fresh.length > 0) this.save();
  }

  /** Every token admitted now. */
  get all(): string[] {
    return [...[...this.tokens.values()].map((t) => t.token), ...this.own];
  }

  /**
   * A new token for the base station's own local devices (processes it starts on this machine): admitted
   * while this process runs, but not listed, kept in the file or revocable, so that revoking the tokens
   * handed out (one leaked, say) never cuts the base station off from its own devices.
   */
  ownToken(): string {
    const token = newJoinToken();
    this.own.push(token);
    return token;
  }

  get size(): number {
    return this.tokens.size;
  }

  list(): JoinTokenInfo[] {
    return [...this.tokens].map(([id, t]) => ({ id, created: t.created }));
  }

  /** Adds `token` (default: a new one); its id and the token. */
  add(token: string = newJoinToken()): { id: string; token: string } {
    if (!JOIN_TOKEN.test(token)) throw new Error(JOIN_TOKEN_RULE);
    const id = tokenId(token);
    if (!this.tokens.has(id)) {
      this.tokens.set(id, { token, created: new Date().toISOString() });
      this.save();
    }
    return { id, token };
  }

  /** Revokes the token with this id; false when there is none. */
  revoke(id: string): boolean {
    if (!this.tokens.delete(id)) return false;
    this.save();
    return true;
  }

  private save(): void {
    if (this.file) writeStateFile(this.file, JSON.stringify({ tokens: [...this.tokens.values()] }, null, 2) + "\n");
  }
}

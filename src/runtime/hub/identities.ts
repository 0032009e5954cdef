// Which device identity (the fingerprint of its Ed25519 key) goes by which name, and which experts it
// held. A device is known by its key, not by the name it claims: a name belongs to the first identity
// that joined with it, so an impostor reusing it is refused, and a device that rejoins is recognised
// and keeps the experts it held where placement allows. With a file, what is known outlives the process.
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { z } from "zod";
import { MAX_NAME_LENGTH } from "../../protocol/names.js";

export interface KnownIdentity {
  fingerprint: string;
  name: string;
  /** the experts it held when last ready */
  experts: Array<[number, number]>;
  /** first and last joined, ISO 8601 */
  firstSeen: string;
  lastSeen: string;
}

const pair = z.tuple([z.number().int().min(0).max(1 << 16), z.number().int().min(0).max(1 << 16)]);
const stored = z.object({
  identities: z
    .array(z.object({ fingerprint: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/), name: z.string().regex(/^[A-Za-z0-9._-]+$/).max(MAX_NAME_LENGTH), experts: z.array(pair).max(1 << 16), firstSeen: z.string().max(64), lastSeen: z.string().max(64) }))
    .max(100_000),
});

export class Identities {
  private readonly byFingerprint = new Map<string, KnownIdentity>();
  private readonly byName = new Map<string, KnownIdentity>();

  /** `file`: where they are kept between runs (read now if it exists); null: in memory only. */
  constructor(private readonly file: string | null = null) {
    if (!file) return;
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw new Error(`cannot read the known devices in ${file}: ${(e as Error).message}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    const parsed = stored.safeParse(json);
    if (!parsed.success) throw new Error(`${file} does not hold known devices as distmoe writes them (${parsed.error.issues[0]?.message}); move it away to start afresh`);
    for (const id of parsed.data.identities) this.put(id);
  }

  /** Why `fingerprint` may not go by `name` (it belongs to another identity), or null. */
  conflict(name: string, fingerprint: string): string | null {
    const owner = this.byName.get(name);
    if (!owner || owner.fingerprint === fingerprint) return null;
    return `the name ${name} belongs to another device (identity ${owner.fingerprint}); this one is ${fingerprint} (the same device with a new key? the operator can forget the old identity: DELETE /admin/devices/…)`;
  }

  /** Whether a device without an identity may take `name` (no identity has it). */
  nameFree(name: string): boolean {
    return !this.byName.has(name);
  }

  /**
   * `fingerprint` joins as `name` (which conflict() allowed): a new identity is remembered, a known one
   * that changed its name gives up the old one. Returns what was known of it before, if anything.
   */
  joined(name: string, fingerprint: string): KnownIdentity | null {
    const now = new Date().toISOString();
    const known = this.byFingerprint.get(fingerprint) ?? null;
    const before = known && { ...known, experts: [...known.experts] };
    if (known && known.name !== name) this.byName.delete(known.name);
    this.put({ fingerprint, name, experts: known?.experts ?? [], firstSeen: known?.firstSeen ?? now, lastSeen: now });
    this.save();
    return before;
  }

  /** What `fingerprint` holds now. */
  holds(fingerprint: string, experts: ReadonlyArray<[number, number]>): void {
    const known = this.byFingerprint.get(fingerprint);
    if (!known) return;
    known.experts = experts.map(([l, e]): [number, number] => [l, e]);
    this.save();
  }

  /** Forgets an identity (its name is free again); false when it was not known. */
  forget(fingerprint: string): boolean {
    const known = this.byFingerprint.get(fingerprint);
    if (!known) return false;
    this.byFingerprint.delete(fingerprint);
    this.byName.delete(known.name);
    this.save();
    return true;
  }

  list(): KnownIdentity[] {
    return [...this.byFingerprint.values()].map((k) => ({ ...k, experts: [...k.experts] }));
  }

  private put(k: KnownIdentity): void {
    this.byFingerprint.set(k.fingerprint, k);
    this.byName.set(k.name, k);
  }

  private save(): void {
    if (!this.file) return;
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify({ identities: this.list() }) + "\n", { mode: 0o600 });
    renameSync(tmp, this.file);
  }
}

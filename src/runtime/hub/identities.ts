// Which device identity (the fingerprint of its Ed25519 key) goes by which name, and which experts it
// held. A device is known by its key, not by the name it claims: a name belongs to the first identity
// that joined with it, so an impostor reusing it is refused, and a device that rejoins is recognised
// and keeps the experts it held where placement allows; one found returning wrong results is refused
// from then on. With a file (state-file.ts), what is known outlives the process.
import { z } from "zod";
import { MAX_NAME_LENGTH } from "../../protocol/names.js";
import { parseJson, readStateFile, writeStateFile } from "./state-file.js";

export interface KnownIdentity {
  fingerprint: string;
  name: string;
  /** the experts it held when last ready */
  experts: Array<[number, number]>;
  /** first and last joined, ISO 8601 */
  firstSeen: string;
  lastSeen: string;
  /** when and why it was taken out of service for wrong results: it is refused from then on, until forgotten */
  outOfService?: { at: string; why: string };
}

/** Identities remembered at most: a token holder making keys in a loop must not grow the file without end. */
export const MAX_IDENTITIES = 100_000;

const pair = z.tuple([z.number().int().min(0).max(1 << 16), z.number().int().min(0).max(1 << 16)]);
const stored = z.object({
  identities: z
    .array(z.object({ fingerprint: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/), name: z.string().regex(/^[A-Za-z0-9._-]+$/).max(MAX_NAME_LENGTH), experts: z.array(pair).max(1 << 16), firstSeen: z.string().max(64), lastSeen: z.string().max(64), outOfService: z.object({ at: z.string().max(64), why: z.string().max(4096) }).optional() }))
    .max(MAX_IDENTITIES),
});

export class Identities {
  private readonly byFingerprint = new Map<string, KnownIdentity>();
  private readonly byName = new Map<string, KnownIdentity>();

  /** `file`: where they are kept between runs (read now if it exists); null: in memory only. */
  constructor(private readonly file: string | null = null) {
    const text = file && readStateFile(file, "the known devices");
    if (!text) return;
    const parsed = stored.safeParse(parseJson(text));
    if (!parsed.success) throw new Error(`${file} does not hold known devices as distmoe writes them (${parsed.error.issues[0]?.message}); move it away to start afresh`);
    for (const id of parsed.data.identities) this.put(id);
  }

  /**
   * Why `fingerprint` may not join as `name`, or null: the name belongs to another identity, or this
   * identity was taken out of service for wrong results.
   */
  conflict(name: string, fingerprint: string): string | null {
    const banned = this.byFingerprint.get(fingerprint)?.outOfService;
    if (banned) return `this device (${fingerprint}) was taken out of service at ${banned.at} ${banned.why.slice(0, 200)}; the operator can let it back: DELETE /admin/devices/…`;
    if (!this.heldByOther(name, fingerprint)) return null;
    const owner = this.byName.get(name)!;
    return `the name ${name} belongs to another device (identity ${owner.fingerprint}); this one is ${fingerprint} (the same device with a new key? the operator can forget the old identity: DELETE /admin/devices/…)`;
  }

  /** Whether a new identity would be one more than it keeps (MAX_IDENTITIES); known ones always have room. */
  fullFor(fingerprint: string): boolean {
    return !this.byFingerprint.has(fingerprint) && this.byFingerprint.size >= MAX_IDENTITIES;
  }

  /** Whether `name` belongs to an identity other than `fingerprint`. */
  heldByOther(name: string, fingerprint: string): boolean {
    const owner = this.byName.get(name);
    return owner !== undefined && owner.fingerprint !== fingerprint;
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
    this.put({ fingerprint, name, experts: known?.experts ?? [], firstSeen: known?.firstSeen ?? now, lastSeen: now, ...(known?.outOfService ? { outOfService: known.outOfService } : {}) });
    this.save();
    return before;
  }

  /** What `fingerprint` holds now. */
  holds(fingerprint: string, experts: ReadonlyArray<[number, number]>): void {
    const known = this.byFingerprint.get(fingerprint);
    // a device may say ready again and again: only a change is written
    if (!known || JSON.stringify(known.experts) === JSON.stringify(experts)) return;
    known.experts = experts.map(([l, e]): [number, number] => [l, e]);
    this.save();
  }

  /** Remembers that `fingerprint` returned wrong results: it is refused from now on, until forgotten. */
  outOfService(fingerprint: string, why: string): void {
    const known = this.byFingerprint.get(fingerprint);
    if (!known) return;
    known.outOfService = { at: new Date().toISOString(), why: why.slice(0, 4096) };
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
    if (this.file) writeStateFile(this.file, JSON.stringify({ identities: this.list() }) + "\n");
  }
}
